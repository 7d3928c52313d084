"""The database goes away and comes back: meanwhile the API answers 503 with Retry-After (never a 500),
and afterwards the same process serves again with no restart (a failed statement invalidates the pool's
connections; an idle one is pinged before use)."""

from __future__ import annotations

import socket
import sqlite3
import threading

import pytest
from sqlalchemy import make_url

from api.errors import DATABASE_RETRY_AFTER_SECONDS
from service import db
from tests.api.conftest import tiny_spec


class TcpProxy:
    """Forwards a local port to Postgres; `stop` cuts every connection and refuses new ones, like a
    database host going down, and `start` brings it back on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sockets: list[socket.socket] = []
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    def start(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        for sock in [self.listener, *self.sockets]:
            _close(sock)
        self.sockets.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # stopped
            upstream = socket.create_connection(self.upstream)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    _close(source)
    _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept/recv on it
    except OSError:
        pass
    sock.close()


def assert_unavailable(client, headers, job_id: str) -> None:
    for response in (client.get("/v1/jobs", headers=headers), client.get(f"/v1/jobs/{job_id}", headers=headers),
                     client.post("/v1/jobs", json=tiny_spec(), headers=headers)):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == str(DATABASE_RETRY_AFTER_SECONDS)
        assert "database is unavailable" in response.json()["detail"]


def test_api_is_503_while_the_database_is_down_and_recovers_by_itself(client, alice, seed_job, database_url,
                                                                      env_override, tmp_path, request):
    job_id = seed_job(alice, "running")
    if database_url.startswith("sqlite"):
        # The database file replaced by a folder (unopenable), then restored from the module's database.
        path = tmp_path / "outage.sqlite"
        path.mkdir()
        env_override(DATABASE_URL=f"sqlite:///{path}")
        assert_unavailable(client, alice, job_id)
        path.rmdir()
        with sqlite3.connect(make_url(database_url).database) as source, sqlite3.connect(path) as target:
            source.backup(target)
    else:
        url = make_url(database_url)
        proxy = TcpProxy((url.host, url.port or 5432))
        proxy.start()
        env_override(DATABASE_URL=url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
        assert client.get("/v1/jobs", headers=alice).status_code == 200  # pooled connections now exist
        proxy.stop()
        assert_unavailable(client, alice, job_id)
        proxy.start()
        request.addfinalizer(proxy.stop)
    response = client.get("/v1/jobs", headers=alice)
    assert response.status_code == 200, response.text
    assert client.get(f"/v1/jobs/{job_id}", headers=alice).status_code == 200
    assert client.post("/v1/jobs", json=tiny_spec(), headers=alice).status_code == 201


def test_a_pooled_connection_that_died_while_idle_is_replaced_unnoticed(client, alice, seed_job, database_url,
                                                                         env_override, monkeypatch, request):
    """A database restart while the API was quiet: the first requests afterwards are served, not 503'd, because
    a connection idle for longer than PING_IDLE_SECONDS is pinged and replaced before use."""
    if database_url.startswith("sqlite"):
        pytest.skip("a SQLite file has no server to restart")
    job_id = seed_job(alice, "running")
    url = make_url(database_url)
    proxy = TcpProxy((url.host, url.port or 5432))
    proxy.start()
    request.addfinalizer(proxy.stop)
    env_override(DATABASE_URL=url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    assert client.get(f"/v1/jobs/{job_id}", headers=alice).status_code == 200  # pooled connections now exist
    assert client.get("/v1/jobs", headers=alice).status_code == 200
    proxy.stop()  # the restart: every connection cut ...
    proxy.start()  # ... and the server back
    monkeypatch.setattr(db, "PING_IDLE_SECONDS", 0.0)  # "idle for long enough", without waiting
    for path in (f"/v1/jobs/{job_id}", "/v1/jobs"):
        response = client.get(path, headers=alice)
        assert response.status_code == 200, response.text
