"""Shared fixtures: the embedded clips, a scratch copy of them, and a real PostgreSQL database."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tiny models are many small ops: one intra-op thread per process is fastest, and worker subprocesses that
# the tests start inherit it instead of oversubscribing the two cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

DEMO_DIR = Path(__file__).resolve().parents[1] / "recon_core" / "assets" / "demo"
POSTGRES_URL = os.environ.get("ASR_RECON_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def demo_dir() -> Path:
    return DEMO_DIR


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    """A writable copy of the embedded clips, for tests that break or add files."""
    dest = tmp_path / "clips"
    shutil.copytree(DEMO_DIR, dest)
    return dest


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema-free database name is not available with trust auth on `test`, so each test gets
    the shared database and a unique study name; tables are Optuna's own. Outside CI an unreachable
    server skips the test; in CI (CI=true) it is a failure."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    try:
        engine = sqlalchemy.create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as exc:  # any connection problem means "no server"
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required in CI: {exc}")
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} not reachable: {exc}")
    yield POSTGRES_URL


@pytest.fixture
def unique_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"
