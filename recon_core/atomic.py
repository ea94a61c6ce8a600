"""Atomic file writes: a reader (or a re-run after a kill) sees the old file or the new one, never half of one.

Temporary files are named `.tmp-<name>.<random><suffix>` beside their target, so that a folder's owner can
remove the leftovers of a process that was killed between writing and renaming (`remove_stale_temps`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp) on a temporary file beside `path` (same suffix, so writers that look at it are happy),
    then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def remove_stale_temps(folder: Path) -> None:
    """Delete temporary files a killed writer left under `folder`; only for a folder one process owns."""
    for p in Path(folder).rglob(f"{TEMP_PREFIX}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
