"""A daemon thread that does one piece of work every few seconds: heartbeats, reconciler passes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Calls `work()` every `interval` seconds until stopped. A failing call (the database or broker is
    down) is logged and simply tried again at the next tick: it must never kill the process around it."""

    def __init__(self, name: str, interval: float, work: Callable[[], None]) -> None:
        self.name, self.interval, self.work = name, interval, work
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Periodic:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.work()
            except Exception:
                log.warning("%s failed; trying again in %s s", self.name, self.interval, exc_info=True)
