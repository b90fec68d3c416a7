"""JumpCloud-shaped user directory: /api/systemusers and /api/search/systemusers."""

from __future__ import annotations

from fastapi import APIRouter, Query

from ...models import NAME_MAX, Page, ResetMfaRequest, SystemUser, SystemUserCreate, SystemUserUpdate, UserSearch
from ..deps import CanRead, CanResetMfa, CanWriteUsers, ClockDep, StoreDep
from ..errors import ErrorResponses
from ..services import users as user_service
from .params import After, Before, Count, Limit, Skip

router = APIRouter(prefix="/api", tags=["users"])


@router.get("/systemusers", response_model=Page[SystemUser], responses=ErrorResponses.of(400))
def list_systemusers(
    _: CanRead,
    store: StoreDep,
    clock: ClockDep,
    skip: int = Skip,
    limit: int = Limit,
    sort: str | None = Query(None, max_length=512, description="Space-separated fields; `-` prefix for descending."),
    filter: list[str] = Query([], description="Repeatable `field:$op:value`, ANDed."),
    search: str | None = Query(
        None,
        max_length=NAME_MAX,
        description="Case-insensitive search over username, email, first and last name: every word must match "
        "some field (3+ characters anywhere in it, 1-2 characters at its start; a lone word of 1-2 characters "
        "anywhere). An exact username or email first, then usernames starting with the first word.",
    ),
    after: str | None = After,
    before: str | None = Before,
    count: bool = Count,
) -> Page[SystemUser]:
    """Users, a page at a time: `skip`/`limit` as JumpCloud, or keyset paging with `after`/`before`
    (the cursors of each page are `startCursor`/`endCursor`), which costs the same at any depth."""
    conditions = user_service.parse_filter_strings(filter)
    with store.read() as conn:
        return user_service.list_users(
            conn,
            clock.now(),
            skip=skip,
            limit=limit,
            sort=sort,
            conditions=conditions,
            search=search,
            after=after,
            before=before,
            count=count,
        )


@router.post("/search/systemusers", response_model=Page[SystemUser], responses=ErrorResponses.of(400))
def search_systemusers(
    body: UserSearch,
    _: CanRead,
    store: StoreDep,
    clock: ClockDep,
    skip: int = Skip,
    limit: int = Limit,
    sort: str | None = Query(None, max_length=512),
    after: str | None = After,
    before: str | None = Before,
    count: bool = Count,
) -> Page[SystemUser]:
    """Search users (`searchFilter`: every word must match one of `fields`), with the list's paging."""
    conditions = user_service.parse_filter_body(body.filter)
    with store.read() as conn:
        return user_service.list_users(
            conn,
            clock.now(),
            skip=skip,
            limit=limit,
            sort=sort,
            conditions=conditions,
            search=body.searchFilter.searchTerm or None,
            search_fields=body.searchFilter.fields or ["username"],
            after=after,
            before=before,
            count=count,
        )


@router.get("/systemusers/{user_id}", response_model=SystemUser)
def get_systemuser(user_id: str, _: CanRead, store: StoreDep, clock: ClockDep) -> SystemUser:
    with store.read() as conn:
        return user_service.get_user(conn, user_id, clock.now())


@router.post("/systemusers", response_model=SystemUser, status_code=201, responses=ErrorResponses.of(409))
def create_systemuser(body: SystemUserCreate, actor: CanWriteUsers, store: StoreDep, clock: ClockDep) -> SystemUser:
    return user_service.create_user(store, body, actor, clock.now())


@router.put("/systemusers/{user_id}", response_model=SystemUser, responses=ErrorResponses.of(409))
def update_systemuser(
    user_id: str,
    body: SystemUserUpdate,
    actor: CanWriteUsers,
    store: StoreDep,
    clock: ClockDep,
) -> SystemUser:
    return user_service.update_user(store, user_id, body, actor, clock.now())


@router.post("/systemusers/{user_id}/resetmfa", response_model=SystemUser, responses=ErrorResponses.of(400))
def reset_mfa(
    user_id: str,
    actor: CanResetMfa,
    store: StoreDep,
    clock: ClockDep,
    body: ResetMfaRequest | None = None,
) -> SystemUser:
    """Reset the TOTP secret, remove the push device and (with ``exclusion``) start a grace period.

    A user with nothing to remove and no grace period to start or end is left as is, with no audit event.
    """
    return user_service.reset_mfa(store, user_id, body or ResetMfaRequest(), actor, clock.now())


@router.post("/systemusers/{user_id}/unlock", response_model=SystemUser)
def unlock_systemuser(user_id: str, actor: CanWriteUsers, store: StoreDep, clock: ClockDep) -> SystemUser:
    """Unlock the account (`account_locked` becomes false); answers the user, as JumpCloud does.

    Audited as `user.unlock` only when the user was locked. TOTP's own failed-codes lock is lifted
    by a TOTP reset, not here. Role: admin (permission `users.write`).
    """
    user, _changed = user_service.unlock_user(store, user_id, actor, clock.now())
    return user


@router.delete("/systemusers/{user_id}", response_model=SystemUser)
def delete_systemuser(user_id: str, actor: CanWriteUsers, store: StoreDep, clock: ClockDep) -> SystemUser:
    """Delete the user; answers the user as it was, as JumpCloud does.

    Removes the push device, enrolment codes and pending pushes (they end as expired). The audit
    trail and push-attempt history are kept and still name the user. Audited as `user.delete`.
    Role: admin (permission `users.write`).
    """
    return user_service.delete_user(store, user_id, actor, clock.now())
