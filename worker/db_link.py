"""A run's way to the database through an outage: every write or read is retried with capped exponential
backoff while the database cannot be reached, and only an outage longer than DATABASE_OUTAGE_LIMIT_SECONDS
ends the run (DatabaseUnavailable)."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from service.db import get_sessionmaker, session_scope
from service.redaction import first_line
from service.settings import get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_RETRY_SECONDS = 0.5   # the first retry after a failed write; each further one waits twice as long ...
MAX_RETRY_SECONDS = 5.0     # ... up to this, so a database that is back is noticed within a few seconds


class DatabaseUnavailable(Exception):
    """The database stayed unreachable for longer than this worker waits for it."""


def is_outage(error: BaseException) -> bool:
    """True for errors that say the database cannot be reached right now (down, restarting, a dropped
    connection, a locked SQLite file): worth retrying. A bad statement or a missing table is not."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if not isinstance(error, (OperationalError, InterfaceError)):
        return False
    return not re.search(r"no such (table|column)|syntax error", str(error.orig or error))


class DatabaseLink:
    """One run's way to the database, shared by its threads: every write or read is one transaction, and one
    that fails because the database is away is retried with capped exponential backoff. The first failure of an
    outage logs a warning, the first success after it logs how long it lasted; nothing in between."""

    def __init__(self, job_id: str, limit_seconds: float) -> None:
        self.job_id, self.limit = job_id, limit_seconds
        self._lock = threading.Lock()
        self.down_since: float | None = None  # monotonic time of the first failure of the current outage
        self.delay = FIRST_RETRY_SECONDS
        self.next_try = 0.0
        self.last_error = ""
        self.outages: list[float] = []  # the length in seconds of each outage this run went through

    def due(self) -> bool:
        return time.monotonic() >= self.next_try

    def try_once(self, work: Callable[[Session], T], what: str, commit: bool = True) -> tuple[bool, T | None]:
        """Run `work` in a transaction (rolled back when not `commit`: a read) unless the outage's next retry
        is not due yet; (False, None) while the database is away. Raises DatabaseUnavailable once an outage
        has lasted longer than the limit."""
        if not self.due():
            self.check_limit()
            return False, None
        try:
            if commit:
                with session_scope() as session:
                    value = work(session)
            else:
                with get_sessionmaker()() as session:
                    value = work(session)
        except Exception as e:
            if not is_outage(e):
                raise
            self._failed(e, what)
            self.check_limit()
            return False, None
        self._succeeded()
        return True, value

    def write(self, work: Callable[[Session], T], what: str) -> T:
        """Run `work` in a transaction and commit it, waiting through an outage (up to the limit) for it to
        succeed."""
        return self._until_done(work, what, commit=True)

    def read(self, work: Callable[[Session], T], what: str) -> T:
        """Run `work` in a transaction that is rolled back (it only reads), waiting through an outage as `write`
        does."""
        return self._until_done(work, what, commit=False)

    def _until_done(self, work: Callable[[Session], T], what: str, commit: bool) -> T:
        self.next_try = 0.0  # a blocking call tries at once
        while True:
            done, value = self.try_once(work, what, commit=commit)
            if done:
                return value
            time.sleep(max(0.05, self.next_try - time.monotonic()))

    def _failed(self, error: Exception, what: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.last_error = first_line(getattr(error, "orig", None) or error)
            if self.down_since is None:
                self.down_since, self.delay = now, FIRST_RETRY_SECONDS
                log.warning("job %s: the database is unreachable (%s failed: %s); the run goes on and keeps "
                            "its progress buffered, retrying with backoff for up to %g s", self.job_id, what,
                            self.last_error, self.limit)
            else:
                self.delay = min(self.delay * 2, MAX_RETRY_SECONDS)
            self.next_try = now + self.delay

    def _succeeded(self) -> None:
        with self._lock:
            if self.down_since is None:
                return
            lasted = time.monotonic() - self.down_since
            self.outages.append(lasted)
            self.down_since, self.delay, self.next_try = None, FIRST_RETRY_SECONDS, 0.0
        log.warning("job %s: the database is back after %.1f s; buffered progress is being written",
                    self.job_id, lasted)

    def check_limit(self) -> None:
        down_since = self.down_since
        if down_since is not None and time.monotonic() - down_since > self.limit:
            raise DatabaseUnavailable(
                f"the database was unreachable for {time.monotonic() - down_since:.0f} s, longer than this worker "
                f"waits (DATABASE_OUTAGE_LIMIT_SECONDS={self.limit:g}); last error: {self.last_error}")


def run_link(job_id: str) -> DatabaseLink:
    return DatabaseLink(job_id, get_settings().database_outage_limit_seconds)
