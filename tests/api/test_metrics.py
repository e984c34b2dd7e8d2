"""The metrics collector exposes exactly what prometheus_client's own Counter and Histogram would."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from api.metrics import Metrics


def exposition(registry: CollectorRegistry) -> str:
    """The text format, creation timestamps aside."""
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(registry).decode())


def test_the_collector_exposes_what_prometheus_clients_counter_and_histogram_would():
    reference, collected = CollectorRegistry(), CollectorRegistry()
    requests = Counter("api_requests", "HTTP requests", ["path", "status"], registry=reference)
    latency = Histogram("api_request_seconds", "Request latency", ["path"], registry=reference)
    metrics = Metrics(collected)
    # every bucket, its bounds exactly, just above them, and past the last
    seconds = [0.0, 0.004, 0.005, 0.0050001, 0.075, 0.3, 1.0, 2.5, 9.99, 10.0, 10.5, 3600.0]
    for i, (path, status) in enumerate([("/", 200), ("/", 304), ("/readyz", 503), ("unmatched", 404)] * 6):
        value = seconds[i % len(seconds)]
        requests.labels(path, str(status)).inc()
        latency.labels(path).observe(value)
        metrics.observe(path, status, value)
    assert exposition(collected) == exposition(reference)
