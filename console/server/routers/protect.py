"""Our own admin endpoints under /api/v2/protect: identity, settings, enrolment, privacy, history."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Header, Query, Request, Response

from ...models import (
    BOMBING_THRESHOLD,
    PAGE_MAX,
    ROLE_PERMISSIONS,
    AuditEvent,
    EnrollmentCode,
    IsoDateTime,
    Page,
    PrivacyDevice,
    PrivacySummary,
    ProtectSettings,
    ProtectSettingsPatch,
    PushAttempt,
    PushBlockLifted,
    PushBlockRequest,
    PushBlockResult,
    PushStats,
    PushStatus,
    TotpResetResult,
    WhoAmI,
)
from ..deps import AnyKey, CanBlockPush, CanEnroll, CanRead, CanResetTotp, CanWriteSettings, ClockDep, StoreDep
from ..errors import ErrorResponses
from ..services import audit as audit_service
from ..services import devices as device_service
from ..services import push as push_service
from ..services import settings as settings_service
from ..services import users as user_service
from .params import After, Before, Count, Limit, Skip

router = APIRouter(prefix="/api/v2/protect", tags=["protect admin"])


@router.get("/whoami", response_model=WhoAmI)
def whoami(principal: AnyKey) -> WhoAmI:
    """The calling key's name, role and what that role may do."""
    return WhoAmI(name=principal.name, role=principal.role, permissions=sorted(ROLE_PERMISSIONS[principal.role]))


@router.get("/settings", response_model=ProtectSettings)
def get_settings(response: Response, _: CanRead, store: StoreDep) -> ProtectSettings:
    with store.read() as conn:
        current, version = settings_service.read_settings(conn)
    response.headers["ETag"] = settings_service.etag_for(version)
    return current


@router.patch("/settings", response_model=ProtectSettings, responses=ErrorResponses.of(412, 428))
def patch_settings(
    body: ProtectSettingsPatch,
    response: Response,
    actor: CanWriteSettings,
    store: StoreDep,
    clock: ClockDep,
    if_match: str | None = Header(None, alias="If-Match", description="The ETag from GET /settings."),
) -> ProtectSettings:
    """Change some settings. Send ``If-Match`` with the ETag you read; a stale one gets 412."""
    updated, version = settings_service.update_settings(store, body, if_match, actor, clock.now())
    response.headers["ETag"] = settings_service.etag_for(version)
    return updated


@router.post(
    "/users/{user_id}/totp/reset", response_model=TotpResetResult, responses=ErrorResponses.of(401, 403, 404, 422)
)
def reset_totp(user_id: str, actor: CanResetTotp, store: StoreDep, clock: ClockDep) -> TotpResetResult:
    """Reset TOTP only (the push device stays); also lifts a failed-codes lock.

    A user without TOTP is left as is: `changed: false`, and no audit event. Role: admin or helpdesk.
    """
    user, changed = user_service.reset_totp(store, user_id, actor, clock.now())
    return TotpResetResult(userId=user.id, totpStatus=user.mfaEnrollment.totpStatus, changed=changed)


@router.post(
    "/users/{user_id}/push/block",
    response_model=PushBlockResult,
    responses=ErrorResponses.of(401, 403, 404, 422),
)
def block_push(
    user_id: str,
    actor: CanBlockPush,
    store: StoreDep,
    clock: ClockDep,
    body: PushBlockRequest | None = None,
) -> PushBlockResult:
    """Stop a push-bombing attack on one user.

    Cancels the user's pending pushes (`cancelPending`; they end as `expired`), refuses new pushes
    for `minutes` (the resource-facing `POST /api/v2/protect/push` answers 429 with `blockedUntil`,
    and the refusals are recorded as `blocked` attempts), and with `requireUserVerification`
    makes this user's approvals need biometric/passcode verification from now on (switched off
    with `PUT /api/systemusers/{id}` `{"requireUserVerification": false}`). A new block replaces
    one in force. The user's `GET` shows `pushBlock` while it is in force. Audited as `push.block`
    with before/after. Role: admin or helpdesk (permission `push.block`).
    """
    return push_service.block_push(store, user_id, body or PushBlockRequest(), actor, clock.now())


@router.delete(
    "/users/{user_id}/push/block", response_model=PushBlockLifted, responses=ErrorResponses.of(401, 403, 404, 422)
)
def lift_push_block(user_id: str, actor: CanBlockPush, store: StoreDep, clock: ClockDep) -> PushBlockLifted:
    """Lift the user's push block. `lifted: false` when none was in force (nothing changed, nothing audited);
    otherwise audited as `push.unblock`. The per-user verification requirement stays.
    Role: admin or helpdesk (permission `push.block`).
    """
    return push_service.lift_push_block(store, user_id, actor, clock.now())


Since = Query(
    None, description="ISO 8601; count attempts created at or after this (default: the last hour, the bombing window)."
)


@router.get(
    "/users/{user_id}/pushstats", response_model=PushStats, responses=ErrorResponses.of(400, 401, 403, 404, 422)
)
def user_push_stats(
    user_id: str,
    _: CanRead,
    store: StoreDep,
    clock: ClockDep,
    since: IsoDateTime | None = Since,
) -> PushStats:
    """One user's push attempts in the window, counted on the server: by status (as of now: a pending
    attempt past its time counts as expired), reported fraud, resources (most attempted first), the
    last attempt's time and the block in force. A deleted user's kept history still answers.
    Role: any reading role.
    """
    with store.read() as conn:
        return push_service.user_push_stats(conn, clock.now(), user_id, since)


@router.get("/pushstats", response_model=Page[PushStats], responses=ErrorResponses.of(400, 401, 403, 422))
def push_suspects(
    _: CanRead,
    store: StoreDep,
    clock: ClockDep,
    since: IsoDateTime | None = Since,
    minHostile: int = Query(
        BOMBING_THRESHOLD,
        ge=0,
        le=1_000_000,
        description="Blocked + denied attempts in the window that make a suspect.",
    ),
    limit: int = Query(50, ge=1, le=PAGE_MAX),
) -> Page[PushStats]:
    """Push-bombing suspects: users with at least `minHostile` blocked+denied attempts in the window,
    plus every user with a push block in force; most hostile first, then the latest attack.
    The same aggregate as `/users/{id}/pushstats`. Role: any reading role.
    """
    with store.read() as conn:
        return push_service.push_stats(conn, clock.now(), since, min_hostile=minHostile, limit=limit)


@router.post("/users/{user_id}/enrollments", response_model=EnrollmentCode, status_code=201)
def create_enrollment(
    user_id: str,
    request: Request,
    actor: CanEnroll,
    store: StoreDep,
    clock: ClockDep,
) -> EnrollmentCode:
    """A one-time push enrolment code (what the QR code carries), valid 10 minutes."""
    server_url = str(request.base_url).rstrip("/")
    return device_service.create_enrollment_code(store, user_id, actor, clock.now(), server_url)


@router.get("/privacy/summary", response_model=PrivacySummary)
def privacy_summary(_: CanRead, store: StoreDep) -> PrivacySummary:
    with store.read() as conn:
        return device_service.privacy_summary(conn)


@router.get("/privacy/devices", response_model=Page[PrivacyDevice])
def privacy_devices(
    _: CanRead,
    store: StoreDep,
    optedOut: bool | None = Query(None, description="Only devices that opted out (true) or in (false)."),
    skip: int = Skip,
    limit: int = Limit,
) -> Page[PrivacyDevice]:
    with store.read() as conn:
        return device_service.privacy_devices(conn, optedOut, skip, limit)


@router.get("/pushattempts", response_model=Page[PushAttempt], responses=ErrorResponses.of(400))
def push_attempts(
    _: CanRead,
    store: StoreDep,
    clock: ClockDep,
    userId: str | None = Query(None, max_length=64),
    status: PushStatus | None = Query(None),
    since: IsoDateTime | None = Query(None, description="ISO 8601; attempts created at or after."),
    skip: int = Skip,
    limit: int = Limit,
    after: str | None = After,
    before: str | None = Before,
    count: bool = Count,
) -> Page[PushAttempt]:
    """Push attempts, newest first. Keyset paging as the users list: `after`/`before` a page's cursor,
    `count=false`."""
    with store.read() as conn:
        return push_service.list_attempts(
            conn,
            clock.now(),
            user_id=userId,
            status=status,
            since=since,
            skip=skip,
            limit=limit,
            after=after,
            before=before,
            count=count,
        )


@router.get("/audit", response_model=Page[AuditEvent], responses=ErrorResponses.of(400))
def audit_events(
    _: CanRead,
    store: StoreDep,
    skip: int = Skip,
    limit: int = Limit,
    actor: str | None = Query(
        None, max_length=1024, description="Exactly this actor (an API key's name, or `user:<username>`)."
    ),
    action: str | None = Query(
        None,
        max_length=64,
        description="Exactly this action (`push.block`), or a prefix when it ends with `.` (`push.`).",
    ),
    target: str | None = Query(None, max_length=1024, description="A user id or username (deleted users' too)."),
    kind: Literal["admin", "device"] | None = Query(
        None, description="`admin`: an API key did it; `device`: the user's app/device did (enrolment, TOTP enrolment)."
    ),
    after: str | None = After,
    before: str | None = Before,
    count: bool = Count,
) -> Page[AuditEvent]:
    """Every change, newest first, optionally filtered (filters AND together). Role: any reading role.

    Keyset paging as the users list: `after`/`before` a page's cursor, `count=false`."""
    with store.read() as conn:
        return audit_service.list_events(
            conn,
            skip,
            limit,
            actor=actor,
            action=action,
            target=target,
            kind=kind,
            after=after,
            before=before,
            count=count,
        )
