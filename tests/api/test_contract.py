"""oas.yaml is the contract: the served /openapi.json must say the same, and the app must keep it."""

from __future__ import annotations

from datetime import timedelta

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import seed_snapshot, this_minute
from tests.conftest import ROOT

CONTRACT = yaml.safe_load((ROOT / "oas.yaml").read_text())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_served_openapi_matches_oas_yaml(api):
    with api() as server:
        served = server.get("/openapi.json").json()
    assert served["paths"].keys() == CONTRACT["paths"].keys()
    for path, operations in CONTRACT["paths"].items():
        for method, operation in operations.items():
            live = served["paths"][path][method]
            assert live.get("parameters") == operation.get("parameters"), f"{method.upper()} {path} parameters"
            assert live["responses"] == operation["responses"], f"{method.upper()} {path} responses"
    assert served["components"]["schemas"] == CONTRACT["components"]["schemas"]
    assert served == CONTRACT


SCHEMA = schemathesis.openapi.from_dict(CONTRACT)


@pytest.fixture
def seeded_server(api, store):
    minute = this_minute()
    for offset in (0, 1, 2):
        seed_snapshot(store, minute - timedelta(minutes=offset))
    with api(history_start=minute - timedelta(days=3)) as server:
        yield server


@SCHEMA.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_schemathesis_finds_no_5xx_and_no_schema_violation(case, seeded_server):
    """Bounded property-based calls from oas.yaml against the real server (both backends)."""
    case.call_and_validate(
        base_url=seeded_server.url,
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance, status_code_conformance],
    )
