"""optuna-dashboard over a study storage, with the artifact store so trials show their plots and audio."""

from __future__ import annotations

from pathlib import Path

from optuna_dashboard import run_server

from recon_core.errors import InputError
from search.artifacts import artifact_store
from search.storage import open_storage, require_existing


def serve(storage: str, artifact_dir: str | Path, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Blocks until interrupted; the same storage strings as `study run` (journal files included). The
    dashboard only reads: a storage file or artifact folder that does not exist is a typo, refused before
    anything is created."""
    check_readable(storage, artifact_dir)
    run_server(open_storage(storage), host=host, port=port, artifact_store=artifact_store(artifact_dir))


def check_readable(storage: str, artifact_dir: str | Path) -> None:
    require_existing(storage)
    if not Path(artifact_dir).is_dir():
        raise InputError(f"artifact folder {artifact_dir} does not exist (workers create it with their first "
                         "trial; check --artifact-dir)")
