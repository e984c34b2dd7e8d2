"""The fast path serves from the service of the lifespan that is running, not the first one."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import uvicorn

from api.main import create_app
from common.settings import Settings
from tests.api.conftest import seed_snapshot, this_minute
from tests.api.test_fastpath import iso
from tests.conftest import free_port
from warehouse.store import Warehouse


def serve_once(app, requests: list[str], validations) -> list[int]:
    """Run uvicorn (lifespan included) on `app`, send each query string twice, return FastAPI's validations
    per repeat."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    counts = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for query in requests:
            assert client.get(f"/?{query}").status_code == 200
            before = validations[0]
            assert client.get(f"/?{query}").status_code == 200
            counts.append(validations[0] - before)
    server.should_exit = True
    thread.join(10)
    return counts


def test_a_second_lifespan_on_the_same_app_is_served_by_the_fast_path(database_url, validations):  # noqa: F811
    past = this_minute() - timedelta(minutes=30)
    seed_snapshot(Warehouse(database_url), past)
    app = create_app(Settings(database_url=database_url, history_start=datetime.now(UTC) - timedelta(days=30)))
    assert serve_once(app, [f"limit=5&datetime={iso(past)}"], validations) == [0]
    # The same app object started again (a test client re-entered, an embedding server restarting it):
    # a query string first validated now must be answered by the fast path on its repeat.
    assert serve_once(app, [f"limit=7&datetime={iso(past)}"], validations) == [0]
    assert app.service is app.app.state.toplist
