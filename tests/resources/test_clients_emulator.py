"""The real clients against the emulator over loopback HTTP, including every fault kind."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from crypto_pipeline.resources.coinmarketcap import CoinMarketCapResource
from crypto_pipeline.resources.cryptocompare import CryptoCompareResource
from crypto_pipeline.resources.errors import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamMalformed,
    UpstreamPlanError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from emulator.market import Market

MARKET = Market(3000)  # the same seed and size as the emulator fixture


def cmc(url: str, **overrides) -> CoinMarketCapResource:
    config = dict(api_keys={"CMC_API_KEY": "test-key"}, base_url=url, backoff_seconds=0.01, timeout_seconds=2.0)
    return CoinMarketCapResource(**{**config, **overrides})


def cc(url: str, **overrides) -> CryptoCompareResource:
    config = dict(
        api_keys={"CRYPTOCOMPARE_API_KEY": "test-key"},
        data_api_url=url,
        min_api_url=url,
        backoff_seconds=0.01,
        timeout_seconds=2.0,
    )
    return CryptoCompareResource(**{**config, **overrides})


def test_cmc_quotes_latest_prices_exactly_the_ids_asked_for(emulator):
    ids = [a.cmc_id for a in MARKET.assets[-250:]]  # far down CMC's own volume order
    calls_before = emulator.requests().get("cmc_quotes_latest", 0)
    fetch = cmc(emulator.url).quotes_latest([*ids, *ids[:30]])  # repeated ids are asked for once
    assert sorted(r.cmc_id for r in fetch.records) == sorted(ids) and fetch.rejected == 0
    assert fetch.emulated and fetch.credits == 3  # 100 + 100 + 50 ids: 1 credit per 100 returned
    assert emulator.requests()["cmc_quotes_latest"] - calls_before == 3
    for record in fetch.records:
        asset = MARKET.by_cmc_id[record.cmc_id]
        assert record.price_usd == asset.price(int(record.last_updated.timestamp() // 60))
        assert record.symbol == asset.cmc_symbol


def test_cmc_quotes_latest_skips_and_counts_unknown_ids(emulator):
    unknown = max(MARKET.by_cmc_id) + 1000
    fetch = cmc(emulator.url).quotes_latest([MARKET.assets[0].cmc_id, unknown])
    assert [r.cmc_id for r in fetch.records] == [MARKET.assets[0].cmc_id]
    assert fetch.rejected == 1 and fetch.reasons == [f"id {unknown}: not returned by cmc_quotes_latest"]
    assert fetch.credits == 1


def test_cmc_quotes_latest_answers_in_the_v2_envelope(emulator):
    asset = MARKET.assets[3]
    body = httpx.get(
        f"{emulator.url}/v2/cryptocurrency/quotes/latest",
        params={"id": f"{asset.cmc_id},99999999"},
        headers={"X-CMC_PRO_API_KEY": "k"},
    )
    assert body.status_code == 400 and body.json()["status"]["error_code"] == 400  # unknown id, no skip_invalid
    body = httpx.get(
        f"{emulator.url}/v2/cryptocurrency/quotes/latest",
        params={"id": asset.cmc_id, "skip_invalid": "true"},
        headers={"X-CMC_PRO_API_KEY": "k"},
    ).json()
    record = body["data"][str(asset.cmc_id)]
    assert record["id"] == asset.cmc_id and set(record["quote"]["USD"]) >= {"price", "volume_24h", "last_updated"}
    assert body["status"]["credit_count"] == 1 and body["status"]["error_code"] == 0


def test_cc_top_list_ranks_by_volume_with_cmc_ids_where_known(emulator):
    fetch = cc(emulator.url).top_by_volume(250)
    assert [r.rank for r in fetch.records] == list(range(1, 251))
    assert fetch.emulated and fetch.rejected == 0
    missing = [r for r in fetch.records if r.cmc_id is None]
    assert missing, "the emulated market has assets without a CMC id"
    for record in fetch.records:
        asset = MARKET.by_cc_symbol[record.symbol]
        assert record.cmc_id == (asset.cmc_id if asset.cc_knows_cmc_id else None)
        assert record.name == asset.cc_name.strip()  # CryptoCompare's own name, trailing spaces trimmed


def test_cc_history_sums_to_the_24h_volume(emulator):
    asset = MARKET.assets[5]
    minute = int(time.time() // 60) - 30
    bars = cc(emulator.url).history(asset.cc_symbol, minute * 60, 1439).bars
    assert len(bars) == 1440 and bars[-1].time == minute * 60
    assert sum(b.volumeto for b in bars) == pytest.approx(asset.volume_24h(minute), rel=1e-9)
    hours = cc(emulator.url).history(asset.cc_symbol, minute * 60, 23, hourly=True).bars
    assert len(hours) == 24 and hours[-1].time == minute // 60 * 3600


def test_cc_history_older_than_seven_days_needs_hourly(emulator):
    old = int(time.time()) - 8 * 86400
    with pytest.raises(UpstreamBadRequest, match="7 days"):
        cc(emulator.url).history(MARKET.assets[0].cc_symbol, old, 10)
    assert len(cc(emulator.url).history(MARKET.assets[0].cc_symbol, old, 10, hourly=True).bars) == 11


def test_cmc_quotes_historical_cuts_a_long_range_into_windows_within_the_count_cap(emulator):
    now = datetime.now(UTC)
    end = now.replace(minute=now.minute // 5 * 5, second=0, microsecond=0) - timedelta(hours=1)
    start = end - timedelta(days=40)  # 11,521 five-minute quotes: more than one call's 10,000
    cmc_id = MARKET.assets[0].cmc_id
    calls_before = emulator.requests().get("cmc_quotes_historical", 0)
    series, fetch = cmc(emulator.url).quotes_historical([cmc_id], start, end)
    stamps = [stamp for stamp, _ in series[cmc_id]]
    assert emulator.requests()["cmc_quotes_historical"] - calls_before == 2
    assert stamps == [start + timedelta(minutes=5 * i) for i in range(11521)]  # no gap, no repeat
    assert fetch.credits == 116  # 1 credit per 100 data points, per call


def test_cmc_quotes_historical_batches_ids(emulator):
    ids = [a.cmc_id for a in MARKET.assets[:150]]
    now = datetime.now(UTC)
    end = now.replace(minute=now.minute // 5 * 5, second=0, microsecond=0) - timedelta(hours=3)  # 5m interval
    series, fetch = cmc(emulator.url).quotes_historical(ids, end - timedelta(minutes=30), end)
    assert set(series) == set(ids) and fetch.emulated
    assert emulator.requests()["cmc_quotes_historical"] >= 2  # 100 ids per call
    stamp, quote = series[ids[0]][-1]
    assert stamp == end and quote.price_usd == MARKET.by_cmc_id[ids[0]].price(int(end.timestamp() // 60))


def test_cmc_plan_without_history_is_a_clear_error(emulator):
    emulator.set_plan("basic")
    end = datetime.now(UTC)
    with pytest.raises(UpstreamPlanError, match="1006.*plan"):
        cmc(emulator.url).quotes_historical([1], end - timedelta(hours=1), end)


def test_missing_and_invalid_keys(emulator):
    with pytest.raises(UpstreamAuthError, match="1002"):
        cmc(emulator.url, api_keys={"CMC_API_KEY": ""}).quotes_latest([1])
    with pytest.raises(UpstreamAuthError, match="1001"):
        cmc(emulator.url, api_keys={"CMC_API_KEY": "invalid"}).quotes_latest([1])
    with pytest.raises(UpstreamAuthError):
        cc(emulator.url, api_keys={"CRYPTOCOMPARE_API_KEY": ""}).top_by_volume(10)
    with pytest.raises(UpstreamAuthError, match="CRYPTOCOMPARE_API_KEY"):
        cc(emulator.url, api_keys={"CRYPTOCOMPARE_API_KEY": ""}).history("BTC", int(time.time()), 10)


TRANSIENT = [
    ("server_error", UpstreamUnavailable),
    ("unavailable", UpstreamUnavailable),
    ("rate_limited", UpstreamRateLimited),
    ("timeout", UpstreamUnavailable),
    ("malformed", UpstreamMalformed),
    ("truncated", UpstreamMalformed),
]
CALLS = {
    "cmc_quotes_latest": lambda url, **kw: cmc(url, **kw).quotes_latest([a.cmc_id for a in MARKET.assets[:10]]),
    "cc_top_list": lambda url, **kw: cc(url, **kw).top_by_volume(100),
    "cc_histominute": lambda url, **kw: cc(url, **kw).history("BTC", int(time.time()) - 600, 60),
    "cmc_quotes_historical": lambda url, **kw: cmc(url, **kw).quotes_historical(
        [1], datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC)
    ),
}
FAST_TIMEOUT = {"timeout_seconds": 0.3}  # the emulator stalls 1 s on a timeout fault


@pytest.mark.parametrize("endpoint", CALLS)
@pytest.mark.parametrize(("kind", "error"), TRANSIENT)
def test_transient_faults_are_retried(emulator, endpoint, kind, error):
    """Two failures, then the fault heals: the client's retries absorb it."""
    emulator.set_faults({endpoint: {"kind": kind, "times": 2, "retry_after_seconds": 0, "timeout_seconds": 1}})
    CALLS[endpoint](emulator.url, **FAST_TIMEOUT)
    assert emulator.requests()[endpoint] >= 3


@pytest.mark.parametrize(
    ("endpoint", "kind", "error"),
    [
        (endpoint, kind, error)
        for endpoint in ("cmc_quotes_latest", "cc_top_list", "cc_histominute")
        for kind, error in TRANSIENT
        if (endpoint, kind) != ("cmc_quotes_latest", "truncated")  # not detectable: see the next test
    ],
)
def test_persistent_faults_raise_the_typed_error(emulator, endpoint, kind, error):
    emulator.set_faults({endpoint: {"kind": kind, "retry_after_seconds": 0, "timeout_seconds": 1}})
    with pytest.raises(error):
        CALLS[endpoint](emulator.url, **FAST_TIMEOUT)


def test_ids_missing_from_quotes_latest_are_counted_as_rejected(emulator):
    """A short quotes/latest answer looks like ids CMC skipped as invalid: not retried, but counted
    (and the merge's row_count check blocks a minute that lost too many)."""
    emulator.set_faults({"cmc_quotes_latest": {"kind": "truncated"}})
    ids = [a.cmc_id for a in MARKET.assets[:10]]
    fetch = cmc(emulator.url).quotes_latest(ids)
    assert len(fetch.records) == 5 and fetch.rejected == 5
    assert {r.cmc_id for r in fetch.records} | {int(reason.split()[1].rstrip(":")) for reason in fetch.reasons} == set(
        ids
    )


def test_rate_limit_honours_retry_after(emulator):
    emulator.set_faults({"cmc_quotes_latest": {"kind": "rate_limited", "times": 1, "retry_after_seconds": 1}})
    started = time.monotonic()
    cmc(emulator.url, backoff_seconds=0).quotes_latest([1])
    assert time.monotonic() - started >= 1.0
