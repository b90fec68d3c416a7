"""Push admissions batched (console/server/batching.py, services.push.create_many).

The batcher: a lone item goes at once, the same subject twice never shares a batch, a refusal reaches only
its own request. The batch decisions (PostgreSQL): each admission gets the answer it would have got alone
(admitted, over the cap, unknown user, revoked key, rate limits counted in the batch's order), and batches
raced in threads over the same users keep the push cap (no over-admission).
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import func, select, update

from console.models import PushRequest, Role
from console.server.batching import Batcher
from console.server.errors import ApiProblem
from console.server.services import push as push_service
from console.server.services.keys import authenticate, create_key, revoke_key
from console.server.services.ratelimit import RateLimited
from console.server.services.settings import read_settings
from console.server.store import push_attempts, rate_limit_hits, users
from tests.server.test_hot_path_steps import Hot, hot, now, reachable

__all__ = ["hot"]  # the module's fixture, shared


async def test_a_lone_item_goes_at_once_and_a_subject_twice_waits_for_the_next_batch() -> None:
    import anyio

    batches: list[list[tuple[str, int]]] = []
    first_in = threading.Event()
    release = threading.Event()

    def decide_many(items: list[tuple[str, int]]) -> list[int | Exception]:
        batches.append(items)
        if len(batches) == 1:
            first_in.set()
            release.wait()
        return [ApiProblem(409, "refused") if n < 0 else n for _, n in items]

    batcher: Batcher[tuple[str, int], int] = Batcher(
        decide_many, lambda item: item[0], limiter=anyio.CapacityLimiter(2), max_size=8, in_flight=1
    )
    lone = asyncio.create_task(batcher.decide(("a", 1)))
    await asyncio.to_thread(first_in.wait)  # the lone item's batch is running: nothing waited for it
    later = [asyncio.create_task(batcher.decide(item)) for item in [("a", 2), ("b", 3), ("c", -1), ("a", 4)]]
    while len(batcher._waiting) < len(later):  # noqa: ASYNC110 - the batcher has no event for it
        await asyncio.sleep(0)  # until every request is waiting for the running batch
    release.set()
    assert await lone == 1
    outcomes = await asyncio.gather(*later, return_exceptions=True)
    assert outcomes[:2] == [2, 3] and outcomes[3] == 4
    assert isinstance(outcomes[2], ApiProblem) and outcomes[2].status == 409  # only its own request
    assert batches == [[("a", 1)], [("a", 2), ("b", 3), ("c", -1)], [("a", 4)]]


def _pg_only(store_kind: str) -> None:
    if store_kind != "postgresql":
        pytest.skip("the batches are PostgreSQL's (SQLite decides inline under its write gate)")


async def test_push_batches_raced_in_threads_admit_one_per_user_under_a_cap_of_one(hot: Hot, store_kind: str) -> None:
    _pg_only(store_kind)
    hot.settings({"push": {"concurrentLimit": {"enabled": True, "max": 1}}})
    first = reachable(hot)
    second = reachable_other(hot, first)
    at = now()

    def batch(order: list[str]) -> list[object]:
        admissions = [
            push_service.PushAdmission(
                hot.actor, PushRequest.model_validate({"userId": u, "resource": "batch-race"}), None
            )
            for u in order
        ]
        return list(push_service.create_many(hot.store, admissions, at))

    # Half the batches name the users in the other order: their rows are locked in id order all the same.
    results = await asyncio.gather(
        *(asyncio.to_thread(batch, [first, second] if i % 2 else [second, first]) for i in range(8))
    )
    outcomes = [o for r in results for o in r]
    admitted = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(admitted) == 2 and all(isinstance(o, push_service.PushCapReached) for o in outcomes if o not in admitted)
    with hot.store.read() as conn:
        pending = dict(
            conn.execute(
                select(push_attempts.c.user_id, func.count())
                .where(push_attempts.c.resource == "batch-race", push_attempts.c.status == "pending")
                .group_by(push_attempts.c.user_id)
            ).all()
        )
    assert pending == {first: 1, second: 1}


def reachable_other(hot: Hot, other: str) -> str:
    """A second user a push can reach (reachable() picks the last by id; this one is before it)."""
    with hot.store.write() as conn:
        conn.execute(update(users).where(users.c.id == other).values(account_locked=True))
    try:
        return reachable(hot)
    finally:
        with hot.store.write() as conn:
            conn.execute(update(users).where(users.c.id == other).values(account_locked=False))


def test_a_push_batch_answers_each_admission_as_alone(hot: Hot, store_kind: str) -> None:
    _pg_only(store_kind)
    gone = authenticate(hot.store, create_key(hot.store, "batch-revoked", Role.SERVICE))
    assert gone is not None
    revoke_key(hot.store, gone.key_id)
    user_id = reachable(hot)

    def admission(actor: object, user: str) -> push_service.PushAdmission:
        body = PushRequest.model_validate({"userId": user, "resource": "batch-alone"})
        return push_service.PushAdmission(actor, body, "10.0.0.7")  # type: ignore[arg-type]

    at = now()
    admitted, unknown, revoked = push_service.create_many(
        hot.store, [admission(hot.actor, user_id), admission(hot.actor, "0" * 24), admission(gone, "1" * 24)], at
    )
    assert isinstance(admitted, push_service.PushCreated) and admitted.status == "pending"
    assert isinstance(unknown, ApiProblem) and unknown.status == 404
    assert isinstance(revoked, ApiProblem) and revoked.status == 401


def test_a_push_batch_counts_its_admissions_in_order_against_the_rate_limit(hot: Hot, store_kind: str) -> None:
    _pg_only(store_kind)
    actor = authenticate(hot.store, create_key(hot.store, "batch-limited", Role.SERVICE))
    assert actor is not None
    with hot.store.read() as conn:
        before = read_settings(conn)[0].rateLimits.pushPerMinute
        some_users = [u for (u,) in conn.execute(select(users.c.id).order_by(users.c.id).limit(12))]
    hot.settings({"rateLimits": {"pushPerMinute": 10}})
    try:
        admissions = [
            push_service.PushAdmission(actor, PushRequest.model_validate({"userId": u, "resource": "lim"}), None)
            for u in some_users
        ]
        outcomes = push_service.create_many(hot.store, admissions, now())
    finally:
        hot.settings({"rateLimits": {"pushPerMinute": before}})
    assert [isinstance(o, RateLimited) for o in outcomes] == [False] * 10 + [True] * 2
    with hot.store.read() as conn:
        hits = conn.execute(
            select(rate_limit_hits.c.hits).where(rate_limit_hits.c.subject == f"key:{actor.key_id}")
        ).scalar()
    assert hits == 12  # the refused count too
