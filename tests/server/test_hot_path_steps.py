"""The hot decisions written as steps (store.Step, driven by Store.run_steps): the same answers on both stores.

TOTP checks and push admissions are generators of steps; on PostgreSQL a Batch is one round trip (a
pipeline with BEGIN, COMMIT and SYNC marks) and the TOTP count and read one statement. These tests call the
services directly, on both stores, from several threads at once as the hot routes do: replay, lock-out with
its audit event, the push cap under a race, rate limits, a refusal inside a transaction, the hot connections'
session settings and their replacement when the server drops one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import pytest
from sqlalchemy import delete, func, insert, select, text

from console.models import ProtectSettingsPatch, PushRequest, Role
from console.server.clock import Clock
from console.server.errors import ApiProblem
from console.server.services import push as push_service
from console.server.services import totp as totp_service
from console.server.services.common import Principal
from console.server.services.keys import authenticate, create_key
from console.server.services.ratelimit import RateLimited
from console.server.services.settings import etag_for, read_settings, update_settings
from console.server.store import (
    BEGIN,
    COMMIT,
    Batch,
    Decision,
    Store,
    audit,
    devices,
    open_store,
    push_attempts,
    rate_limit_hits,
    read_one,
    users,
    write_count,
)
from tests.helpers import unused_totp_users

ADMIN = Principal(key_id="", name="test", role=Role.ADMIN)


@dataclass
class Hot:
    store: Store
    actor: Principal

    def settings(self, change: dict) -> None:
        with self.store.read() as conn:
            _, version = read_settings(conn)
        update_settings(self.store, ProtectSettingsPatch.model_validate(change), etag_for(version), ADMIN, now())


def now() -> datetime:
    return Clock().now()


@pytest.fixture(scope="module")
def hot(new_db: Callable[..., str]) -> Iterator[Hot]:
    from console.server.seed import seed_directory

    store = open_store(new_db())
    seed_directory(store, 40)
    key = create_key(store, "hot-steps", Role.SERVICE)
    actor = authenticate(store, key)
    assert actor is not None
    try:
        yield Hot(store, actor)
    finally:
        store.dispose()


def reachable(hot: Hot) -> str:
    with hot.store.read() as conn:
        return str(
            conn.execute(
                select(users.c.id)
                .join(devices, devices.c.user_id == users.c.id)
                .where(
                    users.c.state != "SUSPENDED",
                    users.c.account_locked.is_(False),
                    devices.c.state == "active",
                    users.c.push_blocked_until.is_(None),
                    ~select(push_attempts.c.id)
                    .where(
                        push_attempts.c.user_id == users.c.id,
                        push_attempts.c.status == "pending",
                        push_attempts.c.expires_at > now(),
                    )
                    .exists(),
                )
                .order_by(users.c.id.desc())
                .limit(1)
            ).scalar_one()
        )


def test_a_code_is_accepted_once_and_the_next_step_after_it(hot: Hot) -> None:
    [(user_id, totp)] = unused_totp_users(hot.store, 1)
    at = now()
    step = totp_service.current_step(at)
    code = totp.generate_otp(step)
    first = totp_service.verify_unaudited(hot.store, hot.actor, user_id, code, at)
    again = totp_service.verify_unaudited(hot.store, hot.actor, user_id, code, at)
    assert (first.valid, again.valid, again.reason) == (True, False, "code was already used")
    later = totp.generate_otp(step + 1)
    assert totp_service.verify_unaudited(hot.store, hot.actor, user_id, later, at).valid
    replay = totp_service.verify_unaudited(hot.store, hot.actor, user_id, later, at)
    assert (replay.valid, replay.reason) == (False, "code was already used")


async def test_a_code_raced_in_16_threads_is_accepted_once(hot: Hot) -> None:
    [(user_id, totp)] = unused_totp_users(hot.store, 1)
    at = now()
    code = totp.generate_otp(totp_service.current_step(at))
    results = await asyncio.gather(
        *(asyncio.to_thread(totp_service.verify_unaudited, hot.store, hot.actor, user_id, code, at) for _ in range(16))
    )
    assert sum(r.valid for r in results) == 1
    assert {r.reason for r in results if not r.valid} == {"code was already used"}


def test_wrong_codes_lock_out_after_max_failures_with_the_audit_event(hot: Hot) -> None:
    [(user_id, totp)] = unused_totp_users(hot.store, 1)
    with hot.store.read() as conn:
        max_failures = read_settings(conn)[0].totp.maxFailures
    at = now()
    right = totp.generate_otp(totp_service.current_step(at))
    wrong = f"{(int(right) + 500_000) % 1_000_000:06d}"
    for _ in range(max_failures):
        result = totp_service.verify_unaudited(hot.store, hot.actor, user_id, wrong, at)
        assert (result.valid, result.reason) == (False, totp_service.WRONG_CODE)
    locked = totp_service.verify_unaudited(hot.store, hot.actor, user_id, right, at)
    assert not locked.valid and locked.reason is not None and locked.reason.startswith("TOTP locked until")
    with hot.store.read() as conn:
        events = conn.execute(
            select(audit.c.actor).where(audit.c.action == "totp.lockout", audit.c.target == user_id)
        ).all()
    assert len(events) == 1


async def test_the_push_cap_admits_exactly_one_of_16_admissions_raced_in_threads(hot: Hot) -> None:
    hot.settings({"push": {"concurrentLimit": {"enabled": True, "max": 1}}})
    user_id = reachable(hot)
    body = PushRequest.model_validate({"userId": user_id, "resource": "hot-steps-race"})
    at = now()

    def attempt() -> object:
        try:
            return push_service.create_attempt(hot.store, body, at, actor=hot.actor)
        except ApiProblem as exc:
            return exc

    results = await asyncio.gather(*(asyncio.to_thread(attempt) for _ in range(16)))
    refused = [r for r in results if isinstance(r, push_service.PushCapReached)]
    assert (len(results) - len(refused), len(refused)) == (1, 15), results
    with hot.store.read() as conn:
        recorded = dict(
            conn.execute(
                select(push_attempts.c.status, func.count())
                .where(push_attempts.c.user_id == user_id, push_attempts.c.resource == body.resource)
                .group_by(push_attempts.c.status)
            ).all()
        )
    assert recorded == {"pending": 1, "blocked": 15}


def test_rate_limits_refuse_and_count_the_refused(hot: Hot) -> None:
    key = create_key(hot.store, "hot-steps-limited", Role.SERVICE)
    actor = authenticate(hot.store, key)
    assert actor is not None
    with hot.store.read() as conn:
        before = read_settings(conn)[0].rateLimits.totpVerifyPerMinute
    hot.settings({"rateLimits": {"totpVerifyPerMinute": 10}})  # the smallest allowed
    try:
        [(user_id, totp)] = unused_totp_users(hot.store, 1)
        at = now()
        code = totp.generate_otp(totp_service.current_step(at))
        answers = []
        for _ in range(12):
            try:
                answers.append(totp_service.verify_unaudited(hot.store, actor, user_id, code, at).valid)
            except RateLimited as exc:
                answers.append(exc.status)
        assert answers == [True] + [False] * 9 + [429, 429]  # the code once, then replays, then refused
        with hot.store.read() as conn:
            counted = conn.execute(
                select(rate_limit_hits.c.hits).where(rate_limit_hits.c.subject == "key:" + actor.key_id)
            ).scalar_one()
        assert counted == 12  # refused checks count too
    finally:
        hot.settings({"rateLimits": {"totpVerifyPerMinute": before}})


def _refused_after_a_write(marker: str) -> Decision[None]:
    yield BEGIN
    yield write_count(insert(rate_limit_hits).values(route="test", subject=marker, window_start=0, hits=1))
    raise ApiProblem(409, "refused inside the transaction")


def _count(marker: str) -> Decision[int]:
    row = yield read_one(select(func.count()).select_from(rate_limit_hits).where(rate_limit_hits.c.subject == marker))
    return int(row[0])


def _in_one_transaction(marker: str, window: int) -> Decision[int]:
    _, _, counted, _ = yield Batch(
        (
            BEGIN,
            write_count(insert(rate_limit_hits).values(route="test", subject=marker, window_start=window, hits=1)),
            read_one(select(func.count()).select_from(rate_limit_hits).where(rate_limit_hits.c.subject == marker)),
            COMMIT,
        )
    )
    return int(counted[0])


def test_a_refusal_inside_a_transaction_rolls_it_back_and_the_connection_serves_the_next(hot: Hot) -> None:
    marker = "refused"
    with pytest.raises(ApiProblem):
        hot.store.run_steps(partial(_refused_after_a_write, marker))
    assert hot.store.run_steps(partial(_count, marker)) == 0
    # A batch with its own transaction on the same (kept) connection: not nested in a leftover one.
    assert hot.store.run_steps(partial(_in_one_transaction, marker, 1)) == 1
    assert hot.store.run_steps(partial(_in_one_transaction, marker, 2)) == 2
    with hot.store.write() as conn:
        conn.execute(delete(rate_limit_hits).where(rate_limit_hits.c.route == "test"))


def _setting() -> Decision[tuple[str, str]]:
    row = yield read_one(text("SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'"))
    return row[0], row[1]


def _backend_pid() -> Decision[int]:
    return int((yield read_one(text("SELECT pg_backend_pid()")))[0])


def test_the_steps_connections_commit_without_waiting_for_the_flush(hot: Hot, store_kind: str) -> None:
    """run_raw's (store.HOT_ROUTES_SYNCHRONOUS_COMMIT; README, Durability): for the session only."""
    if store_kind != "postgresql":
        pytest.skip("PostgreSQL's setting (test_ops_durability checks SQLite's)")
    assert hot.store.run_steps(_setting) == ("off", "session")


def test_a_connection_dropped_by_the_server_is_replaced_before_the_decision(hot: Hot, store_kind: str) -> None:
    if store_kind != "postgresql":
        pytest.skip("PostgreSQL's connections")
    pid = hot.store.run_steps(_backend_pid)
    with hot.store.write() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    [(user_id, totp)] = unused_totp_users(hot.store, 1)
    at = now()
    result = totp_service.verify_unaudited(
        hot.store, hot.actor, user_id, totp.generate_otp(totp_service.current_step(at)), at
    )
    assert result.valid  # decided on a new connection, the dead one dropped
    assert hot.store.run_steps(_backend_pid) != pid


@pytest.mark.parametrize("route", ["totp", "push"])
def test_a_new_minutes_first_request_clears_the_windows_before_the_last(hot: Hot, route: str) -> None:
    """Push admission clears them after its COMMIT (not in the transaction that locks the user), TOTP at once."""
    key = create_key(hot.store, f"hot-steps-prune-{route}", Role.SERVICE)
    actor = authenticate(hot.store, key)
    assert actor is not None
    at = now()
    window = int(at.replace(tzinfo=UTC).timestamp()) // 60 * 60
    old = {"route": "test", "subject": f"prune-{route}", "hits": 1}
    with hot.store.write() as conn:
        conn.execute(
            insert(rate_limit_hits), [{**old, "window_start": window - 180}, {**old, "window_start": window - 60}]
        )
    if route == "push":
        body = PushRequest.model_validate({"userId": reachable(hot), "resource": "hot-steps-prune"})
        assert push_service.create_attempt(hot.store, body, at, actor=actor).status == "pending"
    else:
        [(user_id, totp)] = unused_totp_users(hot.store, 1)
        assert totp_service.verify_unaudited(hot.store, actor, user_id, totp.now(), at).valid
    with hot.store.read() as conn:
        kept = conn.execute(select(rate_limit_hits.c.window_start).where(rate_limit_hits.c.subject == old["subject"]))
        assert [w for (w,) in kept] == [window - 60]
