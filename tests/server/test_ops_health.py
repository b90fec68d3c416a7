"""/healthz, /metrics and database outages on a real `serve` process over SQLite.

The SQLite outage is the database file becoming unavailable (a failed volume, or an operator
moving the file away): see console/server/health.py. The PostgreSQL outage (the server
stopped and started again) is in tests/server/test_ops_postgres.py.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.serve_helpers import IPHONE, Served, client, create_user, enroll, metric_value

DB_FILES = ("protect.db", "protect.db-wal", "protect.db-shm")
UNAVAILABLE = {"message": "the database is not answering; try again shortly"}
DUMMY_ID = "0123456789abcdef01234567"
# Well-formed bodies where a malformed one is refused (422) before any database work: the enrolment (no
# API key) and the hot routes (their key may still be in the per-process cache when the outage starts).
WELL_FORMED = {
    "/device/v1/enroll": {"code": "ABCD2345", "name": "p", "device": IPHONE},
    "/api/v2/protect/totp/verify": {"userId": DUMMY_ID, "code": "123456"},
    "/api/v2/protect/push": {"userId": DUMMY_ID, "resource": "VPN"},
}


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def served(tmp_path: Path):
    instances: list[Served] = []

    def start(*extra: str, workers: int = 1) -> Served:
        s = Served(
            db=str(tmp_path / "protect.db"), home=tmp_path / f"serve{len(instances)}", workers=workers, extra=extra
        )
        instances.append(s)
        return s.start()

    yield start
    for s in instances:
        s.stop()


async def test_healthz_and_metrics_answer_without_a_key(served) -> None:
    s = served()
    async with client(s.url) as anonymous:
        health = await anonymous.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert (await anonymous.get("/api/systemusers")).status_code == 401  # the API itself still needs a key
        metrics = await anonymous.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        assert metric_value(text, "protect_http_requests_total", method="GET", route="/healthz", status="200") >= 1
        assert (
            metric_value(text, "protect_http_requests_total", method="GET", route="/api/systemusers", status="401") == 1
        )
        assert "# TYPE protect_http_request_duration_seconds histogram" in text
        assert "# TYPE protect_push_attempts_total counter" in text
        assert "# TYPE protect_totp_verifications_total counter" in text


async def test_metrics_key_flag_requires_a_valid_key_for_metrics_only(served) -> None:
    s = served("--metrics-key")
    async with client(s.url) as anonymous, client(s.url, "pc_not-a-key") as wrong, client(s.url, s.key) as admin:
        assert (await anonymous.get("/healthz")).status_code == 200
        refused = await anonymous.get("/metrics")
        assert refused.status_code == 401 and "x-api-key" in refused.json()["message"]
        assert (await wrong.get("/metrics")).status_code == 401
        allowed = await admin.get("/metrics")
        assert allowed.status_code == 200 and "protect_http_requests_total" in allowed.text


async def test_push_and_totp_outcomes_are_counted(served) -> None:
    import pyotp

    from tests.serve_helpers import enroll_totp, set_push_cap

    s = served()
    async with client(s.url, s.key) as http:
        user = await create_user(http, "counted")
        token = await enroll(http, user["_id"])
        await set_push_cap(http, 1)
        phone = client(s.url, Authorization=f"Bearer {token}")
        try:
            first = await http.post("/api/v2/protect/push", json={"userId": user["_id"], "resource": "vpn"})
            assert (
                await http.post("/api/v2/protect/push", json={"userId": user["_id"], "resource": "vpn"})
            ).status_code == 429
            assert (
                await phone.post(
                    f"/device/v1/pushes/{first.json()['id']}/respond", json={"decision": "deny", "reportFraud": True}
                )
            ).status_code == 200
            second = await http.post("/api/v2/protect/push", json={"userId": user["_id"], "resource": "vpn"})
            assert (
                await phone.post(
                    f"/device/v1/pushes/{second.json()['id']}/respond",
                    json={"decision": "approve", "userVerified": True},
                )
            ).status_code == 200
            await http.post(f"/api/v2/protect/users/{user['_id']}/push/block", json={"minutes": 5})
            assert (
                await http.post("/api/v2/protect/push", json={"userId": user["_id"], "resource": "vpn"})
            ).status_code == 429
            totp: pyotp.TOTP = await enroll_totp(http, token)
            code = totp.now()
            wrong = f"{(int(code) + 1) % 1_000_000:06d}"
            for c in (wrong, code, code):
                await http.post("/api/v2/protect/totp/verify", json={"userId": user["_id"], "code": c})
        finally:
            await phone.aclose()
        text = (await http.get("/metrics")).text
    pushes = {
        o: metric_value(text, "protect_push_attempts_total", outcome=o)
        for o in ("admitted", "blocked_cap", "blocked_attack", "approved", "denied", "fraud")
    }
    assert pushes == {"admitted": 2, "blocked_cap": 1, "blocked_attack": 1, "approved": 1, "denied": 0, "fraud": 1}
    totps = {
        o: metric_value(text, "protect_totp_verifications_total", outcome=o)
        for o in ("valid", "wrong_code", "replay", "locked")
    }
    assert totps == {"valid": 1, "wrong_code": 1, "replay": 1, "locked": 0}
    assert "counted" not in text and user["_id"] not in text


async def test_openapi_describes_healthz_metrics_and_503_everywhere(served) -> None:
    s = served()
    async with client(s.url) as anonymous:
        spec = (await anonymous.get("/openapi.json")).json()
    health = spec["paths"]["/healthz"]["get"]
    assert set(health["responses"]) == {"200", "503"}
    assert "security" not in health
    metrics = spec["paths"]["/metrics"]["get"]
    assert "text/plain" in metrics["responses"]["200"]["content"]
    assert "401" in metrics["responses"]
    for path, operations in spec["paths"].items():
        if path in ("/healthz", "/metrics"):
            continue
        for method, operation in operations.items():
            assert "503" in operation["responses"], f"{method.upper()} {path} does not document the outage answer"


def _move(src: Path, dst: Path) -> None:
    dst.mkdir(exist_ok=True)
    for name in DB_FILES:
        if (src / name).exists():
            (src / name).rename(dst / name)


async def test_sqlite_outage_every_call_503_then_recovers_by_itself(served, tmp_path: Path) -> None:
    s = served(workers=2)
    async with client(s.url, s.key) as http:
        spec = (await http.get("/openapi.json")).json()
        user = await create_user(http, "outage.person")
        token = await enroll(http, user["_id"])
    _move(tmp_path, tmp_path / "away")  # the volume is gone
    try:
        calls = 0
        async with httpx.AsyncClient(base_url=s.url, timeout=30) as h:
            for path, operations in spec["paths"].items():
                if path in ("/metrics",):
                    continue
                url = re.sub(r"\{[^}]+\}", DUMMY_ID, path)
                for method in operations:
                    auth = {"Authorization": f"Bearer {token}"} if path.startswith("/device/") else {"x-api-key": s.key}
                    body = WELL_FORMED.get(path, {})
                    answer = await h.request(method.upper(), url, headers=auth, json=body)
                    calls += 1
                    assert answer.status_code == 503, f"{method.upper()} {path}: {answer.status_code} {answer.text}"
                    assert answer.json() == UNAVAILABLE
                    assert answer.headers["retry-after"] == "1"
            assert calls > 30
            for _ in range(6):  # new connections: both workers see it
                async with httpx.AsyncClient(base_url=s.url, timeout=30) as fresh:
                    assert (await fresh.get("/healthz")).status_code == 503
            assert (await h.get("/metrics")).status_code == 200  # metrics do not need the database
        # What the console's error banner shows: the client's error carries the service's message.
        from console.client import ProtectClient, ServerError

        async with ProtectClient(s.url, s.key, retries=0) as api:
            with pytest.raises(ServerError) as failed:
                await api.list_users()
        assert failed.value.status == 503 and UNAVAILABLE["message"] in str(failed.value)
        assert not (tmp_path / "protect.db").exists(), "the service must not create an empty database in its place"
    finally:
        _move(tmp_path / "away", tmp_path)  # the volume is back
    async with httpx.AsyncClient(base_url=s.url, timeout=30, headers={"x-api-key": s.key}) as h:
        for _ in range(8):
            async with httpx.AsyncClient(base_url=s.url, timeout=30) as fresh:
                assert (await fresh.get("/healthz")).json() == {"status": "ok"}
        assert (await h.get(f"/api/systemusers/{user['_id']}")).json()["username"] == "outage.person"
        created = await h.post("/api/systemusers", json={"username": "after", "email": "after@ops.example"})
        assert created.status_code == 201
    assert len(s.metrics_dirs()) == 1  # the runner's PROMETHEUS_MULTIPROC_DIR, in this instance's TMPDIR
    assert s.stop() == 0  # SIGTERM: the workers stop, then the runner removes the metrics directory
    assert s.metrics_dirs() == []
    log = s.log.read_text()
    assert "Traceback" not in log
    assert "database unavailable: unable to open database file" in log


def test_a_connection_opened_before_the_file_was_watched_is_not_trusted_once_it_moves(tmp_path: Path) -> None:
    """The store opens connections before the app watches its file (open_store's checks): one of those, still in
    the pool when the file moves away, has no identity recorded, and must not pass for the missing file's."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from console.server.health import watch_sqlite_file
    from console.server.store import open_store, parse_db

    db = tmp_path / "protect.db"
    store = open_store(parse_db(str(db)))
    try:
        with store.engine.connect() as conn:  # opened unwatched, then kept by the pool
            conn.execute(text("SELECT 1"))
        watch_sqlite_file(store.engine, db)
        _move(tmp_path, tmp_path / "away")
        with pytest.raises(OperationalError, match="missing"), store.engine.connect() as conn:
            conn.execute(text("SELECT count(*) FROM users"))
        _move(tmp_path / "away", tmp_path)
        with store.engine.connect() as conn:  # the file is back: a new connection opens it
            assert conn.execute(text("SELECT count(*) FROM users")).scalar() == 0
    finally:
        store.dispose()
