"""A snapshot's body as JSON or CSV, rendered and compressed once per snapshot, with its precomputed headers."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from email.utils import format_datetime

from warehouse.publish import Snapshot

CSV_HEADER = ("Rank", "Symbol", "Price USD")


GZIP_MINIMUM_BYTES = 1024  # smaller bodies are sent as they are (the GZipMiddleware threshold for other routes)


VARY = "Accept, Accept-Encoding"


@dataclass(frozen=True)
class Representation:
    """One encoding of a rendered body and its headers, all but Cache-Control (that depends on the moment)."""

    body: bytes
    etag: str
    ok_headers: tuple[tuple[bytes, bytes], ...]
    not_modified_headers: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Rendered:
    identity: Representation
    gzip: Representation | None  # None when the body is too small to be worth compressing


def representation(
    body: bytes, media_type: str, etag: str, shared: dict[str, str], encoding: str | None
) -> Representation:
    not_modified = tuple(
        (name.lower().encode(), value.encode("latin-1")) for name, value in {"ETag": etag, **shared}.items()
    )
    entity = ((b"content-length", str(len(body)).encode()), (b"content-type", media_type.encode()))
    entity += ((b"content-encoding", encoding.encode()),) if encoding else ()
    return Representation(body, etag, entity + not_modified, not_modified)


def render(snapshot: Snapshot, requested: datetime, rows: list[dict], fmt: str) -> Rendered:
    """The body in both encodings with their precomputed headers: rendered and compressed once per snapshot."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180
        writer.writerow(CSV_HEADER)
        writer.writerows((r["rank"], r["symbol"], plain_decimal(r["price_usd"])) for r in rows)
        body, media_type = buffer.getvalue().encode(), "text/csv; charset=utf-8"
    else:
        document = {
            "snapshot_time": snapshot.minute.isoformat().replace("+00:00", "Z"),
            "requested_time": requested.isoformat().replace("+00:00", "Z"),
            "count": len(rows),
            "source": snapshot.source,
            "price_source": snapshot.price_source,
            "data": rows,
        }
        body, media_type = json.dumps(document, separators=(",", ":")).encode(), "application/json"
    tag = hashlib.blake2b(body, digest_size=12).hexdigest()
    shared = {
        "X-Snapshot-Time": snapshot.minute.isoformat().replace("+00:00", "Z"),
        "Last-Modified": format_datetime(snapshot.created_at, usegmt=True),
        "Vary": VARY,
    }
    identity = representation(body, media_type, f'"{tag}"', shared, None)
    if len(body) < GZIP_MINIMUM_BYTES:
        return Rendered(identity, None)
    gzipped = gzip.compress(body, compresslevel=9, mtime=0)
    return Rendered(identity, representation(gzipped, media_type, f'"{tag}-gzip"', shared, "gzip"))


def plain_decimal(value: float) -> str:
    """A float in positional notation with every digit it has (`0.00001234`, never `1.234e-05`)."""
    return format(Decimal(repr(value)), "f")
