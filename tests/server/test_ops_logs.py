"""What a real `serve` writes: the new admin key alone on stdout; on stderr (or `--access-log FILE`) its
messages and one access line per request, with the path and the names of the query parameters but no
query value, body or header: no email, TOTP code or secret, device token, enrolment code or API key.
One process and `--workers 2`, over SQLite (the logs do not depend on the store).
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from console.server.runner import ServiceFormatter
from tests.serve_helpers import ROOT, Served, client, create_user, enroll, enroll_totp, enrollment_code

EMAIL_NAME = "zoe.quinn"  # create_user gives her zoe.quinn@ops.example
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def access_line(method: str, path: str, status: int) -> re.Pattern[str]:
    """An access line: UTC time, client address, method, path (query parameter names only), status, duration."""
    return re.compile(rf"^{TIME} 127\.0\.0\.1:\d+ {method} {re.escape(path)} {status} \d+\.\dms$", re.MULTILINE)


def access_lines(text: str) -> list[str]:
    return re.findall(rf"^{TIME} .*$", text, re.MULTILINE)


@pytest.fixture
def served(tmp_path: Path):
    instances: list[Served] = []

    def start(*extra: str, workers: int = 1, home: str = "serve") -> Served:
        s = Served(
            db=str(tmp_path / "protect.db"), home=tmp_path / f"{home}{len(instances)}", workers=workers, extra=extra
        )
        instances.append(s)
        return s.start()

    yield start
    for s in instances:
        s.stop()


async def traffic(s: Served) -> tuple[dict[str, str], list[re.Pattern[str]]]:
    """Requests carrying personal data and secrets in every place a client puts them. Returns those
    values by name, and the access lines the requests must leave."""
    async with client(s.url, s.key) as admin, client(s.url) as anonymous:
        user = await create_user(admin, EMAIL_NAME)
        email, uid = user["email"], user["_id"]
        listed = await admin.get("/api/systemusers", params={"search": email, "limit": 5})
        assert listed.status_code == 200 and listed.json()["totalCount"] == 1
        undeclared = await admin.get(f"/api/systemusers?{quote(email)}")  # a query parameter named by an email
        assert undeclared.status_code == 200
        searched = await admin.post("/api/search/systemusers", json={"searchFilter": {"searchTerm": email}})
        assert searched.status_code == 200 and searched.json()["totalCount"] == 1
        code = await enrollment_code(admin, uid)
        token = await enroll(admin, uid)
        totp = await enroll_totp(admin, token)
        now = totp.now()
        verified = await admin.post("/api/v2/protect/totp/verify", json={"userId": uid, "code": now})
        assert verified.status_code == 200 and verified.json()["valid"] is True
        wrong_key = "pc_" + "W" * 40
        refused = await anonymous.get("/api/systemusers", params={"search": email}, headers={"x-api-key": wrong_key})
        assert refused.status_code == 401
        forged = await anonymous.get("/x%0A2026-01-01T00:00:00.000Z forged")  # a newline, percent-encoded
        assert forged.status_code == 404
    secrets = {
        "email": email,
        "email, percent-encoded": quote(email),
        "enrolment code": code,
        "device token": token,
        "TOTP secret": totp.secret,
        "TOTP code": now,
        "wrong API key": wrong_key,
        "admin key": s.key,
    }
    expected = [
        access_line("POST", "/api/systemusers", 201),
        access_line("GET", "/api/systemusers?search&limit", 200),
        access_line("GET", "/api/systemusers?*", 200),
        access_line("POST", "/api/search/systemusers", 200),
        access_line("POST", f"/api/v2/protect/users/{uid}/enrollments", 201),
        access_line("POST", "/device/v1/enroll", 201),
        access_line("POST", "/api/v2/protect/totp/verify", 200),
        access_line("GET", "/api/systemusers?search", 401),
        access_line("GET", "/x%0A2026-01-01T00:00:00.000Z%20forged", 404),
    ]
    return secrets, expected


def stop(s: Served) -> None:
    """Stop ``s`` and see every server process finish cleanly: each has written all its lines by then."""
    assert s.stop() in (0, -signal.SIGTERM)  # one process re-raises the SIGTERM it handled
    assert s.log.read_text().count("Finished server process") == s.workers


def assert_absent(secrets: dict[str, str], text: str, stream: str) -> None:
    leaked = [name for name, value in secrets.items() if value in text]
    assert not leaked, f"{', '.join(leaked)} in {stream}"


@pytest.mark.parametrize("workers", [1, 2])
async def test_access_lines_on_stderr_carry_no_request_data_and_stdout_only_the_new_key(served, workers: int) -> None:
    s = served(workers=workers)
    assert re.fullmatch(r"pc_\S+", s.key)
    secrets, expected = await traffic(s)
    stop(s)
    out, err = s.out.read_text(), s.log.read_text()
    assert out == s.key + "\n"  # KEY=$(protect-console serve … | head -1)
    assert "store it now" in err  # the explanation, on stderr
    for line in expected:
        assert line.search(err), f"no access line {line.pattern!r} on stderr:\n{err}"
    assert not any(line.startswith("forged") or " forged" in line for line in err.splitlines())
    assert_absent(secrets, out.replace(s.key, ""), "stdout")
    assert_absent(secrets, err, "stderr")


async def test_a_database_with_a_key_gives_an_empty_stdout(served) -> None:
    first = served()
    assert first.key
    stop(first)
    second = served()
    async with client(second.url, first.key) as admin:
        assert (await admin.get("/api/systemusers")).status_code == 200
    stop(second)
    assert second.key == "" and second.out.read_text() == ""
    assert access_line("GET", "/api/systemusers", 200).search(second.log.read_text())


@pytest.mark.parametrize("workers", [1, 2])
async def test_access_log_flag_appends_the_lines_to_a_file_and_leaves_them_off_stderr(
    served, tmp_path: Path, workers: int
) -> None:
    path = tmp_path / "logs" / "access.log"
    path.parent.mkdir()
    path.write_text("an earlier line\n")
    s = served("--access-log", str(path), workers=workers)
    secrets, expected = await traffic(s)
    stop(s)
    written, err = path.read_text(), s.log.read_text()
    assert written.startswith("an earlier line\n")  # appended
    for line in expected:
        assert line.search(written), f"no access line {line.pattern!r} in {path}:\n{written}"
    assert access_lines(err) == []
    assert "Uvicorn running on" in err  # the service's own messages stay on stderr
    assert s.out.read_text() == s.key + "\n"
    assert_absent(secrets, written, str(path))
    assert_absent(secrets, err, "stderr")


async def test_no_access_log_flag_writes_no_access_line(served) -> None:
    s = served("--no-access-log")
    async with client(s.url, s.key) as admin:
        assert (await admin.get("/api/systemusers", params={"search": "x"})).status_code == 200
    stop(s)
    assert access_lines(s.log.read_text()) == [] and s.out.read_text() == s.key + "\n"


def test_an_access_log_that_cannot_be_written_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    db = tmp_path / "protect.db"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "console",
            "serve",
            "--db",
            str(db),
            "--access-log",
            str(tmp_path / "missing" / "a.log"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr.strip().endswith(f"--access-log {tmp_path / 'missing' / 'a.log'}: No such file or directory")
    assert "Traceback" not in run.stderr and run.stdout == ""
    assert not db.exists()


def test_a_traceback_keeps_only_the_first_line_of_each_exception() -> None:
    """An unexpected error's traceback (errors.py logs it): PostgreSQL's DETAIL line, which names the values of
    a violated constraint, is cut, in the exception and in the one that caused it."""

    def fail() -> None:
        detail = "DETAIL:  Key (email)=(zoe.quinn@ops.example) already exists."
        try:
            raise LookupError(f'duplicate key value violates unique constraint "users_email_key"\n{detail}')
        except LookupError as exc:
            raise RuntimeError(f"(psycopg.errors.UniqueViolation) duplicate key\n{detail}\n[SQL: INSERT …]") from exc

    try:
        fail()
    except RuntimeError:
        record = logging.LogRecord(
            "protect.server", logging.ERROR, __file__, 1, "unhandled error", None, sys.exc_info()
        )
    text = ServiceFormatter("%(levelprefix)s %(message)s", use_colors=False).format(record)
    assert "zoe.quinn" not in text and "DETAIL" not in text
    assert 'builtins.LookupError: duplicate key value violates unique constraint "users_email_key" […]' in text
    assert "builtins.RuntimeError: (psycopg.errors.UniqueViolation) duplicate key […]" in text
    assert text.count("in fail") == 2  # both tracebacks, with their frames
