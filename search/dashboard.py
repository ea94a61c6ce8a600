"""optuna-dashboard over a study storage, with the artifact store so trials show their plots and audio."""

from __future__ import annotations

from pathlib import Path

from optuna_dashboard import run_server

from search.artifacts import artifact_store
from search.storage import open_storage


def serve(storage: str, artifact_dir: str | Path, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Blocks until interrupted; the same storage strings as `study run` (journal files included)."""
    run_server(open_storage(storage), host=host, port=port, artifact_store=artifact_store(artifact_dir))
