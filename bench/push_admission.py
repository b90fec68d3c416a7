"""Push admission over loopback: decisions per second against `serve --workers N`, and over-admission counted.

    .venv/bin/python bench/push_admission.py [--db PATH|URL|temp-postgresql] [--users 60000] [--workers 2]
                                             [--clients 64] [--processes 8] [--seconds 10] [--warmup 1]
                                             [--pushes-per-user 1] [--cap 1]

Seeds users (or reuses the database's), picks those a push can reach (active, not locked, an active
device, no block in force), sets the concurrency cap (``--cap``, pending pushes per user and resource),
starts `protect-console serve --workers N`, and has ``--clients`` keep-alive connections (spread over
``--processes`` client processes) POST /api/v2/protect/push for a resource of this run only. With
``--pushes-per-user 1`` every request is for a different user (the issue's setup); with K > 1, K
consecutive clients ask for the same user at the same moment, a race the cap must decide. Afterwards
the database is read: a user with more pending attempts for the run's resource than the cap is an
over-admission (the goal is none), and the 201s must equal the pending attempts recorded.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import and_, func, or_, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _http_load import ClientResult, Serve, Source, cpu_rows, measure, percentile, run_clients, table
from _store import add_db_argument, bench_store, lift_rate_limits, seed_if_empty

from console.models import ProtectSettingsPatch, Role
from console.server.clock import Clock
from console.server.services.common import Principal
from console.server.services.keys import create_key
from console.server.services.settings import etag_for, read_settings, update_settings
from console.server.store import Store, devices, push_attempts, users

PATH = "/api/v2/protect/push"
GOAL_RATE, GOAL_P99_MS = 1000, 50.0
KEPT_PACE = 0.99  # paced runs (--rate): the share of the offered requests answered in the window


def reachable_users(store: Store) -> list[str]:
    now = Clock().now()
    with store.read() as conn:
        return list(
            conn.execute(
                select(users.c.id)
                .join(devices, devices.c.user_id == users.c.id)
                .where(
                    users.c.state != "SUSPENDED",
                    users.c.account_locked.is_(False),
                    devices.c.state == "active",
                    or_(users.c.push_blocked_until.is_(None), users.c.push_blocked_until <= now),
                )
                .order_by(users.c.id)
            ).scalars()
        )


def make_source_factory(
    targets: list[str], clients: int, per_process: int, per_user: int, resource: str
) -> Callable[[int], Source]:
    """Connection c of process p is client n = p * per_process + c; its i-th request goes to the user of slot
    (i * clients + n) // per_user, so per_user consecutive clients race for one user at each turn."""

    def make_source(process: int) -> Source:
        turn = [0] * per_process

        def next_body(conn: int) -> bytes | None:
            n = process * per_process + conn
            slot = (turn[conn] * clients + n) // per_user
            turn[conn] += 1
            if slot >= len(targets):
                return None  # every user has had their pushes: stop this connection
            return json.dumps(
                {"userId": targets[slot], "resource": resource, "context": {"app": "bench", "location": "Loopback"}}
            ).encode()

        return next_body

    return make_source


def classify(status: int, body: bytes) -> str:
    if status == 201:
        return "admitted"
    if status == 429:
        return "blocked_attack" if b"blockedUntil" in body else "blocked_cap"
    return f"http {status}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=60000, help="users to seed when the database has none")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--processes", type=int, default=8, help="client processes the connections are spread over")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--pushes-per-user", type=int, default=1)
    parser.add_argument("--cap", type=int, default=1, help="push.concurrentLimit.max for the run")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="send this many requests per second in all, at a steady pace (default: as fast as "
        "answered; the goal's latency is read at --rate 1000)",
    )
    add_db_argument(parser, "push.db")
    args = parser.parse_args()
    if args.clients % args.processes:
        parser.error("--clients must be a multiple of --processes")
    resource = f"bench-{secrets.token_hex(4)}"  # no earlier attempt counts toward this run's cap
    with bench_store(args.db, "push.db") as (store, db_name):
        seed_if_empty(store, args.users)
        lift_rate_limits(store)
        targets = reachable_users(store)
        with store.read() as conn:
            current, version = read_settings(conn)
        bench_admin = Principal(key_id="", name="bench", role=Role.ADMIN)
        patch = ProtectSettingsPatch.model_validate(
            {"push": {"concurrentLimit": {"enabled": True, "max": args.cap}, "timeoutSeconds": 300}}
        )
        update_settings(store, patch, etag_for(version), bench_admin, Clock().now())
        key = create_key(store, "bench-push", Role.SERVICE)
        db_value = store.target.value if store.target is not None else ""
        per_process = args.clients // args.processes
        source = make_source_factory(targets, args.clients, per_process, args.pushes_per_user, resource)
        with Serve(db_value, args.workers) as served:
            result = measure(
                served,
                lambda: run_clients(
                    "127.0.0.1",
                    served.port,
                    PATH,
                    key,
                    processes=args.processes,
                    connections=per_process,
                    make_source=source,
                    classify=classify,
                    warmup=args.warmup,
                    seconds=args.seconds,
                    rate=args.rate,
                ),
            )
        pending = and_(push_attempts.c.resource == resource, push_attempts.c.status == "pending")
        with store.read() as conn:
            per_user = conn.execute(
                select(push_attempts.c.user_id, func.count().label("n"))
                .where(pending)
                .group_by(push_attempts.c.user_id)
            ).all()
            attempts = conn.execute(
                select(func.count()).select_from(push_attempts).where(push_attempts.c.resource == resource)
            ).scalar_one()
            patch_back = ProtectSettingsPatch.model_validate({"push": current.push.model_dump()})
            _, version = read_settings(conn)
        update_settings(store, patch_back, etag_for(version), bench_admin, Clock().now())
    over = sum(max(0, r.n - args.cap) for r in per_user)
    report(args, db_name, len(targets), result, over, sum(r.n for r in per_user), attempts)


def report(
    args: argparse.Namespace, db_name: str, reachable: int, result: ClientResult, over: int, pending: int, attempts: int
) -> None:
    lat = sorted(result.latencies_ms)
    rate = len(lat) / args.seconds
    p99 = percentile(lat, 0.99)
    kinds = ", ".join(f"{k}: {v:,}" for k, v in sorted(result.bodies.items())) or "none"
    pace = f"paced at {args.rate:,.0f}/s in all" if args.rate else "each sending as soon as answered"
    rate_goal = (
        f">= {KEPT_PACE:.0%} of the {args.rate:,.0f}/s offered" if args.rate else f">= {GOAL_RATE:,}/s at 64 clients"
    )
    print(
        f"\nPush admission over loopback: serve --workers {args.workers}, {args.clients} keep-alive clients ({pace}) in "
        f"{args.processes} processes, {args.pushes_per_user} push(es) per user at once, cap {args.cap}, "
        f"{reachable:,} reachable users; {db_name}"
    )
    print(f"measured for {args.seconds:g} s after {args.warmup:g} s of warm-up; database counts cover the whole run\n")
    print(
        table(
            [
                ("decisions per second", f"{rate:,.0f}", rate_goal),
                ("p50 ms", f"{percentile(lat, 0.50):.2f}", ""),
                ("p95 ms", f"{percentile(lat, 0.95):.2f}", ""),
                ("p99 ms", f"{p99:.2f}", f"<= {GOAL_P99_MS:g} ms"),
                ("max ms", f"{lat[-1] if lat else float('nan'):.2f}", ""),
                ("answers (window)", kinds, ""),
                ("attempts recorded (run)", f"{attempts:,}", ""),
                ("pending in the database", f"{pending:,}", ""),
                ("users over the cap", f"{over:,}", "0 (no over-admission)"),
                ("connection errors", f"{result.errors}", "0"),
                *cpu_rows(result),
            ]
        )
    )
    # Paced, the rate is what was offered: the service must keep pace with it (the most it answers is the
    # unpaced run's figure); unpaced, every connection is busy and the rate is the most it answers.
    kept_pace = rate >= KEPT_PACE * args.rate if args.rate else rate >= GOAL_RATE
    met = kept_pace and p99 <= GOAL_P99_MS and over == 0
    print(f"\ngoal: {'MET' if met else 'NOT MET'}")


if __name__ == "__main__":
    main()
