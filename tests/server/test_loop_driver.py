"""PostgreSQL TOTP checks driven from the event loop (Store.run_steps_on_loop, store.LoopDriver).

The hot route awaits each statement on the loop instead of running the decision in a thread: the same
rules must hold (one acceptance per code, replays refused, lock-out with its audit event), rows must come
back as a psycopg cursor returns them, the statements prepared on a connection must survive what psycopg
does to it (it deallocates every prepared statement after a ROLLBACK), and a connection the server
dropped is replaced before the decision, as on the thread path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial

import pytest
from sqlalchemy import BigInteger, Boolean, DateTime, String, bindparam, select, text

from console.models import Role
from console.server.clock import Clock
from console.server.errors import ApiProblem
from console.server.services import totp as totp_service
from console.server.services.common import Principal
from console.server.services.keys import authenticate, create_key
from console.server.services.settings import read_settings
from console.server.store import BEGIN, Decision, Store, audit, open_store, read_one, write_count
from tests.helpers import unused_totp_users


@pytest.fixture(scope="module")
def hot(new_db: Callable[..., str], store_kind: str) -> Iterator[tuple[Store, Principal]]:
    if store_kind != "postgresql":
        pytest.skip("the loop driver is PostgreSQL's (SQLite decides inline)")
    from console.server.seed import seed_directory

    store = open_store(new_db())
    seed_directory(store, 30)
    actor = authenticate(store, create_key(store, "loop-driver", Role.SERVICE))
    assert actor is not None
    try:
        yield store, actor
    finally:
        store.dispose()


def now() -> datetime:
    return Clock().now()


async def test_a_code_is_accepted_once_then_the_next_step(hot: tuple[Store, Principal]) -> None:
    store, actor = hot
    [(user_id, totp)] = unused_totp_users(store, 1)
    at = now()
    step = totp_service.current_step(at)
    code = totp.generate_otp(step)
    first = await totp_service.verify_unaudited_on_loop(store, actor, user_id, code, at)
    again = await totp_service.verify_unaudited_on_loop(store, actor, user_id, code, at)
    assert (first.valid, again.valid, again.reason) == (True, False, "code was already used")
    assert (await totp_service.verify_unaudited_on_loop(store, actor, user_id, totp.generate_otp(step + 1), at)).valid


async def test_a_code_raced_in_16_checks_on_the_loop_and_in_threads_is_accepted_once(
    hot: tuple[Store, Principal],
) -> None:
    store, actor = hot
    [(user_id, totp)] = unused_totp_users(store, 1)
    at = now()
    code = totp.generate_otp(totp_service.current_step(at))
    on_loop = [totp_service.verify_unaudited_on_loop(store, actor, user_id, code, at) for _ in range(8)]
    in_threads = [asyncio.to_thread(totp_service.verify_unaudited, store, actor, user_id, code, at) for _ in range(8)]
    results = await asyncio.gather(*on_loop, *in_threads)
    assert sum(r.valid for r in results) == 1
    assert {r.reason for r in results if not r.valid} == {"code was already used"}


async def test_wrong_codes_lock_out_after_max_failures_with_the_audit_event(hot: tuple[Store, Principal]) -> None:
    store, actor = hot
    [(user_id, totp)] = unused_totp_users(store, 1)
    with store.read() as conn:
        max_failures = read_settings(conn)[0].totp.maxFailures
    at = now()
    right = totp.generate_otp(totp_service.current_step(at))
    wrong = "000000" if right != "000000" else "111111"
    answers = [
        await totp_service.verify_unaudited_on_loop(store, actor, user_id, wrong, at) for _ in range(max_failures)
    ]
    assert {a.reason for a in answers} == {totp_service.WRONG_CODE}
    locked = await totp_service.verify_unaudited_on_loop(store, actor, user_id, right, at)
    assert not locked.valid and locked.reason is not None and locked.reason.startswith("TOTP locked until")
    with store.read() as conn:
        events = conn.execute(
            select(audit.c.action).where(audit.c.target == user_id, audit.c.action == "totp.lockout")
        ).all()
    assert len(events) == 1


_ROW = select(
    bindparam("s", type_=String),
    bindparam("b", type_=Boolean),
    bindparam("i", type_=BigInteger),
    bindparam("t", type_=DateTime),
    bindparam("n", type_=String),
)


def _row(**params: object) -> Decision[tuple[object, ...]]:
    row = yield read_one(_ROW, **params)
    return tuple(row)


async def test_parameters_and_rows_are_what_a_cursor_sends_and_returns(hot: tuple[Store, Principal]) -> None:
    store, _ = hot
    params = {"s": "nul\x00in é", "b": True, "i": 2**40, "t": datetime(2026, 12, 3, 15, 4, 5, 678901), "n": None}
    on_loop = await store.run_steps_on_loop(partial(_row, **params))
    in_thread = store.run_steps(partial(_row, **params))
    assert on_loop == in_thread == ("nul\ufffdin é", True, 2**40, params["t"], None)


def _backend_pid() -> Decision[int]:
    return int((yield read_one(text("SELECT pg_backend_pid()")))[0])


def _refused_in_a_transaction() -> Decision[None]:
    yield BEGIN
    yield write_count(text("SELECT 1"))
    raise ApiProblem(409, "refused inside the transaction")  # the thread path rolls back: psycopg deallocates


async def test_statements_are_prepared_again_after_psycopg_deallocated_them(hot: tuple[Store, Principal]) -> None:
    store, actor = hot
    users_ = unused_totp_users(store, 2)
    pid = await store.run_steps_on_loop(_backend_pid)
    (user_id, totp) = users_[0]
    at = now()
    assert (await totp_service.verify_unaudited_on_loop(store, actor, user_id, totp.now(), at)).valid
    with pytest.raises(ApiProblem):
        store.run_steps(_refused_in_a_transaction)
    assert store.run_steps(_backend_pid) == pid  # psycopg's next statement sent DEALLOCATE ALL on this connection
    (user_id, totp) = users_[1]
    assert (await totp_service.verify_unaudited_on_loop(store, actor, user_id, totp.now(), now())).valid
    assert await store.run_steps_on_loop(_backend_pid) == pid


async def test_a_connection_dropped_by_the_server_is_replaced_before_the_decision(
    hot: tuple[Store, Principal],
) -> None:
    store, actor = hot
    pid = await store.run_steps_on_loop(_backend_pid)
    with store.write() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    [(user_id, totp)] = unused_totp_users(store, 1)
    assert (await totp_service.verify_unaudited_on_loop(store, actor, user_id, totp.now(), now())).valid
    assert await store.run_steps_on_loop(_backend_pid) != pid
