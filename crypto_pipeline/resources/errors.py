"""Typed upstream errors: what went wrong, in words an operator can act on.

Transient errors are retried with backoff; the others fail the fetch at once. No message
ever contains an API key: keys travel in headers, never in URLs.
"""

from __future__ import annotations


class UpstreamError(Exception):
    """An upstream answered with an error, or not at all."""

    def __init__(self, upstream: str, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(f"{upstream}: {message}")
        self.upstream, self.status, self.code = upstream, status, code


class UpstreamTransientError(UpstreamError):
    """Worth retrying: the same request may well succeed a little later."""


class UpstreamUnavailable(UpstreamTransientError):
    """5xx, a timeout or a dropped connection."""


class UpstreamRateLimited(UpstreamTransientError):
    """429 or a rate-limit body; `retry_after` is the server's hint in seconds, if it gave one."""

    def __init__(self, upstream: str, message: str, *, retry_after: float | None = None, **kw) -> None:
        super().__init__(upstream, message, **kw)
        self.retry_after = retry_after


class UpstreamMalformed(UpstreamTransientError):
    """A body that is not JSON, or a list shorter than the upstream said it would be."""


class UpstreamAuthError(UpstreamError):
    """The API key is missing, invalid or disabled: set the key (see docs/settings.md)."""


class UpstreamPlanError(UpstreamError):
    """The key's subscription plan does not include this endpoint (CMC error 1006 and friends)."""


class UpstreamQuotaExhausted(UpstreamError):
    """The key's day or month allowance is spent: retrying in seconds cannot help, the message says until when."""


class UpstreamBadRequest(UpstreamError):
    """The upstream rejected a parameter; a bug or a configuration error on our side."""


class UpstreamSchemaError(UpstreamError):
    """The body is JSON but not the shape we rely on (the upstream changed its format)."""


# Only an operator heals these (a key, a plan): a backfill request failing on one says so, and
# asking again is worth it once they are fixed. A spent quota heals by itself.
PERMANENT_ERRORS = (UpstreamAuthError, UpstreamPlanError)


def worth_a_quick_retry(error: BaseException) -> bool:
    """Whether retrying in seconds may help: a transient upstream error, or an error nobody
    classified (a dropped database connection, a bug). A known upstream refusal (key, plan,
    quota, bad request, changed format) would fail again at once."""
    return isinstance(error, UpstreamTransientError) or not isinstance(error, UpstreamError)
