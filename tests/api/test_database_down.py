"""The database goes away and comes back: 503 problem+json within the deadline, then recovery.

A TCP relay stands between the API and Postgres so the test can cut and restore the
connection without touching the server other tests use.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import make_url

from tests.api.conftest import seed_snapshot, this_minute
from tests.conftest import free_port
from warehouse.store import Warehouse


class Relay:
    """Forwards a local port to Postgres; `cut()` drops every connection and refuses new ones,
    `hang()` keeps them but forwards nothing (a server stopped with SIGSTOP) until `resume()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.flowing = threading.Event()
        self.flowing.set()

    def hang(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def open(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self) -> None:
        self.flowing.set()
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

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass


@pytest.fixture
def relayed(postgres_url) -> Iterator[tuple[Relay, str]]:
    """The test database behind a relay: (the relay, the URL through it). Postgres only: an embedded
    SQLite file has no connection to lose."""
    server_url = make_url(postgres_url)
    relay = Relay((server_url.host, server_url.port or 5432))
    relay.open()
    url = server_url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    Warehouse(url).upgrade()
    yield relay, url
    relay.cut()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_database_down_is_a_fast_503_and_recovers(api, database_url, relayed):
    """The API pings no connection before using it, so the lookup that finds one dropped retries
    on a new one."""
    relay, relayed = relayed
    store = Warehouse(relayed)
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


def minute_with_seconds_left(seconds: float) -> None:
    """Wait, if need be, until the current minute has `seconds` left: "now" must stay one minute."""
    if (left := 60 - time.time() % 60) < seconds:
        time.sleep(left + 0.1)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("outage", ["cut", "hang"])
def test_during_an_outage_the_answers_a_process_holds_are_still_served_marked(api, database_url, relayed, outage):
    """A stored minute and "now" within its minute, once answered, are answered again while the
    database is stopped (connections refused) or hung (nothing answers): marked X-Stale, at once
    (only one request a second waits for the deadline). What the process does not hold, or no
    longer holds rightly (a stand-in, "now" of a minute gone by), is the outage's 503."""
    relay, relayed = relayed
    store = Warehouse(relayed)
    minute_with_seconds_left(25)
    now, past = this_minute(), this_minute() - timedelta(minutes=10)
    seed_snapshot(store, now)
    seed_snapshot(store, past)
    stored = {"datetime": past.strftime("%Y-%m-%dT%H:%M:00Z"), "limit": 5}
    stand_in = {"datetime": (past + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:00Z"), "limit": 5}
    deadline = 1.5
    with api(database_url=relayed, api_db_timeout_seconds=deadline) as server:
        before = {name: server.get("/", params=params) for name, params in
                  (("stored", stored), ("now", {"limit": 5}), ("stand-in", stand_in))}  # fmt: skip
        assert {name: r.status_code for name, r in before.items()} == {"stored": 200, "now": 200, "stand-in": 200}
        getattr(relay, outage)()
        time.sleep(1.1)  # every resolution expired: each answer is looked up again
        timed = []

        def held_answer() -> None:
            started = time.monotonic()
            held = server.get("/", params=stored)
            timed.append(time.monotonic() - started)
            assert held.status_code == 200 and held.headers["x-stale"].startswith("database unavailable")
            assert held.content == before["stored"].content and held.headers["etag"] == before["stored"].headers["etag"]

        held_answer()  # the first probe: a hung database makes it wait for the deadline
        time.sleep(1.05)  # a second later the next request probes again...
        probe = threading.Thread(target=held_answer)
        probe.start()
        time.sleep(0.2)
        for _ in range(4):  # ...while the others are answered at once
            held_answer()
        probe.join()
        held_now = server.get("/", params={"limit": 5})
        never_asked = server.get("/", params={**stored, "limit": 6})
        stood_in = server.get("/", params=stand_in)
        relay.resume() if outage == "hang" else relay.open()
        time.sleep(deadline + 1.2)  # the next probe finds the database
        recovered = server.get("/", params=stored)
    assert held_now.status_code == 200 and "x-stale" in held_now.headers
    assert held_now.json()["snapshot_time"] == now.strftime("%Y-%m-%dT%H:%M:00Z")
    assert never_asked.status_code == stood_in.status_code == 503
    assert max(timed[1:5]) < 0.5 and timed[0] < deadline + 1  # only the probes wait (a hang: the deadline)
    assert recovered.status_code == 200 and "x-stale" not in recovered.headers
