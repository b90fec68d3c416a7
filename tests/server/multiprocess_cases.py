"""The rules that must hold across service processes, as test cases shared by both deployments.

A subclass provides the ``deployment`` fixture: a :class:`Deployment` whose ``urls`` are the
entry points (one ``serve --workers 2`` on SQLite; two ``serve`` instances on one PostgreSQL
database). Requests of one race are spread round-robin over the entry points, and every race
is real concurrent HTTP from one event loop. Counts are taken as deltas, so the cases share
one running deployment per module.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.serve_helpers import (
    IPHONE,
    Served,
    client,
    create_user,
    enroll,
    enroll_totp,
    enrollment_code,
    metric_value,
    set_push_cap,
)

RACE = 64  # the figure: 64 concurrent pushes for one user and resource
RACE_ATTEMPTS = 4  # races run, each for a new user, until one is answered by more than one process
PUSH_ROUTE = "/api/v2/protect/push"


@dataclass
class Deployment:
    instances: list[Served]
    admin_key: str
    new_key: Callable[[str, str], str]  # (name, role) -> a key made with `protect-console keys create`
    revoke_key: Callable[[str], None]  # name -> revoked with `protect-console keys revoke --yes`
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.instances]


def per_process_requests(served: Served, route: str, method: str = "POST") -> dict[int, float]:
    """Requests each worker process answered on ``route`` (read from its own metrics file)."""
    from prometheus_client.mmap_dict import MmapedDict

    counts: dict[int, float] = {}
    for path in (served.home / "tmp").glob("protect-metrics-*/counter_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _metric, sample, labels, _help = json.loads(key)
            if (
                sample == "protect_http_requests_total"
                and labels.get("route") == route
                and labels.get("method") == method
            ):
                counts[pid] = counts.get(pid, 0) + value
    return counts


class CrossProcessRules:
    """Every case spreads one race over all entry points (and, behind each, its worker processes)."""

    async def _admins(self, deployment: Deployment) -> list[httpx.AsyncClient]:
        return [client(url, deployment.admin_key) for url in deployment.urls]

    async def test_push_cap_admits_exactly_max_of_64_concurrent_pushes(self, deployment: Deployment) -> None:
        admins = await self._admins(deployment)
        try:
            await set_push_cap(admins[0], 3)
            # Which worker accepts a new connection is the kernel's choice, and one worker woken with all 64
            # waiting may take them all: each race must hold the cap, and a race answered by one process
            # alone proves nothing across processes, so it is run again (for a new user) until one is spread.
            served_by: list[str] = []
            for attempt in range(RACE_ATTEMPTS):
                served_by = await self._cap_race(deployment, admins, f"cap.race{attempt}")
                if len(served_by) >= 2:
                    break
            assert len(served_by) >= 2, f"one process answered all {RACE} pushes, {RACE_ATTEMPTS} times: {served_by}"
        finally:
            for a in admins:
                await a.aclose()

    async def _cap_race(self, deployment: Deployment, admins: list[httpx.AsyncClient], username: str) -> list[str]:
        """64 pushes at once for a new user with the cap at 3; returns which processes answered them."""
        http = admins[0]
        user = await create_user(http, username)
        await enroll(http, user["_id"])
        before = [per_process_requests(s, PUSH_ROUTE) for s in deployment.instances]
        metrics_before = [(await a.get("/metrics")).text for a in admins]
        answers = await asyncio.gather(
            *(
                admins[i % len(admins)].post(PUSH_ROUTE, json={"userId": user["_id"], "resource": "vpn"})
                for i in range(RACE)
            )
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(201) == 3, statuses
        assert statuses.count(429) == RACE - 3, statuses
        assert all("retryAfter" in a.json() for a in answers if a.status_code == 429)
        # The history agrees: 3 pending, 61 blocked (refusals are recorded).
        listed = await http.get("/api/v2/protect/pushattempts", params={"userId": user["_id"], "limit": 100})
        rows = listed.json()["results"]
        assert sum(r["status"] == "pending" for r in rows) == 3
        assert sum(r["status"] == "blocked" for r in rows) == RACE - 3
        # Metrics summed over every worker (whichever one answers /metrics).
        metrics_after = [(await a.get("/metrics")).text for a in admins]
        for outcome, n in (("admitted", 3), ("blocked_cap", RACE - 3)):
            delta = sum(metric_value(t, "protect_push_attempts_total", outcome=outcome) for t in metrics_after) - sum(
                metric_value(t, "protect_push_attempts_total", outcome=outcome) for t in metrics_before
            )
            assert delta == n, (outcome, delta)
        # Per process, the pushes each one answered (a single-worker instance got its round-robin share by construction).
        served_by: list[str] = []
        for instance, old in zip(deployment.instances, before, strict=True):
            if instance.workers == 1:
                served_by.append(f"instance on port {instance.port}")
                continue
            now = per_process_requests(instance, PUSH_ROUTE)
            served_by += [f"pid {pid}" for pid, n in now.items() if n > old.get(pid, 0)]
        return served_by

    async def test_one_totp_code_sent_at_once_everywhere_is_accepted_once(self, deployment: Deployment) -> None:
        admins = await self._admins(deployment)
        try:
            http = admins[0]
            user = await create_user(http, "totp.race")
            token = await enroll(http, user["_id"])
            totp = await enroll_totp(http, token)
            code = totp.now()
            answers = await asyncio.gather(
                *(
                    admins[i % len(admins)].post(
                        "/api/v2/protect/totp/verify", json={"userId": user["_id"], "code": code}
                    )
                    for i in range(24)
                )
            )
            assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
            results = [a.json() for a in answers]
            assert sum(r["valid"] for r in results) == 1, results
            assert all(r["reason"] == "code was already used" for r in results if not r["valid"]), results
            # Replays do not count toward the lock-out: the user is not locked.
            shown = (await admins[-1].get(f"/api/systemusers/{user['_id']}")).json()
            assert shown["totpLock"]["failures"] == 0 and not shown["totpLock"]["locked"]
        finally:
            for a in admins:
                await a.aclose()

    async def test_one_enrolment_code_raced_everywhere_makes_one_device(self, deployment: Deployment) -> None:
        admins = await self._admins(deployment)
        devices = [client(url) for url in deployment.urls]
        try:
            http = admins[0]
            user = await create_user(http, "device.race")
            await enroll(http, user["_id"])  # an old device the winner replaces
            code = await enrollment_code(http, user["_id"])
            answers = await asyncio.gather(
                *(
                    devices[i % len(devices)].post(
                        "/device/v1/enroll", json={"code": code, "name": f"p{i}", "device": IPHONE}
                    )
                    for i in range(16)
                )
            )
            statuses = sorted(a.status_code for a in answers)
            assert statuses.count(201) == 1, [a.text for a in answers]
            assert statuses.count(400) == 15, statuses
            endpoints = (await admins[-1].get(f"/api/v2/users/{user['_id']}/pushendpoints")).json()
            assert len(endpoints) == 1
            winner = next(a.json() for a in answers if a.status_code == 201)
            assert endpoints[0]["id"] == winner["deviceId"]
        finally:
            for c in (*admins, *devices):
                await c.aclose()

    async def test_settings_etag_admits_one_of_concurrent_changes(self, deployment: Deployment) -> None:
        admins = await self._admins(deployment)
        try:
            got = await admins[0].get("/api/v2/protect/settings")
            etag = got.headers["etag"]
            answers = await asyncio.gather(
                *(
                    admins[i % len(admins)].patch(
                        "/api/v2/protect/settings",
                        json={"push": {"timeoutSeconds": 30 + i}},
                        headers={"if-match": etag},
                    )
                    for i in range(1, 17)
                )
            )
            statuses = sorted(a.status_code for a in answers)
            assert statuses.count(200) == 1, [a.text for a in answers]
            assert statuses.count(412) == 15, statuses
            winner = next(a for a in answers if a.status_code == 200)
            now = await admins[-1].get("/api/v2/protect/settings")
            assert now.headers["etag"] == winner.headers["etag"] != etag
            assert now.json()["push"]["timeoutSeconds"] == winner.json()["push"]["timeoutSeconds"]
        finally:
            for a in admins:
                await a.aclose()

    async def test_push_block_made_in_one_process_refuses_pushes_in_all(self, deployment: Deployment) -> None:
        admins = await self._admins(deployment)
        try:
            http = admins[0]
            user = await create_user(http, "block.race")
            await enroll(http, user["_id"])
            await set_push_cap(http, 10)
            blocked = await http.post(f"/api/v2/protect/users/{user['_id']}/push/block", json={"minutes": 15})
            assert blocked.status_code == 200, blocked.text
            answers = await asyncio.gather(
                *(
                    admins[i % len(admins)].post(PUSH_ROUTE, json={"userId": user["_id"], "resource": "vpn"})
                    for i in range(24)
                )
            )
            assert {a.status_code for a in answers} == {429}
            assert all(a.json()["blockedUntil"] for a in answers)
            lifted = await admins[-1].delete(f"/api/v2/protect/users/{user['_id']}/push/block")
            assert lifted.json() == {"lifted": True}
            again = await asyncio.gather(
                *(
                    admins[i % len(admins)].post(PUSH_ROUTE, json={"userId": user["_id"], "resource": "vpn"})
                    for i in range(4)
                )
            )
            assert [a.status_code for a in again] == [201] * 4
        finally:
            for a in admins:
                await a.aclose()

    async def test_keys_and_settings_changed_elsewhere_apply_to_the_next_request(self, deployment: Deployment) -> None:
        """Nothing is cached in a process: a key revoked (or created) by the CLI on the database, or a setting
        changed through another process, is in force for the very next request to any process."""
        key = deployment.new_key("ops-temp", "readonly")
        readers = [client(url, key) for url in deployment.urls]
        admins = await self._admins(deployment)
        try:
            first = await asyncio.gather(
                *(readers[i % len(readers)].get("/api/systemusers", params={"limit": 1}) for i in range(8))
            )
            assert {a.status_code for a in first} == {200}
            deployment.revoke_key("ops-temp")
            after = await asyncio.gather(
                *(readers[i % len(readers)].get("/api/systemusers", params={"limit": 1}) for i in range(8))
            )
            assert {a.status_code for a in after} == {401}, [a.text for a in after]
            # A setting changed through one entry point governs pushes answered by every other one.
            user = await create_user(admins[0], "settings.seen")
            await enroll(admins[0], user["_id"])
            await set_push_cap(admins[-1], 1)
            pushes = [
                await admins[i % len(admins)].post(PUSH_ROUTE, json={"userId": user["_id"], "resource": "r"})
                for i in range(3)
            ]
            assert [p.status_code for p in pushes] == [201, 429, 429]
        finally:
            for c in (*readers, *admins):
                await c.aclose()

    async def test_metrics_count_every_process_and_carry_no_user_data(self, deployment: Deployment) -> None:
        admins = await self._admins(deployment)
        try:
            http = admins[0]
            user = await create_user(http, "metrics.person")
            before = (await http.get("/metrics")).text
            answers = await asyncio.gather(*(http.get(f"/api/systemusers/{user['_id']}") for _ in range(20)))
            assert {a.status_code for a in answers} == {200}
            missing = await http.get("/api/systemusers/ffffffffffffffffffffffff")
            assert missing.status_code == 404
            await http.get("/no/such/metrics.person/path")
            texts = [(await http.get("/metrics")).text for _ in range(6)]  # whichever worker answers
            route = "/api/systemusers/{user_id}"
            for text in texts:
                delta = metric_value(
                    text, "protect_http_requests_total", method="GET", route=route, status="200"
                ) - metric_value(before, "protect_http_requests_total", method="GET", route=route, status="200")
                assert delta == 20
                assert metric_value(text, "protect_http_requests_total", method="GET", route=route, status="404") >= 1
                assert (
                    metric_value(text, "protect_http_request_duration_seconds_count", method="GET", route=route) >= 20
                )
                for secret in ("metrics.person", user["_id"], "ffffffffffffffffffffffff", deployment.admin_key):
                    assert secret not in text
        finally:
            for a in admins:
                await a.aclose()


def keys_cli(db: str) -> tuple[Callable[[str, str], str], Callable[[str], None]]:
    """``keys create`` / ``keys revoke`` through the real CLI, against ``db`` (path or URL)."""
    import subprocess
    import sys

    from tests.serve_helpers import ROOT

    def new_key(name: str, role: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "console", "keys", "create", "--db", db, "--name", name, "--role", role],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    def revoke(name: str) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "console", "keys", "revoke", "--db", db, name, "--yes"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr

    return new_key, revoke


def start_deployment(db: str, home: Path, workers: list[int]) -> Deployment:
    instances: list[Served] = []
    try:
        for i, n in enumerate(workers):
            instances.append(Served(db=db, home=home / f"serve{i}", workers=n).start())
    except BaseException:
        for s in instances:
            s.stop()
        raise
    key = next((s.key for s in instances if s.key), "")
    assert key, "the first instance prints the bootstrap admin key on an empty database"
    new_key, revoke = keys_cli(db)
    return Deployment(instances=instances, admin_key=key, new_key=new_key, revoke_key=revoke)


def require_two_workers_served(deployment: Deployment) -> None:
    """Wait (bounded) until every worker process of every instance has answered a request."""
    import time

    for served in deployment.instances:
        deadline = time.monotonic() + 60
        while served.workers > 1 and len(served.worker_pids()) < served.workers:
            if time.monotonic() > deadline:
                pytest.fail(f"only {len(served.worker_pids())} of {served.workers} workers answered in 60 s")
            # New connections each time: the kernel hands them to whichever worker accepts.
            with httpx.Client(base_url=served.url, timeout=5) as c:
                c.get("/healthz")
