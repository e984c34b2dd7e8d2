"""One GET-with-retries for every upstream: httpx for HTTP, tenacity for backoff.

Each upstream supplies only `check`, the function that turns its error envelope into a typed
exception (CMC's `status.error_code`, CryptoCompare's `Response: Error` with HTTP 200, …).
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import dagster as dg
import httpx
from pydantic import Field
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from crypto_pipeline.resources.errors import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamMalformed,
    UpstreamPlanError,
    UpstreamRateLimited,
    UpstreamTransientError,
    UpstreamUnavailable,
)

log = logging.getLogger(__name__)

EMULATED_HEADER = "x-emulated"
MAX_RETRY_AFTER_SECONDS = 60.0

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Reply:
    body: Any
    emulated: bool


Check = Callable[[httpx.Response, Any], None]


class wait_retry_after_or_exponential:  # noqa: N801 - tenacity's naming for wait strategies
    """Honour a rate limit's Retry-After; otherwise exponential backoff."""

    def __init__(self, backoff_seconds: float) -> None:
        self.exponential = wait_exponential(multiplier=backoff_seconds, max=30)

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, UpstreamRateLimited) and error.retry_after is not None:
            return min(error.retry_after, MAX_RETRY_AFTER_SECONDS)
        return self.exponential(state)


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@cache
def tls_context() -> ssl.SSLContext:
    """httpx's default TLS settings, built once per process and shared by every client: loading
    the CA bundle costs ~20 ms of CPU, paid otherwise by each client of each run."""
    return httpx.create_ssl_context()


class UpstreamHttp:
    """A pooled HTTP client for one upstream, with timeouts and retries from configuration."""

    def __init__(
        self,
        upstream: str,
        base_url: str,
        *,
        headers: dict[str, str],
        check: Check,
        timeout_seconds: float,
        max_attempts: int,
        backoff_seconds: float,
        concurrency: int = 1,
    ) -> None:
        self.upstream, self.check, self.concurrency = upstream, check, concurrency
        # Nothing listening on this machine is the local emulator not started: say what to start.
        local = httpx.URL(base_url).host in ("127.0.0.1", "localhost", "::1")
        self.hint = f": nothing answers at {base_url}; start `make run` (or `python -m emulator`)" if local else ""
        self.client = httpx.Client(
            base_url=base_url,
            headers={"Accept": "application/json", **headers},
            timeout=timeout_seconds,
            limits=httpx.Limits(max_connections=concurrency),
            verify=tls_context(),
        )
        self.retrying = Retrying(
            retry=retry_if_exception_type(UpstreamTransientError),
            stop=stop_after_attempt(max_attempts),
            wait=wait_retry_after_or_exponential(backoff_seconds),
            before_sleep=self._log_retry,
            reraise=True,
        )

    def __enter__(self) -> UpstreamHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("%s: attempt %d failed (%s); retrying", self.upstream, state.attempt_number, error)

    def get(self, path: str, params: dict[str, Any], validate: Callable[[Any], None] | None = None) -> Reply:
        """GET `path`, retrying transient failures; `validate` may raise UpstreamMalformed too."""
        return self.retrying(self._get_once, path, params, validate)

    def _get_once(self, path: str, params: dict[str, Any], validate: Callable[[Any], None] | None) -> Reply:
        log.debug("%s: GET %s %s", self.upstream, path, params)  # keys travel in headers, never logged
        try:
            response = self.client.get(path, params=params)
        except httpx.TimeoutException as error:
            raise UpstreamUnavailable(self.upstream, f"{path} timed out ({type(error).__name__})") from None
        except httpx.TransportError as error:
            message = f"{path} unreachable ({type(error).__name__}){self.hint}"
            raise UpstreamUnavailable(self.upstream, message) from None
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            if response.status_code >= 500:
                raise UpstreamUnavailable(self.upstream, f"{path} answered HTTP {response.status_code}",
                                          status=response.status_code) from None  # fmt: skip
            raise UpstreamMalformed(self.upstream, f"{path} answered a body that is not JSON",
                                    status=response.status_code) from None  # fmt: skip
        self.check(response, body)
        if validate is not None:
            validate(body)
        return Reply(body=body, emulated=response.headers.get(EMULATED_HEADER) == "true")

    def map_concurrently(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """`fn` over `items` on at most `concurrency` threads, results in order."""
        items = list(items)
        if len(items) <= 1 or self.concurrency == 1:
            return iter([fn(item) for item in items])
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return iter(list(pool.map(fn, items)))


def raise_for_http_status(upstream: str, response: httpx.Response, message: str, key_setting: str) -> None:
    """The status-code half of error detection, shared by the upstreams that use HTTP codes."""
    status = response.status_code
    if status == 429:
        raise UpstreamRateLimited(upstream, message, retry_after=retry_after_seconds(response), status=status)
    if status >= 500:
        raise UpstreamUnavailable(upstream, message, status=status)
    if status == 401:
        raise UpstreamAuthError(upstream, f"{message}; check {key_setting}", status=status)
    if status in (402, 403):
        raise UpstreamPlanError(upstream, message, status=status)
    if status >= 400:
        raise UpstreamBadRequest(upstream, message, status=status)


class UpstreamResource(dg.ConfigurableResource):
    """What every upstream client configures the same way: timeouts, retries and concurrency."""

    timeout_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=4, ge=1)
    backoff_seconds: float = Field(default=0.5, ge=0)
    concurrency: int = Field(default=4, ge=1)

    def http(self, upstream: str, base_url: str, headers: dict[str, str], check: Check) -> UpstreamHttp:
        return UpstreamHttp(
            upstream,
            base_url,
            headers=headers,
            check=check,
            timeout_seconds=self.timeout_seconds,
            max_attempts=self.max_attempts,
            backoff_seconds=self.backoff_seconds,
            concurrency=self.concurrency,
        )
