"""`asr-recon dashboard` serves a real study and its trial artifacts (plot and audio) over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"name": "dash", "data": {"ids": ["cards-0-0001"]}, "attack": {"max_iter": 5},
        "search": {"lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True}}, "pruner": {"type": "none"}}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys, cli; sys.exit(cli.main())", *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, limit: float = 60.0) -> tuple[str, bytes]:
    """GET with retries while the server starts; (content type, body)."""
    end = time.monotonic() + limit
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                return reply.headers.get("Content-Type", ""), reply.read()
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > end:
                raise
            time.sleep(0.3)


@pytest.mark.slow
def test_dashboard_serves_study_and_artifacts(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    storage, artifacts = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "artifacts"
    done = subprocess.run(_cli("study", "run", str(spec), "--storage", storage, "--n-trials", "1", "--threads", "1",
                               "--artifact-dir", str(artifacts), "--log-file", str(tmp_path / "w.log")),
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    port = _free_port()
    server = subprocess.Popen(_cli("dashboard", "--storage", storage, "--artifact-dir", str(artifacts),
                                   "--port", str(port)), cwd=ROOT, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        studies = json.loads(_get(f"{base}/api/studies")[1])["study_summaries"]
        study_id = next(s["study_id"] for s in studies if s["study_name"] == "dash")
        trial = json.loads(_get(f"{base}/api/studies/{study_id}")[1])["trials"][0]
        assert trial["state"] == "Complete"
        kinds = {a["mimetype"]: a for a in trial["artifacts"]}
        assert set(kinds) == {"image/png", "audio/wav"} and len(trial["artifacts"]) == 3
        png = kinds["image/png"]
        ctype, body = _get(f"{base}/artifacts/{study_id}/{trial['trial_id']}/{png['artifact_id']}")
        assert ctype == "image/png" and body[:4] == b"\x89PNG"
        wav = kinds["audio/wav"]
        ctype, body = _get(f"{base}/artifacts/{study_id}/{trial['trial_id']}/{wav['artifact_id']}")
        assert ctype == "audio/wav" and body[:4] == b"RIFF"
    finally:
        server.terminate()
        server.wait(timeout=30)
