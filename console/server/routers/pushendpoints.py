"""JumpCloud-shaped push endpoints of a user: /api/v2/users/{id}/pushendpoints."""

from __future__ import annotations

from fastapi import APIRouter

from ...models import PushEndpoint, PushEndpointPatch
from ..deps import CanRead, CanUnenroll, CanWriteDevices, ClockDep, StoreDep
from ..services import devices as device_service

router = APIRouter(prefix="/api/v2/users/{user_id}/pushendpoints", tags=["push endpoints"])


@router.get("", response_model=list[PushEndpoint])
def list_pushendpoints(user_id: str, _: CanRead, store: StoreDep) -> list[PushEndpoint]:
    with store.read() as conn:
        return device_service.list_endpoints(conn, user_id)


@router.get("/{endpoint_id}", response_model=PushEndpoint)
def get_pushendpoint(user_id: str, endpoint_id: str, _: CanRead, store: StoreDep) -> PushEndpoint:
    with store.read() as conn:
        return device_service.get_endpoint(conn, user_id, endpoint_id)


@router.patch("/{endpoint_id}", response_model=PushEndpoint)
def patch_pushendpoint(
    user_id: str,
    endpoint_id: str,
    body: PushEndpointPatch,
    actor: CanWriteDevices,
    store: StoreDep,
    clock: ClockDep,
) -> PushEndpoint:
    """Rename or (de)activate the device. Only ``name`` and ``state`` can change."""
    return device_service.patch_endpoint(store, user_id, endpoint_id, body, actor, clock.now())


@router.delete("/{endpoint_id}", response_model=PushEndpoint)
def delete_pushendpoint(
    user_id: str,
    endpoint_id: str,
    actor: CanUnenroll,
    store: StoreDep,
    clock: ClockDep,
) -> PushEndpoint:
    """Unenroll the device: its token stops working and its pending pushes end."""
    return device_service.unenroll(store, user_id, endpoint_id, actor, clock.now())
