"""Engine and sessions built from settings; SQLite tuned so the API and a worker can share one file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from service.settings import get_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_SECONDS = 10
# libpq options for a connection whose peer vanished without a reset (a network cut, a host gone): TCP
# keepalives notice an idle one within ~60 s, tcp_user_timeout a write left unacknowledged for 60 s. Without
# them such a write hangs until the kernel gives up (many minutes) and the worker's outage retries never start.
POSTGRES_CONNECT_ARGS = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "keepalives": 1, "keepalives_idle": 30,
                         "keepalives_interval": 10, "keepalives_count": 3, "tcp_user_timeout": 60_000}


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # A host that does not answer fails a connection attempt in seconds, not after minutes of TCP retries
        # (a worker retrying through a database outage must not hang on one attempt).
        args = {key: value for key, value in POSTGRES_CONNECT_ARGS.items() if key not in parsed.query}  # the URL wins
        return create_engine(url, pool_pre_ping=True, connect_args=args)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", _tune_sqlite)
    return engine


def _tune_sqlite(dbapi_connection, _record) -> None:
    # WAL lets readers (the API) run while the worker writes; busy_timeout waits instead of failing on a lock.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


def reset() -> None:
    """Forget the cached engine (after settings changed, or in a forked child)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits when the block ends normally and rolls back when it raises."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
