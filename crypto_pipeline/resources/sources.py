"""Upstream endpoints as data: one YAML file per endpoint under `crypto_pipeline/sources/`, one client.

A file says where the endpoint is (the setting holding its base URL, the path, fixed parameters),
how to authenticate (the header, and the environment variable holding the key), how to page
(page or offset, size, where the total is), where the records are and where each field sits in
one, how its errors look (which codes are auth failures, plan refusals, rate limits, a spent
quota) and what a request costs. Files are validated when loaded; an error names the file and
the key. Expressions are JMESPath, checked by `jmespath` at load and never evaluated as code: a
path of plain names (`quote.USD.price`) is read with dict lookups, anything else by `jmespath`.

`SourceClient` is the one client that reads them: it pages, batches ids, checks the error
envelope, parses records into the typed models of `crypto_pipeline.resources.parsing` and
counts credits. Provider arithmetic (24h volume from bars, 5-minute quotes) stays in the
resources and assets.
"""

from __future__ import annotations

import calendar
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import dagster as dg
import httpx
import jmespath
import jmespath.exceptions
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.settings import Settings
from crypto_pipeline.resources.errors import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamMalformed,
    UpstreamPlanError,
    UpstreamQuotaExhausted,
    UpstreamRateLimited,
    UpstreamSchemaError,
)
from crypto_pipeline.resources.http import (
    Reply,
    UpstreamHttp,
    UpstreamResource,
    raise_for_http_status,
    retry_after_seconds,
)
from crypto_pipeline.resources.parsing import CmcIdLink, HistoryBar, Parsed, PriceRecord, RankingRecord
from warehouse.schema import fetches

SOURCES_DIR = Path(__file__).resolve().parent.parent / "sources"
MODELS: dict[str, type[BaseModel]] = {
    "price": PriceRecord,
    "ranking": RankingRecord,
    "bar": HistoryBar,
    "cmc_id_link": CmcIdLink,
}


def _compiles(expression: str) -> str:
    try:
        jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as error:
        raise ValueError(f"not a JMESPath expression: {error}") from None
    return expression


Expression = Annotated[str, AfterValidator(_compiles)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


VARIABLE = r"^[A-Z][A-Z0-9_]*$"  # an environment variable's name
# How a use reads its source: pages of a list, batches of ids, or ids by either (`QUERIED_BY`).
Query = Literal["pagination", "batch", "ids"]
QUERIED_BY: dict[Query, tuple[str, ...]] = {"pagination": ("pagination",), "batch": ("batch",),
                                            "ids": ("batch", "lookup")}  # fmt: skip


class Auth(Strict):
    header: str
    env: str = Field(pattern=VARIABLE, description="The environment variable that holds the key (never written).")
    template: str = "{key}"

    @model_validator(mode="after")
    def _has_key(self) -> Auth:
        if "{key}" not in self.template:
            raise ValueError("template must contain {key}")
        return self


class Pagination(Strict):
    style: Literal["page", "offset"]
    param: str
    first: int = Field(default=1, ge=0, description="Number of the first page, or offset of the first record.")
    size_param: str
    min_size: int = Field(default=1, ge=1)
    max_size: int = Field(ge=1)
    total: Expression | None = Field(default=None, description="Where the body says how many records exist.")


class Batch(Strict):
    param: str
    size: int = Field(ge=1)
    separator: str = ","


class Lookup(Strict):
    """How a paged list is asked for ids: read `depth` records deep, in pages of `max_size`, and
    filtered to them; an id not listed that deep goes unanswered (and is counted)."""

    depth: int = Field(ge=1, description="Records read per query, whatever the ids (what the credits pay for).")


class Series(Strict):
    records: Expression
    fields: dict[str, Expression]


class Quota(Strict):
    code: int
    calls_made: Expression
    max_calls: Expression


class Errors(Strict):
    when: Expression = Field(description="True on a body that is an error (besides HTTP status >= 400).")
    code: Expression | None = None
    message: Expression | None = None
    parameter: Expression | None = None
    auth: list[int] = []
    plan: list[int] = []
    rate_limit: list[int] = []
    quota: Quota | None = None


class Credits(Strict):
    used: Expression | None = Field(default=None, description="Credits the body says the call cost.")
    per_request: int = Field(default=0, ge=0)


class CmcIdBridge(Strict):
    """How a ranking without CMC ids gets them: from another source's id map, matched on one field."""

    source: str = Field(description="The source file of `cmc_id_link` records (a paged list).")
    match: str = Field(default="cc_id", description="The ranking field matched against each link's `id`.")
    depth: int = Field(ge=1, description="How many links to read: deeper than the ranking where the lists differ.")


class Source(Strict):
    """One upstream endpoint, as its YAML file describes it."""

    version: Literal[1]
    name: str
    provider: str = Field(
        min_length=1,
        max_length=fetches.c.provider.type.length,
        description="The label stored with the rows (lower-cased), in a column of this length.",
    )
    record: Literal["price", "ranking", "bar", "cmc_id_link"]
    base_url_setting: str | None = Field(default=None, description="A URL setting of common.settings (shipped hosts).")
    base_url_env: str | None = Field(default=None, pattern=VARIABLE, description="Or a variable of the source's own.")
    path: str = Field(pattern=r"^/")
    params: dict[str, str | int | float | bool] = {}
    auth: Auth
    pagination: Pagination | None = None
    batch: Batch | None = None
    lookup: Lookup | None = None
    records: Expression
    fields: dict[str, Expression]
    series: Series | None = None
    cmc_ids: CmcIdBridge | None = None
    errors: Errors
    credits: Credits = Credits()

    @model_validator(mode="after")
    def _fields_fit_the_model(self) -> Source:
        if (self.base_url_setting is None) == (self.base_url_env is None):
            raise ValueError("give the host as one of base_url_setting or base_url_env")
        if self.base_url_setting is not None and (
            self.base_url_setting not in Settings.model_fields or not self.base_url_setting.endswith("_url")
        ):
            raise ValueError(f"base_url_setting {self.base_url_setting!r} is not a URL setting of common.settings")
        model = MODELS[self.record]
        mapped = set(self.fields) | set(self.series.fields if self.series else ())
        if self.record == "ranking":
            mapped.add("rank")  # numbered by list position
        unknown = mapped - set(model.model_fields)
        missing = {name for name, info in model.model_fields.items() if info.is_required()} - mapped
        if unknown or missing:
            raise ValueError(f"fields: unknown {sorted(unknown)}, missing {sorted(missing)} for a {self.record} record")
        if self.lookup is not None and (self.pagination is None or "cmc_id" not in model.model_fields):
            raise ValueError("lookup: reads a paged list (pagination) of records with a cmc_id")
        if self.cmc_ids is not None and (self.record != "ranking" or self.cmc_ids.match not in self.fields):
            raise ValueError(f"cmc_ids: bridges a ranking on one of its fields {sorted(self.fields)}")
        return self

    @property
    def model(self) -> type[BaseModel]:
        return MODELS[self.record]

    @property
    def host(self) -> tuple[str, str]:
        """(the file's key naming the host, the setting or variable it names)."""
        if self.base_url_env is not None:
            return "base_url_env", self.base_url_env
        return "base_url_setting", self.base_url_setting


class SourceConfigError(ValueError):
    """A source file that cannot be read or does not follow the schema; the message names file and key."""


def load_source(path: Path) -> Source:
    try:
        data = yaml.safe_load(path.read_text())
        source = Source.model_validate(data)
    except (OSError, yaml.YAMLError) as error:
        raise SourceConfigError(f"{path}: {error}") from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in error.errors())
        raise SourceConfigError(f"{path}: {problems}") from None
    if source.name != path.stem:
        raise SourceConfigError(f"{path}: name: {source.name!r} must match the file name {path.stem!r}")
    return source


@cache
def sources_in(*directories: str) -> dict[str, Source]:
    """Every source file of the given folders, by name (a later folder may add or replace one)."""
    found: dict[str, Source] = {}
    for directory in directories:
        if not Path(directory).is_dir():  # a mistyped SOURCES_DIR would silently leave the shipped files in use
            raise SourceConfigError(f"{directory}: not a folder of source files")
        for path in sorted(Path(directory).glob("*.yaml")):
            found[path.stem] = load_source(path)
    return found


def find_source(directories: Iterable[str], name: str, record: str | None = None) -> Source:
    """Source `name` from `directories` (validated); a wrong name or record kind is a configuration error."""
    directories = tuple(directories)
    available = sources_in(*directories)
    if name not in available:
        raise SourceConfigError(f"no source file {name}.yaml in {', '.join(directories)} (have {sorted(available)})")
    if record is not None and available[name].record != record:
        raise SourceConfigError(f"source {name} gives {available[name].record} records, not {record} records")
    return available[name]


def join_cmc_ids(rankings: list[RankingRecord], links: list[CmcIdLink], match: str) -> list[RankingRecord]:
    """Rankings with the CMC id their `match` field leads to; one without a link (or whose link has
    no CMC id) stays unmatched, to be counted and flagged, never dropped. An id the map leads to
    two CMC ids stays unmatched too: either guess could price another asset under its name."""
    leads: dict[int, set[int]] = {}
    for link in links:
        if link.cmc_id is not None:
            leads.setdefault(link.id, set()).add(link.cmc_id)
    cmc_ids = {link_id: cmc_id for link_id, (cmc_id, *others) in leads.items() if not others}
    return [
        r if r.cmc_id is not None else r.model_copy(update={"cmc_id": cmc_ids.get(getattr(r, match))}) for r in rankings
    ]


def search(expression: str | None, body: Any) -> Any:
    if expression is None:
        return None
    try:
        return _evaluator(expression)(body)
    except jmespath.exceptions.JMESPathError:  # e.g. values() of a list: the body is not the expected shape
        return None


PLAIN_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@cache
def _evaluator(expression: str) -> Callable[[Any], Any]:
    """`expression` as a function of the body. A path of plain names (`close`, `quote.USD.price`)
    is read with dict lookups, as JMESPath reads it (a name of anything but an object is null):
    JMESPath's interpreter took most of a range run's CPU, ~5,000 fields per history reply."""
    if not PLAIN_PATH.fullmatch(expression):
        return jmespath.compile(expression).search
    names = expression.split(".")

    def lookup(body: Any) -> Any:
        for name in names:
            if not isinstance(body, dict):
                return None
            body = body.get(name)
        return body

    return lookup


@dataclass
class Fetched:
    """Typed records from one or more replies, with what was rejected and what it cost.

    `provider` is the source's provider in lower case, the label stored with the rows."""

    provider: str
    records: list = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    credits: int = 0
    emulated: bool = False
    failed: Counter[str] = field(default_factory=Counter)

    def add(self, parsed: Parsed, credits: int, emulated: bool) -> None:
        self.records.extend(parsed.records)
        self.rejected += parsed.rejected
        self.failed.update(parsed.failed)
        self.reasons.extend(parsed.reasons[: max(0, 20 - len(self.reasons))])
        self.credits += credits
        self.emulated |= emulated


def quota_reset(window: str, now: datetime) -> datetime:
    """When a spent day or month window opens again (UTC)."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "day":
        return midnight + timedelta(days=1)
    days = calendar.monthrange(now.year, now.month)[1]
    return midnight.replace(day=1) + timedelta(days=days)


class SourceClient:
    """The one client for every source file: errors, pages, batches, records, credits."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def headers(self, key: str | None) -> dict[str, str]:
        return {self.source.auth.header: self.source.auth.template.format(key=key)} if key else {}

    def check(self, response: httpx.Response, body: Any) -> None:
        """Raise the typed error the source's rules give this reply, if it is an error."""
        rules, upstream, status = self.source.errors, self.source.provider, response.status_code
        if not search(rules.when, body) and status < 400:
            return
        code = search(rules.code, body)
        message = search(rules.message, body) or f"HTTP {status}"
        said = f"{message} (error {code})" if code is not None else str(message)
        if rules.quota is not None and code == rules.quota.code:
            self._raise_if_quota_spent(body, said, code)
        if code in rules.auth:
            raise UpstreamAuthError(upstream, f"{said}; check {self.source.auth.env}", status=status, code=code)
        if code in rules.plan:
            raise UpstreamPlanError(
                upstream, f"{said}; the key's plan does not include this endpoint", status=status, code=code
            )
        if code in rules.rate_limit:
            raise UpstreamRateLimited(
                upstream, said, retry_after=retry_after_seconds(response), status=status, code=code
            )
        raise_for_http_status(upstream, response, said, self.source.auth.env)
        parameter = search(rules.parameter, body)
        raise UpstreamBadRequest(
            upstream, said + (f" (parameter {parameter})" if parameter else ""), status=status, code=code
        )

    def _raise_if_quota_spent(self, body: Any, said: str, code: int) -> None:
        made, limits = (
            search(self.source.errors.quota.calls_made, body),
            search(self.source.errors.quota.max_calls, body),
        )
        for window in ("month", "day"):
            used, limit = (made or {}).get(window), (limits or {}).get(window)
            if isinstance(used, int | float) and isinstance(limit, int | float) and used >= limit:
                until = quota_reset(window, datetime.now(UTC))
                raise UpstreamQuotaExhausted(
                    self.source.provider,
                    f"{window} quota exhausted until {until:%Y-%m-%dT%H:%MZ} ({used} of {limit} calls): {said}",
                    code=code,
                )

    def credits(self, body: Any) -> int:
        used = search(self.source.credits.used, body)
        return int(used) if used is not None else self.source.credits.per_request

    def parse(self, body: Any, first_rank: int | None = None, alone: bool = True) -> Parsed:
        """Typed records from `body`; rankings are numbered by list position from `first_rank`.

        A body whose every record fails validation is a changed format, not an empty answer: it
        raises, naming the field path that failed most. A reply that is one of several batches
        of ids (`alone=False`) is judged with the others (`refuse_if_all_rejected`): a last batch
        of one unpriced id is not a changed format.
        """
        source = self.source
        items = search(source.records, body)
        if not isinstance(items, list):
            raise UpstreamSchemaError(
                source.provider, f"{source.name}: expected a list at {source.records!r}, got {type(items).__name__}"
            )
        parsed = Parsed()
        failed = parsed.failed
        where = source.records if source.records.replace(".", "").replace("_", "").isalnum() else f"({source.records})"
        paths = {name: f"{where}[].{path}" for name, path in source.fields.items()}
        if source.series is not None:
            inner = f"{where}[].{source.series.records}[]"
            paths |= {name: f"{inner}.{path}" for name, path in source.series.fields.items()}
        for position, item in enumerate(items):
            values = {name: search(path, item) for name, path in source.fields.items()}
            if source.record == "ranking":
                values["rank"] = (first_rank or 1) + position
            points = [{}] if source.series is None else search(source.series.records, item)
            if not isinstance(points, list):
                parsed.rejected += 1
                failed[f"{where}[].{source.series.records}"] += 1
                continue
            for point in points:
                if source.series is not None:
                    values |= {name: search(path, point) for name, path in source.series.fields.items()}
                try:
                    parsed.records.append(source.model.model_validate(values))
                except ValidationError as error:
                    first = error.errors()[0]
                    path = paths.get(str(first["loc"][0]), str(first["loc"][0]))
                    failed[path] += 1
                    parsed.rejected += 1
                    if len(parsed.reasons) < 20:
                        parsed.reasons.append(f"record {position}: {path}: {first['msg']}")
        if alone:
            self.refuse_if_all_rejected(parsed)
        return parsed

    def refuse_if_all_rejected(self, parsed: Parsed | Fetched) -> None:
        if parsed.rejected and not parsed.records:
            (path, _), *_ = parsed.failed.most_common(1)
            raise UpstreamSchemaError(
                self.source.provider,
                f"{self.source.name}: all {parsed.rejected} records rejected; field path {path} failed",
            )

    def get(self, http: UpstreamHttp, params: dict[str, Any], validate: Callable[[Any], None] | None = None) -> Reply:
        return http.get(self.source.path, {**self.source.params, **params}, validate)

    def fetch_list(self, http: UpstreamHttp, depth: int, page_size: int) -> Fetched:
        """The first `depth` records, pages fetched concurrently; a page shorter than promised is retried."""
        paging = self.source.pagination
        if paging is None:
            raise ValueError(f"source {self.source.name} has no pagination")
        size = max(paging.min_size, min(page_size, paging.max_size, depth))
        offsets = range(0, depth, size)

        def fetch_page(offset: int) -> Reply:
            limit = size if paging.style == "page" else min(size, depth - offset)
            where = paging.first + (offset // size if paging.style == "page" else offset)

            def not_truncated(body: Any) -> None:
                items, total = search(self.source.records, body), search(paging.total, body)
                expected = limit if total is None else min(limit, max(0, int(total) - offset))
                if isinstance(items, list) and len(items) < expected:
                    raise UpstreamMalformed(
                        self.source.provider, f"{self.source.name} at {where} had {len(items)} of {expected} records"
                    )

            return self.get(http, {paging.param: where, paging.size_param: limit}, not_truncated)

        fetched = Fetched(self.source.provider.lower())
        for offset, reply in zip(offsets, http.map_concurrently(fetch_page, offsets), strict=True):
            fetched.add(self.parse(reply.body, first_rank=offset + 1), self.credits(reply.body), reply.emulated)
        if self.source.record == "ranking":
            fetched.records = [r for r in fetched.records if r.rank <= depth]
        else:
            fetched.records = fetched.records[:depth]
        return fetched

    def fetch_batches(self, http: UpstreamHttp, ids: Iterable[int], params: dict[str, Any]) -> Fetched:
        """Records for `ids`, `batch.size` ids per call, calls concurrent."""
        batch = self.source.batch
        if batch is None:
            raise ValueError(f"source {self.source.name} takes no batch of ids")
        ids = list(ids)
        chunks = [ids[i : i + batch.size] for i in range(0, len(ids), batch.size)]

        def fetch_chunk(chunk: list[int]) -> Reply:
            return self.get(http, {**params, batch.param: batch.separator.join(map(str, chunk))})

        fetched = Fetched(self.source.provider.lower())
        for reply in http.map_concurrently(fetch_chunk, chunks):
            fetched.add(self.parse(reply.body, alone=False), self.credits(reply.body), reply.emulated)
        self.refuse_if_all_rejected(fetched)
        return fetched

    def fetch_ids(self, http: UpstreamHttp, cmc_ids: Iterable[int]) -> Fetched:
        """Records of exactly `cmc_ids` (deduplicated): asked for in batches if the file has `batch`,
        else looked up in its list read `lookup.depth` deep. Each id without a record is counted
        as rejected, so a source that lists fewer of them lowers the match rate, never fails."""
        ids = sorted(set(cmc_ids))
        source = self.source
        if source.batch is not None:
            fetched, absent = self.fetch_batches(http, ids, {}), "not returned by"
        else:
            fetched = self.fetch_list(http, source.lookup.depth, source.pagination.max_size)
            fetched.reasons = []  # about listings, most of them not asked for
            absent = f"not in the first {source.lookup.depth} of"
        # One record per id asked for: concurrent pages of a list reordering between them can repeat
        # one. A record rejected for an asked id is counted once, as that id without a record.
        returned: dict[int, Any] = {}
        for record in fetched.records:
            returned.setdefault(record.cmc_id, record)
        fetched.records = [returned[cmc_id] for cmc_id in ids if cmc_id in returned]
        missing = [cmc_id for cmc_id in ids if cmc_id not in returned]
        fetched.rejected = len(missing)
        room = max(0, 20 - len(fetched.reasons))
        fetched.reasons.extend(f"id {cmc_id}: {absent} {source.name}" for cmc_id in missing[:room])
        return fetched


class SourceResource(UpstreamResource):
    """An upstream's Dagster resource: its keys, its base URLs, and the source files it reads.

    `sources_dirs` lists the folders of source files; a later folder adds sources or replaces
    one of the same name, so a new endpoint is a new file in a folder of its own. Each file names
    the variable of its key and of its host; `wired` builds the resource from them.
    """

    api_keys: dict[str, str] = Field(
        default={}, description="Keys by the variable their source files name (`auth.env`), each wired with EnvVar."
    )
    source_urls: dict[str, str] = Field(
        default={}, description="Hosts of the source files that name their own variable (`base_url_env`), by it."
    )
    sources_dirs: list[str] = Field(default=[str(SOURCES_DIR)], description="Folders of source files, in order.")

    def base_urls(self) -> dict[str, str]:
        """The base URL of each setting this resource was configured with."""
        raise NotImplementedError

    def source_names(self) -> list[tuple[str, str, Query | None]]:
        """(name, record kind, how it is queried) of every source file this resource reads."""
        raise NotImplementedError

    def sources_in_use(self) -> list[Source]:
        """The source files this resource reads, with the id maps they bridge through."""
        sources = [find_source(self.sources_dirs, name, record) for name, record, _ in self.source_names()]
        return sources + [self.bridge(s) for s in sources if s.cmc_ids is not None]

    def bridge(self, source: Source) -> Source:
        """The id map `source` bridges through (`cmc_ids.source`), a file of `cmc_id_link` records."""
        try:
            return find_source(self.sources_dirs, source.cmc_ids.source, "cmc_id_link")
        except SourceConfigError as error:
            raise SourceConfigError(f"source {source.name}.yaml: cmc_ids.source: {error}") from None

    @classmethod
    def wired(cls, environ: Mapping[str, str], emulator_url: str | None = None, **config: Any) -> Self:
        """The resource with the key and host of every source file it reads, taken from the
        variables the files name: keys as EnvVar (never in run config), hosts from `environ`.
        Against the emulator (`emulator_url`) no key is needed and every host is the emulator.
        Each file is checked now; a variable that is not set is an error naming the file and key."""
        keys: dict[str, Any] = {}
        urls: dict[str, str] = {}
        for source in cls(**config).sources_in_use():
            variable = source.auth.env
            if emulator_url is None and not environ.get(variable):
                raise SourceConfigError(f"source {source.name}.yaml: auth.env: {variable} is not set")
            keys[variable] = "emulator" if emulator_url else dg.EnvVar(variable)
            if (own := source.base_url_env) is not None:
                if not (emulator_url or environ.get(own)):
                    raise SourceConfigError(f"source {source.name}.yaml: base_url_env: {own} is not set")
                urls[own] = emulator_url or environ[own]
        resource = cls(**config, api_keys=keys, source_urls=urls)
        for use in resource.source_names():
            resource.client(*use)
        return resource

    def client(self, name: str, record: str | None = None, query: Query | None = None) -> SourceClient:
        """The client of source `name`, which must give `record` records and describe how it is
        queried (`query`: `pagination`, `batch`, or `ids`: batch or lookup) when these are given.

        This resource must hold the key of the variable the file names (no other key ever goes
        out under its header) and the host the file names.
        """
        source, resource = find_source(self.sources_dirs, name, record), type(self).__name__
        if query is not None and all(getattr(source, key) is None for key in QUERIED_BY[query]):
            keys = " or ".join(QUERIED_BY[query])
            raise SourceConfigError(f"source {name}.yaml: {keys}: {resource} reads it by {query}, the file has none")
        if source.auth.env not in self.api_keys:
            raise SourceConfigError(f"source {name}.yaml: auth.env: {resource} has no key from {source.auth.env}")
        key, host = source.host
        if host not in {**self.base_urls(), **self.source_urls}:
            raise SourceConfigError(f"source {name}.yaml: {key}: {resource} has no {host.upper()}")
        if source.cmc_ids is not None:
            links = self.bridge(source)
            try:
                self.client(links.name, "cmc_id_link", "pagination")
            except SourceConfigError as error:
                raise SourceConfigError(f"source {name}.yaml: cmc_ids.source: {error}") from None
        return SourceClient(source)

    def fetch_ranking(self, name: str, depth: int, page_size: int) -> Fetched:
        """The first `depth` places of ranking source `name`; a list without CMC ids gets them
        through the id map its file names (`cmc_ids`), read `cmc_ids.depth` records deep."""
        client = self.client(name, "ranking", "pagination")
        with self.open(client) as http:
            ranking = client.fetch_list(http, depth, page_size)
        bridge = client.source.cmc_ids
        if bridge is not None:
            links_client = self.client(bridge.source, "cmc_id_link", "pagination")
            with self.open(links_client) as http:
                links = links_client.fetch_list(http, bridge.depth, page_size)
            ranking.records = join_cmc_ids(ranking.records, links.records, bridge.match)
            ranking.credits += links.credits
            ranking.emulated |= links.emulated
        return ranking

    def open(self, client: SourceClient) -> UpstreamHttp:
        """A pooled HTTP client for the source, its key in the source's auth header."""
        source = client.source
        url = {**self.base_urls(), **self.source_urls}[source.host[1]]
        return self.http(source.provider, url, client.headers(self.api_keys[source.auth.env]), client.check)
