"""Engines and sessions built from settings; SQLite tuned so the API and a worker can share one file.

Two kinds, one per kind of process: the worker, the CLI and migrations use blocking sessions (psycopg, sqlite3),
which suit a training thread and its writer thread; the API is an event loop and uses async sessions on the
same database (asyncpg, aiosqlite), so a request waiting on the database costs no thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, Executable, create_engine, event, exc
from sqlalchemy.engine import URL, CursorResult, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
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


# -- the API's async engine -------------------------------------------------------------------------

ASYNC_DRIVERS = {"postgresql": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}
# libpq's names for what asyncpg calls otherwise; its TCP keepalive options have no asyncpg equivalent (the
# API bounds each statement with command_timeout instead).
ASYNCPG_RENAMED = {"connect_timeout": "timeout", "sslmode": "ssl"}
LIBPQ_ONLY = {"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
              "application_name", "options"}
ASYNCPG_CONNECT_ARGS = {"timeout": CONNECT_TIMEOUT_SECONDS, "command_timeout": 60}
# A pooled connection idle longer than this is pinged before use (one round trip), so one that died with a
# database restart while the API was quiet is replaced instead of failing a request. A connection in steady
# use is not pinged: that round trip on every checkout (pool_pre_ping) cost more than the query it guards.
PING_IDLE_SECONDS = 1.0


def async_url(url: str) -> URL:
    """The same database through the async driver of its backend."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in ASYNC_DRIVERS:
        raise ValueError(f"DATABASE_URL: the API supports PostgreSQL and SQLite, not {backend!r}")
    parsed = parsed.set(drivername=ASYNC_DRIVERS[backend])
    if backend == "postgresql":
        query = {ASYNCPG_RENAMED.get(key, key): value for key, value in parsed.query.items() if key not in LIBPQ_ONLY}
        parsed = parsed.set(query=query)
    return parsed


def make_async_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    parsed = async_url(url)
    if parsed.get_backend_name() == "postgresql":
        args = {key: value for key, value in ASYNCPG_CONNECT_ARGS.items() if key not in parsed.query}
        # Requests beyond pool_size wait in line for a connection (an asyncio wait, no thread held); overflow
        # connections would be opened and closed again with every swing of the load.
        engine = create_async_engine(parsed, connect_args=args, pool_size=pool_size, max_overflow=0)
        event.listen(engine.sync_engine, "do_connect", _connect_or_operational_error)
        event.listen(engine.sync_engine, "checkin", _note_checkin)
        event.listen(engine.sync_engine, "checkout", _ping_if_idle)
    else:
        pool = {}
        if parsed.database and parsed.database != ":memory:":  # one in-memory database is one connection
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            pool = {"pool_size": pool_size, "max_overflow": 0}
        engine = create_async_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **pool)
        event.listen(engine.sync_engine, "connect", _tune_sqlite)  # a file: no server whose restart to notice
    return engine


def _connect_or_operational_error(dialect, _record, cargs, cparams):
    """asyncpg raises a refused or timed-out connection as a bare OSError; make it the DBAPI's
    OperationalError, as psycopg does, so the API answers it with a 503 like any other outage."""
    try:
        return dialect.loaded_dbapi.connect(*cargs, **cparams)
    except OSError as e:  # ConnectionRefusedError, TimeoutError, a host that cannot be reached
        raise dialect.loaded_dbapi.OperationalError(f"could not connect to the database: {e}", e) from e


def _note_checkin(_dbapi_connection, record) -> None:
    if record is not None:
        record.info["checked_in"] = time.monotonic()


def _ping_if_idle(dbapi_connection, record, _proxy) -> None:
    checked_in = record.info.get("checked_in")  # none yet: a connection opened just now
    if checked_in is None or time.monotonic() - checked_in <= PING_IDLE_SECONDS:
        return
    try:
        dbapi_connection.ping()
    except Exception as e:
        raise exc.DisconnectionError(f"a pooled connection was dead: {e}") from e  # the pool opens a new one


_async_engines: dict[asyncio.AbstractEventLoop, AsyncEngine] = {}
# One turnstile per engine in front of read_connection: an asyncio.Semaphore serves waiters first come, first
# served, where the pool's own queue lets a newcomer take a connection that was just handed back ahead of those
# already waiting (under saturation some requests then waited seconds while most waited milliseconds).
_turnstiles: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def get_async_engine() -> AsyncEngine:
    """The API's engine for the running event loop (connections belong to the loop that opened them)."""
    loop = asyncio.get_running_loop()
    if loop not in _async_engines:
        settings = get_settings()
        _async_engines[loop] = make_async_engine(settings.database_url, settings.database_pool_size)
        _turnstiles[loop] = asyncio.Semaphore(settings.database_pool_size)
    return _async_engines[loop]


def async_session() -> AsyncSession:
    return AsyncSession(get_async_engine(), expire_on_commit=False)


@asynccontextmanager
async def read_connection() -> AsyncIterator[AsyncConnection]:
    """A pooled connection in autocommit, for a read that is one statement: without the BEGIN and ROLLBACK that
    a transaction adds, it takes one round trip instead of three."""
    engine = get_async_engine()
    async with _turnstiles[asyncio.get_running_loop()], engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


async def dispose_async_engine() -> None:
    """Close this loop's pooled connections (the API's shutdown)."""
    engine = _async_engines.pop(asyncio.get_running_loop(), None)
    _turnstiles.pop(asyncio.get_running_loop(), None)
    if engine is not None:
        await engine.dispose()


def _forget_async_engines() -> None:
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    _turnstiles.clear()
    for loop, engine in list(_async_engines.items()):
        del _async_engines[loop]
        if loop is not current and loop.is_running():  # another thread's loop (tests: the TestClient's)
            try:
                asyncio.run_coroutine_threadsafe(engine.dispose(), loop).result(10)
                continue
            except Exception:
                pass
        engine.sync_engine.dispose(close=False)  # its loop is gone: drop the pool, nothing to close it with


def reset() -> None:
    """Forget the cached engines (after settings changed, or in a forked child)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
    _forget_async_engines()


def rowcount(session: Session, statement: Executable) -> int:
    """Executes an UPDATE or DELETE; returns how many rows it matched. Session.execute is typed as returning a
    Result, but a DML statement's is a CursorResult, the one kind with a rowcount."""
    result = session.execute(statement)
    assert isinstance(result, CursorResult), f"{type(statement).__name__} returned no cursor result"
    return result.rowcount


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
