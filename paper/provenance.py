"""provenance.json: what produced the numbers (commit, configs, device, seeds, versions) and how long it took."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import torch

REPO = Path(__file__).resolve().parents[1]


def git_state() -> dict[str, Any]:
    """HEAD and whether tracked files differ from it; None values outside a git checkout."""
    def git(*args: str) -> str | None:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    changed = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(changed) if changed is not None else None}


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "optuna": optuna.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "command": sys.argv,
    }
