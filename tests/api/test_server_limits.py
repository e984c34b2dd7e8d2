"""What uvicorn refuses before the app sees it (its httptools parser, as `uvicorn[standard]`
installs it and the deployment and the tests run it), as docs/api.md says,
and what it passes on, which the app answers as problems or data, never a 5xx."""

from __future__ import annotations

import socket

import pytest

from tests.api.conftest import seed_snapshot, this_minute

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

LONGEST_TARGET = 65535  # httptools' URL parser keeps offsets in 16 bits


def exchange(server, target: bytes) -> tuple[int, dict[str, str], bytes]:
    """`GET target` sent as raw bytes (no HTTP client sends these) and its answer, read to the end."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), {name.lower(): value for name, value in headers.items()}, body


def padded(prefix: bytes, length: int) -> bytes:
    return prefix + b"x" * (length - len(prefix))


@pytest.mark.parametrize(
    "target",
    [
        "/?datetime=é".encode(),  # UTF-8, not percent-encoded
        b"/?datetime=\xff",
        b"/backfills/\xff",
        b"/?datetime=2026-01-01\x00",
        b"/?datetime=2026-01-01\t",
        b"/?datetime=2026-01-01 00:00",
        padded(b"/?limit=3&pad=", LONGEST_TARGET + 1),
        padded(b"/?limit=3&pad=", 1_000_000),
    ],
    ids=["utf-8", "non-utf-8", "in-the-path", "nul", "tab", "space", "64-KiB", "1-MB"],
)
def test_uvicorn_refuses_raw_non_ascii_control_bytes_and_long_targets_before_the_app(api, target):
    with api() as server:
        status, headers, body = exchange(server, target)
        metrics = server.get("/metrics").text
    assert (status, headers["content-type"], body) == (
        400,
        "text/plain; charset=utf-8",
        b"Invalid HTTP request received.",
    )
    assert headers["connection"] == "close"
    assert 'status="400"' not in metrics and 'path="/"' not in metrics  # the app never saw it


def test_what_uvicorn_passes_on_the_app_answers(api, store):
    """The longest request target uvicorn passes, and percent-encoded non-ASCII, reach the app."""
    seed_snapshot(store, this_minute())
    with api() as server:
        padding = exchange(server, padded(b"/?limit=3&pad=", LONGEST_TARGET))
        long_datetime = exchange(server, padded(b"/?datetime=", LONGEST_TARGET))
        encoded = exchange(server, b"/?datetime=%C3%A9")
    assert padding[0] == 200 and padding[1]["content-type"] == "application/json" and b'"count":3' in padding[2]
    assert long_datetime[0] == 422 and long_datetime[1]["content-type"] == "application/problem+json"
    assert b'"detail":"datetime: String should have at most 64 characters"' in long_datetime[2]
    assert encoded[0] == 422 and "datetime: 'é' is neither" in encoded[2].decode()
