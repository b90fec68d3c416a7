"""Our own admin endpoints under /api/v2/protect: identity, settings, enrolment, privacy, history."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from ...models import (
    ROLE_PERMISSIONS,
    AuditEvent,
    EnrollmentCode,
    Page,
    Permission,
    PrivacyDevice,
    PrivacySummary,
    ProtectSettings,
    ProtectSettingsPatch,
    PushAttempt,
    PushStatus,
    TotpResetResult,
    WhoAmI,
)
from ..auth import current_principal, get_clock, get_store, require
from ..clock import Clock
from ..services import audit as audit_service
from ..services import devices as device_service
from ..services import push as push_service
from ..services import settings as settings_service
from ..services import users as user_service
from ..services.common import Principal
from ..store import Store

router = APIRouter(prefix="/api/v2/protect", tags=["protect admin"])

Skip = Query(0, ge=0, le=10_000_000)
Limit = Query(10, ge=1, le=100)


@router.get("/whoami", response_model=WhoAmI)
def whoami(principal: Principal = Depends(current_principal)) -> WhoAmI:
    """The calling key's name, role and what that role may do."""
    return WhoAmI(name=principal.name, role=principal.role, permissions=sorted(ROLE_PERMISSIONS[principal.role]))


@router.get("/settings", response_model=ProtectSettings)
def get_settings(
    response: Response, _: Principal = Depends(require(Permission.READ)), store: Store = Depends(get_store)
) -> ProtectSettings:
    with store.read() as conn:
        current, version = settings_service.read_settings(conn)
    response.headers["ETag"] = settings_service.etag_for(version)
    return current


@router.patch("/settings", response_model=ProtectSettings, responses={412: {"description": "stale If-Match"}})
def patch_settings(
    body: ProtectSettingsPatch,
    response: Response,
    if_match: str | None = Header(None, alias="If-Match", description="The ETag from GET /settings."),
    actor: Principal = Depends(require(Permission.SETTINGS_WRITE)),
    store: Store = Depends(get_store),
    clock: Clock = Depends(get_clock),
) -> ProtectSettings:
    """Change some settings. Send ``If-Match`` with the ETag you read; a stale one gets 412."""
    updated, version = settings_service.update_settings(store, body, if_match, actor, clock.now())
    response.headers["ETag"] = settings_service.etag_for(version)
    return updated


@router.post("/users/{user_id}/totp/reset", response_model=TotpResetResult)
def reset_totp(
    user_id: str,
    actor: Principal = Depends(require(Permission.TOTP_RESET)),
    store: Store = Depends(get_store),
    clock: Clock = Depends(get_clock),
) -> TotpResetResult:
    """Reset TOTP only (the push device stays); also lifts a failed-codes lock."""
    user = user_service.reset_totp(store, user_id, actor, clock.now())
    return TotpResetResult(userId=user.id, totpStatus=user.mfaEnrollment.totpStatus)


@router.post("/users/{user_id}/enrollments", response_model=EnrollmentCode, status_code=201)
def create_enrollment(
    user_id: str,
    request: Request,
    actor: Principal = Depends(require(Permission.ENROLL)),
    store: Store = Depends(get_store),
    clock: Clock = Depends(get_clock),
) -> EnrollmentCode:
    """A one-time push enrolment code (what the QR code carries), valid 10 minutes."""
    server_url = str(request.base_url).rstrip("/")
    return device_service.create_enrollment_code(store, user_id, actor, clock.now(), server_url)


@router.get("/privacy/summary", response_model=PrivacySummary)
def privacy_summary(_: Principal = Depends(require(Permission.READ)), store: Store = Depends(get_store)) -> PrivacySummary:
    with store.read() as conn:
        return device_service.privacy_summary(conn)


@router.get("/privacy/devices", response_model=Page[PrivacyDevice])
def privacy_devices(
    optedOut: bool | None = Query(None, description="Only devices that opted out (true) or in (false)."),
    skip: int = Skip,
    limit: int = Limit,
    _: Principal = Depends(require(Permission.READ)),
    store: Store = Depends(get_store),
) -> Page[PrivacyDevice]:
    with store.read() as conn:
        return device_service.privacy_devices(conn, optedOut, skip, limit)


@router.get("/pushattempts", response_model=Page[PushAttempt])
def push_attempts(
    userId: str | None = Query(None, max_length=64),
    status: PushStatus | None = Query(None),
    since: datetime | None = Query(None, description="ISO 8601; attempts created at or after."),
    skip: int = Skip,
    limit: int = Limit,
    _: Principal = Depends(require(Permission.READ)),
    store: Store = Depends(get_store),
    clock: Clock = Depends(get_clock),
) -> Page[PushAttempt]:
    """Push attempts, newest first."""
    with store.read() as conn:
        return push_service.list_attempts(
            conn, clock.now(), user_id=userId, status=status, since=since, skip=skip, limit=limit
        )


@router.get("/audit", response_model=Page[AuditEvent])
def audit_events(
    skip: int = Skip,
    limit: int = Limit,
    _: Principal = Depends(require(Permission.READ)),
    store: Store = Depends(get_store),
) -> Page[AuditEvent]:
    """Admin actions, newest first."""
    with store.read() as conn:
        return audit_service.list_events(conn, skip, limit)
