"""TOTP verification over loopback: valid codes per second against `serve --workers N` (issue 8's setup).

    .venv/bin/python bench/totp_verify.py [--db PATH|URL|temp-postgresql] [--users 60000] [--workers 2]
                                          [--clients 8] [--seconds 10] [--warmup 1]

Seeds users (or reuses the database's), reads the TOTP secrets straight from the store (a benchmark
may; the API never returns them), starts `protect-console serve --workers N` on the database, and has
``--clients`` client processes, one keep-alive connection each, POST /api/v2/protect/totp/verify with
the current code of a different user each time (each client walks its own share of the users; a user
is used at most once per 30-second step, so every code should be accepted). Prints a table with the
goal beside each figure.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import struct
import sys
import time
from base64 import b32decode
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import or_, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _http_load import ClientResult, Serve, Source, chunks, cpu_rows, measure, percentile, run_clients, table
from _store import add_db_argument, bench_store, lift_rate_limits, seed_if_empty

from console.models import Role
from console.server import secretbox
from console.server.services.keys import create_key
from console.server.store import Store, users

PATH = "/api/v2/protect/totp/verify"
STEP = 30
GOAL_RATE, FLOOR_RATE = 2000, 1000


def code_at(key: bytes, step: int) -> str:
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return f"{(struct.unpack('>I', mac[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


def make_source_factory(shares: list[list[tuple[str, str]]]) -> Callable[[int], Source]:
    def make_source(index: int) -> Source:
        mine = [(uid, b32decode(secret + "=" * (-len(secret) % 8), casefold=True)) for uid, secret in shares[index]]
        position = [0]

        def next_body(_conn: int) -> bytes | None:
            step = int(time.time()) // STEP
            i = position[0]
            position[0] = (i + 1) % len(mine)
            # Each user once per pass; a pass shorter than a step would send replays (shown under "not valid").
            uid, key = mine[i]
            return json.dumps({"userId": uid, "code": code_at(key, step)}).encode()

        return next_body

    return make_source


def classify(status: int, body: bytes) -> str:
    if status != 200:
        return f"http {status}"
    answer = json.loads(body)
    return "valid" if answer["valid"] else (answer.get("reason") or "invalid")


def enrolled_secrets(store: Store) -> list[tuple[str, str]]:
    """(user id, TOTP secret) of the users whose current code is still unused: enrolled, not failing, not yet
    verified in this step (by an earlier run). Secrets are stored sealed (secretbox.py): opened here."""
    with store.read() as conn:
        return [
            (r.id, secretbox.reveal(store, r.id, r.totp_secret))
            for r in conn.execute(
                select(users.c.id, users.c.totp_secret)
                .where(
                    users.c.totp_status == "ENROLLED",
                    users.c.totp_failures == 0,
                    or_(users.c.totp_last_step.is_(None), users.c.totp_last_step < int(time.time()) // STEP),
                )
                .order_by(users.c.id)
            )
        ]


def totp_clients(
    served: Serve, key: str, shares: list[list[tuple[str, str]]], args: argparse.Namespace
) -> Callable[[], ClientResult]:
    """One keep-alive client process per share of (user id, secret), each sending current codes."""
    return lambda: run_clients(
        "127.0.0.1",
        served.port,
        PATH,
        key,
        processes=args.clients,
        connections=1,
        make_source=make_source_factory(shares),
        classify=classify,
        warmup=args.warmup,
        seconds=args.seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=60000, help="users to seed when the database has none")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    add_db_argument(parser, "totp.db")
    args = parser.parse_args()
    with bench_store(args.db, "totp.db") as (store, db_name):
        seed_if_empty(store, args.users)
        lift_rate_limits(store)
        secrets = enrolled_secrets(store)
        key = create_key(store, "bench-totp", Role.SERVICE)
        db_value = store.target.value if store.target is not None else ""
        store.dispose()  # the service's workers are the only users of the database while it runs
        shares = list(chunks(secrets, args.clients))
        with Serve(db_value, args.workers) as served:
            result = measure(served, totp_clients(served, key, shares, args))
    report(args, db_name, len(secrets), result)


def report(args: argparse.Namespace, db_name: str, enrolled: int, result: ClientResult) -> None:
    lat = sorted(result.latencies_ms)
    valid = result.bodies.get("valid", 0)
    total = len(lat)
    rate = valid / args.seconds
    others = ", ".join(f"{k}: {v:,}" for k, v in sorted(result.bodies.items()) if k != "valid") or "none"
    print(
        f"\nTOTP verify over loopback: serve --workers {args.workers}, {args.clients} keep-alive clients "
        f"(one process each), current codes, distinct users ({enrolled:,} enrolled); {db_name}"
    )
    print(f"measured for {args.seconds:g} s after {args.warmup:g} s of warm-up\n")
    print(
        table(
            [
                ("valid codes per second", f"{rate:,.0f}", f">= {GOAL_RATE:,}/s (never < {FLOOR_RATE:,}/s)"),
                ("answers per second", f"{total / args.seconds:,.0f}", ""),
                ("p50 ms", f"{percentile(lat, 0.50):.2f}", ""),
                ("p95 ms", f"{percentile(lat, 0.95):.2f}", ""),
                ("p99 ms", f"{percentile(lat, 0.99):.2f}", ""),
                ("max ms", f"{lat[-1] if lat else float('nan'):.2f}", ""),
                ("not valid", others, "none"),
                ("connection errors", f"{result.errors}", "0"),
                *cpu_rows(result),
            ]
        )
    )
    verdict = "MET" if rate >= GOAL_RATE else ("below goal, above floor" if rate >= FLOOR_RATE else "BELOW FLOOR")
    print(f"\ngoal: {verdict}")


if __name__ == "__main__":
    main()
