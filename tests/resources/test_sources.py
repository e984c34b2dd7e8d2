"""Source files: validated at load with errors naming the file and the key; a spent daily quota is not retried."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import yaml

from crypto_pipeline.assets.top_assets import top_assets
from crypto_pipeline.assets.upstream import fetch_prices_and_rankings
from crypto_pipeline.partitions import MINUTE_FORMAT
from crypto_pipeline.resources.errors import UpstreamQuotaExhausted
from crypto_pipeline.resources.sources import SOURCES_DIR, SourceConfigError, load_source, sources_in
from tests.assets.test_pipeline import resources
from tests.resources.test_clients_emulator import cc

SHIPPED = yaml.safe_load((SOURCES_DIR / "cc_top_list.yaml").read_text())


def test_every_shipped_source_file_loads():
    names = set(sources_in(str(SOURCES_DIR)))
    assert {"cmc_listings_latest", "cmc_quotes_historical", "cc_top_list", "cc_totalvolfull"} <= names
    assert {"cc_histominute", "cc_histohour"} <= names


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s: s["fields"].update(cmc_id="ASSET_ALTERNATIVE_IDS[?NAME=='CMC'"),
            r"fields\.cmc_id: Value error, not a JMESPath",
        ),
        (lambda s: s.pop("records"), r"records: Field required"),
        (lambda s: s["fields"].update(colour="COLOUR"), r"unknown \['colour'\]"),
        (lambda s: s["fields"].pop("cc_id"), r"missing \['cc_id'\]"),
        (lambda s: s.update(base_url_setting="nowhere_url"), r"base_url_setting 'nowhere_url' is not a URL setting"),
        (lambda s: s["pagination"].update(style="cursor"), r"pagination\.style: Input should be 'page' or 'offset'"),
        (lambda s: s["auth"].update(template="Apikey"), r"auth: Value error, template must contain \{key\}"),
        (lambda s: s["errors"].update(rate_limit="99"), r"errors\.rate_limit: Input should be a valid list"),
        (lambda s: s.update(name="other"), r"name: 'other' must match the file name 'cc_top_list'"),
        (lambda s: s.update(eval="__import__('os')"), r"eval: Extra inputs are not permitted"),
    ],
)
def test_a_bad_source_file_is_rejected_naming_the_file_and_the_key(tmp_path, change, message):
    spec = yaml.safe_load(yaml.safe_dump(SHIPPED))
    change(spec)
    path = tmp_path / "cc_top_list.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SourceConfigError, match=message) as error:
        load_source(path)
    assert str(error.value).startswith(str(path))


def test_a_spent_daily_quota_fails_at_once_with_the_time_it_resets(emulator):
    emulator.set_faults({"cc_histominute": {"kind": "quota_exhausted"}})
    before = emulator.requests().get("cc_histominute", 0)
    with pytest.raises(
        UpstreamQuotaExhausted, match=r"day quota exhausted until (\S+) \(7500 of 7500 calls\)"
    ) as error:
        cc(emulator.url, max_attempts=4).history("XA", int(time.time()) - 600, 60)
    assert emulator.requests()["cc_histominute"] == before + 1  # not retried
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT00:00Z")
    assert error.match(tomorrow)


def test_a_past_minute_with_a_spent_quota_fails_without_retries(emulator, database_url, dagster_instance):
    emulator.set_faults({"cc_histominute": {"kind": "quota_exhausted"}})
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    result = dg.materialize(
        [fetch_prices_and_rankings, top_assets],
        partition_key=minute.strftime(MINUTE_FORMAT),
        resources=resources(emulator.url, database_url, historical_price_source="cryptocompare"),
        instance=dagster_instance,
        raise_on_error=False,
    )
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures and "quota exhausted until" in failures[0].step_failure_data.error.message
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
