"""The backfill request lifecycle: one row per owed minute in `backfill_requests`, moved only by
the transitions below (Dagster-free: the API asks or owes, the request sensor heals, submits and
reconciles from Dagster's run records, the merge settles).

    ask/owe ──► requested ──submit──► requested ──launch──► launched ──succeed──► succeeded
                 ▲  ▲  ▲             (run key,    (Dagster   │  │                  ▲  │
                 │  │  │              no run yet)  made the  │  └─fail──► failed ──┘  │ succeed (any run
                 │  │  └──────release (never created)─┘ run) │             │          │ stored it)
                 │  └─────────requeue (the run's record is gone)┘          │          │
                 ├── retry (in the healing horizon, backoff over) / ask again ┘          │
                 └── reopen (owed again: its snapshot is gone) ──────────────────────────┘

A minute is owed for one of three reasons (`origin`): someone asked for it and nothing near it was
stored (a 202), a past minute was answered from an earlier one (a stand-in), or the healer found it
unpublished. Every transition is one guarded UPDATE (`WHERE status IN <its sources>`), so an
illegal move (a succeeded minute turned into a failure by a late run-status report, say) cannot
happen.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Engine, and_, exists, func, insert, or_, select, update

from warehouse.database import chunks, dialect_insert, utcnow
from warehouse.schema import backfill_requests, snapshots

LOCK_KEY = 0x746F706C  # Postgres advisory lock serializing asks (the bound on open requests)
NO_DATA_ERROR = "the upstreams returned no prices and rankings for this minute"
CANCELED_ERROR = "the run was canceled"


class Status(StrEnum):
    REQUESTED = "requested"
    LAUNCHED = "launched"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Origin(StrEnum):
    """Why a minute is owed."""

    ASKED = "asked"  # GET / found nothing stored near it: answered 202
    STAND_IN = "stand-in"  # GET / answered it from an earlier minute
    HEALER = "healer"  # the request sensor found it unpublished in the healing horizon


OPEN = (Status.REQUESTED, Status.LAUNCHED)
# transition -> (the states it may start from, the state it leads to); None = no row yet.
TRANSITIONS: dict[str, tuple[tuple[Status | None, ...], Status]] = {
    "ask": ((None, Status.FAILED), Status.REQUESTED),
    "submit": ((Status.REQUESTED,), Status.REQUESTED),
    "release": ((Status.REQUESTED,), Status.REQUESTED),
    "owe": ((None,), Status.REQUESTED),
    "retry": ((Status.FAILED,), Status.REQUESTED),
    "reopen": ((Status.SUCCEEDED,), Status.REQUESTED),
    "launch": ((Status.REQUESTED,), Status.LAUNCHED),
    "succeed": ((Status.REQUESTED, Status.LAUNCHED, Status.FAILED), Status.SUCCEEDED),
    "fail": ((Status.LAUNCHED,), Status.FAILED),
    "requeue": ((Status.LAUNCHED,), Status.REQUESTED),
}


def sources(transition: str) -> list[str]:
    return [s.value for s in TRANSITIONS[transition][0] if s is not None]


@dataclass(frozen=True)
class BackfillRequest:
    minute: datetime
    status: str
    requested_at: datetime
    updated_at: datetime
    run_id: str | None = None
    error: str | None = None
    attempts: int = 0
    run_key: str | None = None
    submitted_at: datetime | None = None
    permanent: bool = False
    origin: str = Origin.ASKED


@dataclass(frozen=True)
class RequestPolicy:
    """How many asked requests may be open, and when a failed one gets another attempt."""

    max_pending: int = 1000
    max_attempts: int = 5
    backoff: timedelta = timedelta(minutes=1)  # doubled after each failed attempt...
    max_backoff: timedelta = timedelta(minutes=5)  # ...up to this, so a healed fault is retried soon
    # Minutes this recent are retried until they are published, whatever the attempts: an upstream
    # outage longer than the attempts' backoff must not leave its minutes unhealed once it is over.
    heal_horizon: timedelta = timedelta(hours=24)

    @classmethod
    def from_settings(cls, settings) -> RequestPolicy:
        """The policy the settings module describes (BACKFILL_* and HEAL_* variables)."""
        return cls(
            max_pending=settings.backfill_max_pending,
            max_attempts=settings.backfill_max_attempts,
            backoff=timedelta(seconds=settings.backfill_retry_backoff_seconds),
            max_backoff=timedelta(seconds=settings.backfill_max_backoff_seconds),
            heal_horizon=timedelta(hours=settings.heal_horizon_hours),
        )

    def heals(self, minute: datetime, now: datetime | None = None) -> bool:
        """Whether `minute` lies in the healing horizon: retried, after a transient failure, until published."""
        return minute >= (now or utcnow()) - self.heal_horizon

    def next_attempt(self, request: BackfillRequest, now: datetime | None = None) -> datetime | None:
        """For a failed request: from when another attempt is queued (by the request sensor within the
        healing horizon, else by asking again); the backoff doubles with each attempt made, up to
        `max_backoff`. None once the attempts are used up outside the horizon, or when not failed. A
        permanent failure (plan, key) is fixed by an operator, not by retrying: it never uses up the
        attempts, the attempt after it starts a new count (see `ask`), and is never retried by itself."""
        if request.status != Status.FAILED:
            return None
        if request.attempts >= self.max_attempts and not request.permanent and not self.heals(request.minute, now):
            return None
        doublings = min(max(0, request.attempts - 1), 32)  # unbounded attempts in the horizon: no overflow
        return request.updated_at + min(self.backoff * 2**doublings, self.max_backoff)

    def retried_by_itself(self, request: BackfillRequest, now: datetime | None = None) -> bool:
        """Whether the request sensor queues the next attempt of this failed request without anyone asking."""
        return not request.permanent and self.heals(request.minute, now)


class BackfillRequests:
    """The transitions, each one statement on the warehouse."""

    def __init__(self, engine: Engine, writer: Engine) -> None:
        self.engine, self.writer = engine, writer  # the writer takes SQLite's write lock at BEGIN
        self._ask_lock = threading.Lock()

    # --- reads ----------------------------------------------------------------------------
    def get(self, minute: datetime) -> BackfillRequest | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(backfill_requests).where(backfill_requests.c.minute == minute)).first()
        return BackfillRequest(**row._mapping) if row else None

    def count(self, statuses: Iterable[str]) -> int:
        query = select(func.count()).where(backfill_requests.c.status.in_(list(statuses)))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def due(self, limit: int, before: datetime) -> list[BackfillRequest]:
        """Requested minutes before `before` no run key has been handed out for yet: those asked for
        (or stood in for) first, then the healer's, oldest minute first. A later minute is the live
        schedule's to store; its request waits for it (the merge settles it) or until it is due."""
        query = (
            select(backfill_requests)
            .where(
                backfill_requests.c.status == Status.REQUESTED,
                backfill_requests.c.run_key.is_(None),
                backfill_requests.c.minute < before,
            )
            .order_by(backfill_requests.c.origin == Origin.HEALER, backfill_requests.c.minute)
            .limit(limit)
        )
        return self._rows(query)

    def in_flight(self) -> list[BackfillRequest]:
        """Requests waiting on Dagster: submitted (a run key, no run yet) or launched."""
        submitted = and_(backfill_requests.c.status == Status.REQUESTED, backfill_requests.c.run_key.is_not(None))
        return self._rows(
            select(backfill_requests).where(or_(backfill_requests.c.status == Status.LAUNCHED, submitted))
        )

    def _rows(self, query) -> list[BackfillRequest]:
        with self.engine.connect() as conn:
            return [BackfillRequest(**row._mapping) for row in conn.execute(query)]

    # --- transitions ------------------------------------------------------------------------
    def ask(self, minute: datetime, policy: RequestPolicy, now: datetime | None = None) -> BackfillRequest | None:
        """The request for `minute` after someone asked for it: new, re-queued (a failed one past
        its backoff with attempts left), or as it was (an open one is Dagster's to settle). None when `max_pending`
        requests asked for are already open (the healer's and the stand-ins' are bounded by the
        gaps themselves). Serialized (an advisory lock on Postgres, a process lock besides), so a
        burst never overshoots the bound."""
        now = now or utcnow()
        with self._ask_lock, self.writer.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))
            row = conn.execute(select(backfill_requests).where(backfill_requests.c.minute == minute)).first()
            current = BackfillRequest(**row._mapping) if row else None
            if current is not None and not ((when := policy.next_attempt(current, now)) and when <= now):
                return current
            asked = and_(backfill_requests.c.status.in_(OPEN), backfill_requests.c.origin == Origin.ASKED)
            if conn.execute(select(func.count()).where(asked)).scalar() >= policy.max_pending:  # it would count
                return None
            fresh = BackfillRequest(
                minute,
                Status.REQUESTED,
                current.requested_at if current else now,
                now,
                attempts=current.attempts if current and not current.permanent else 0,
                origin=current.origin if current else Origin.ASKED,
            )
            if current is None:
                conn.execute(insert(backfill_requests).values(**vars(fresh)))
            else:
                conn.execute(
                    update(backfill_requests)
                    .where(backfill_requests.c.minute == minute, backfill_requests.c.status.in_(sources("ask")))
                    .values(**{k: v for k, v in vars(fresh).items() if k not in ("minute", "requested_at")})
                )
            return fresh

    def owe(self, minutes: Iterable[datetime], origin: Origin, now: datetime | None = None) -> int:
        """Record that these unpublished minutes are owed (a stand-in served for one, the healer found
        them): a `requested` row for each that has none, and a `succeeded` one whose snapshot is gone
        (a partial restore) requested again; an open or failed one is left as it is (`retry` takes
        the failed). Writes only when something changes. Returns how many were new or reopened."""
        wanted = sorted(set(minutes))
        if not wanted:
            return 0
        span = backfill_requests.c.minute.between(wanted[0], wanted[-1])
        with self.engine.connect() as conn:
            known = dict(conn.execute(select(backfill_requests.c.minute, backfill_requests.c.status).where(span)).all())
        stamp = now or utcnow()
        new = [
            vars(BackfillRequest(m, Status.REQUESTED, stamp, stamp, origin=origin)) for m in wanted if m not in known
        ]
        gone = [m for m in wanted if known.get(m) == Status.SUCCEEDED]
        changed = 0
        if new:
            inserted = dialect_insert(self.engine, backfill_requests).on_conflict_do_nothing()
            with self.writer.begin() as conn:  # RETURNING the rows inserted: drivers' rowcounts differ here
                changed += len(conn.execute(inserted.returning(backfill_requests.c.minute), new).all())
        unserved = ~exists().where(snapshots.c.minute == backfill_requests.c.minute)
        for part in chunks(gone, 1000):
            changed += self._move("reopen", backfill_requests.c.minute.in_(part) & unserved, now=now, origin=origin)
        return changed

    def succeed_stored(self) -> int:
        """Requested minutes no run was handed yet that are stored meanwhile (the healer or a stand-in
        read them unpublished just before a merge stored them) succeed: no needless run rewrites them.
        Read first: a tick writes only what changes (on SQLite a write takes the database's lock)."""
        waiting = and_(backfill_requests.c.status == Status.REQUESTED, backfill_requests.c.run_key.is_(None))
        query = select(backfill_requests.c.minute).join(snapshots, snapshots.c.minute == backfill_requests.c.minute)
        with self.engine.connect() as conn:
            stored = list(conn.execute(query.where(waiting)).scalars())
        return sum(
            self._move(
                "succeed",
                backfill_requests.c.minute.in_(part) & backfill_requests.c.run_key.is_(None),
                error=None,
                permanent=False,
            )
            for part in chunks(stored, 1000)
        )

    def retry(self, policy: RequestPolicy, now: datetime | None = None) -> int:
        """Failed requests of the healing horizon whose backoff is over go back to `requested`, as
        asking again would, until they are published (read through the index on status and minute:
        at most a horizon of rows). A permanent failure waits for an operator to fix the plan or key
        and ask again; older minutes are retried when asked for. Returns how many moved."""
        now = now or utcnow()
        in_horizon = and_(
            backfill_requests.c.status == Status.FAILED,
            backfill_requests.c.minute >= now - policy.heal_horizon,
            backfill_requests.c.permanent.is_(False),
        )
        due = [
            r.minute
            for r in self._rows(select(backfill_requests).where(in_horizon))
            if policy.next_attempt(r, now) <= now
        ]
        moved = 0
        for minutes in chunks(due, 1000):
            moved += self._move(
                "retry",
                backfill_requests.c.minute.in_(minutes),
                now=now,
                error=None,
                run_key=None,
                submitted_at=None,
                run_id=None,
            )
        return moved

    def submit(self, first: datetime, last: datetime, run_key: str, now: datetime | None = None) -> int:
        """Hand the due minutes first..last to Dagster under `run_key` (one more attempt); they stay
        `requested`. The attempt counts here, not at `launch`: a short run can store its minutes
        before the sensor ever sees it created, and then `launch` never happens."""
        return self._move(
            "submit",
            backfill_requests.c.minute.between(first, last) & backfill_requests.c.run_key.is_(None),
            run_key=run_key,
            submitted_at=now or utcnow(),
            attempts=backfill_requests.c.attempts + 1,
        )

    def release(self, run_key: str) -> int:
        """Dagster never created a run for `run_key` (creation failed, or the key was a duplicate):
        no attempt was made."""
        return self._move(
            "release",
            backfill_requests.c.run_key == run_key,
            run_key=None,
            submitted_at=None,
            attempts=backfill_requests.c.attempts - 1,
        )

    def launch(self, run_key: str, run_id: str) -> int:
        """Dagster created the run: the request holds its real run id."""
        return self._move("launch", backfill_requests.c.run_key == run_key, run_id=run_id)

    def requeue(self, run_key: str) -> int:
        """The run's record is gone (deleted or pruned) before it settled: launch it anew."""
        return self._move(
            "requeue", backfill_requests.c.run_key == run_key, run_key=None, submitted_at=None, run_id=None
        )

    def fail(self, run_key: str, error: str, permanent: bool, now: datetime | None = None) -> int:
        """The run ended without storing these minutes (the backoff counts from now). A minute
        another run stored meanwhile (asked for just after that run's merge) succeeds instead:
        /backfills never says failed for a minute `/` serves."""
        mine = backfill_requests.c.run_key == run_key
        served = exists().where(snapshots.c.minute == backfill_requests.c.minute)
        return self._move(
            "succeed", mine & served, now=now, error=None, permanent=False, run_key=None, submitted_at=None
        ) + self._move("fail", mine & ~served, now=now, error=error[:2000], permanent=permanent)

    def _move(self, transition: str, where, now: datetime | None = None, **values) -> int:
        statement = (
            update(backfill_requests)
            .where(where, backfill_requests.c.status.in_(sources(transition)))
            .values(status=TRANSITIONS[transition][1], updated_at=now or utcnow(), **values)
        )
        with self.writer.begin() as conn:
            return conn.execute(statement).rowcount


def settle(
    conn, start: datetime, end: datetime, run_id: str | None, run_key: str | None, unpublished: dict[datetime, str]
) -> None:
    """Inside the merge's transaction: `succeed` every unsettled request for a minute in
    [start, end) that is now served, whatever its state (so /backfills never disagrees with
    `/`); `fail` those launched under this run's key that it could not serve, with the reason
    (`unpublished`: minute -> why the checks blocked it) or, without one, because there was no
    data. A request launched under another run waits for that run."""
    in_window = and_(backfill_requests.c.minute >= start, backfill_requests.c.minute < end)
    served = backfill_requests.c.minute.in_(
        select(snapshots.c.minute).where(snapshots.c.minute >= start, snapshots.c.minute < end)
    )
    now = utcnow()
    conn.execute(
        update(backfill_requests)
        .where(in_window, served, backfill_requests.c.status.in_(sources("succeed")))
        .values(
            status=Status.SUCCEEDED,
            updated_at=now,
            run_id=run_id,
            error=None,
            permanent=False,
            run_key=None,
            submitted_at=None,
        )
    )
    unserved = and_(in_window, backfill_requests.c.run_key == run_key, backfill_requests.c.status.in_(sources("fail")))
    fail = update(backfill_requests).values(status=Status.FAILED, updated_at=now, permanent=False)
    for minute, error in unpublished.items():
        conn.execute(fail.where(unserved, backfill_requests.c.minute == minute).values(error=error[:2000]))
    conn.execute(fail.where(unserved).values(error=NO_DATA_ERROR))
