"""A warehouse without its schema: the API creates it at start, and when it is gone or outdated
later, says so as its own problem, never as "Database unavailable"."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.api.conftest import seed_snapshot, this_minute
from warehouse.migrate import VERSION_TABLE, ensure_schema
from warehouse.schema import metadata


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_api_creates_a_missing_schema_at_start(api, tmp_path):
    fresh = f"sqlite:///{tmp_path / 'never-migrated.db'}"
    an_hour_ago = (this_minute() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%MZ")
    with api(database_url=fresh) as server:
        answer = server.get("/", params={"datetime": an_hour_ago})
    assert answer.status_code == 202  # not stored yet: a backfill request was recorded, in the new schema


def test_a_schema_dropped_under_the_api_is_its_own_problem(api, store):
    minute = this_minute()
    seed_snapshot(store, minute)
    with api(api_cache_entries=0) as server:
        assert server.get("/", params={"limit": 3}).status_code == 200
        with store.engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(text(f"DROP TABLE {table.name}"))
            conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
        answer = server.get("/", params={"limit": 4})
        ensure_schema(store.engine)  # what the detail asks for; then the API answers from it again
        after = server.get("/", params={"datetime": (minute - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%MZ")})
    assert answer.status_code == 503 and answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["title"] == "Warehouse schema not ready"
    assert "no warehouse schema" in problem["detail"] and "`python -m warehouse upgrade`" in problem["detail"]
    assert "unavailable" not in problem["detail"].lower()
    assert after.status_code == 202  # the request is recorded in the recreated schema


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_table_missing_at_the_head_revision_is_a_schema_problem_not_an_outage(api, store):
    """A partial restore (`pg_dump -t …` of some tables) leaves the version table at head and a table gone."""
    seed_snapshot(store, this_minute())
    with api(api_cache_entries=0) as server:
        with store.engine.begin() as conn:
            conn.execute(text("DROP TABLE toplist_snapshots"))
        answer = server.get("/", params={"limit": 4})
    metadata.tables["toplist_snapshots"].create(store.engine)  # for the fixture's cleanup
    assert answer.status_code == 503
    problem = answer.json()
    assert problem["title"] == "Warehouse schema not ready", problem
    assert "toplist_snapshots" in problem["detail"]
