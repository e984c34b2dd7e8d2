"""The ASGI fast path and the FastAPI path give byte-identical answers (status, headers, body).

Two servers over the same warehouse, one with API_FAST_PATH=false, are asked the same table of
requests. Each request is first sent once to the fast server, so FastAPI validates its query
string; the next one is answered by the fast path when the row says so, which the test checks by
counting how often the FastAPI route validated a query.
"""

from __future__ import annotations

import gzip
import time
from datetime import timedelta

from api.service import ToplistService
from tests.api.conftest import seed_snapshot, this_minute
from warehouse.requests import RequestPolicy


def iso(minute) -> str:
    return minute.strftime("%Y-%m-%dT%H:%M:00Z")


PAST = this_minute() - timedelta(minutes=30)  # module-level so the table can name it
GZIP = {"Accept-Encoding": "gzip"}
IDENTITY = {"Accept-Encoding": "identity"}  # httpx asks for gzip unless told otherwise

# (method, path, query parameters, headers, how a repeat is answered: True by the fast path,
#  False by the FastAPI route, None before the route: FastAPI's validation, other routes, 404/405;
#  HEAD is answered like GET without the body, on both paths)
TABLE = [
    ("GET", "/", {"limit": 200, "datetime": iso(PAST)}, IDENTITY, True),
    ("GET", "/", {"limit": 200, "datetime": iso(PAST)}, GZIP, True),
    ("GET", "/", {"limit": 200, "datetime": iso(PAST), "format": "csv"}, IDENTITY, True),
    ("GET", "/", {"limit": 200, "datetime": iso(PAST), "format": "CSV"}, GZIP, True),
    ("GET", "/", {"limit": 200, "datetime": iso(PAST)}, {"Accept": "text/csv", **GZIP}, True),
    ("GET", "/", {"limit": 3, "datetime": iso(PAST)}, GZIP, True),  # too small to compress
    ("GET", "/", {"limit": 200, "datetime": iso(PAST)}, {"Accept": "text/*", **GZIP}, True),
    ("GET", "/", {"limit": 200, "datetime": iso(PAST)}, {"Accept": "text/csv;q=0.1, application/json"}, True),
    ("GET", "/", {"datetime": iso(PAST)}, {"Accept": "text/html,application/xml;q=0.9,*/*;q=0.8"}, True),
    ("GET", "/", {"limit": 200, "datetime": iso(PAST)}, {"Accept": "application/xml"}, True),  # 406 problem
    ("GET", "/", {"limit": 200, "datetime": iso(PAST), "format": "csv"}, {"Accept": "application/xml"}, True),
    ("GET", "/", {}, {"Accept": "application/xml"}, True),  # 406 for now too
    ("GET", "/", {"limit": [1, 5]}, {}, None),  # given twice: refused before the route
    ("GET", "/", {"datetime": iso(PAST) + "\x00"}, {}, None),
    ("GET", "/", {"datetime": "2016-12-31T12:30:60Z"}, {}, False),  # a second 60 outside 23:59 UTC
    ("GET", "/", {"datetime": str(int(PAST.timestamp()) + 59)}, {}, True),
    ("GET", "/", {"datetime": iso(PAST + timedelta(minutes=1))}, {}, True),  # a stand-in within the tolerance
    ("GET", "/", {"limit": 10**12, "unknown": "ignored", "datetime": iso(PAST)}, {}, True),
    ("GET", "/", {}, IDENTITY, True),  # now
    ("GET", "/", {"limit": 200}, GZIP, True),
    ("GET", "/", {"format": "csv"}, {"Accept-Encoding": "gzip, deflate, br"}, True),
    ("GET", "/", {"datetime": "9999-12-31T00:00:00Z"}, {}, True),  # 422 problem, rendered by the fast path
    ("GET", "/", {"datetime": "2001-01-01T00:00:00Z"}, {}, False),  # not stored, before HISTORY_START: 404
    ("GET", "/", {"format": "xml"}, {}, False),  # invalid: FastAPI every time
    ("GET", "/", {"limit": "0"}, {}, None),
    ("GET", "/", {"datetime": "yesterday-ish"}, {}, False),
    ("GET", "/", {"datetime": iso(PAST - timedelta(hours=2))}, {}, False),  # not stored: 202 from FastAPI
    ("HEAD", "/", {}, IDENTITY, True),
    ("HEAD", "/", {"limit": 200, "datetime": iso(PAST)}, GZIP, True),
    ("HEAD", "/healthz", {}, {}, None),
    ("POST", "/", {}, {}, None),
    ("GET", "/openapi.json", {}, GZIP, None),
    ("GET", "/healthz", {}, {}, None),
    ("GET", "/nowhere", {}, {}, None),
]


def conditional_rows(server) -> list[tuple]:
    """If-None-Match with each representation's own ETag, `*` and a weak tag: 304 on both paths."""
    params = {"limit": 200, "datetime": iso(PAST)}
    plain, zipped = server.get("/", params=params, headers=IDENTITY), server.get("/", params=params, headers=GZIP)
    return [
        ("GET", "/", params, {"If-None-Match": plain.headers["etag"], **IDENTITY}, True),
        ("GET", "/", params, {"If-None-Match": zipped.headers["etag"], **GZIP}, True),
        ("GET", "/", params, {"If-None-Match": zipped.headers["etag"], **IDENTITY}, True),  # the other encoding's
        ("GET", "/", params, {"If-None-Match": "*"}, True),
        ("GET", "/", params, {"If-None-Match": f'"x", W/{plain.headers["etag"]}', **IDENTITY}, True),
    ]


def wire(server, method: str, path: str, params: dict, headers: dict) -> tuple:
    """(status, headers but the Date the server stamps, body bytes as sent, not decoded)."""
    response = server.client.send(
        server.client.build_request(method, path, params=params, headers=headers), stream=True
    )
    body = b"".join(response.iter_raw())
    response.close()
    return response.status_code, [(k, v) for k, v in response.headers.raw if k.lower() != b"date"], body


def test_fast_path_and_fastapi_path_send_the_same_bytes(api, store, validations):
    for minute in (PAST, this_minute(), this_minute() - timedelta(minutes=1)):
        seed_snapshot(store, minute)
    same = {"api_tolerance_minutes": 2, "history_start": this_minute() - timedelta(days=30)}  # in the 404 detail
    with api(**same) as fast, api(**same, api_fast_path=False) as plain:
        for method, path, params, headers, by_fast_path in TABLE + conditional_rows(fast):
            request = (method, path, params, headers)
            wire(fast, *request)  # FastAPI validates the query string once
            for _ in range(5):  # both answers within one second: "now" and max-age are the same moment
                second = int(time.time())
                before = validations[0]
                through_fast = wire(fast, *request)
                fast_validations = validations[0] - before
                through_fastapi = wire(plain, *request)
                if int(time.time()) == second:
                    break
            assert through_fast == through_fastapi, request
            if by_fast_path is not None:
                assert fast_validations == (0 if by_fast_path else 1), request
            if (b"content-encoding", b"gzip") in through_fast[1]:
                identity = wire(plain, method, path, params, {**headers, **IDENTITY})
                assert gzip.decompress(through_fast[2]) == identity[2], request


def test_head_sends_the_headers_of_get_without_the_body(api, store):
    """RFC 9110 §9.3.2: the same status and headers, Content-Length included, on the fast path and FastAPI,
    for every GET route."""
    seed_snapshot(store, PAST)
    store.requests.ask(PAST - timedelta(hours=2), RequestPolicy())
    requests = [
        ("/", {"limit": 200, "datetime": iso(PAST)}, IDENTITY),
        ("/", {"limit": 200, "datetime": iso(PAST), "format": "csv"}, GZIP),
        ("/", {"datetime": "9999-12-31T00:00:00Z"}, {}),  # a problem answer
        ("/", {"datetime": iso(PAST)}, {"Accept": "application/xml"}),  # 406
        ("/healthz", {}, {}),
        ("/readyz", {}, {}),  # 503: the newest snapshot is old
        (f"/backfills/{iso(PAST - timedelta(hours=2))}", {}, IDENTITY),
        ("/backfills/2001-01-01T00:00Z", {}, {}),  # 404 problem
    ]
    with api() as fast, api(api_fast_path=False) as plain:
        for server in (fast, plain):
            for path, params, headers in requests:
                wire(server, "HEAD", path, params, headers)  # FastAPI validates the query string once
                head, get = wire(server, "HEAD", path, params, headers), wire(server, "GET", path, params, headers)
                assert head == (get[0], get[1], b""), (path, params, headers)
                assert int(dict(head[1])[b"content-length"]) == len(get[2]) > 0
            metrics = wire(server, "HEAD", "/metrics", {}, IDENTITY)  # its counts move with every request
            assert metrics[0] == 200 and metrics[2] == b"" and int(dict(metrics[1])[b"content-length"]) > 0


def test_metrics_count_the_fast_paths_answers(api, store):
    """The fast path counts its own answers (200, 304, a problem), under the same names and labels as FastAPI's."""
    seed_snapshot(store, PAST)
    params = {"limit": 200, "datetime": iso(PAST)}
    with api() as server:
        etag = server.get("/", params=params, headers=IDENTITY).headers["etag"]  # FastAPI validates the query
        server.get("/", params=params, headers=IDENTITY)
        server.get("/", params=params, headers={"If-None-Match": etag, **IDENTITY})
        server.client.head("/", params=params, headers={"If-None-Match": etag, **IDENTITY})
        for _ in range(2):  # FastAPI, then the fast path
            server.get("/", params={"datetime": "9999-12-31T00:00:00Z"})
        metrics = server.get("/metrics").text
    assert 'api_requests_total{path="/",status="200"} 2.0' in metrics
    assert 'api_requests_total{path="/",status="304"} 2.0' in metrics
    assert 'api_requests_total{path="/",status="422"} 2.0' in metrics
    assert 'api_request_seconds_count{path="/"} 6.0' in metrics


def test_answers_keep_their_headers_per_encoding(api, store):
    seed_snapshot(store, PAST)
    params = {"limit": 200, "datetime": iso(PAST)}
    with api() as server:
        server.get("/", params=params)
        plain, zipped = server.get("/", params=params, headers=IDENTITY), server.get("/", params=params, headers=GZIP)
        metrics = server.get("/metrics").text
    assert "content-encoding" not in plain.headers and zipped.headers["content-encoding"] == "gzip"
    assert plain.headers["etag"] != zipped.headers["etag"]
    assert plain.headers["vary"] == zipped.headers["vary"] == "Accept, Accept-Encoding"
    assert int(zipped.headers["content-length"]) < int(plain.headers["content-length"]) // 3
    assert 'api_requests_total{path="/",status="200"} 3.0' in metrics


def test_long_query_strings_are_not_kept(api, store, validations):
    """Each distinct query string FastAPI validated is kept per process: unbounded in size, up to
    4096 of the ~64 KB the server accepts would hold ~250 MB. Only short ones are kept."""
    seed_snapshot(store, PAST)
    params = {"datetime": iso(PAST), "padding": "x" * 4000}
    with api() as server:
        first = server.get("/", params=params)
        before = validations[0]
        second = server.get("/", params=params)
    assert first.status_code == second.status_code == 200
    assert validations[0] - before == 1  # FastAPI validated it again: nothing was kept for it


def test_resolutions_keep_no_more_bodies_than_api_cache_entries(api, store, monkeypatch):
    """Each kept resolution holds its rendered body: API_CACHE_ENTRIES bounds those too, not only the LRU."""
    seed_snapshot(store, PAST)
    resolved, resolve = [], ToplistService.resolve

    async def counting(self, query, fmt):
        resolved.append(query.limit)
        return await resolve(self, query, fmt)

    monkeypatch.setattr(ToplistService, "resolve", counting)
    with api(api_cache_entries=2) as server:
        for limit in (1, 2, 3, 1):  # well within a second: a kept resolution would answer the last
            assert server.get("/", params={"limit": limit, "datetime": iso(PAST)}).status_code == 200
    assert resolved == [1, 2, 3, 1]


def test_a_zero_quality_refuses_gzip_and_csv(api, store):
    """RFC 9110 §12.4.2: `;q=0` means "not acceptable", on the FastAPI route and the fast path alike."""
    seed_snapshot(store, PAST)
    params = {"limit": 200, "datetime": iso(PAST)}
    refusing = {"Accept-Encoding": "gzip;q=0, identity", "Accept": "text/csv;q=0, application/json"}
    with api() as server:
        answers = [server.get("/", params=params, headers=refusing) for _ in range(2)]  # FastAPI, then fast path
        gzipped = server.get("/", params=params, headers={"Accept-Encoding": "identity;q=0.5, gzip;q=1"})
    for answer in answers:
        assert "content-encoding" not in answer.headers and answer.headers["content-type"] == "application/json"
    assert gzipped.headers["content-encoding"] == "gzip"
