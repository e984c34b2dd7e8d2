"""The schema at first use: created or upgraded by whichever process gets there first, once, even
when several start at the same moment; the Alembic revision is what is compared."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import inspect, text

from scripts.run_stack import new_database
from tests.conftest import ROOT
from warehouse.database import make_engine
from warehouse.migrate import VERSION_TABLE, current_revision, ensure_schema, head_revision, schema_problem
from warehouse.schema import metadata

STARTERS = 4
START_AND_ENSURE = (
    "import sys; from warehouse.migrate import ensure_schema; from warehouse.database import make_engine; "
    "ensure_schema(make_engine(sys.argv[1]))"
)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request, tmp_path):
    """A database with no warehouse schema at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    with new_database(server, f"toplist_fresh_{os.getpid()}") as url:
        yield url


def test_a_fresh_database_is_reported_then_created(empty_database):
    engine = make_engine(empty_database)
    problem = schema_problem(engine)
    assert problem is not None and "no warehouse schema" in problem and "python -m warehouse upgrade" in problem
    ensure_schema(engine)
    assert schema_problem(engine) is None
    assert set(metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_concurrent_starters_migrate_once(empty_database):
    starters = [
        subprocess.Popen([sys.executable, "-c", START_AND_ENSURE, empty_database], cwd=ROOT, stderr=subprocess.PIPE)
        for _ in range(STARTERS)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in starters]
    assert [p.returncode for p in starters] == [0] * STARTERS, errors
    engine = make_engine(empty_database)
    with engine.connect() as conn:
        assert current_revision(conn) == head_revision()
        assert conn.execute(text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar() == 1
    engine.dispose()


def test_an_outdated_or_unknown_revision_is_named(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'f00dfeed'"))
    problem = schema_problem(engine)
    assert "f00dfeed" in problem and "newer than this code knows" in problem
    with pytest.raises(RuntimeError, match="f00dfeed"):
        ensure_schema(engine)
    engine.dispose()
