"""A deterministic crypto market: every price and volume is a pure function of (asset, minute).

Any past minute can therefore be served, and a test can recompute exactly what the emulator
answered. Volumes are sums of sines so the 24-hour volume ending at any minute has a closed
form: ranking a universe of 100,000 assets needs no per-minute history in memory.

The universe carries the quirks real upstreams have: symbols shared by two CMC assets,
CryptoCompare assets with no CMC id (null, absent or without a CMC entry), null optional
fields and ids served as strings.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache

MINUTES_PER_DAY = 1440
TWO_PI = 2 * math.pi

# Every n-th asset carries one quirk; the values are primes so quirks rarely coincide.
DUPLICATE_SYMBOL_EVERY = 37  # shares its CMC symbol with the previous asset
NO_CMC_ID_EVERY = 23  # CryptoCompare knows no CMC id for it
NULL_FIELDS_EVERY = 7  # CMC sends nulls in optional fields
TRAILING_SPACE_EVERY = 41  # CryptoCompare's name has a trailing space


@dataclass(frozen=True, slots=True)
class Asset:
    index: int
    cmc_id: int
    cc_id: int
    cc_legacy_id: int
    cmc_symbol: str
    cc_symbol: str
    name: str
    cc_alternative_ids: str  # "full" | "null" | "absent" | "no_cmc"
    nulls: bool
    base_price: float
    base_volume: float  # USD per minute around which the volume oscillates
    volume_period: float  # minutes
    volume_phase: float
    price_period: float
    price_phase: float
    supply: float

    def price(self, minute: int) -> float:
        """USD price at unix minute `minute`."""
        wave = math.sin(TWO_PI * minute / self.price_period + self.price_phase)
        return round(self.base_price * (1 + 0.04 * wave), 10)

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
        return self.name + (" " if self.index % TRAILING_SPACE_EVERY == 5 else "")

    @property
    def cc_knows_cmc_id(self) -> bool:
        return self.cc_alternative_ids == "full"


def _symbol(index: int) -> str:
    letters = ""
    n = index
    while True:
        letters = chr(ord("A") + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            break
    return "X" + letters


def _make_asset(index: int, rng: random.Random) -> Asset:
    quirk = index % NO_CMC_ID_EVERY
    alternative_ids = "full"
    if index and quirk == 0:
        alternative_ids = ("null", "absent", "no_cmc")[(index // NO_CMC_ID_EVERY) % 3]
    symbol = _symbol(index)
    cmc_symbol = _symbol(index - 1) if index and index % DUPLICATE_SYMBOL_EVERY == 0 else symbol
    # A power law: a few assets dominate volume, as in the real market.
    base_volume = 5e7 / (index + 1) ** 1.1 * rng.uniform(0.7, 1.3)
    return Asset(
        index=index,
        cmc_id=1 + index * 7,
        cc_id=1 + index,
        cc_legacy_id=1000 + index * 3,
        cmc_symbol=cmc_symbol,
        cc_symbol=symbol,
        name=f"Emulated Coin {symbol}",
        cc_alternative_ids=alternative_ids,
        nulls=index % NULL_FIELDS_EVERY == 3,
        base_price=round(10 ** rng.uniform(-4, 4.8), 8),
        base_volume=base_volume,
        volume_period=rng.uniform(300, 5000),
        volume_phase=rng.uniform(0, TWO_PI),
        price_period=rng.uniform(60, 2000),
        price_phase=rng.uniform(0, TWO_PI),
        supply=round(10 ** rng.uniform(6, 11)),
    )


class Market:
    """The universe of assets and the rankings derived from it."""

    def __init__(self, size: int = 3000, seed: int = 7) -> None:
        if size < 1:
            raise ValueError("the universe needs at least one asset")
        rng = random.Random(seed)
        self.assets = [_make_asset(i, rng) for i in range(size)]
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
