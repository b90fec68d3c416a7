"""Push devices: enrolment codes, enrolment, the device's own settings, diagnostics, privacy."""

from __future__ import annotations

import base64
import json
import re
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import case, delete, func, insert, select, true, update
from sqlalchemy.engine import Connection

from ...models import (
    MIN_OS_MAJOR,  # the schema states it too (models.EnrollingDevice)
    DeviceEnrollRequest,
    DeviceEnrollResult,
    DeviceInfo,
    DevicePrivacy,
    DeviceSettingsResult,
    DeviceSettingsUpdate,
    EnrollmentCode,
    Page,
    PrivacyDevice,
    PrivacySummary,
    PushEndpoint,
    PushEndpointPatch,
    UserRef,
)
from ..clock import to_wire
from ..errors import ApiProblem, bad_request, not_found
from ..store import Store, devices, diagnostics, enrollment_codes, users
from . import ratelimit
from .audit import record
from .common import Principal, digest, new_id
from .users import cancel_pending_pushes, remove_push_device, require_user

ENROLLMENT_CODE_TTL = timedelta(minutes=10)
DIAGNOSTICS_MAX_BYTES = 64 * 1024


def endpoint_from_row(row: Any) -> PushEndpoint:
    return PushEndpoint(
        id=row.id,
        name=row.name,
        state=row.state,
        enrollmentDate=to_wire(row.enrolled_at),
        lastUsedDate=to_wire(row.last_used_at),
        device=DeviceInfo.model_construct(
            make=row.make,
            model=row.model,
            os=row.os,
            osVersion=row.os_version,
            appVersion=row.app_version,
            uvEnabled=bool(row.uv_enabled),
        ),
        privacy=DevicePrivacy(
            diagnosticsOptOut=bool(row.diagnostics_opt_out), updatedAt=to_wire(row.privacy_updated_at)
        ),
    )


def list_endpoints(conn: Connection, user_id: str) -> list[PushEndpoint]:
    require_user(conn, user_id)
    return [endpoint_from_row(r) for r in conn.execute(select(devices).where(devices.c.user_id == user_id))]


def _require_endpoint(conn: Connection, user_id: str, endpoint_id: str) -> Any:
    require_user(conn, user_id)
    row = conn.execute(select(devices).where(devices.c.id == endpoint_id, devices.c.user_id == user_id)).first()
    if row is None:
        raise not_found(f"push endpoint {endpoint_id} of user {user_id}")
    return row


def get_endpoint(conn: Connection, user_id: str, endpoint_id: str) -> PushEndpoint:
    return endpoint_from_row(_require_endpoint(conn, user_id, endpoint_id))


def patch_endpoint(
    store: Store, user_id: str, endpoint_id: str, body: PushEndpointPatch, actor: Principal, now: datetime
) -> PushEndpoint:
    requested = body.model_dump(exclude_none=True)
    with store.write() as conn:
        row = _require_endpoint(conn, user_id, endpoint_id)
        # Only what differs is a change: the state it already has writes nothing and audits nothing.
        change = {k: v for k, v in requested.items() if row._mapping[k] != v}
        if change:
            conn.execute(update(devices).where(devices.c.id == endpoint_id).values(**change))
            if change.get("state") == "inactive":
                cancel_pending_pushes(conn, user_id, now)
            record(
                conn,
                actor,
                "device.update",
                user_id,
                {"device": endpoint_id, "before": {k: row._mapping[k] for k in change}, "after": change},
                now,
            )
        return get_endpoint(conn, user_id, endpoint_id)


def unenroll(store: Store, user_id: str, endpoint_id: str, actor: Principal, now: datetime) -> PushEndpoint:
    with store.write() as conn:
        require_user(conn, user_id, lock=True)
        removed = endpoint_from_row(_require_endpoint(conn, user_id, endpoint_id))
        remove_push_device(conn, user_id, now)
        conn.execute(
            update(users).where(users.c.id == user_id).values(push_status="NOT_ENROLLED", push_pending_until=None)
        )
        record(
            conn,
            actor,
            "device.unenroll",
            user_id,
            {"before": removed.model_dump(mode="json"), "after": None},
            now,
        )
        return removed


# --------------------------------------------------------------- enrolment


def _new_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(10)).decode()  # 16 unambiguous characters
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


def _normalise_code(code: str) -> str:
    return code.replace("-", "").replace(" ", "").upper()


def create_enrollment_code(
    store: Store, user_id: str, actor: Principal, now: datetime, server_url: str
) -> EnrollmentCode:
    code = _new_code()
    expires = now + ENROLLMENT_CODE_TTL
    with store.write() as conn:
        user = require_user(conn, user_id, lock=True)
        # One live code per user: a new QR code supersedes the last one.
        conn.execute(delete(enrollment_codes).where(enrollment_codes.c.user_id == user_id))
        conn.execute(
            insert(enrollment_codes).values(
                code_hash=digest(_normalise_code(code)), user_id=user_id, created_at=now, expires_at=expires
            )
        )
        if user.push_status != "ENROLLED":
            conn.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(push_status="PENDING_ACTIVATION", push_pending_until=expires)
            )
        record(conn, actor, "enrollment.create", user_id, {"expiresAt": expires.isoformat()}, now)
    uri = f"protect://enroll?code={quote(code)}&server={quote(server_url, safe='')}"
    return EnrollmentCode(code=code, expiresAt=to_wire(expires), uri=uri)


def _check_os(device: DeviceInfo) -> None:
    minimum = MIN_OS_MAJOR[device.os]
    head = device.osVersion.split(".")[0]
    if not re.fullmatch("[0-9]+", head):  # str.isdigit() admits superscripts int() refuses
        raise ApiProblem(422, f"device.osVersion: {device.osVersion!r} is not a version number")
    if int(head) < minimum:
        raise ApiProblem(422, f"device.osVersion: Protect needs {device.os} {minimum} or later")


def enroll_device(
    store: Store, body: DeviceEnrollRequest, now: datetime, *, address: str | None = None
) -> DeviceEnrollResult:
    """Spend a one-time code on a new device; each client address may try ``rateLimits.enrollPerMinute`` a minute."""
    ratelimit.admit(store, ratelimit.Route.ENROLL, key_id=None, address=address, now=now)  # counted, even if refused
    _check_os(body.device)
    token = "pd_" + secrets.token_urlsafe(32)
    device_id = new_id()
    with store.write() as conn:
        code = conn.execute(
            select(enrollment_codes).where(enrollment_codes.c.code_hash == digest(_normalise_code(body.code)))
        ).first()
        if code is None or code.used_at is not None:
            raise bad_request("code: unknown or already used enrollment code")
        if code.expires_at <= now:
            raise bad_request("code: the enrollment code has expired; ask your admin for a new one")
        user = require_user(conn, code.user_id, lock=True)
        # Spend the code first, conditionally: of several enrolments racing with one code (in any
        # process, on any host) exactly one finds it unused, under the user's row lock.
        spent = conn.execute(
            update(enrollment_codes)
            .where(enrollment_codes.c.code_hash == code.code_hash, enrollment_codes.c.used_at.is_(None))
            .values(used_at=now)
        ).rowcount
        if spent != 1:
            raise bad_request("code: unknown or already used enrollment code")
        # One device per user: the old one is unenrolled in this same transaction.
        old = remove_push_device(conn, user.id, now)
        d = body.device
        conn.execute(
            insert(devices).values(
                id=device_id,
                user_id=user.id,
                name=body.name,
                state="active",
                make=d.make,
                model=d.model,
                os=d.os,
                os_version=d.osVersion,
                app_version=d.appVersion,
                uv_enabled=d.uvEnabled,
                token_hash=digest(token),
                enrolled_at=now,
                diagnostics_opt_out=False,
                notifications_enabled=True,
            )
        )
        conn.execute(update(users).where(users.c.id == user.id).values(push_status="ENROLLED", push_pending_until=None))
        actor = f"user:{user.username}"
        if old is not None:
            record(conn, actor, "device.replace", user.id, {"before": old.id, "after": device_id}, now)
        record(
            conn,
            actor,
            "device.enroll",
            user.id,
            {"after": {"device": device_id, "model": d.model, "os": f"{d.os} {d.osVersion}"}},
            now,
        )
    return DeviceEnrollResult(deviceId=device_id, token=token)


def authenticate_device(store: Store, token: str) -> Any | None:
    with store.read() as conn:
        return conn.execute(select(devices).where(devices.c.token_hash == digest(token))).first()


def _audit_settings_change(conn: Connection, before: Any, changed: dict[str, Any], now: datetime) -> None:
    """The user's app changed its settings (diagnostics opt-out, notifications): a device event."""
    username = conn.execute(select(users.c.username).where(users.c.id == before.user_id)).scalar()
    wire = {"diagnostics_opt_out": "diagnosticsOptOut", "notifications_enabled": "notificationsEnabled"}
    record(
        conn,
        f"user:{username}",
        "device.settings",
        before.user_id,
        {
            "device": before.id,
            "before": {wire[k]: bool(before._mapping[k]) for k in changed},
            "after": {wire[k]: bool(v) for k, v in changed.items()},
        },
        now,
    )


def update_device_settings(
    store: Store, device: Any, body: DeviceSettingsUpdate, now: datetime
) -> DeviceSettingsResult:
    change: dict[str, Any] = {}
    if body.diagnosticsOptOut is not None:
        change["diagnostics_opt_out"] = body.diagnosticsOptOut
        change["privacy_updated_at"] = now
    if body.notificationsEnabled is not None:
        change["notifications_enabled"] = body.notificationsEnabled
    with store.write() as conn:
        before = conn.execute(select(devices).where(devices.c.id == device.id)).first()
        if before is None:
            raise ApiProblem(401, "device is no longer enrolled")
        changed = {k: v for k, v in change.items() if k != "privacy_updated_at" and before._mapping[k] != v}
        if changed:
            conn.execute(update(devices).where(devices.c.id == device.id).values(**change))
            _audit_settings_change(conn, before, changed, now)
        row = conn.execute(select(devices).where(devices.c.id == device.id)).one()  # read above, in this transaction
    return DeviceSettingsResult(
        diagnosticsOptOut=bool(row.diagnostics_opt_out), notificationsEnabled=bool(row.notifications_enabled)
    )


def receive_diagnostics(store: Store, device: Any, report: dict[str, Any], now: datetime) -> bool:
    """Store the report unless the device opted out; then only count it. Returns whether stored."""
    # ASCII-escaped: a lone surrogate in a JSON string is legal JSON but not encodable UTF-8.
    payload = json.dumps(report, ensure_ascii=True, separators=(",", ":"))
    if len(payload) > DIAGNOSTICS_MAX_BYTES:
        raise ApiProblem(422, f"request body: diagnostics report larger than {DIAGNOSTICS_MAX_BYTES} bytes")
    with store.write() as conn:
        # Read the opt-out inside the transaction: a toggle racing this report wins.
        opted_out = conn.execute(select(devices.c.diagnostics_opt_out).where(devices.c.id == device.id)).scalar()
        if opted_out is None:
            raise ApiProblem(401, "device is no longer enrolled")
        if opted_out:
            conn.execute(
                update(devices)
                .where(devices.c.id == device.id)
                .values(diagnostics_dropped=devices.c.diagnostics_dropped + 1)
            )
            return False
        conn.execute(insert(diagnostics).values(device_id=device.id, received_at=now, payload=payload))
        return True


# ----------------------------------------------------------------- privacy


def privacy_summary(conn: Connection) -> PrivacySummary:
    row = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((devices.c.diagnostics_opt_out == true(), 1), else_=0)), 0),
            func.coalesce(func.sum(devices.c.diagnostics_dropped), 0),
        ).select_from(devices)
    ).one()
    total, opted_out, dropped = int(row[0]), int(row[1]), int(row[2])
    stored = conn.execute(select(func.count()).select_from(diagnostics)).scalar_one()
    return PrivacySummary(
        devices=total,
        optedOut=opted_out,
        optedIn=total - opted_out,
        diagnosticsStored=stored,
        diagnosticsDropped=dropped,
    )


def privacy_devices(conn: Connection, opted_out: bool | None, skip: int, limit: int) -> Page[PrivacyDevice]:
    where = [] if opted_out is None else [devices.c.diagnostics_opt_out == opted_out]
    total = conn.execute(select(func.count()).select_from(devices).where(*where)).scalar_one()
    rows = conn.execute(
        select(devices, users.c.username, users.c.email, users.c.displayname)
        .join(users, users.c.id == devices.c.user_id)
        .where(*where)
        .order_by(devices.c.id)
        .offset(skip)
        .limit(limit)
    )
    results = []
    for r in rows:
        endpoint = endpoint_from_row(r)
        results.append(
            PrivacyDevice(
                **endpoint.model_dump(),
                user=UserRef(id=r.user_id, username=r.username, email=r.email, displayname=r.displayname),
            )
        )
    return Page[PrivacyDevice](totalCount=total, results=results)
