"""Content negotiation (RFC 9110 §12.5): the format an Accept header prefers, and whether an encoding is accepted."""

from __future__ import annotations

import re

from api.memo import MEMO_ENTRIES, Memo
from api.problems import ProblemError

ZERO_QUALITY = re.compile(r"q\s*=\s*0(\.0{0,3})?\s*$")


def accepts(header: str, token: str) -> bool:
    """`token` is listed in an Accept-Encoding header, unless refused with `;q=0` (RFC 9110 §12.4.2)."""
    header = header.lower()
    if ";" not in header:  # the common case, without parameters
        return token in header
    items = (item.split(";") for item in header.split(","))
    return any(token in name and not any(ZERO_QUALITY.match(p.strip()) for p in params) for name, *params in items)


# The formats `GET /` serves, as (format, type, subtype); JSON first: the default at a tie.
SERVED_FORMATS = (("json", "application", "json"), ("csv", "text", "csv"))


QVALUE = re.compile(r"[01](\.\d{0,3})?")


MEMO_ACCEPT_CHARS = 256  # longer Accept headers are negotiated every time: the memo stays ~1 MB


FORMAT_BY_ACCEPT = Memo(MEMO_ENTRIES)  # Accept header -> the format it prefers


def preferred_format(accept: str) -> str:
    """The format an Accept header prefers, kept per header (the common ones cost a dict lookup);
    406 when it admits neither JSON nor CSV."""
    fmt = FORMAT_BY_ACCEPT.get(accept)
    if fmt is None:
        fmt = negotiate(accept)
        if len(accept) <= MEMO_ACCEPT_CHARS:
            FORMAT_BY_ACCEPT[accept] = fmt
    return fmt


def negotiate(accept: str) -> str:
    """Content negotiation (RFC 9110 §12.5.1): each format takes the quality of the most specific
    range that matches it (`text/csv`, then `text/*`, then `*/*`). The higher quality wins, then
    the more specific range (`text/*, application/json` is JSON), then the range listed first,
    then JSON. A q that is not a qvalue counts as 1; other media type parameters are ignored."""
    ranges = [(*media_range(item), position) for position, item in enumerate(accept.lower().split(","))]
    scores = {fmt: match_score(ranges, kind, subtype) for fmt, kind, subtype in SERVED_FORMATS}
    best = max(scores, key=scores.__getitem__)  # the first of equals: JSON
    if scores[best][0] == 0:
        raise ProblemError(
            406,
            "Not acceptable",
            f"Accept: {accept[:64]!r} admits neither application/json nor text/csv; "
            "ask for one of them (or */*), or use format=json or format=csv",
            {"Vary": "Accept"},
        )
    return best


def media_range(item: str) -> tuple[str, str, float]:
    """`type/subtype;q=…` as (type, subtype, quality); `*` alone (old Java clients send it) is */*."""
    media, *params = item.split(";")
    kind, _, subtype = media.strip().partition("/")
    quality = 1.0
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "q":
            value = value.strip()
            quality = min(float(value), 1.0) if QVALUE.fullmatch(value) else 1.0
            break
    return kind, subtype or kind, quality


def match_score(ranges: list[tuple[str, str, float, int]], kind: str, subtype: str) -> tuple[float, int, int]:
    """(quality, specificity, -position) of the most specific range that matches `kind/subtype`; quality 0 for none."""
    best = (0.0, -1, 0)
    for range_kind, range_subtype, quality, position in ranges:
        if range_kind == kind:
            specificity = 2 if range_subtype == subtype else 1 if range_subtype == "*" else -1
        else:
            specificity = 0 if range_kind == range_subtype == "*" else -1
        if specificity > best[1]:
            best = (quality, specificity, -position)
    return best
