"""The emulated market looks like the real one: the genuine captures' symbols, names and CMC ids at
the top, real price and volume scales, and the quirks, all closed-form and deterministic."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from emulator.market import REAL_ASSETS, STABLECOINS, Market
from tests.conftest import FIXTURES

MARKET = Market(3000)
MINUTES = [29_000_000, 29_398_713, 29_400_000 + 777]  # 2025-02, 2025-11, 2025-12: any minute will do


def captured_cmc_listings() -> list[dict]:
    paths = FIXTURES.glob("cmc_listings_latest_*.json")
    return [item for path in paths for item in json.loads(path.read_text())["data"]]


def test_the_captured_cmc_assets_carry_their_real_ids_symbols_and_names():
    captured = captured_cmc_listings()
    ours = {a.cmc_id: a for a in MARKET.assets[: len(REAL_ASSETS)]}
    assert {1, 1027, 825} <= ours.keys()
    present = [item for item in captured if item["id"] in ours]
    assert len({item["id"] for item in present}) >= 30
    for item in present:
        assert (ours[item["id"]].cmc_symbol, ours[item["id"]].name) == (item["symbol"], item["name"])


def test_the_captured_cryptocompare_assets_carry_their_symbols_names_and_ids():
    (path,) = FIXTURES.glob("cryptocompare_toplist-*.json")
    captured = {int(item["CoinInfo"]["Id"]): item["CoinInfo"] for item in json.loads(path.read_text())["Data"]}
    ours = [a for a in MARKET.assets if a.cc_legacy_id in captured]
    assert len(ours) >= 25
    for asset in ours:
        info = captured[asset.cc_legacy_id]
        assert (asset.cc_symbol, asset.cc_name) == (info["Name"], info["FullName"])  # "Ordinals " keeps its space
    assert MARKET.by_cc_symbol["TONCOIN"].cmc_symbol == "TON"  # the symbols differ between upstreams


@pytest.mark.parametrize("minute", MINUTES)
def test_btc_eth_and_usdt_lead_by_volume_at_realistic_scales(minute):
    ranked = MARKET.ranked_by_volume(minute)
    assert {a.cmc_symbol for a in ranked[:4]} >= {"BTC", "ETH", "USDT"}
    btc = MARKET.by_cmc_id[1]
    assert 5e4 < btc.price(minute) < 1.5e5 and 1e10 < btc.volume_24h(minute) < 1e11
    for asset in MARKET.assets:
        if asset.cmc_symbol in STABLECOINS:
            assert asset.price(minute) == pytest.approx(1, abs=0.003)
    top = [a.price(minute) for a in ranked[:200]]
    assert min(top) < 1e-9 and max(top) > 1e6  # what a CSV or JSON renderer must survive
    assert sum(1 for price in top if price < 1e-4) >= 6  # SHIB, PEPE, BONK, FLOKI, BABYDOGE, …
    assert 1e5 < ranked[199].volume_24h(minute) < 1e7 and ranked[-1].volume_24h(minute) > 1e3


@pytest.mark.parametrize("minute", MINUTES)
def test_prices_keep_their_significant_digits(minute):
    for asset in MARKET.assets:
        price = asset.price(minute)
        assert 1e-10 <= price <= 1e7
        assert price == float(f"{price:.10g}")
        assert math.isclose(price, asset.base_price, rel_tol=0.1)


def test_the_quirks_are_still_there():
    assert Counter(a.cmc_symbol for a in MARKET.assets).most_common(1)[0][1] > 1  # shared CMC symbols
    assert len(MARKET.by_cc_symbol) == len(MARKET.assets)  # CryptoCompare's are unique
    kinds = Counter(a.cc_alternative_ids for a in MARKET.ranked_by_volume(MINUTES[0])[:250])
    assert kinds["full"] < 250 and {"null", "absent", "no_cmc"} & kinds.keys()
    assert any(a.nulls for a in MARKET.assets[:10])
    assert any(a.cc_name.endswith(" ") for a in MARKET.assets[len(REAL_ASSETS) :])
    assert MARKET.by_cmc_id[1839].cc_name == "Binance Coin" and MARKET.by_cmc_id[1839].name == "BNB"


def test_deterministic_and_closed_form():
    again = Market(3000)
    assert again.assets == MARKET.assets
    asset, minute = MARKET.assets[60], MINUTES[1]
    by_minute = sum(asset.minute_volume(m) for m in range(minute - 1439, minute + 1))
    assert asset.volume_24h(minute) == pytest.approx(by_minute, rel=1e-9)
    assert [a.cmc_symbol for a in Market(5).assets] == ["USDT", "BTC", "ETH", "USDC", "FDUSD"]
