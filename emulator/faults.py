"""Fault injection, chosen per endpoint: what goes wrong, how often, and how slowly."""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, field

ENDPOINTS = (
    "cmc_listings_latest",
    "cmc_quotes_latest",
    "cmc_quotes_historical",
    "cc_top_list",
    "cc_histominute",
    "cc_histohour",
    "cc_totalvolfull",
)
FAULT_KINDS = ("server_error", "unavailable", "rate_limited", "quota_exhausted", "timeout", "malformed", "truncated")


@dataclass
class Fault:
    kind: str | None = None  # one of FAULT_KINDS, or None for no fault
    times: int | None = None  # fail this many requests, then heal; None = every request
    rate: float = 1.0  # probability that a request is hit (deterministic RNG)
    latency_ms: int = 0
    retry_after_seconds: int = 1
    timeout_seconds: float = 30.0  # how long a "timeout" fault stalls before answering

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; choose from {', '.join(FAULT_KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")


@dataclass
class FaultBoard:
    """Thread-safe per-endpoint faults, changeable while the server runs."""

    faults: dict[str, Fault] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)

    def set(self, endpoint: str, fault: Fault) -> None:
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; choose from {', '.join(ENDPOINTS)}")
        with self._lock:
            self.faults[endpoint] = fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def draw(self, endpoint: str) -> tuple[str | None, Fault]:
        """The fault kind this request suffers (or None), consuming one of its `times`."""
        with self._lock:
            fault = self.faults.get(endpoint, Fault())
            if fault.kind is None or fault.times == 0 or self._rng.random() >= fault.rate:
                return None, fault
            if fault.times is not None:
                fault.times -= 1
            return fault.kind, fault

    def describe(self) -> dict[str, dict]:
        with self._lock:
            return {name: asdict(f) for name, f in self.faults.items()}


def parse_fault_option(text: str) -> tuple[str, Fault]:
    """Parse `ENDPOINT=KIND[:RATE[:TIMES]]`, the form the command line takes."""
    endpoint, _, spec = text.partition("=")
    parts = spec.split(":")
    if not endpoint or not parts[0]:
        raise ValueError(f"expected ENDPOINT=KIND[:RATE[:TIMES]], got {text!r}")
    rate = float(parts[1]) if len(parts) > 1 and parts[1] else 1.0
    times = int(parts[2]) if len(parts) > 2 and parts[2] else None
    return endpoint, Fault(kind=parts[0], rate=rate, times=times)
