"""Storage is always just a string: an SQLAlchemy URL, a SQLite file, or an Optuna journal file.

- `sqlite:///results/studies.db` (default), or a bare path ending in .db / .sqlite / .sqlite3;
- any other SQLAlchemy URL, e.g. `postgresql+psycopg://user@host:5432/db`;
- `journal:PATH`, or a bare path ending in .log: Optuna's append-only journal file (no server, safe on
  NFS with many workers, but it has no heartbeats, so a trial whose worker died stays RUNNING).

RDB storages get heartbeats, so a trial whose worker died becomes FAIL and is queued again. SQLite is
opened in WAL mode with `BEGIN IMMEDIATE` transactions and a long busy timeout: every writer takes the
write lock up front and waits for it, instead of failing with "database is locked" when two workers
upgrade a read to a write at once.
"""

from __future__ import annotations

import os
import sqlite3
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from recon_core.errors import InputError
from search.spec import StorageSpec

HEARTBEAT_ENV = "ASR_RECON_HEARTBEAT_INTERVAL"
GRACE_ENV = "ASR_RECON_GRACE_PERIOD"
SQLITE_BUSY_TIMEOUT_S = 120
CREATE_ATTEMPTS = 5
POOL_SIZE = 2
MAX_OVERFLOW = 3
CONNECT_TIMEOUT_S = 10
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")

# Heartbeats, stale-trial retries and metric names are all "experimental" in Optuna 5 and
# warn on every use; every path into a study opens its storage here, and the warnings say nothing a
# user of this tool could act on.
warnings.filterwarnings("ignore", category=ExperimentalWarning)


@dataclass(frozen=True)
class StorageTarget:
    """A parsed storage string: `url` is an SQLAlchemy URL for kind rdb, a file path for journal."""

    kind: Literal["rdb", "journal"]
    url: str

    @property
    def is_sqlite(self) -> bool:
        return self.kind == "rdb" and self.url.startswith("sqlite")

    @property
    def has_heartbeat(self) -> bool:
        return self.kind == "rdb"


def parse_storage(text: str) -> StorageTarget:
    """Classify a storage string; a bad one is an InputError naming it and the accepted forms."""
    text = text.strip()
    if text.startswith("journal:"):
        path = text.removeprefix("journal:")
        if not path:
            raise InputError("storage 'journal:' needs a file path, e.g. journal:results/studies.log")
        return StorageTarget("journal", path)
    if "://" not in text:
        if text.endswith(".log"):
            return StorageTarget("journal", text)
        if text.endswith(_SQLITE_SUFFIXES):
            return StorageTarget("rdb", f"sqlite:///{text}")
        raise InputError(f"storage {text!r} is not an SQLAlchemy URL (sqlite:///FILE, postgresql+psycopg://...), "
                         "a .db file or a journal (journal:FILE or FILE.log)")
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise InputError(f"storage URL {text!r} cannot be parsed: {exc}") from None
    if url.get_backend_name() == "sqlite" and not url.database:
        raise InputError(f"storage URL {text!r} names no SQLite file; in-memory databases are not shared")
    return StorageTarget("rdb", text)


def heartbeat_timings(spec: StorageSpec) -> tuple[int, int]:
    """(interval, grace period) in seconds: the spec's, overridden by the environment (tests use seconds)."""
    interval = _env_seconds(HEARTBEAT_ENV, spec.heartbeat_interval)
    grace = _env_seconds(GRACE_ENV, spec.grace_period or 2 * interval)
    return interval, grace


def open_storage(text: str, spec: StorageSpec | None = None) -> optuna.storages.BaseStorage:
    """The Optuna storage for a storage string, with heartbeats and stale-trial retries on RDB storages."""
    spec = spec or StorageSpec()
    target = parse_storage(text)
    if target.kind == "journal":
        path = Path(target.url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    interval, grace = heartbeat_timings(spec)
    shown = display_url(text)
    if target.is_sqlite:
        _prepare_sqlite(target.url)
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    else:
        engine_kwargs = server_engine_kwargs(target.url)
    for attempt in range(CREATE_ATTEMPTS):
        try:
            storage = RDBStorage(
                target.url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=interval,
                grace_period=grace,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=spec.max_retry),
            )
            break
        except sqlalchemy.exc.DBAPIError as exc:
            # Workers started together on a new database race to create Optuna's tables; the loser sees
            # "already exists" or a duplicate key, and finds the tables there when it tries again.
            if attempt + 1 == CREATE_ATTEMPTS or not _creation_race(exc):
                raise InputError(f"storage {shown!r} cannot be opened: {_first_line(exc)}") from None
            time.sleep(0.2 * (attempt + 1))
        except (sqlalchemy.exc.ArgumentError, ImportError) as exc:
            raise InputError(f"storage {shown!r} cannot be opened: {_first_line(exc)}") from None
    if target.is_sqlite:
        _immediate_transactions(storage.engine)
    return storage


def require_existing(text: str) -> None:
    """For commands that only read a study (export, report, dashboard): a SQLite or journal file that does
    not exist is a typo, refused before opening it would create an empty one."""
    target = parse_storage(text)
    if target.kind == "journal" or target.is_sqlite:
        path = Path(make_url(target.url).database or "") if target.is_sqlite else Path(target.url)
        if not path.is_file():
            raise InputError(f"storage file {path} does not exist (no study has been run there; check --storage)")


def server_engine_kwargs(url: str) -> dict[str, Any]:
    """Connection pool of one worker on a database server (PostgreSQL, MySQL). A worker uses one connection
    at a time plus its heartbeat thread's, so a small pool (at most POOL_SIZE + MAX_OVERFLOW connections)
    lets many workers share a server's connection limit (PostgreSQL's default: 100); connections are
    checked before use and renewed hourly, so a restarted server or a firewall's idle timeout costs a
    reconnect, not a failed trial; and a server that does not answer fails in seconds, not minutes."""
    kwargs: dict[str, Any] = {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW, "pool_pre_ping": True,
                              "pool_recycle": 3600, "pool_timeout": 60}
    if make_url(url).get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return kwargs


def display_url(text: str) -> str:
    """The storage string as it may be printed: a URL's password masked."""
    if "://" not in text:
        return text
    try:
        return make_url(text).render_as_string(hide_password=True)
    except ArgumentError:
        return text


def _creation_race(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(m in text for m in ("already exists", "duplicate key", "unique constraint"))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _env_seconds(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r} is not a whole number of seconds") from None
    if value <= 0:
        raise InputError(f"{name}={raw!r} must be a positive number of seconds")
    return value


def _prepare_sqlite(url: str) -> None:
    """Create the file's folder and switch the file to WAL (persistent), so readers never block writers."""
    database = make_url(url).database
    assert database is not None
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def _immediate_transactions(engine: sqlalchemy.engine.Engine) -> None:
    """Let SQLAlchemy, not pysqlite, begin transactions, and begin them IMMEDIATE (SQLAlchemy's recipe)."""
    engine.dispose()  # connections opened during table creation lack the hooks below

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: sqlalchemy.engine.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
