"""Source files: validated at load with errors naming the file and the key; a spent daily quota is not retried."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import httpx
import jmespath
import jmespath.exceptions
import pytest
import yaml
from jmespath.parser import ParsedResult
from sqlalchemy import select

from crypto_pipeline.assets.top_assets import top_assets
from crypto_pipeline.assets.upstream import fetch_prices_and_rankings
from crypto_pipeline.partitions import MINUTE_FORMAT
from crypto_pipeline.resources.coinmarketcap import CoinMarketCapResource
from crypto_pipeline.resources.cryptocompare import CryptoCompareResource
from crypto_pipeline.resources.errors import UpstreamQuotaExhausted, UpstreamSchemaError
from crypto_pipeline.resources.parsing import CmcIdLink, RankingRecord
from crypto_pipeline.resources.sources import (
    PLAIN_PATH,
    SOURCES_DIR,
    SourceConfigError,
    _evaluator,
    join_cmc_ids,
    load_source,
    search,
    sources_in,
)
from tests.assets.test_pipeline import resources
from tests.conftest import FIXTURES, ROOT
from tests.resources.test_clients_emulator import MARKET, cc, cmc
from warehouse.schema import fetches, prices, rankings
from warehouse.store import Warehouse

SHIPPED = yaml.safe_load((SOURCES_DIR / "cc_top_list.yaml").read_text())


def materialize_minute(minute: datetime, run_resources: dict, instance, **options) -> dg.ExecuteInProcessResult:
    return dg.materialize([fetch_prices_and_rankings, top_assets], partition_key=minute.strftime(MINUTE_FORMAT),
                          resources=run_resources, instance=instance, **options)  # fmt: skip


def test_every_shipped_source_file_loads():
    names = set(sources_in(str(SOURCES_DIR)))
    assert {
        "cmc_quotes_latest",
        "cmc_listings_latest",
        "cmc_quotes_historical",
        "cc_top_list",
        "cc_totalvolfull",
        "cc_legacy_cmc_ids",
    } <= names
    assert {"cc_histominute", "cc_histohour"} <= names


def shipped_expressions(monkeypatch) -> set[str]:
    """Every expression the shipped source files hold: what loading them validates with `jmespath.compile`."""
    seen = set()
    compile_ = jmespath.compile
    monkeypatch.setattr(jmespath, "compile", lambda expression: seen.add(expression) or compile_(expression))
    for path in sorted(SOURCES_DIR.glob("*.yaml")):
        load_source(path)
    monkeypatch.undo()
    return seen


def edge_bodies(expression: str) -> list:
    """Bodies that stop a dotted path at each step on each JSON type, and some that fit it."""
    leaves = [None, "text", 0, 1.5, True, [], [{"x": 1}], {}, {"x": None}]
    bodies = [None, "text", 7, [], [{}], {}]
    names = expression.split(".")
    for depth in range(1, len(names) + 1):
        for leaf in leaves:
            body = leaf
            for name in reversed(names[:depth]):
                body = {name: body, "other": 1}
            bodies.append(body)
    return bodies


def test_plain_field_paths_read_as_jmespath_reads_them(monkeypatch):
    """Plain dotted names are read with dict lookups, not JMESPath's interpreter (a third of a
    range run's CPU): on every shipped expression and body shape the result must be JMESPath's."""
    expressions = shipped_expressions(monkeypatch)
    assert {"quote.USD.price", "close", "values(data)"} <= expressions
    for expression in sorted(expressions | set(PLAIN) | set(NOT_PLAIN)):
        for body in edge_bodies(expression):
            try:
                expected = jmespath.search(expression, body)
            except jmespath.exceptions.JMESPathError:  # e.g. values() of a list: read as missing
                expected = None
            assert search(expression, body) == expected, (expression, body)
            assert type(search(expression, body)) is type(expected), (expression, body)


PLAIN = ["close", "quote.USD.price", "_", "true", "a_1.B2"]  # JMESPath identifiers: `true` is a field, not a literal
NOT_PLAIN = ['"quoted".x', '"a b"', "a.b[0]", "a[*].b", "a.1", "\u00e9t\u00e9", "a..b", "a-b"]


def test_only_plain_paths_bypass_jmespath():
    """The dict-lookup reader takes exactly JMESPath's unquoted identifiers joined by dots; every
    other expression (quoted names, indexes, projections, non-ASCII, or not valid) goes to JMESPath."""
    for expression in PLAIN:
        assert not isinstance(getattr(_evaluator(expression), "__self__", None), ParsedResult), expression
    for expression in NOT_PLAIN:
        assert not PLAIN_PATH.fullmatch(expression), expression


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
        (lambda s: s.update(base_url_env="CC_URL"), r"give the host as one of base_url_setting or base_url_env"),
        (lambda s: s["auth"].update(env="cc key"), r"auth\.env: String should match pattern"),
        (
            lambda s: s.update(cmc_ids={"source": "cc_legacy_cmc_ids", "match": "legacy_id", "depth": 500}),
            r"cmc_ids: bridges a ranking on one of its fields",
        ),
        (lambda s: s.update(cmc_ids={"source": "cc_legacy_cmc_ids", "depth": 0}), r"cmc_ids\.depth: Input should be"),
        (lambda s: s.pop("pagination") and s.update(lookup={"depth": 1000}), r"lookup: reads a paged list \(pagi"),
        # stored as fetches.provider / snapshots.price_source, String(32): Postgres would refuse every minute
        (lambda s: s.update(provider="CoinDesk Data Asset Toplist API 2"), r"provider: String should have at most 32"),
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
        cc(emulator.url, max_attempts=4).history("BTC", int(time.time()) - 600, 60)
    assert emulator.requests()["cc_histominute"] == before + 1  # not retried
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT00:00Z")
    assert error.match(tomorrow)


def test_a_past_minute_with_a_spent_quota_fails_without_retries(emulator, database_url, dagster_instance):
    emulator.set_faults({"cc_histominute": {"kind": "quota_exhausted"}})
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    run_resources = resources(emulator.url, database_url, historical_price_source="cryptocompare")
    result = materialize_minute(minute, run_resources, dagster_instance, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures and "quota exhausted until" in failures[0].step_failure_data.error.message
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def altprice_file(folder, **changes) -> None:
    """A third price provider of CMC's quotes/latest shape, with its own name, label, key and host variables."""
    spec = yaml.safe_load((SOURCES_DIR / "cmc_quotes_latest.yaml").read_text())
    del spec["base_url_setting"]
    spec.update(name="altprice_latest", provider="AltPrice", base_url_env="ALTPRICE_BASE_URL", **changes)
    spec["auth"]["env"] = "ALTPRICE_API_KEY"
    (folder / "altprice_latest.yaml").write_text(yaml.safe_dump(spec))


def test_a_third_price_source_is_only_a_new_file(tmp_path, monkeypatch, emulator, database_url, dagster_instance):
    """A price provider of the same shape, added as one file in a folder of its own, prices a live minute
    from the host and with the key of the variables it names."""
    altprice_file(tmp_path)
    monkeypatch.setenv("ALTPRICE_API_KEY", "alt-key")
    monkeypatch.setenv("ALTPRICE_BASE_URL", emulator.url)
    monkeypatch.setenv("CMC_API_KEY", "invalid")  # the emulator refuses this one: it must not be what goes out
    run_resources = resources(emulator.url, database_url)
    run_resources["cmc"] = CoinMarketCapResource.wired(
        os.environ, base_url="http://127.0.0.1:9", live_source="altprice_latest",  # nothing listens on the CMC host
        sources_dirs=[str(SOURCES_DIR), str(tmp_path)], timeout_seconds=2.0, backoff_seconds=0.01,
    )  # fmt: skip
    assert run_resources["cmc"].api_keys == {"ALTPRICE_API_KEY": dg.EnvVar("ALTPRICE_API_KEY"),
                                             "CMC_API_KEY": dg.EnvVar("CMC_API_KEY")}  # fmt: skip
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    result = materialize_minute(minute, run_resources, dagster_instance)
    assert result.success
    store = Warehouse(database_url)
    snapshot = store.latest_snapshot()
    assert snapshot.minute == minute and snapshot.row_count == 200
    with store.engine.connect() as conn:
        query = select(fetches.c.dataset, fetches.c.provider).where(fetches.c.minute == minute)
        providers = dict(conn.execute(query).all())
    assert providers == {"prices": "altprice", "rankings": "cryptocompare"}


def test_the_code_location_refuses_a_bad_source_file_at_load(tmp_path):
    spec = yaml.safe_load((SOURCES_DIR / "cc_top_list.yaml").read_text())
    spec["fields"]["cmc_id"] = "ASSET_ALTERNATIVE_IDS[?NAME=='CMC'"
    (tmp_path / "cc_top_list.yaml").write_text(yaml.safe_dump(spec))
    environment = {**os.environ, "SOURCES_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    loaded = subprocess.run([sys.executable, "-c", "import crypto_pipeline.definitions"], env=environment,
                            cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert loaded.returncode != 0
    assert f"{tmp_path / 'cc_top_list.yaml'}: fields.cmc_id: Value error, not a JMESPath" in loaded.stderr
    environment.update(SOURCES_DIR="", LIVE_PRICE_SOURCE="cc_top_list")
    loaded = subprocess.run([sys.executable, "-c", "import crypto_pipeline.definitions"], env=environment,
                            cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "source cc_top_list gives ranking records, not price records" in loaded.stderr


def test_the_emulator_serves_totalvolfull_in_the_captured_shape(emulator):
    """RANKING_SOURCE=cc_totalvolfull against the emulator: the genuine capture's envelope and keys.

    The min-api list carries no CMC id (as upstream): each comes from the data-api id map, by legacy id."""
    captured = json.loads((FIXTURES / "cryptocompare_totalvolfull_cryptofreek_2020-01-18.json").read_text())
    served = httpx.get(f"{emulator.url}/data/top/totalvolfull", params={"tsym": "USD", "limit": 10},
                       headers={"authorization": "Apikey test-key"}).json()  # fmt: skip
    assert set(captured) <= set(served) and served["Type"] == captured["Type"] == 100
    for part in ("CoinInfo", "RAW"):
        wanted = captured["Data"][0][part] if part == "CoinInfo" else captured["Data"][0]["RAW"]["USD"]
        got = served["Data"][0][part] if part == "CoinInfo" else served["Data"][0]["RAW"]["USD"]
        used = {"Id", "Name", "FullName"} if part == "CoinInfo" else {"PRICE", "TOTALVOLUME24HTO", "LASTUPDATE"}
        assert used <= set(wanted) & set(got)
        assert {k: type(wanted[k]) for k in used} == {k: type(got[k]) for k in used}  # ids as strings, as captured
    ranking = cc(emulator.url, ranking_source="cc_totalvolfull").top_by_volume(150)
    assert [r.rank for r in ranking.records] == list(range(1, 151)) and ranking.provider == "cryptocompare"
    now = int(time.time() // 60)  # the emulator ranked at this minute or, across a boundary, the one before
    legacy = [[a.cc_legacy_id for a in MARKET.ranked_by_volume(m)[:150]] for m in (now, now - 1)]
    assert [r.cc_id for r in ranking.records] in legacy
    by_legacy_id = {a.cc_legacy_id: a for a in MARKET.assets}
    assets = [by_legacy_id[r.cc_id] for r in ranking.records]
    assert [r.cmc_id for r in ranking.records] == [a.cmc_id if a.cc_knows_cmc_id else None for a in assets]
    assert any(r.cmc_id is None for r in ranking.records)  # assets CryptoCompare knows no CMC id for stay unmatched


def test_a_live_minute_ranked_by_totalvolfull_is_priced_and_joined_on_cmc_id(emulator, database_url, dagster_instance):
    """Switching the ranking to min-api top/totalvolfull is configuration: the minute is priced and published."""
    run_resources = resources(emulator.url, database_url)
    run_resources["cryptocompare"] = cc(emulator.url, ranking_source="cc_totalvolfull")
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    result = materialize_minute(minute, run_resources, dagster_instance)
    assert result.success  # the blocking checks (row count, match rate) passed
    store = Warehouse(database_url)
    snapshot = store.latest_snapshot()
    served = store.snapshot_rows(snapshot.minute, 200)
    assert snapshot.minute == minute and snapshot.row_count == len(served) == 200
    with store.engine.connect() as conn:
        ranked = [dict(r._mapping) for r in conn.execute(
            select(rankings).where(rankings.c.minute == minute).order_by(rankings.c.rank))]  # fmt: skip
        (price_minute,) = set(conn.execute(select(prices.c.last_updated).where(prices.c.minute == minute)).scalars())
    by_legacy_id = {a.cc_legacy_id: a for a in MARKET.assets}
    for row in ranked:  # ranked by legacy id, each led to the CMC id the market gives that asset
        asset = by_legacy_id[row["cc_id"]]
        assert row["cmc_id"] == (asset.cmc_id if asset.cc_knows_cmc_id else None)
    priced_in_order = [r["cmc_id"] for r in ranked if r["cmc_id"] is not None][:200]
    assert [r["cmc_id"] for r in served] == priced_in_order
    served_minute = int(price_minute.timestamp() // 60)
    assert all(r["price_usd"] == MARKET.by_cmc_id[r["cmc_id"]].price(served_minute) for r in served)


def test_a_live_minute_priced_from_cmc_listings_is_joined_on_cmc_id(emulator, database_url, dagster_instance):
    """LIVE_PRICE_SOURCE=cmc_listings_latest is configuration: the ranked ids are looked up in one
    page of 1000 volume-sorted listings (5 credits), and the minute is priced and published."""
    run_resources = resources(emulator.url, database_url)
    run_resources["cmc"] = cmc(emulator.url, live_source="cmc_listings_latest")
    calls_before = emulator.requests()
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    result = materialize_minute(minute, run_resources, dagster_instance)
    assert result.success  # the blocking checks (row count, match rate) passed
    calls = {name: emulator.requests().get(name, 0) - calls_before.get(name, 0)
             for name in ("cmc_listings_latest", "cmc_quotes_latest")}  # fmt: skip
    assert calls == {"cmc_listings_latest": 1, "cmc_quotes_latest": 0}
    (materialization,) = [e.materialization for e in result.get_asset_materialization_events()
                          if e.materialization.asset_key == dg.AssetKey("prices")]  # fmt: skip
    assert materialization.metadata["cmc_credits"].value == 5
    store = Warehouse(database_url)
    snapshot = store.latest_snapshot()
    served = store.snapshot_rows(snapshot.minute, 200)
    assert snapshot.minute == minute and snapshot.row_count == len(served) == 200
    with store.engine.connect() as conn:
        ranked = select(rankings.c.cmc_id).where(rankings.c.minute == minute, rankings.c.cmc_id.is_not(None))
        ranked_ids = conn.execute(ranked.order_by(rankings.c.rank)).scalars().all()
        priced = conn.execute(select(prices.c.cmc_id, prices.c.last_updated).where(prices.c.minute == minute)).all()
    assert sorted(cmc_id for cmc_id, _ in priced) == sorted(set(ranked_ids))  # exactly the ranked ids, of 1000
    assert [r["cmc_id"] for r in served] == ranked_ids[:200]
    (price_minute,) = {int(updated.timestamp() // 60) for _, updated in priced}
    assert all(r["price_usd"] == MARKET.by_cmc_id[r["cmc_id"]].price(price_minute) for r in served)


def test_ids_listed_deeper_than_the_lookup_are_counted_not_priced(emulator):
    now = int(time.time() // 60)
    by_volume = [a for a in MARKET.ranked_by_volume(now) if a.cmc_id is not None]  # CMC's volume order too
    top, deep = [a.cmc_id for a in by_volume[:5]], by_volume[-1].cmc_id  # 3000 assets: far below 1000
    fetch = cmc(emulator.url, live_source="cmc_listings_latest").quotes_latest([*top, deep, *top])
    assert sorted(r.cmc_id for r in fetch.records) == sorted(top)
    assert fetch.rejected == 1 and fetch.reasons == [f"id {deep}: not in the first 1000 of cmc_listings_latest"]
    assert fetch.credits == 5 and fetch.provider == "coinmarketcap"


@pytest.fixture
def upstream_host():
    """Starts hosts answering every GET with the bytes `answer(query)` gives, each recording the path,
    query and key of its requests."""
    servers: list[ThreadingHTTPServer] = []

    def serve(answer: Callable[[dict[str, list[str]]], bytes]) -> tuple[str, list]:
        asked: list[tuple[str, dict[str, list[str]], str | None]] = []

        class Host(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                url = urlsplit(self.path)
                asked.append((url.path, parse_qs(url.query), self.headers.get("X-CMC_PRO_API_KEY")))
                body = answer(parse_qs(url.query))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep pytest's output clean
                pass

        servers.append(ThreadingHTTPServer(("127.0.0.1", 0), Host))
        threading.Thread(target=servers[-1].serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{servers[-1].server_address[1]}", asked

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def captured_listings(upstream_host):
    """A host answering every GET with the genuine `listings/latest?limit=10&sort=volume_24h` capture."""
    body = (FIXTURES / "cmc_listings_latest_sort-volume24h_glartir_2020-06-30.json").read_bytes()
    return upstream_host(lambda query: body)


def test_the_genuine_listings_capture_prices_the_ids_it_lists(tmp_path, captured_listings):
    """The shipped file, read 10 deep (as the capture was asked), over HTTP: the listed ids get the
    captured prices, an id it does not list is counted."""
    url, asked = captured_listings
    spec = yaml.safe_load((SOURCES_DIR / "cmc_listings_latest.yaml").read_text())
    spec["lookup"]["depth"] = 10
    (tmp_path / "cmc_listings_latest.yaml").write_text(yaml.safe_dump(spec))
    resource = cmc(url, live_source="cmc_listings_latest", sources_dirs=[str(SOURCES_DIR), str(tmp_path)])
    fetch = resource.quotes_latest([1, 1027, 5426])  # BTC, ETH; SOL was not in 2020's top 10 by volume
    query = {"start": ["1"], "limit": ["10"], "sort": ["volume_24h"], "convert": ["USD"]}
    assert asked == [("/v1/cryptocurrency/listings/latest", query, "test-key")]
    by_id = {r.cmc_id: r for r in fetch.records}
    assert sorted(by_id) == [1, 1027] and by_id[1].symbol == "BTC"
    assert by_id[1].price_usd == pytest.approx(9188.66264947)
    assert by_id[1].last_updated == datetime(2020, 6, 30, 9, 40, 26, tzinfo=UTC)
    assert fetch.rejected == 1 and fetch.reasons == ["id 5426: not in the first 10 of cmc_listings_latest"]
    assert fetch.credits == 1 and not fetch.emulated


def cmc_reply(records: list[dict], keyed: bool = False) -> bytes:
    """A CMC body of listing-shaped `records`: a list (listings/latest) or keyed by id (quotes/latest)."""
    data = {str(r["id"]): r for r in records} if keyed else records
    return json.dumps({"status": {"error_code": 0, "credit_count": 1, "total_count": 9999}, "data": data}).encode()


def listing(cmc_id: int, price: float | None) -> dict:
    return {"id": cmc_id, "symbol": f"S{cmc_id}", "name": f"N{cmc_id}", "quote": {"USD": {"price": price}}}


def test_an_asked_id_quoted_without_a_price_is_counted_once(upstream_host):
    """quotes/latest answers id 2 with a null price (CMC's untracked assets): one id unpriced, one rejection."""
    url, _ = upstream_host(lambda query: cmc_reply([listing(1, 10.0), listing(2, None), listing(3, 30.0)], keyed=True))
    fetch = cmc(url).quotes_latest([1, 2, 3])
    assert sorted(r.cmc_id for r in fetch.records) == [1, 3]
    assert fetch.rejected == 1


def test_a_batch_whose_only_asked_id_is_unpriced_fails_nothing_else(upstream_host):
    """101 ranked ids are two batches; CMC answers the last one's only id with a null price. That id
    is unpriced and counted, the other 100 priced: a format change is judged over the whole fetch,
    not one reply (the lone reply's every record rejected failed the minute's prices)."""

    def quotes(query: dict[str, list[str]]) -> bytes:
        ids = [int(i) for i in query["id"][0].split(",")]
        return cmc_reply([listing(i, None if i == 101 else float(i)) for i in ids], keyed=True)

    url, asked = upstream_host(quotes)
    fetch = cmc(url).quotes_latest(range(1, 102))
    assert len(asked) == 2
    assert [r.cmc_id for r in fetch.records] == list(range(1, 101)) and fetch.rejected == 1


def test_a_fetch_whose_every_record_is_rejected_is_a_changed_format(upstream_host):
    """Every asked id answered without a price, across both batches: not an empty answer."""
    url, _ = upstream_host(
        lambda query: cmc_reply([listing(int(i), None) for i in query["id"][0].split(",")], keyed=True)
    )
    with pytest.raises(UpstreamSchemaError, match=r"all 101 records rejected; field path .*price"):
        cmc(url).quotes_latest(range(1, 102))


def test_an_id_two_listings_pages_repeat_is_one_record(tmp_path, upstream_host):
    """Pages fetched concurrently from a list that reorders between them can repeat an id (and skip
    another): one record per id, the first page's, so rows and rejections count ids."""
    spec = yaml.safe_load((SOURCES_DIR / "cmc_listings_latest.yaml").read_text())
    spec["lookup"]["depth"], spec["pagination"]["max_size"] = 4, 2
    (tmp_path / "cmc_listings_latest.yaml").write_text(yaml.safe_dump(spec))
    pages = {"1": [listing(1, 10.0), listing(2, 20.0)], "3": [listing(2, 21.0), listing(3, 30.0)]}  # 4 moved up
    url, asked = upstream_host(lambda query: cmc_reply(pages[query["start"][0]]))
    resource = cmc(url, live_source="cmc_listings_latest", sources_dirs=[str(SOURCES_DIR), str(tmp_path)])
    fetch = resource.quotes_latest([1, 2, 3, 4])
    assert len(asked) == 2
    assert [(r.cmc_id, r.price_usd) for r in fetch.records] == [(1, 10.0), (2, 20.0), (3, 30.0)]
    assert fetch.rejected == 1 and fetch.reasons == ["id 4: not in the first 4 of cmc_listings_latest"]


@pytest.mark.parametrize(
    ("bridge", "message"),
    [
        ("cc_histominute", r"cmc_ids\.source: source cc_histominute gives bar records, not cmc_id_link records"),
        ("cc_no_such_map", r"cmc_ids\.source: no source file cc_no_such_map\.yaml in"),
        ("cc_unpaged_map", r"cmc_ids\.source: source cc_unpaged_map\.yaml: pagination: CryptoCompareResource reads"),
    ],
)
def test_a_bridge_that_is_no_paged_id_map_is_refused_at_load_naming_the_file_and_key(tmp_path, bridge, message):
    spec = yaml.safe_load((SOURCES_DIR / "cc_totalvolfull.yaml").read_text())
    spec["cmc_ids"]["source"] = bridge
    (tmp_path / "cc_totalvolfull.yaml").write_text(yaml.safe_dump(spec))
    unpaged = yaml.safe_load((SOURCES_DIR / "cc_legacy_cmc_ids.yaml").read_text())
    del unpaged["pagination"]
    (tmp_path / "cc_unpaged_map.yaml").write_text(yaml.safe_dump({**unpaged, "name": "cc_unpaged_map"}))
    with pytest.raises(SourceConfigError, match=rf"^source cc_totalvolfull\.yaml: {message}"):
        CryptoCompareResource.wired({"CRYPTOCOMPARE_API_KEY": "a-key"}, ranking_source="cc_totalvolfull",
                                    sources_dirs=[str(SOURCES_DIR), str(tmp_path)])  # fmt: skip


@pytest.mark.parametrize(
    ("resource", "config", "message"),
    [  # live prices ask for the ranked ids: in batches, or looked up in a list read `lookup.depth` deep
        (CoinMarketCapResource, {"live_source": "cmc_unbounded_list"},
         r"source cmc_unbounded_list\.yaml: batch or lookup: CoinMarketCapResource reads it by ids, the file has"),
        (CryptoCompareResource, {"ranking_source": "cc_unpaged_list"},
         r"source cc_unpaged_list\.yaml: pagination: CryptoCompareResource reads it by pagination, the file has none"),
    ],
)  # fmt: skip
def test_a_source_that_cannot_be_queried_as_its_use_needs_is_refused_at_load(tmp_path, resource, config, message):
    """Validated at load, not in every live minute's run (which failed: "takes no batch of ids")."""
    unpaged = yaml.safe_load((SOURCES_DIR / "cc_top_list.yaml").read_text())
    del unpaged["pagination"]
    (tmp_path / "cc_unpaged_list.yaml").write_text(yaml.safe_dump({**unpaged, "name": "cc_unpaged_list"}))
    unbounded = yaml.safe_load((SOURCES_DIR / "cmc_listings_latest.yaml").read_text())
    del unbounded["lookup"]  # a list, but no depth to read it to when asked for ids
    (tmp_path / "cmc_unbounded_list.yaml").write_text(yaml.safe_dump({**unbounded, "name": "cmc_unbounded_list"}))
    keys = {"CMC_API_KEY": "a-key", "CRYPTOCOMPARE_API_KEY": "a-key"}
    with pytest.raises(SourceConfigError, match=message):
        resource.wired(keys, sources_dirs=[str(SOURCES_DIR), str(tmp_path)], **config)


def test_an_id_the_map_leads_to_two_cmc_ids_stays_unmatched():
    """Never a guess: a legacy id with two CMC ids would price one of two assets under the ranked name."""
    links = [CmcIdLink(id=5, cmc_id=50), CmcIdLink(id=6, cmc_id=60), CmcIdLink(id=5, cmc_id=51),
             CmcIdLink(id=6, cmc_id=60), CmcIdLink(id=7, cmc_id=None)]  # fmt: skip
    ranked = [RankingRecord(rank=i, cc_id=cc_id, symbol=f"S{cc_id}", name=f"N{cc_id}") for i, cc_id in
              enumerate([5, 6, 7, 8], start=1)]  # fmt: skip
    joined = join_cmc_ids(ranked, links, "cc_id")
    assert [(r.cc_id, r.cmc_id) for r in joined] == [(5, None), (6, 60), (7, None), (8, None)]


def test_a_sources_dir_that_does_not_exist_is_refused(tmp_path):
    """SOURCES_DIR with a typo must not silently fall back to the shipped files."""
    missing = tmp_path / "sourcse"
    with pytest.raises(SourceConfigError, match=f"{missing}: not a folder of source files"):
        sources_in(str(SOURCES_DIR), str(missing))


@pytest.mark.parametrize(
    ("unset", "message"),
    [
        ("ALTPRICE_API_KEY", r"altprice_latest\.yaml: auth\.env: ALTPRICE_API_KEY is not set"),
        ("ALTPRICE_BASE_URL", r"altprice_latest\.yaml: base_url_env: ALTPRICE_BASE_URL is not set"),
    ],
)
def test_a_source_whose_variables_are_not_set_is_refused_at_load(tmp_path, monkeypatch, unset, message):
    altprice_file(tmp_path)
    for variable in ("ALTPRICE_API_KEY", "ALTPRICE_BASE_URL", "CMC_API_KEY"):
        monkeypatch.setenv(variable, "https://alt.example" if variable.endswith("URL") else "a-key")
    monkeypatch.delenv(unset)
    with pytest.raises(SourceConfigError, match=message):
        CoinMarketCapResource.wired(os.environ, live_source="altprice_latest",
                                    sources_dirs=[str(SOURCES_DIR), str(tmp_path)])  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"auth": {"header": "X-ALT-KEY", "env": "ALTPRICE_API_KEY"}},
         r"altprice_latest\.yaml: auth\.env: CoinMarketCapResource has no key from ALTPRICE_API_KEY"),
        ({"base_url_setting": "cryptocompare_data_api_url"},
         r"altprice_latest\.yaml: base_url_setting: CoinMarketCapResource has no CRYPTOCOMPARE_DATA_API_URL"),
        ({"base_url_setting": None, "base_url_env": "ALTPRICE_BASE_URL"},
         r"altprice_latest\.yaml: base_url_env: CoinMarketCapResource has no ALTPRICE_BASE_URL"),
    ],
)  # fmt: skip
def test_a_source_its_resource_cannot_serve_is_refused_before_any_request(tmp_path, change, message):
    """No key goes out under a header its file does not name; a host the resource lacks fails at load."""
    spec = yaml.safe_load((SOURCES_DIR / "cmc_listings_latest.yaml").read_text())
    spec.update(name="altprice_latest", provider="AltPrice", **change)
    (tmp_path / "altprice_latest.yaml").write_text(yaml.safe_dump(spec))
    cmc = CoinMarketCapResource(api_keys={"CMC_API_KEY": "cmc-key"}, sources_dirs=[str(SOURCES_DIR), str(tmp_path)])
    with pytest.raises(SourceConfigError, match=message):
        cmc.client("altprice_latest", "price")


def test_the_code_location_wires_the_key_variables_its_source_files_name(tmp_path):
    """definitions.py holds no variable name: a file naming another key variable is wired with it (as EnvVar)."""
    altprice_file(tmp_path)
    environment = {**os.environ, "SOURCES_DIR": str(tmp_path), "LIVE_PRICE_SOURCE": "altprice_latest",
                   "CMC_API_KEY": "cmc-secret", "CRYPTOCOMPARE_API_KEY": "cc-secret", "ALTPRICE_API_KEY": "alt-secret",
                   "ALTPRICE_BASE_URL": "https://alt.example", "PYTHONPATH": str(ROOT)}  # fmt: skip
    script = (
        "import crypto_pipeline.definitions as d\n"
        "for r in (d.cmc, d.cryptocompare):\n"
        "    print(sorted(r._get_non_default_public_field_values()['api_keys'].items()))\n"
        "print(d.cmc.source_urls)\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script], env=environment, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    cmc_keys, cc_keys, urls = loaded.stdout.splitlines()[-3:]
    # the variables' names, not their values: config shows EnvVar, never the secret
    assert cmc_keys == "[('ALTPRICE_API_KEY', 'ALTPRICE_API_KEY'), ('CMC_API_KEY', 'CMC_API_KEY')]"
    assert cc_keys == "[('CRYPTOCOMPARE_API_KEY', 'CRYPTOCOMPARE_API_KEY')]"
    assert urls == "{'ALTPRICE_BASE_URL': 'https://alt.example'}"
    assert "secret" not in loaded.stdout + loaded.stderr
