"""`GET /backfills/{minute}`: a backfill request's status, and what happens next in words."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import Service
from api.models import BackfillStatus
from api.moments import minute_of, minute_url, parse_moment
from api.problems import ProblemError, problem_responses
from warehouse.requests import BackfillRequest, RequestPolicy, Status

router = APIRouter()


def next_step(request: BackfillRequest, policy: RequestPolicy) -> str:
    """What happens next to a request, in words (BackfillStatus.detail)."""
    if request.status == Status.REQUESTED:
        current = request.attempts if request.run_key else request.attempts + 1  # handed over: counted
        return f"Waiting for a run ({attempt_of(current, request, policy)})."
    if request.status == Status.LAUNCHED:
        return f"Run {request.run_id} is storing this minute ({attempt_of(request.attempts, request, policy)})."
    if request.status == Status.SUCCEEDED:
        return "Stored: see snapshot_url."
    if (next_attempt := policy.next_attempt(request)) is None:
        key = request.minute.strftime("%Y-%m-%d-%H:%M")
        return (
            f"It failed; all {policy.max_attempts} attempts are used, none is left: "
            f"`python -m scripts.backfill_range {key}...{key}` fetches it."
        )
    when = next_attempt.isoformat().replace("+00:00", "Z")
    if request.permanent:
        return (
            "It failed for a reason a retry cannot fix (see error): fix it, then ask for the minute again "
            f"from {when} to queue attempt 1 of {policy.max_attempts}."
        )
    attempt = attempt_of(request.attempts + 1, request, policy)
    if policy.retried_by_itself(request):
        return f"It failed (see error); {attempt} is queued by itself at {when}."
    return f"It failed (see error): ask for the minute again from {when} to queue {attempt}."


def attempt_of(number: int, request: BackfillRequest, policy: RequestPolicy) -> str:
    if policy.heals(request.minute):
        return f"attempt {number}; retried until it is published, as every minute of the last HEAL_HORIZON_HOURS"
    return f"attempt {number} of {policy.max_attempts}"


def status_of(request: BackfillRequest, policy: RequestPolicy) -> BackfillStatus:
    snapshot_url = f"/?datetime={minute_url(request.minute)}" if request.status == Status.SUCCEEDED else None
    fields = {k: v for k, v in vars(request).items() if k not in ("run_key", "submitted_at")}
    return BackfillStatus(
        **fields,
        detail=next_step(request, policy),
        max_attempts=policy.max_attempts,
        next_attempt_at=policy.next_attempt(request),
        snapshot_url=snapshot_url,
    )


BACKFILL_ROUTE = {"response_model": BackfillStatus, "responses": problem_responses(404, 422, 503)}


@router.head("/backfills/{minute}", summary="The headers `GET /backfills/{minute}` sends, no body", **BACKFILL_ROUTE)
@router.get("/backfills/{minute}", summary="Status of the backfill requested for a minute", **BACKFILL_ROUTE)
async def get_backfill(
    minute: Annotated[str, Path(max_length=64, description="The minute, e.g. 2026-11-27T12:05Z.")],
    service: Service,
) -> BackfillStatus:
    looked_for = minute_of(parse_moment(minute, "minute"))
    request = await service.db(service.store.requests.get, looked_for)
    if request is None:
        raise ProblemError(404, "Not found", f"No backfill was requested for the minute {minute_url(looked_for)}.")
    return status_of(request, service.policy)
