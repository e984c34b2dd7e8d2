"""The database goes away and comes back: 503 problem+json within the deadline, then recovery.

A TCP relay stands between the API and Postgres so the test can cut and restore the
connection without touching the server other tests use.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from sqlalchemy.engine import make_url

from tests.api.conftest import seed_snapshot, this_minute
from tests.conftest import free_port
from warehouse.store import Warehouse


class Relay:
    """Forwards a local port to Postgres; `cut()` drops every connection and refuses new ones."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None

    def open(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self) -> None:
        for sock in [self.listener, *self.sockets]:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked on it
            except OSError:
                pass
            sock.close()
        self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_database_down_is_a_fast_503_and_recovers(api, database_url, postgres_url):
    """Postgres only: an embedded SQLite file has no connection to lose. The API pings no connection
    before using it, so the lookup that finds one dropped retries on a new one."""
    server_url = make_url(postgres_url)
    relay = Relay((server_url.host, server_url.port or 5432))
    relay.open()
    relayed = server_url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    store = Warehouse(relayed)
    store.upgrade()
    minute = this_minute()
    seed_snapshot(store, minute)
    params = {"datetime": minute.strftime("%Y-%m-%dT%H:%M:00Z"), "limit": 5}
    with api(database_url=relayed, api_db_timeout_seconds=1.5, api_cache_entries=0) as server:
        assert server.get("/", params=params).status_code == 200
        relay.cut()
        started = time.monotonic()
        down = server.get("/", params={**params, "limit": 6})
        elapsed = time.monotonic() - started
        ready = server.get("/readyz")
        relay.open()
        time.sleep(0.2)
        recovered = server.get("/", params={**params, "limit": 7})
        relay.cut()  # restarted while no request came: every pooled connection is dead, nothing noticed it
        relay.open()
        after_restart = server.get("/", params={**params, "limit": 8})
    assert down.status_code == 503 and down.headers["content-type"] == "application/problem+json"
    assert "Retry-After" in down.headers and elapsed < 5
    assert ready.status_code == 503
    assert recovered.status_code == 200 and recovered.json()["count"] == 7
    assert after_restart.status_code == 200 and after_restart.json()["count"] == 8  # no pre-ping, no 503 either
