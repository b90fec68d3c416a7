"""What an application's login flow calls: push requests and TOTP checks."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ...models import (
    ROLE_PERMISSIONS,
    ErrorBody,
    Permission,
    PushAttempt,
    PushCreated,
    PushRequest,
    TotpVerifyRequest,
    TotpVerifyResult,
)
from ..deps import CanPush, CanReadPush, CanVerifyTotp, ClockDep, StoreDep
from ..errors import ErrorResponses
from ..services import push as push_service
from ..services import ratelimit
from ..services import totp as totp_service

router = APIRouter(prefix="/api/v2/protect", tags=["resource"])


@router.post(
    "/push",
    response_model=PushCreated,
    status_code=201,
    responses={
        **ErrorResponses.of(404),
        409: {"model": ErrorBody, "description": "The user is suspended or locked, or has no active push device"},
        429: ErrorResponses.push_refused,
    },
)
def create_push(body: PushRequest, request: Request, actor: CanPush, store: StoreDep, clock: ClockDep) -> PushCreated:
    """Send a push to the user's device, unless it is refused with 429 (recorded as a `blocked` attempt):
    while an admin's Stop-attack block is in force (`blockedUntil`), or when the concurrency cap is reached.
    Role: service, or admin."""
    return push_service.create_attempt(
        store, body, clock.now(), actor=actor, address=ratelimit.client_address(request.client)
    )


@router.get("/push/{attempt_id}", response_model=PushAttempt)
def get_push(attempt_id: str, _: CanReadPush, store: StoreDep, clock: ClockDep) -> PushAttempt:
    with store.read() as conn:
        return push_service.get_attempt(conn, attempt_id, clock.now())


@router.post("/totp/verify", response_model=TotpVerifyResult, responses=ErrorResponses.of(404, 409, 429))
async def verify_totp(body: TotpVerifyRequest, request: Request, actor: CanVerifyTotp) -> Response:
    """Check a code. From a helpdesk/admin key this is the support desk's caller check, and is audited."""
    # The hot path: no thread hop, and the answer serialised once. The database work is a read and one
    # conditional UPDATE (microseconds on SQLite, two round trips on PostgreSQL), done inline.
    store, now = request.app.state.store, request.app.state.clock.now()
    if Permission.READ in ROLE_PERMISSIONS[actor.role]:
        result = await run_in_threadpool(
            totp_service.verify_audited,
            store,
            body.userId,
            body.code,
            now,
            actor,
            address=ratelimit.client_address(request.client),
        )
    else:
        result = totp_service.verify_unaudited(
            store, actor, body.userId, body.code, now, address=ratelimit.client_address(request.client)
        )
    return Response(result.model_dump_json(), media_type="application/json")
