"""A PostgreSQL server of a test's own (initdb into a temporary folder, a free port), so a fault test can
stop and start it while the shared server on 5432 stays up for everyone else.

The binaries refuse to run as root: as root they run as the `postgres` user (runuser).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

DATABASE = "adalora"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayPostgres:
    """One cluster in `folder`, listening on `host`:`port` only (no Unix socket), trust auth. With `netns`
    the server runs in that network namespace (a host of its own) and trusts `clients` (a CIDR) as well."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", netns: str | None = None,
                 clients: str | None = None) -> None:
        self.folder, self.host, self.port = folder, host, _free_port() if netns is None else 5432
        self.netns, self.clients = netns, clients
        self.data, self.log = folder / "data", folder / "server.log"
        self.url = f"postgresql+psycopg://postgres@{host}:{self.port}/{DATABASE}"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        prefix += ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True, check=check, timeout=60)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        if self.clients:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {self.clients} trust\n")
        self.start()
        import psycopg

        with psycopg.connect(f"postgresql://postgres@{self.host}:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses={self.host} -c unix_socket_directories='' -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: every session is cut off and the server shuts down cleanly, as in a restart."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", check=False)

    def is_running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0


@contextmanager
def throwaway_postgres(**where) -> Iterator[ThrowawayPostgres]:
    """A started server with an empty database `adalora`; stopped and deleted afterwards."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed")
    # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="adalora-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    server = ThrowawayPostgres(folder, **where)
    try:
        server.init()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
