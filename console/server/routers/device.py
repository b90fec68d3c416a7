"""What the Protect mobile app calls (Authorization: Bearer <device token>)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from ...models import (
    DeviceEnrollRequest,
    DeviceEnrollResult,
    DevicePush,
    DeviceSettingsResult,
    DeviceSettingsUpdate,
    DiagnosticsAccepted,
    PushAttempt,
    PushResponse,
    TotpEnrollResult,
)
from ..deps import ClockDep, Device, StoreDep
from ..errors import ErrorResponses
from ..services import devices as device_service
from ..services import push as push_service
from ..services import ratelimit
from ..services import totp as totp_service

router = APIRouter(prefix="/device/v1", tags=["device"])


@router.post("/enroll", response_model=DeviceEnrollResult, status_code=201, responses=ErrorResponses.of(400, 429))
def enroll(body: DeviceEnrollRequest, request: Request, store: StoreDep, clock: ClockDep) -> DeviceEnrollResult:
    """Enrol with a one-time code; replaces the user's existing device. iOS 13+ / Android 8+."""
    return device_service.enroll_device(store, body, clock.now(), address=ratelimit.client_address(request.client))


@router.get("/pushes", response_model=list[DevicePush])
def pending_pushes(device: Device, store: StoreDep, clock: ClockDep) -> list[DevicePush]:
    """Every pending, unexpired push for this device's user (lost notifications included)."""
    with store.read() as conn:
        return push_service.pending_for_device(conn, device, clock.now())


@router.post("/pushes/{attempt_id}/respond", response_model=PushAttempt, responses=ErrorResponses.of(403, 409))
def respond(attempt_id: str, body: PushResponse, device: Device, store: StoreDep, clock: ClockDep) -> PushAttempt:
    return push_service.respond(store, device, attempt_id, body, clock.now())


@router.put("/settings", response_model=DeviceSettingsResult)
def device_settings(
    body: DeviceSettingsUpdate, device: Device, store: StoreDep, clock: ClockDep
) -> DeviceSettingsResult:
    return device_service.update_device_settings(store, device, body, clock.now())


@router.post("/diagnostics", response_model=DiagnosticsAccepted, status_code=202)
def diagnostics(
    report: Annotated[dict[str, Any], Body()], device: Device, store: StoreDep, clock: ClockDep
) -> DiagnosticsAccepted:
    """Accepted always; stored only when the device has not opted out (otherwise counted and dropped)."""
    return DiagnosticsAccepted(stored=device_service.receive_diagnostics(store, device, report, clock.now()))


@router.post("/totp", response_model=TotpEnrollResult)
def enroll_totp(device: Device, store: StoreDep, clock: ClockDep) -> TotpEnrollResult:
    """Make the app the user's TOTP authenticator. The URI is the only time the secret leaves the server."""
    return totp_service.enroll(store, device, clock.now())
