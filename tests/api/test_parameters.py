"""The rules every route's parameters share (api/parameters.py), over HTTP: a declared parameter
given twice, or holding a control character, is a 422 that names it, on every route, one added
later included; the fast path never learns such a query string."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import pytest
from fastapi import Query

from api.main import create_api
from common.settings import Settings
from tests.api.conftest import ApiServer, seed_snapshot, this_minute

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no query reaches the database


@pytest.mark.parametrize(
    ("path", "query", "detail"),
    [
        ("/", "limit=1&limit=5", "limit: given more than once ('1', '5'); give it once"),
        ("/", "format=csv&format=csv", "format: given more than once ('csv', 'csv')"),
        ("/", "datetime=2026-01-01T00:00Z&limit=3&datetime=1", "datetime: given more than once"),
        ("/", "limit=1&%6Cimit=x", "limit: given more than once ('1', 'x')"),  # the name as decoded
        ("/", "limit=&limit=2", "limit: given more than once ('', '2')"),
        ("/", "datetime=2026-01-01%00", "datetime: '2026-01-01\\x00' contains the control character U+0000"),
        ("/", "format=csv%09", "format: 'csv\\t' contains the control character U+0009"),
        ("/", "limit=5%0A", "U+000A"),
        ("/", "datetime=%1B[31m", "U+001B"),
        ("/", "datetime=2026%7F", "U+007F"),
        ("/", "datetime=2026%C2%85", "datetime: '2026\\x85' contains the control character U+0085"),  # C1 (NEL)
        ("/backfills/2026-01-01%00", "", "minute: '2026-01-01\\x00' contains the control character U+0000"),
        ("/backfills/2026%0D%0AX-Set:%201", "", "minute: '2026\\r\\nX-Set: 1' contains the control character U+000D"),
    ],
)  # fmt: skip
def test_a_repeated_parameter_or_a_control_character_is_refused_naming_it(api, store, path, query, detail):
    seed_snapshot(store, this_minute())
    with api() as server:
        answers = [server.get(f"{path}?{query}") for _ in range(2)]  # the second would be the fast path's
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert detail in answer.json()["detail"]


def test_parameters_a_route_does_not_declare_are_ignored(api, store):
    seed_snapshot(store, this_minute())
    with api() as server:
        answer = server.get("/?limit=2&utm=a&utm=b%00&x%00=1")
        health = server.get("/healthz?limit=1&limit=2")
        backfill = server.get("/backfills/2001-01-01T00:00Z?minute=a&minute=b")
    assert answer.status_code == 200 and answer.json()["count"] == 2
    assert health.status_code == 200
    assert backfill.status_code == 404


def test_a_route_added_later_has_the_rules_and_a_declared_list_repeats(database_url):
    """Whoever adds a route gets the rules without doing anything; a list parameter is how a route
    says a name is given more than once."""
    settings = Settings(database_url=database_url)
    api = create_api(settings)

    @api.get("/symbols")
    async def symbols(
        symbol: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI's way to declare a default list
        limit: int | None = None,
    ) -> dict:
        return {"symbol": symbol, "limit": limit}

    with ApiServer(settings, app=api) as server:
        listed = server.get("/symbols?symbol=BTC&symbol=ETH&limit=2")
        repeated = server.get("/symbols?symbol=BTC&limit=2&limit=3")
        control = server.get("/symbols?symbol=BTC&symbol=ET%00H")
    assert listed.status_code == 200 and listed.json() == {"symbol": ["BTC", "ETH"], "limit": 2}
    assert repeated.status_code == 422 and repeated.json()["detail"].startswith("limit: given more than once")
    assert control.status_code == 422 and control.json()["detail"].startswith("symbol: 'ET\\x00H' contains")


def test_a_refused_query_string_is_never_kept_for_the_fast_path(api, store, validations):
    """Its values one at a time are a valid query; given twice, FastAPI refuses them every time."""
    minute = this_minute() - timedelta(minutes=5)
    seed_snapshot(store, minute)
    query = f"datetime={minute:%Y-%m-%dT%H:%MZ}&limit=3&limit=3"
    with api() as server:
        answers = [server.get(f"/?{query}") for _ in range(3)]
        single = server.get(f"/?datetime={minute:%Y-%m-%dT%H:%MZ}&limit=3")
        queries = server.server.config.app.service.queries
    assert [answer.status_code for answer in answers] == [422, 422, 422]
    assert validations[0] == 1 and single.status_code == 200  # only the valid one reached the route
    assert query.encode() not in queries and len(queries) == 1
