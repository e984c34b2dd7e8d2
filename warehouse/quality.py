"""What makes a minute fit to serve: the blocking checks, judged inside the merge transaction.

A minute that fails any of them is never written to the served tables (its previous version,
if any, stays), so the API never serves an empty or partial minute. The Dagster asset reports
the same verdicts as asset checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

BLOCKING_CHECKS = {
    "row_count": "At least depth x threshold rows (ranked x threshold when fewer than depth are ranked).",
    "ranks_contiguous": "Ranks are 1..n with no gap.",
    "unique_cmc_ids": "No CMC id appears twice.",
    "prices_positive": "Every price is above zero.",
}


def required_rows(depth: int, threshold: float, ranked: int) -> int:
    """`depth x threshold` rows, or `ranked x threshold` when the upstream ranks fewer than
    `depth` (one ranked asset needs its one row); never 0, so nothing empty is published.

    Not *every* ranked asset: some always lack a CMC id, so that would block every such minute."""
    return max(1, math.ceil(min(depth, ranked) * threshold))


@dataclass(frozen=True)
class MinuteQuality:
    """What the merge would serve for one minute, and how much of the ranking it priced."""

    minute: datetime
    rows: int
    min_rank: int | None
    max_rank: int | None
    distinct_cmc_ids: int
    min_price: float | None
    ranked: int
    matched: int
    top_ranked: int
    top_matched: int

    def failed_checks(self, depth: int, threshold: float) -> list[str]:
        """The names of the blocking checks this minute fails, in BLOCKING_CHECKS order."""
        verdicts = {
            "row_count": self.rows >= required_rows(depth, threshold, self.ranked),
            "ranks_contiguous": self.rows == 0 or (self.min_rank == 1 and self.max_rank == self.rows),
            "unique_cmc_ids": self.distinct_cmc_ids == self.rows,
            "prices_positive": self.rows == 0 or (self.min_price is not None and self.min_price > 0),
        }
        return [name for name, passed in verdicts.items() if not passed]

    def match_rate(self) -> float:
        """Share of the top ranked assets that found a price (a warning, never blocking)."""
        return self.top_matched / self.top_ranked if self.top_ranked else 0.0
