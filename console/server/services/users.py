"""The user directory: listing, search, filters, profile changes and MFA resets.

Enrollment statuses that depend on time (a grace period or an enrolment code
running out) are computed in SQL from the stored state and the server clock,
so that the same rule serves both the filters and the output.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ...models import (
    EnrollmentStatus,
    Mfa,
    MfaEnrollment,
    Page,
    PushBlock,
    ResetMfaRequest,
    SystemUser,
    SystemUserCreate,
    SystemUserUpdate,
    UserState,
)
from ..clock import from_wire, to_wire
from ..errors import ApiProblem, bad_request, conflict, not_found
from ..store import Store, devices, enrollment_codes, folded, push_attempts, users
from .audit import keep_target_name, record
from .common import Principal, new_id
from .lockout import totp_lock
from .settings import read_settings

ENROLLED = EnrollmentStatus.ENROLLED.value
DEFAULT_GRACE_DAYS = 7
MAX_GRACE_DAYS = 365  # same bound as exclusionDays: no open-ended MFA exemptions
SEARCH_FIELDS = ("username", "email", "firstname", "lastname", "displayname")


# ------------------------------------------------------------ status rules


def push_status_expr(now: datetime) -> ColumnElement[str]:
    return case(
        (
            and_(users.c.push_status == EnrollmentStatus.PENDING_ACTIVATION.value, users.c.push_pending_until <= now),
            literal(EnrollmentStatus.ENROLLMENT_EXPIRED.value),
        ),
        else_=users.c.push_status,
    )


def overall_status_expr(now: datetime) -> ColumnElement[str]:
    any_enrolled = or_(
        users.c.totp_status == ENROLLED, users.c.push_status == ENROLLED, users.c.webauthn_status == ENROLLED
    )
    in_grace = and_(
        users.c.mfa_exclusion == true(),
        or_(users.c.mfa_exclusion_until.is_(None), users.c.mfa_exclusion_until > now),
    )
    grace_over = and_(users.c.mfa_exclusion == true(), users.c.mfa_exclusion_until <= now)
    return case(
        (any_enrolled, literal(ENROLLED)),
        (in_grace, literal(EnrollmentStatus.IN_ENROLLMENT.value)),
        (grace_over, literal(EnrollmentStatus.ENROLLMENT_EXPIRED.value)),
        (
            push_status_expr(now) == EnrollmentStatus.PENDING_ACTIVATION.value,
            literal(EnrollmentStatus.PENDING_ACTIVATION.value),
        ),
        else_=literal(EnrollmentStatus.NOT_ENROLLED.value),
    )


def push_block_until_expr(now: datetime) -> ColumnElement[Any]:
    """The end of the user's push block while it is in force, else NULL (compared with the server clock)."""
    return case((users.c.push_blocked_until > now, users.c.push_blocked_until), else_=None)


def _user_columns(now: datetime) -> list[Any]:
    return [
        users.c.id,
        users.c.username,
        users.c.email,
        users.c.firstname,
        users.c.lastname,
        users.c.displayname,
        users.c.state,
        users.c.account_locked,
        users.c.created,
        users.c.totp_status,
        users.c.webauthn_status,
        users.c.mfa_exclusion,
        users.c.mfa_exclusion_until,
        push_status_expr(now).label("push_status_now"),
        overall_status_expr(now).label("overall_status_now"),
        users.c.totp_failures,
        push_block_until_expr(now).label("push_blocked_now"),
        users.c.push_blocked_by,
        users.c.push_blocked_at,
        users.c.require_user_verification,
    ]


def push_block_from(until: datetime | None, by: str | None, at: datetime | None) -> PushBlock | None:
    if until is None:
        return None
    return PushBlock(blockedUntil=to_wire(until), blockedBy=by or "", blockedAt=to_wire(at or until))


def _to_user(row: Any, max_failures: int) -> SystemUser:
    overall = row.overall_status_now
    return SystemUser(
        _id=row.id,
        username=row.username,
        email=row.email,
        firstname=row.firstname,
        lastname=row.lastname,
        displayname=row.displayname,
        state=row.state,
        account_locked=bool(row.account_locked),
        created=to_wire(row.created),
        totp_enabled=row.totp_status == ENROLLED,
        mfa=Mfa(
            configured=overall == ENROLLED,
            exclusion=bool(row.mfa_exclusion),
            exclusionUntil=to_wire(row.mfa_exclusion_until),
        ),
        mfaEnrollment=MfaEnrollment(
            overallStatus=overall,
            totpStatus=row.totp_status,
            pushStatus=row.push_status_now,
            webAuthnStatus=row.webauthn_status,
        ),
        totpLock=totp_lock(row.totp_failures, max_failures),
        pushBlock=push_block_from(row.push_blocked_now, row.push_blocked_by, row.push_blocked_at),
        requireUserVerification=bool(row.require_user_verification),
    )


def _max_failures(conn: Connection) -> int:
    return read_settings(conn)[0].totp.maxFailures


# ------------------------------------------------------- filters and sorts

_OPS = {
    "$eq": lambda a, b: a == b,
    "$ne": lambda a, b: a != b,
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}
_STATUS_VALUES = {s.value for s in EnrollmentStatus}


def _field_expr(field: str, now: datetime) -> tuple[ColumnElement[Any], str]:
    """(SQL expression, kind) for a filterable/sortable field, or a 400 naming it."""
    if field in ("username", "email"):
        return users.c[f"{field}_ci"], "text_ci"
    if field in ("firstname", "lastname", "displayname"):
        return users.c[field], "text"
    if field == "state":
        return users.c.state, "state"
    if field == "account_locked":
        return users.c.account_locked, "bool"
    if field == "totp_enabled":
        return (users.c.totp_status == ENROLLED), "bool"
    if field == "created":
        return users.c.created, "datetime"
    status_fields = {
        "mfaEnrollment.overallStatus": overall_status_expr(now),
        "mfaEnrollment.pushStatus": push_status_expr(now),
        "mfaEnrollment.totpStatus": users.c.totp_status,
        "mfaEnrollment.webAuthnStatus": users.c.webauthn_status,
    }
    if field in status_fields:
        return status_fields[field], "status"
    if field == "_id":
        return users.c.id, "text"
    raise bad_request(f"unknown filter field {field!r}")


def _coerce(field: str, kind: str, raw: Any) -> Any:
    if kind == "text_ci":
        return str(raw).casefold()
    if kind == "text":
        return str(raw)
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("true", "1"):
            return True
        if str(raw).lower() in ("false", "0"):
            return False
        raise bad_request(f"filter {field}: {raw!r} is not true or false")
    if kind == "datetime":
        try:
            value = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
            return from_wire(value)
        except ValueError:
            raise bad_request(f"filter {field}: {raw!r} is not an ISO 8601 date-time from 1970 to 9000") from None
    if kind == "state":
        if str(raw) not in {s.value for s in UserState}:
            raise bad_request(f"filter {field}: {raw!r} is not one of {', '.join(s.value for s in UserState)}")
        return str(raw)
    if kind == "status":
        if str(raw) not in _STATUS_VALUES:
            raise bad_request(f"filter {field}: {raw!r} is not an enrollment status")
        return str(raw)
    raise bad_request(f"filter {field}: unsupported")  # pragma: no cover


def _condition(field: str, op: str, raw: Any, now: datetime) -> ColumnElement[bool]:
    expr, kind = _field_expr(field, now)
    if op not in _OPS:
        raise bad_request(f"unknown filter operator {op!r} for field {field!r} (use one of {', '.join(_OPS)})")
    if kind == "bool" and op not in ("$eq", "$ne"):
        raise bad_request(f"filter operator {op!r} does not apply to the true/false field {field!r} (use $eq or $ne)")
    if isinstance(raw, (dict, list)) or raw is None:
        raise bad_request(f"filter {field}: the value must be a string, number or true/false")
    value = _coerce(field, kind, raw)
    if isinstance(value, str) and "\x00" in value:
        raise bad_request(f"filter {field}: the value must not contain NUL characters")
    return _OPS[op](expr, value)


MAX_FILTER_DEPTH = 8
MAX_FILTER_TERMS = 64


def parse_filter_strings(filters: Iterable[str]) -> list[tuple[str, str, str]]:
    """``field:$op:value`` strings -> triples; the value may itself contain colons."""
    filters = list(filters)
    if len(filters) > MAX_FILTER_TERMS:
        raise bad_request(f"filter: more than {MAX_FILTER_TERMS} conditions")
    parsed = []
    for text in filters:
        parts = text.split(":", 2)
        if len(parts) != 3 or not parts[0]:
            raise bad_request(f"filter {text!r} is not of the form field:$op:value")
        parsed.append((parts[0], parts[1], parts[2]))
    return parsed


def parse_filter_body(spec: Any, _depth: int = 0) -> list[tuple[str, str, Any]]:
    """The search body's filter: ``{field: value}``, ``{field: {"$op": value}}`` or ``{"and": [...]}``."""
    if _depth > MAX_FILTER_DEPTH:
        raise bad_request(f"filter: nested more than {MAX_FILTER_DEPTH} levels deep")
    if spec is None:
        return []
    if isinstance(spec, list):
        triples = [t for item in spec for t in parse_filter_body(item, _depth + 1)]
        if len(triples) > MAX_FILTER_TERMS:
            raise bad_request(f"filter: more than {MAX_FILTER_TERMS} conditions")
        return triples
    if not isinstance(spec, dict):
        raise bad_request("filter must be an object")
    triples: list[tuple[str, str, Any]] = []
    for field, value in spec.items():
        if field in ("and", "$and"):
            triples.extend(parse_filter_body(value, _depth + 1))
        elif isinstance(value, dict):
            for op, operand in value.items():
                triples.append((field, op, operand))
        else:
            triples.append((field, "$eq", value))
    return triples


# Names sort by their folded keys (accents and case folded), the other name breaking ties.
_NAME_SORTS = {
    "lastname": (users.c.lastname_sort, users.c.firstname_sort),
    "firstname": (users.c.firstname_sort, users.c.lastname_sort),
}


def _order_by(sort: str | None, now: datetime) -> list[Any]:
    order: list[Any] = []
    descending = False
    for token in (sort or "").replace(",", " ").split():
        descending = token.startswith("-")
        field = token.lstrip("-+")
        if field in _NAME_SORTS:
            exprs: tuple[Any, ...] = _NAME_SORTS[field]
        else:
            try:
                exprs = (_field_expr(field, now)[0],)
            except ApiProblem:
                raise bad_request(f"unknown sort field {field!r}") from None
        order.extend(e.desc() if descending else e.asc() for e in exprs)
    # A stable tiebreak keeps pages from overlapping; it follows the last key's direction,
    # so a reversed sort is exactly the reverse order (and walks the (key, id) index backwards).
    order.append(users.c.id.desc() if descending else users.c.id.asc())
    return order


def _like_escape(term: str) -> str:
    return term.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ------------------------------------------------------------------ reads


def list_users(
    conn: Connection,
    now: datetime,
    *,
    skip: int,
    limit: int,
    sort: str | None = None,
    conditions: Sequence[tuple[str, str, Any]] = (),
    search: str | None = None,
    search_fields: Sequence[str] = ("username", "email", "firstname", "lastname"),
) -> Page[SystemUser]:
    where = [_condition(f, op, v, now) for f, op, v in conditions]
    order = _order_by(sort, now)
    if search and "\x00" in search:
        raise bad_request("search: must not contain NUL characters")
    if search:
        term = _like_escape(search)
        fields = dict.fromkeys(search_fields)  # each field once, in the order given
        where.append(or_(*(users.c[f"{f}_ci"].like(f"%{term}%", escape="\\") for f in fields)))
        if not sort:
            # Prefix matches on the username first: what a support desk types is usually the start.
            order.insert(0, case((users.c.username_ci.like(f"{term}%", escape="\\"), 0), else_=1))
            order.insert(1, users.c.username.asc())
    elif not sort:
        order.insert(0, users.c.username.asc())
    total = conn.execute(select(func.count()).select_from(users).where(*where)).scalar_one()
    rows = conn.execute(select(*_user_columns(now)).where(*where).order_by(*order).offset(skip).limit(limit))
    max_failures = _max_failures(conn)
    return Page[SystemUser](totalCount=total, results=[_to_user(r, max_failures) for r in rows])


def get_user(conn: Connection, user_id: str, now: datetime) -> SystemUser:
    row = conn.execute(select(*_user_columns(now)).where(users.c.id == user_id)).first()
    if row is None:
        raise not_found(f"user {user_id}")
    return _to_user(row, _max_failures(conn))


def require_user(conn: Connection, user_id: str, *, lock: bool = False) -> Any:
    """The raw user row (locked for update on PostgreSQL), or 404."""
    query = select(users).where(users.c.id == user_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise not_found(f"user {user_id}")
    return row


# ----------------------------------------------------------------- writes


def _check_unique(conn: Connection, field: str, value: str, exclude_id: str | None = None) -> None:
    query = select(users.c.id).where(users.c[f"{field}_ci"] == value.casefold())
    if exclude_id:
        query = query.where(users.c.id != exclude_id)
    if conn.execute(query.limit(1)).first() is not None:
        raise conflict(f"{field} {value!r} is already taken")


def create_user(store: Store, body: SystemUserCreate, actor: Principal, now: datetime) -> SystemUser:
    user_id = new_id()
    try:
        with store.write() as conn:
            _check_unique(conn, "username", body.username)
            _check_unique(conn, "email", body.email)
            fields = body.model_dump()
            conn.execute(insert(users).values(id=user_id, created=now, **fields, **folded(fields)))
            record(conn, actor, "user.create", user_id, {"after": body.model_dump()}, now)
            return get_user(conn, user_id, now)
    except IntegrityError:  # a racing create took the name between check and insert
        raise conflict("username or email is already taken") from None


# Wire field -> column, where they differ.
_UPDATE_COLUMNS = {"requireUserVerification": "require_user_verification"}


def update_user(store: Store, user_id: str, body: SystemUserUpdate, actor: Principal, now: datetime) -> SystemUser:
    requested = body.model_dump(exclude_unset=True, exclude_none=True)
    try:
        with store.write() as conn:
            row = require_user(conn, user_id, lock=True)
            # Only what differs is a change: the same values again write nothing and audit nothing.
            change = {k: v for k, v in requested.items() if row._mapping[_UPDATE_COLUMNS.get(k, k)] != v}
            for field in ("username", "email"):
                if field in change:
                    _check_unique(conn, field, change[field], exclude_id=user_id)
            before = {k: row._mapping[_UPDATE_COLUMNS.get(k, k)] for k in change}
            if change:
                values = {_UPDATE_COLUMNS.get(k, k): v for k, v in change.items()}
                conn.execute(update(users).where(users.c.id == user_id).values(**values, **folded(change)))
                record(conn, actor, "user.update", user_id, {"before": before, "after": change}, now)
            return get_user(conn, user_id, now)
    except IntegrityError:
        raise conflict("username or email is already taken") from None


def unlock_user(store: Store, user_id: str, actor: Principal, now: datetime) -> tuple[SystemUser, bool]:
    """Clear ``account_locked``. Returns (user, changed); an unlocked user is a no-op (not audited)."""
    with store.write() as conn:
        row = require_user(conn, user_id, lock=True)
        changed = bool(row.account_locked)
        if changed:
            conn.execute(update(users).where(users.c.id == user_id).values(account_locked=False))
            record(
                conn, actor, "user.unlock", user_id,
                {"before": {"account_locked": True}, "after": {"account_locked": False}}, now,
            )
        return get_user(conn, user_id, now), changed


def delete_user(store: Store, user_id: str, actor: Principal, now: datetime) -> SystemUser:
    """Delete the user, their device, enrolment codes and pending pushes; answer the user as it was.

    The audit trail and the push-attempt history stay: both keep the username, so they
    still read (and filter) by name after the user row is gone.
    """
    with store.write() as conn:
        require_user(conn, user_id, lock=True)
        before = get_user(conn, user_id, now)
        device = remove_push_device(conn, user_id, now)
        cancelled = cancel_pending_pushes(conn, user_id, now)  # pushes pending without a device, if any
        codes = conn.execute(delete(enrollment_codes).where(enrollment_codes.c.user_id == user_id)).rowcount or 0
        conn.execute(update(push_attempts).where(push_attempts.c.user_id == user_id).values(username=before.username))
        conn.execute(delete(users).where(users.c.id == user_id))
        record(
            conn, actor, "user.delete", user_id,
            {
                "before": before.model_dump(mode="json", by_alias=True),
                "after": None,
                "removedDevice": device.id if device is not None else None,
                "removedEnrollmentCodes": codes,
                "cancelledPushes": cancelled + (device.cancelled if device is not None else 0),
            },
            now,
        )
        keep_target_name(conn, user_id, before.username)  # every event about them, this one included
        return before


def cancel_pending_pushes(conn: Connection, user_id: str, now: datetime) -> int:
    """Pending attempts end as expired when the device that could answer them goes away."""
    result = conn.execute(
        update(push_attempts)
        .where(push_attempts.c.user_id == user_id, push_attempts.c.status == "pending", push_attempts.c.expires_at > now)
        .values(status="expired", expires_at=now)
    )
    return result.rowcount or 0


class RemovedDevice:
    """The removed device's row, and how many pending pushes died with it."""

    def __init__(self, row: Any, cancelled: int) -> None:
        self.row = row
        self.id = row.id
        self.cancelled = cancelled


def remove_push_device(conn: Connection, user_id: str, now: datetime) -> RemovedDevice | None:
    """Delete the user's device (its token dies with the row) and cancel its pending pushes."""
    device = conn.execute(select(devices).where(devices.c.user_id == user_id)).first()
    if device is None:
        return None
    conn.execute(delete(devices).where(devices.c.id == device.id))
    return RemovedDevice(device, cancel_pending_pushes(conn, user_id, now))


def _clear_totp() -> dict[str, Any]:
    return {"totp_secret": None, "totp_status": "NOT_ENROLLED", "totp_last_step": None, "totp_failures": 0}


def _has_totp(row: Any) -> bool:
    """Whether a TOTP reset would change anything (a secret, an enrolment, or failures counted)."""
    return row.totp_secret is not None or row.totp_status != "NOT_ENROLLED" or bool(row.totp_failures)


def reset_totp(store: Store, user_id: str, actor: Principal, now: datetime) -> tuple[SystemUser, bool]:
    """Clear the TOTP secret and its lock. Returns (user, changed); without TOTP it is a no-op (not audited)."""
    with store.write() as conn:
        row = require_user(conn, user_id, lock=True)
        changed = _has_totp(row)
        if changed:
            conn.execute(update(users).where(users.c.id == user_id).values(**_clear_totp()))
            record(
                conn, actor, "totp.reset", user_id,
                {"before": {"totpStatus": row.totp_status, "failures": row.totp_failures},
                 "after": {"totpStatus": "NOT_ENROLLED", "failures": 0}},
                now,
            )
        return get_user(conn, user_id, now), changed


def reset_mfa(store: Store, user_id: str, body: ResetMfaRequest, actor: Principal, now: datetime) -> SystemUser:
    until: datetime | None = None
    if body.exclusion:
        if body.exclusionUntil is not None:
            try:
                until = from_wire(body.exclusionUntil)
            except ValueError:
                raise bad_request("exclusionUntil: date-time out of range") from None
            if until <= now:
                raise bad_request("exclusionUntil: must be in the future")
            if until > now + timedelta(days=MAX_GRACE_DAYS):
                raise bad_request(f"exclusionUntil: a grace period can last at most {MAX_GRACE_DAYS} days")
        else:
            until = now + timedelta(days=body.exclusionDays or DEFAULT_GRACE_DAYS)
    with store.write() as conn:
        row = require_user(conn, user_id, lock=True)
        before = get_user(conn, user_id, now)
        new_values = dict(
            **_clear_totp(),
            push_status="NOT_ENROLLED",
            push_pending_until=None,
            mfa_exclusion=bool(body.exclusion),
            mfa_exclusion_until=until,
        )
        device = remove_push_device(conn, user_id, now)
        codes = conn.execute(delete(enrollment_codes).where(enrollment_codes.c.user_id == user_id)).rowcount or 0
        if device is None and not codes and not _has_totp(row) and all(
            row._mapping[k] == v for k, v in new_values.items() if not k.startswith("totp_")
        ):
            return before  # nothing to remove and no grace to start or end: no change, no audit event
        conn.execute(update(users).where(users.c.id == user_id).values(**new_values))
        after = get_user(conn, user_id, now)
        record(
            conn, actor, "mfa.reset", user_id,
            {
                "before": before.mfaEnrollment.model_dump(mode="json"),
                "after": after.mfaEnrollment.model_dump(mode="json"),
                "removedDevice": device.id if device is not None else None,
                "graceUntil": until.isoformat() if until else None,
            },
            now,
        )
        return after


def count_users(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(users)).scalar_one()

