"""A deterministic crypto market: every price and volume is a pure function of (asset, minute).

Any past minute can therefore be served, and a test can recompute exactly what the emulator
answered. Volumes are sums of sines so the 24-hour volume ending at any minute has a closed
form: ranking a universe of 100,000 assets needs no per-minute history in memory.

It looks like the real market so a demo persuades and real formatting problems show: the
first assets are real ones, with the symbols, names and CoinMarketCap ids of the genuine
captures in `shared/fixtures/upstream/` and prices and volumes of their real order of
magnitude (stablecoins at $1, BTC near $90,000, SHIB, PEPE and BONK below $0.0001, Baby Doge
near $1e-9). A generated tail follows, with a power law of volumes and prices spread from
1e-10 to 1e6 dollars. Everything it serves is still labelled emulated (`X-Emulated: true`).

The universe carries the quirks real upstreams have: symbols shared by two CMC assets,
CryptoCompare assets with no CMC id (null, absent or without a CMC entry), symbols and names
that differ between the two (TON is TONCOIN on CryptoCompare, BNB is "Binance Coin"), null
optional fields and ids served as strings.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

MINUTES_PER_DAY = 1440
TWO_PI = 2 * math.pi
PRICE_DIGITS = 10  # significant digits of a price: $3.7e-10 keeps its precision as $91,234.56 does

# Every n-th generated asset carries one quirk; the values are primes so quirks rarely coincide.
DUPLICATE_SYMBOL_EVERY = 37  # shares its CMC symbol with the previous asset
NO_CMC_ID_EVERY = 23  # CryptoCompare knows no CMC id for it
NULL_FIELDS_EVERY = 7  # CMC sends nulls in optional fields (every asset, real or generated)
TRAILING_SPACE_EVERY = 41  # CryptoCompare's name has a trailing space

# Generated assets with extreme prices, within the top 200 by volume: renderers must cope.
PINNED_TAIL_PRICES = {70: 3.7e-10, 90: 1.25e6}
TAIL_FIRST_CMC_ID = 40_000  # above every real CMC id below
TAIL_FIRST_CC_LEGACY_ID = 2_000_000


class RealAsset(NamedTuple):
    cmc_symbol: str
    cmc_name: str
    cmc_id: int
    cc_symbol: str
    cc_name: str
    cc_legacy_id: int | None  # CryptoCompare's CoinInfo.Id where a capture shows it
    price: float  # USD, around which it moves
    volume_24h: float  # USD, CryptoCompare spot volume, around which it moves
    market_cap: float  # USD


# Symbols, names and CMC ids as in the genuine captures (cmc_listings_latest_*.json; CryptoCompare
# names and ids from cryptocompare_toplist-nonfull-toptiervol_*.json). The assets only CryptoCompare's
# capture lists carry their public CMC ids. Prices, volumes and market caps: late-2026 magnitudes.
REAL_ASSETS = [
    RealAsset("USDT", "Tether", 825, "USDT", "Tether", 171986, 1.0002, 6.2e10, 1.86e11),
    RealAsset("BTC", "Bitcoin", 1, "BTC", "Bitcoin", 1182, 91_250.0, 3.8e10, 1.81e12),
    RealAsset("ETH", "Ethereum", 1027, "ETH", "Ethereum", 7605, 3_015.0, 2.1e10, 3.64e11),
    RealAsset("USDC", "USD Coin", 3408, "USDC", "USD Coin", 925809, 0.9999, 9.1e9, 7.6e10),
    RealAsset("FDUSD", "First Digital USD", 26081, "FDUSD", "First Digital USD", 953803, 0.9987, 4.6e9, 7.1e8),
    RealAsset("SOL", "Solana", 5426, "SOL", "Solana", 934443, 138.4, 4.2e9, 7.7e10),
    RealAsset("XRP", "XRP", 52, "XRP", "XRP", 5031, 2.18, 3.5e9, 1.31e11),
    RealAsset("BNB", "BNB", 1839, "BNB", "Binance Coin", 204788, 884.0, 1.9e9, 1.22e11),
    RealAsset("DOGE", "Dogecoin", 74, "DOGE", "Dogecoin", 4432, 0.1521, 1.6e9, 2.3e10),
    RealAsset("ADA", "Cardano", 2010, "ADA", "Cardano", 321992, 0.4186, 6.5e8, 1.5e10),
    RealAsset("TRX", "TRON", 1958, "TRX", "TRON", None, 0.2847, 5.8e8, 2.7e10),
    RealAsset("PEPE", "Pepe", 24478, "PEPE", "Pepe", 953245, 4.42e-6, 5.5e8, 1.86e9),
    RealAsset("LINK", "Chainlink", 1975, "LINK", "Chainlink", None, 13.12, 5.2e8, 8.9e9),
    RealAsset("LTC", "Litecoin", 2, "LTC", "Litecoin", 3808, 84.2, 4.4e8, 6.4e9),
    RealAsset("AVAX", "Avalanche", 5805, "AVAX", "Avalanche", 935805, 13.61, 4.1e8, 5.8e9),
    RealAsset("BCH", "Bitcoin Cash", 1831, "BCH", "Bitcoin Cash", None, 545.3, 3.1e8, 1.09e10),
    RealAsset("ENA", "Ethena", 30171, "ENA", "Ethena", 960603, 0.2688, 2.6e8, 1.9e9),
    RealAsset("UNI", "Uniswap", 7083, "UNI", "Uniswap", None, 6.07, 2.4e8, 3.8e9),
    RealAsset("SHIB", "Shiba Inu", 5994, "SHIB", "Shiba Inu", 940776, 8.61e-6, 2.2e8, 5.1e9),
    RealAsset("WIF", "dogwifhat", 28752, "WIF", "dogwifhat", 954285, 0.4213, 2.1e8, 4.2e8),
    RealAsset("DOT", "Polkadot", 6636, "DOT", "Polkadot", None, 2.35, 2.0e8, 3.8e9),
    RealAsset("ARB", "Arbitrum", 11841, "ARB", "Arbitrum", 952987, 0.2104, 2.0e8, 1.2e9),
    RealAsset("WBTC", "Wrapped Bitcoin", 3717, "WBTC", "Wrapped Bitcoin", None, 91_190.0, 2.0e8, 1.17e10),
    RealAsset("NEAR", "NEAR Protocol", 6535, "NEAR", "Near", 937105, 1.952, 1.8e8, 2.5e9),
    RealAsset("BONK", "Bonk", 23095, "BONK", "Bonk", 952339, 1.052e-5, 1.4e8, 8.7e8),
    RealAsset("WLD", "Worldcoin", 13502, "WLD", "Worldcoin", 953718, 0.6105, 1.3e8, 1.4e9),
    RealAsset("XLM", "Stellar", 512, "XLM", "Stellar", None, 0.2487, 1.2e8, 8.0e9),
    RealAsset("TON", "Toncoin", 11419, "TONCOIN", "The Open Network", 945129, 1.623, 1.1e8, 4.0e9),
    RealAsset("ETC", "Ethereum Classic", 1321, "ETC", "Ethereum Classic", None, 13.24, 1.0e8, 2.0e9),
    RealAsset("DAI", "Dai", 4943, "DAI", "Dai", None, 1.0001, 1.0e8, 4.4e9),
    RealAsset("XMR", "Monero", 328, "XMR", "Monero", None, 391.5, 7.0e7, 7.2e9),
    RealAsset("FLOKI", "FLOKI", 10804, "FLOKI", "Floki Inu", 942222, 5.13e-5, 6.0e7, 4.9e8),
    RealAsset("ATOM", "Cosmos", 3794, "ATOM", "Cosmos", None, 2.452, 6.0e7, 1.1e9),
    RealAsset("EOS", "EOS", 1765, "EOS", "EOS", None, 0.5512, 6.0e7, 8.6e8),
    RealAsset("ORDI", "ORDI", 25028, "ORDI", "Ordinals ", 954055, 4.93, 5.0e7, 1.0e8),
    RealAsset("RUNE", "THORChain", 4157, "RUNE", "Thorchain", 932760, 0.6517, 5.0e7, 2.3e8),
    RealAsset("ALGO", "Algorand", 4030, "ALGO", "Algorand", None, 0.1352, 4.5e7, 1.2e9),
    RealAsset("BOME", "BOOK OF MEME", 29870, "BOME", "BOOK OF MEME", 960870, 8.14e-4, 4.0e7, 5.6e7),
    RealAsset("MATIC", "Polygon", 3890, "MATIC", "Polygon", None, 0.3811, 3.0e7, 3.8e9),
    RealAsset("CRO", "Cronos", 3635, "CRO", "Cronos", None, 0.1053, 2.5e7, 3.7e9),
    RealAsset("TRB", "Tellor", 4944, "TRB", "Tellor", 933019, 23.1, 2.0e7, 6.1e7),
    RealAsset("JTO", "Jito", 28541, "JTO", "Jito", 954194, 0.4987, 2.0e7, 1.9e8),
    RealAsset("BABYDOGE", "Baby Doge Coin", 10407, "BABYDOGE", "Baby Doge Coin", None, 1.21e-9, 1.5e7, 1.7e8),
    RealAsset("OKB", "OKB", 3897, "OKB", "OKB", None, 110.2, 1.5e7, 2.3e9),
    RealAsset("BSV", "Bitcoin SV", 3602, "BSV", "Bitcoin SV", None, 19.54, 1.5e7, 3.9e8),
    RealAsset("BUSD", "Binance USD", 4687, "BUSD", "Binance USD", None, 0.9994, 3.0e6, 6.1e7),
    RealAsset("LEO", "UNUS SED LEO", 3957, "LEO", "UNUS SED LEO", None, 9.31, 2.5e6, 8.6e9),
    RealAsset("FRONT", "Frontier", 5893, "FRONT", "Frontier", 936585, 0.1021, 2.0e6, 1.0e7),
]
STABLECOINS = {"USDT", "USDC", "FDUSD", "DAI", "BUSD"}

# Names for the generated tail: a pronounceable word and, for some, what such projects call themselves.
ONSETS = ["b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "kr", "st", "tr", "x"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "io"]
SUFFIXES = ["", "", "", " Protocol", " Network", " Finance", " Chain", " AI", " Swap", " Inu", " DAO", " Token"]


@dataclass(frozen=True, slots=True)
class Asset:
    index: int
    cmc_id: int
    cc_id: int
    cc_legacy_id: int
    cmc_symbol: str
    cc_symbol: str
    name: str  # CoinMarketCap's name
    cc_display_name: str  # CryptoCompare's name, sometimes different ("Binance Coin" for BNB)
    cc_alternative_ids: str  # "full" | "null" | "absent" | "no_cmc"
    nulls: bool
    base_price: float
    volatility: float  # relative amplitude of the price wave
    base_volume: float  # USD per minute around which the volume oscillates
    volume_period: float  # minutes
    volume_phase: float
    price_period: float
    price_phase: float
    supply: float

    def price(self, minute: int) -> float:
        """USD price at unix minute `minute`."""
        wave = math.sin(TWO_PI * minute / self.price_period + self.price_phase)
        return float(f"{self.base_price * (1 + self.volatility * wave):.{PRICE_DIGITS}g}")

    def minute_volume(self, minute: int) -> float:
        """USD traded during the minute starting at unix minute `minute`."""
        wave = math.sin(TWO_PI * minute / self.volume_period + self.volume_phase)
        return self.base_volume * (1 + 0.6 * wave)

    def volume_between(self, first_minute: int, count: int) -> float:
        """USD traded during `count` minutes starting at `first_minute` (closed form)."""
        step = TWO_PI / self.volume_period
        start = TWO_PI * first_minute / self.volume_period + self.volume_phase
        sine_sum = math.sin(count * step / 2) / math.sin(step / 2) * math.sin(start + (count - 1) * step / 2)
        return self.base_volume * (count + 0.6 * sine_sum)

    def volume_24h(self, minute: int) -> float:
        """USD traded in the 24 hours ending with (and including) `minute`."""
        return round(self.volume_between(minute - MINUTES_PER_DAY + 1, MINUTES_PER_DAY), 2)

    @property
    def cmc_name(self) -> str:
        return self.name

    @property
    def cc_name(self) -> str:
        return self.cc_display_name

    @property
    def cc_knows_cmc_id(self) -> bool:
        return self.cc_alternative_ids == "full"


def _real_asset(index: int, real: RealAsset, rng: random.Random) -> Asset:
    stable = real.cmc_symbol in STABLECOINS
    return Asset(
        index=index,
        cmc_id=real.cmc_id,
        cc_id=1 + index,
        cc_legacy_id=real.cc_legacy_id or TAIL_FIRST_CC_LEGACY_ID - 1 - index,
        cmc_symbol=real.cmc_symbol,
        cc_symbol=real.cc_symbol,
        name=real.cmc_name,
        cc_display_name=real.cc_name,
        cc_alternative_ids="full",
        nulls=index % NULL_FIELDS_EVERY == 3,
        base_price=real.price,
        volatility=0.0004 if stable else rng.uniform(0.01, 0.05),
        **_volume_wave(real.volume_24h, rng),
        supply=round(real.market_cap / real.price / 0.8),  # the emulator serves 80% as circulating
    )


def _volume_wave(volume_24h: float, rng: random.Random) -> dict[str, float]:
    return dict(
        base_volume=volume_24h / MINUTES_PER_DAY,
        volume_period=rng.uniform(300, 5000),
        volume_phase=rng.uniform(0, TWO_PI),
        price_period=rng.uniform(60, 2000),
        price_phase=rng.uniform(0, TWO_PI),
    )


def _tail_name(rng: random.Random) -> tuple[str, str]:
    """A generated project: (name, symbol)."""
    word = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(rng.randint(2, 3)))
    return word.capitalize() + rng.choice(SUFFIXES), word[: rng.randint(3, 5)].upper()


def _tail_asset(index: int, position: int, previous: Asset, taken: set[str], rng: random.Random) -> Asset:
    """The generated asset at `index`, `position` places after the last real one."""
    name, symbol = _tail_name(rng)
    while symbol in taken:  # CryptoCompare symbols are unique; CMC's are not (see below)
        symbol += rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    taken.add(symbol)
    alternative_ids = "full"
    if index % NO_CMC_ID_EVERY == 0:
        alternative_ids = ("null", "absent", "no_cmc")[(index // NO_CMC_ID_EVERY) % 3]
    # A power law continuing below the real assets: ~$40M a day at its top, ~$1M at rank 200, ~$70k at 3,000.
    volume_24h = 4e7 * position**-0.8 * rng.uniform(0.7, 1.3)
    price = PINNED_TAIL_PRICES.get(position) or 10 ** min(6.0, max(-10.0, rng.gauss(-1.5, 1.8)))
    return Asset(
        index=index,
        cmc_id=TAIL_FIRST_CMC_ID + index * 7,
        cc_id=1 + index,
        cc_legacy_id=TAIL_FIRST_CC_LEGACY_ID + index * 3,
        cmc_symbol=previous.cmc_symbol if index % DUPLICATE_SYMBOL_EVERY == 0 else symbol,
        cc_symbol=symbol,
        name=name,
        cc_display_name=name + (" " if index % TRAILING_SPACE_EVERY == 5 else ""),
        cc_alternative_ids=alternative_ids,
        nulls=index % NULL_FIELDS_EVERY == 3,
        base_price=float(f"{price:.6g}"),
        volatility=rng.uniform(0.01, 0.08),
        **_volume_wave(volume_24h, rng),
        supply=round(volume_24h * rng.uniform(2, 30) / price / 0.8),
    )


class Market:
    """The universe of assets and the rankings derived from it."""

    def __init__(self, size: int = 3000, seed: int = 7) -> None:
        if size < 1:
            raise ValueError("the universe needs at least one asset")
        rng = random.Random(seed)
        self.assets = [_real_asset(i, real, rng) for i, real in enumerate(REAL_ASSETS[:size])]
        taken = {a.cc_symbol for a in self.assets} | {a.cmc_symbol for a in self.assets}
        for index in range(len(self.assets), size):
            position = index - len(REAL_ASSETS) + 1
            self.assets.append(_tail_asset(index, position, self.assets[-1], taken, rng))
        self.by_cmc_id = {a.cmc_id: a for a in self.assets}
        self.by_cc_symbol = {a.cc_symbol: a for a in self.assets}
        self._ranked = lru_cache(maxsize=8)(self._rank)

    def ranked_by_volume(self, minute: int) -> list[Asset]:
        """All assets by 24h volume ending at `minute`, largest first (cached per minute)."""
        return self._ranked(minute)

    def _rank(self, minute: int) -> list[Asset]:
        return sorted(self.assets, key=lambda a: (-a.volume_24h(minute), a.index))

    def cmc_volume_24h(self, asset: Asset, minute: int) -> float:
        """CMC counts volume differently from CryptoCompare (quote side included)."""
        return round(asset.volume_24h(minute) * 1.37, 2)
