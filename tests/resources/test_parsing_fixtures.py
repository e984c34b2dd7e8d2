"""Every genuine captured payload (tests/fixtures/upstream, see SOURCES.md) through the source files."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from crypto_pipeline.resources.errors import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamQuotaExhausted,
    UpstreamRateLimited,
    UpstreamSchemaError,
)
from crypto_pipeline.resources.sources import SOURCES_DIR, SourceClient, join_cmc_ids, search, sources_in
from tests.conftest import FIXTURES


def client(name: str) -> SourceClient:
    return SourceClient(sources_in(str(SOURCES_DIR))[name])


def load(name: str):
    return json.loads((FIXTURES / name).read_text())


def by_id(records, attr="cmc_id"):
    return {getattr(r, attr): r for r in records}


def test_cmc_listings_2022_default_sort():
    parsed = client("cmc_listings_latest").parse(load("cmc_listings_latest_nameissainath_2022-12-16.json"))
    assert parsed.rejected == 0 and len(parsed.records) == 30
    btc = by_id(parsed.records)[1]
    assert (btc.symbol, btc.name) == ("BTC", "Bitcoin")
    assert btc.price_usd == pytest.approx(16815.26797238245)
    assert btc.volume_24h_usd == pytest.approx(22984031596.08991)
    assert by_id(parsed.records)[825].volume_24h_usd == pytest.approx(28942714228.149967)
    assert by_id(parsed.records)[11419].symbol == "TON"


def test_cmc_quotes_latest_parses_genuine_records_in_the_v2_envelope():
    """quotes/latest v2 records have the listing shape, keyed by the id as a string (upstream_apis.md
    §1.2b; no genuine capture exists), so genuine listing records are wrapped as it answers."""
    listings = load("cmc_listings_latest_nameissainath_2022-12-16.json")
    body = {"status": listings["status"], "data": {str(r["id"]): r for r in listings["data"]}}
    body["data"]["1"]["quote"]["USD"]["price"] = 0
    parsed = client("cmc_quotes_latest").parse(body)
    assert len(parsed.records) == 29 and parsed.rejected == 1
    assert parsed.reasons == ["record 0: (values(data))[].quote.USD.price: Input should be greater than 0"]
    assert by_id(parsed.records)[11419].symbol == "TON"
    assert by_id(parsed.records)[825].volume_24h_usd == pytest.approx(28942714228.149967)


def test_cmc_listings_2020_sorted_by_volume_without_newer_fields():
    body = load("cmc_listings_latest_sort-volume24h_glartir_2020-06-30.json")
    parsed = client("cmc_listings_latest").parse(body)
    assert parsed.rejected == 0 and len(parsed.records) == 10
    assert [r.cmc_id for r in parsed.records[:3]] == [825, 1, 1027]  # list order, not cmc_rank
    btc = by_id(parsed.records)[1]
    assert btc.price_usd == pytest.approx(9188.66264947)
    assert btc.last_updated == datetime(2020, 6, 30, 9, 40, 26, tzinfo=UTC)
    assert search("status.total_count", body) is None


def test_cmc_listings_reject_missing_id_and_non_positive_price():
    body = load("cmc_listings_latest_nameissainath_2022-12-16.json")
    body["data"][0]["id"] = None
    body["data"][1]["quote"]["USD"]["price"] = 0
    body["data"][2]["quote"]["USD"]["price"] = "-1"
    body["data"][3]["quote"]["USD"]["price"] = "1.5"  # a string number is fine
    parsed = client("cmc_listings_latest").parse(body)
    assert parsed.rejected == 3 and len(parsed.records) == 27
    assert by_id(parsed.records)[body["data"][3]["id"]].price_usd == 1.5
    assert parsed.reasons[0].startswith("record 0: data[].id:")  # the upstream's field path
    assert parsed.reasons[1].startswith("record 1: data[].quote.USD.price:")


def test_a_cmc_id_beyond_int32_is_rejected_as_the_served_list_packs_int32():
    body = load("cmc_listings_latest_nameissainath_2022-12-16.json")
    assert max(item["id"] for item in body["data"]) < 100_000  # real ids are far from the bound
    body["data"][4]["id"] = 2**31
    parsed = client("cmc_listings_latest").parse(body)
    assert parsed.rejected == 1 and len(parsed.records) == len(body["data"]) - 1
    assert parsed.reasons[0].startswith("record 4: data[].id: Input should be less than 2147483648")


def test_cmc_missing_key_error_is_typed():
    body = load("cmc_error_1002-missing-key_coinmarketcapr-issue24_2020-03-23.json")
    with pytest.raises(UpstreamAuthError, match="API key missing.*1002.*CMC_API_KEY"):
        client("cmc_listings_latest").check(httpx.Response(401), body)


def test_cryptocompare_documented_top_list_example():
    parsed = client("cc_top_list").parse(load("cryptocompare_asset_toplist_DOCUMENTED-EXAMPLE_not-genuine.json"))
    (btc,) = parsed.records
    assert (btc.rank, btc.cc_id, btc.symbol, btc.cmc_id) == (1, 1, "BTC", 1)
    assert btc.price_usd == pytest.approx(102564.643975363)
    assert btc.volume_24h_usd == pytest.approx(26913933943.9413)


def test_cryptocompare_totalvolfull_2020():
    parsed = client("cc_totalvolfull").parse(load("cryptocompare_totalvolfull_cryptofreek_2020-01-18.json"))
    assert parsed.rejected == 0 and len(parsed.records) == 10
    btc = parsed.records[0]
    assert (btc.rank, btc.cc_id, btc.symbol, btc.cmc_id) == (1, 1182, "BTC", None)  # min-api has no CMC id
    assert btc.price_usd == pytest.approx(8885.99)
    assert btc.volume_24h_usd == pytest.approx(2359078302.8859205)
    assert [r.symbol for r in parsed.records[:3]] == ["BTC", "BCH", "ETH"]


def test_totalvolfull_reaches_the_cmc_id_through_the_legacy_id_map():
    """RANKING_SOURCE=cc_totalvolfull: the genuine list's CoinInfo.Id is the data-api's ID_LEGACY,
    whose ASSET_ALTERNATIVE_IDS hold the CMC id (the documented top/list example: BTC only)."""
    ranking = client("cc_totalvolfull")
    links = client("cc_legacy_cmc_ids").parse(load("cryptocompare_asset_toplist_DOCUMENTED-EXAMPLE_not-genuine.json"))
    assert [(link.id, link.cmc_id) for link in links.records] == [(1182, 1)]
    bridge = ranking.source.cmc_ids
    assert bridge.source == "cc_legacy_cmc_ids"
    parsed = ranking.parse(load("cryptocompare_totalvolfull_cryptofreek_2020-01-18.json"))
    joined = join_cmc_ids(parsed.records, links.records, bridge.match)
    assert [(r.symbol, r.cmc_id) for r in joined[:2]] == [("BTC", 1), ("BCH", None)]  # unmatched, still ranked
    assert len(joined) == 10 and [r.rank for r in joined] == list(range(1, 11))


@pytest.mark.parametrize(
    ("name", "count", "first_time", "volume"),
    [("cryptocompare_histohour-v2_cryptofreek_2020-01-18.json", 25, 1579251600, 307462804.24)],
)
def test_cryptocompare_histohour(name, count, first_time, volume):
    parsed = client("cc_histohour").parse(load(name))
    assert parsed.rejected == 0 and len(parsed.records) == count
    assert parsed.records[0].time == first_time
    assert sum(bar.volumeto for bar in parsed.records) == pytest.approx(volume)


def test_cryptocompare_errors_with_http_200_are_detected():
    with pytest.raises(UpstreamBadRequest, match="tsym is a required param.*tsym"):
        client("cc_histominute").check(
            httpx.Response(200), load("cryptocompare_error_missing-param_explorecoindesk_2026-01-02.json")
        )
    # The captured rate limit spent the day's calls (10973 of 7500): no retry can help today.
    spent = load("cryptocompare_error_ratelimit_telliot-pr388_2021-01-26.json")
    with pytest.raises(
        UpstreamQuotaExhausted, match=r"month quota exhausted until \d{4}-\d\d-01T00:00Z.*over your rate"
    ):
        client("cc_histominute").check(httpx.Response(200), spent)
    spent["RateLimit"]["calls_made"]["month"] = 100  # only the day is spent
    with pytest.raises(
        UpstreamQuotaExhausted, match=r"day quota exhausted until \d{4}-\d\d-\d\dT00:00Z \(10973 of 7500"
    ):
        client("cc_histominute").check(httpx.Response(200), spent)
    spent["RateLimit"]["calls_made"]["day"] = 100  # a per-second or per-minute limit: transient
    with pytest.raises(UpstreamRateLimited, match="over your rate limit"):
        client("cc_histominute").check(httpx.Response(200), spent)


def test_every_record_rejected_is_an_error_naming_the_field_path():
    body = load("cmc_listings_latest_nameissainath_2022-12-16.json")
    for record in body["data"]:
        record["quote"]["USD"]["price"] = None  # say the upstream renamed the field
    with pytest.raises(UpstreamSchemaError, match=r"all 30 records rejected; field path data\[\]\.quote\.USD\.price"):
        client("cmc_listings_latest").parse(body)


def test_every_historical_quote_rejected_is_an_error_naming_the_field_path():
    body = {"status": {"error_code": 0}, "data": {"1": {"id": 1, "symbol": "BTC", "name": "Bitcoin", "quotes": [
        {"timestamp": "2026-11-27T12:00:00Z", "quote": {"USD": {"price": 0}}}]}}}  # fmt: skip
    with pytest.raises(
        UpstreamSchemaError,
        match=r"field path \(data\.quotes && \[data\] \|\| values\(data\)\)\[\]\.quotes\[\]\.quote\.USD\.price",
    ):
        client("cmc_quotes_historical").parse(body)
