"""The real clients against the emulator over loopback HTTP, including every fault kind."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

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
    config = dict(api_key="test-key", base_url=url, backoff_seconds=0.01, timeout_seconds=2.0, page_size=150)
    return CoinMarketCapResource(**{**config, **overrides})


def cc(url: str, **overrides) -> CryptoCompareResource:
    config = dict(api_key="test-key", data_api_url=url, min_api_url=url, backoff_seconds=0.01, timeout_seconds=2.0)
    return CryptoCompareResource(**{**config, **overrides})


def test_cmc_listings_pages_concurrently_and_match_the_market(emulator):
    fetch = cmc(emulator.url).listings_latest(400)
    assert len(fetch.records) == 400 and fetch.rejected == 0
    assert fetch.emulated and fetch.credits == 3  # three pages of at most 150, one credit each
    assert len({r.cmc_id for r in fetch.records}) == 400
    record = fetch.records[0]
    minute = int(record.last_updated.timestamp() // 60)
    assert record.price_usd == MARKET.by_cmc_id[record.cmc_id].price(minute)
    volumes = [r.volume_24h_usd for r in fetch.records]
    assert volumes == sorted(volumes, reverse=True)


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
        cmc(emulator.url, api_key="").listings_latest(10)
    with pytest.raises(UpstreamAuthError, match="1001"):
        cmc(emulator.url, api_key="invalid").listings_latest(10)
    with pytest.raises(UpstreamAuthError):
        cc(emulator.url, api_key="").top_by_volume(10)
    with pytest.raises(UpstreamAuthError, match="CRYPTOCOMPARE_API_KEY"):
        cc(emulator.url, api_key="").history("BTC", int(time.time()), 10)


TRANSIENT = [
    ("server_error", UpstreamUnavailable),
    ("unavailable", UpstreamUnavailable),
    ("rate_limited", UpstreamRateLimited),
    ("timeout", UpstreamUnavailable),
    ("malformed", UpstreamMalformed),
    ("truncated", UpstreamMalformed),
]
CALLS = {
    "cmc_listings_latest": lambda url, **kw: cmc(url, **kw).listings_latest(100),
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


@pytest.mark.parametrize("endpoint", ["cmc_listings_latest", "cc_top_list", "cc_histominute"])
@pytest.mark.parametrize(("kind", "error"), TRANSIENT)
def test_persistent_faults_raise_the_typed_error(emulator, endpoint, kind, error):
    emulator.set_faults({endpoint: {"kind": kind, "retry_after_seconds": 0, "timeout_seconds": 1}})
    with pytest.raises(error):
        CALLS[endpoint](emulator.url, **FAST_TIMEOUT)


def test_rate_limit_honours_retry_after(emulator):
    emulator.set_faults({"cmc_listings_latest": {"kind": "rate_limited", "times": 1, "retry_after_seconds": 1}})
    started = time.monotonic()
    cmc(emulator.url, backoff_seconds=0).listings_latest(10)
    assert time.monotonic() - started >= 1.0
