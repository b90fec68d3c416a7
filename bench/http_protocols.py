"""The service's CPU per hot request on each HTTP protocol, h11 vs httptools, paired and interleaved.

    .venv/bin/python bench/http_protocols.py [--db PATH|URL|temp-postgresql] [--users 100000]
                                             [--rounds 10] [--burst 500] [--route totp|push]

Starts two `protect-console serve` processes (one worker each) on one database, one with
``PROTECT_SERVE_HTTP=h11`` and one with the default (httptools when installed), and sends them the same
requests in alternating bursts (``--burst`` each, ``--rounds`` times) over one keep-alive connection:
TOTP checks with the current code of a different user each time, or push requests for distinct users.
The figure is each service's own CPU (user + system, /proc) per answer, per round, so that the machine's
other load falls on both alike; the table gives the median of the rounds and the paired difference.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets as random_tokens
import socket
import statistics
import sys
import time
from base64 import b32decode
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _http_load import Serve, table
from _store import add_db_argument, bench_store, lift_rate_limits, seed_if_empty
from push_admission import reachable_users
from totp_verify import STEP, code_at, enrolled_secrets

from console.models import Role
from console.server.runner import HTTP_ENV
from console.server.services.keys import create_key

PROTOCOLS = {"h11": "h11", "httptools": ""}  # name -> PROTECT_SERVE_HTTP


def request(path: str, key: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {key}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


def received(sock: socket.socket) -> bytes:
    data = sock.recv(65536)
    if not data:
        raise ConnectionError("the service closed the connection")
    return data


def exchange(sock: socket.socket, buffer: bytearray, data: bytes) -> int:
    """Send one request, read its answer (by Content-Length); the status."""
    sock.sendall(data)
    while b"\r\n\r\n" not in buffer:
        buffer += received(sock)
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end]).lower()
    length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
    while len(buffer) < end + length:
        buffer += received(sock)
    del buffer[: end + length]
    return int(head.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100000, help="users to seed when the database has none")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--route", choices=["totp", "push"], default="totp")
    add_db_argument(parser, "protocols.db")
    args = parser.parse_args()
    with bench_store(args.db, "protocols.db") as (store, db_name):
        seed_if_empty(store, args.users)
        lift_rate_limits(store)
        key = create_key(store, "bench-protocols", Role.SERVICE)
        if args.route == "totp":
            path = "/api/v2/protect/totp/verify"
            users = enrolled_secrets(store)
        else:
            path = "/api/v2/protect/push"
            users = [(uid, "") for uid in reachable_users(store)]
            resource = f"bench-protocols-{random_tokens.token_hex(4)}"
        needed = 2 * (args.rounds + 1) * args.burst
        if len(users) < needed:
            raise SystemExit(f"{len(users)} users to use, {needed} needed: fewer --rounds or --burst")
        db_value = store.target.value if store.target is not None else ""
        store.dispose()

        def body(uid: str, secret: str) -> bytes:
            if args.route == "push":
                context = {"app": "bench", "location": "Loopback"}
                return json.dumps({"userId": uid, "resource": resource, "context": context}).encode()
            raw = b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
            return f'{{"userId":"{uid}","code":"{code_at(raw, int(time.time()) // STEP)}"}}'.encode()

        servers = {}
        try:
            for name, value in PROTOCOLS.items():
                os.environ[HTTP_ENV] = value
                servers[name] = Serve(db_value, 1).__enter__()
            os.environ.pop(HTTP_ENV, None)
            cpu: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
            statuses: dict[str, dict[int, int]] = {name: {} for name in PROTOCOLS}
            position = 0
            for round_ in range(args.rounds + 1):  # round 0 warms up, not counted
                order = list(PROTOCOLS) if round_ % 2 else list(reversed(PROTOCOLS))
                for name in order:
                    batch = users[position : position + args.burst]
                    position += args.burst
                    data = [request(path, key, body(uid, secret)) for uid, secret in batch]
                    before = servers[name].cpu_seconds()
                    # A connection per burst: an idle one is closed after the keep-alive timeout meanwhile.
                    with socket.create_connection(("127.0.0.1", servers[name].port)) as sock:
                        buffer = bytearray()
                        for item in data:
                            status = exchange(sock, buffer, item)
                            statuses[name][status] = statuses[name].get(status, 0) + 1
                    if round_:
                        cpu[name].append((servers[name].cpu_seconds() - before) / len(data) * 1000)
        finally:
            for served in servers.values():
                served.__exit__(None, None, None)
    diffs = [a - b for a, b in zip(cpu["h11"], cpu["httptools"], strict=True)]
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"\nservice CPU per {args.route} answer, ms, {args.rounds} rounds of {args.burst}; {db_name}; load {load}\n")
    rows = [
        (f"{name} median (min-max)", f"{statistics.median(v):.3f}", f"({min(v):.3f}-{max(v):.3f})")
        for name, v in cpu.items()
    ]
    rows.append(
        (
            "h11 - httptools, paired median",
            f"{statistics.median(diffs):.3f}",
            f"per round: {' '.join(f'{d:.2f}' for d in diffs)}",
        )
    )
    rows += [(f"{name} statuses", str(dict(sorted(s.items()))), "") for name, s in statuses.items()]
    print(table(rows))


if __name__ == "__main__":
    main()
