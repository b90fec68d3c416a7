"""API keys (admin only): list, create, rotate and revoke. The key itself is only in the answer that issues it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from ...models import ApiKey, ApiKeyCreate, ApiKeyIssued, ApiKeyRotate, ErrorBody, Page
from ..clock import from_wire
from ..deps import CanManageKeys, ClockDep, StoreDep
from ..errors import ApiProblem, ErrorResponses, bad_request, conflict, not_found
from ..services import keys as key_service

router = APIRouter(prefix="/api/v2/protect/keys", tags=["protect admin: API keys"])

KeyId = Annotated[str, Path(min_length=1, max_length=64, description="The key's id (from the list).")]
_NOT_USABLE: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "The key is revoked or expired: create a new one instead"}
}


_API_FIELDS = {"expires": "expiresAt", "resource": "resources"}  # the service names the CLI's flags


def _refused(exc: ValueError) -> ApiProblem:
    """A rule the schema cannot state (an expiry in the past, resources on a key that does not push): 400.
    The service's message starts with the field's name: the API's name for it."""
    field, _, reason = str(exc).partition(": ")
    return bad_request(f"{_API_FIELDS.get(field, field)}: {reason}" if reason else str(exc))


@router.get("", response_model=Page[ApiKey], responses=ErrorResponses.of(401, 403))
def list_keys(_: CanManageKeys, store: StoreDep, clock: ClockDep) -> Page[ApiKey]:
    """Every key, revoked and expired ones too, oldest first: prefix, name, role, status, created, last used,
    expiry, resources. Never the key or its hash. Role: admin."""
    now = clock.now()
    keys = [k.wire(now) for k in key_service.list_keys(store)]
    return Page[ApiKey](totalCount=len(keys), results=keys)


@router.post("", response_model=ApiKeyIssued, status_code=201, responses=ErrorResponses.of(400, 401, 403, 422))
def create_key(body: ApiKeyCreate, actor: CanManageKeys, store: StoreDep, clock: ClockDep) -> ApiKeyIssued:
    """Create a key; `key` is in this answer only. Audited as `key.create`. Role: admin."""
    try:
        expires = None if body.expiresAt is None else from_wire(body.expiresAt)
    except ValueError as exc:
        raise bad_request(f"expiresAt: {exc}") from None
    try:
        key, info = key_service.issue_key(
            store, body.name, body.role, expires_at=expires, resources=body.resources, actor=actor, clock=clock
        )
    except ValueError as exc:
        raise _refused(exc) from None
    return ApiKeyIssued(key=key, apiKey=info.wire(clock.now()))


@router.get("/{key_id}", response_model=ApiKey, responses=ErrorResponses.of(401, 403, 404, 422))
def get_key(key_id: KeyId, _: CanManageKeys, store: StoreDep, clock: ClockDep) -> ApiKey:
    info = key_service.get_key(store, key_id)
    if info is None:
        raise not_found(f"API key {key_id}")
    return info.wire(clock.now())


@router.post("/{key_id}/revoke", response_model=ApiKey, responses=ErrorResponses.of(401, 403, 404, 422))
def revoke_key(key_id: KeyId, actor: CanManageKeys, store: StoreDep, clock: ClockDep) -> ApiKey:
    """Revoke a key: every process refuses it within a second. Audited as `key.revoke`; a key already revoked
    is answered as it is (nothing changes, nothing is audited). Role: admin."""
    info = key_service.revoke_key(store, key_id, actor=actor, clock=clock) or key_service.get_key(store, key_id)
    if info is None:
        raise not_found(f"API key {key_id}")
    return info.wire(clock.now())


@router.post(
    "/{key_id}/rotate",
    response_model=ApiKeyIssued,
    status_code=201,
    responses={**ErrorResponses.of(401, 403, 404, 422), **_NOT_USABLE},
)
def rotate_key(
    key_id: KeyId, actor: CanManageKeys, store: StoreDep, clock: ClockDep, body: ApiKeyRotate | None = None
) -> ApiKeyIssued:
    """A new key with the same name, role and resources (`key` is in this answer only); the old one is revoked
    at once, or expires after `graceSeconds`. Audited as `key.rotate`. Role: admin."""
    grace = (body or ApiKeyRotate()).graceSeconds
    try:
        rotated = key_service.rotate_key(store, key_id, grace_seconds=grace, actor=actor, clock=clock)
    except key_service.KeyNotUsable as exc:
        raise conflict(str(exc)) from None
    if rotated is None:
        raise not_found(f"API key {key_id}")
    key, new, old = rotated
    now = clock.now()
    return ApiKeyIssued(key=key, apiKey=new.wire(now), replaced=old.wire(now))
