"""Authentication (API keys, device tokens) and role checks, as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ..models import ROLE_PERMISSIONS, Permission
from .clock import Clock
from .errors import ApiProblem
from .services import devices as device_service
from .services.common import Principal
from .services.keys import cached_authenticate, identify
from .store import Store

_api_key = APIKeyHeader(
    name="x-api-key", auto_error=False, description="An API key issued by `protect-console keys create`."
)
_device_token = HTTPBearer(auto_error=False, description="The token a device received at enrolment.")


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store  # set by create_app
    return store


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


def current_principal(request: Request, key: str | None = Depends(_api_key)) -> Principal:
    if not key:
        raise ApiProblem(401, "missing x-api-key header")
    return identify(get_store(request), key, get_clock(request).now())


def require(*permissions: Permission) -> Callable[..., Principal]:
    """A dependency admitting keys whose role has any of ``permissions``."""

    def check(principal: Principal = Depends(current_principal)) -> Principal:
        granted = ROLE_PERMISSIONS[principal.role]
        if not any(p in granted for p in permissions):
            wanted = " or ".join(p.value for p in permissions)
            raise ApiProblem(403, f"role {principal.role.value!r} does not have permission {wanted!r}")
        return principal

    return check


def require_hot(*permissions: Permission) -> Callable[..., Any]:
    """``require`` for the hot routes (TOTP verify, push): the key from a per-process cache, without a
    thread hop. The route's service confirms the key is still live in its own statement."""
    granted_to = {role for role, granted in ROLE_PERMISSIONS.items() if any(p in granted for p in permissions)}
    wanted = " or ".join(p.value for p in permissions)

    async def check(request: Request, key: str | None = Depends(_api_key)) -> Principal:
        if not key:
            raise ApiProblem(401, "missing x-api-key header")
        store, now = request.app.state.store, request.app.state.clock.now()
        principal = cached_authenticate(store, key, now)
        if principal is None:
            principal = identify(store, key, now)  # refused: 401 saying why (unknown, revoked or expired)
        if principal.role not in granted_to:
            raise ApiProblem(403, f"role {principal.role.value!r} does not have permission {wanted!r}")
        return principal

    return check


def current_device(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_device_token)) -> Any:
    if credentials is None or not credentials.credentials:
        raise ApiProblem(401, "missing device token (Authorization: Bearer ...)")
    device = device_service.authenticate_device(get_store(request), credentials.credentials)
    if device is None:
        raise ApiProblem(401, "unknown device token: the device is not enrolled (any more)")
    return device
