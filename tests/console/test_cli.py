"""The CLI twin and local commands, through ``main([...])`` against a real service."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from console.cli import main
from console.client import ProtectClient
from console.models import SystemUser, SystemUserCreate
from tests.helpers import run_cli as run

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real config file or environment, and stdin is not a terminal unless a test says so."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("COLUMNS", "250")  # wide tables: assertions see whole values
    for name in ("PROTECT_CONSOLE_URL", "PROTECT_CONSOLE_API_KEY", "PROTECT_CONSOLE_PROFILE", "PROTECT_CONSOLE_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


@pytest.fixture
def cli(backend: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The CLI pointed at the test service with an admin key, via the environment only."""
    monkeypatch.setenv("PROTECT_CONSOLE_URL", backend.url)
    monkeypatch.setenv("PROTECT_CONSOLE_API_KEY", backend.admin_key)
    return backend


def api(backend: Any, call: Callable[[ProtectClient], Awaitable[T]], key: str | None = None) -> T:
    """Check the server's state independently of the CLI."""

    async def go() -> T:
        async with ProtectClient(backend.url, key or backend.admin_key) as client:
            return await call(client)

    return asyncio.run(go())


def a_user(backend: Any, *filters: str) -> SystemUser:
    page = api(backend, lambda c: c.list_users(limit=1, sort="username", filters=["state:$eq:ACTIVATED", *filters]))
    assert page.results, f"the seed has no user matching {filters}"
    return page.results[0]


class FakeTty(io.StringIO):
    """A terminal on stdin that answers ``answer``; ``before_answer`` runs while the prompt waits."""

    def __init__(self, answer: str, before_answer: Callable[[], None] | None = None) -> None:
        super().__init__(answer)
        self.before_answer = before_answer

    def isatty(self) -> bool:
        return True

    def readline(self, *args: Any) -> str:  # type: ignore[override]
        if self.before_answer is not None:
            self.before_answer()
        return super().readline(*args)


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------ reading


def test_users_list_table_shows_a_seeded_user(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    user = a_user(cli)
    code, out, err = run(capsys, "users", "list", "--search", user.username)
    assert code == 0, err
    assert user.username in out and user.email in out and user.id in out
    assert "Username" in out and "Push" in out
    total = api(cli, lambda c: c.list_users(search=user.username, limit=1)).totalCount
    assert f"of {total} users" in out


def test_users_list_json_is_the_api_envelope(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "users", "list", "--filter", "state=ACTIVATED", "--limit", "130", "--json")
    assert code == 0, err
    data = json.loads(out)
    expected_total = api(cli, lambda c: c.list_users(filters=["state:$eq:ACTIVATED"], limit=1)).totalCount
    assert data["totalCount"] == expected_total
    assert len(data["results"]) == min(130, expected_total)  # more than one API page
    assert len({u["_id"] for u in data["results"]}) == len(data["results"])
    assert {u["state"] for u in data["results"]} == {"ACTIVATED"}


def test_users_list_bad_filter_is_the_servers_message(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "users", "list", "--filter", "shoesize:$eq:9")
    assert code == 1 and out == ""
    assert "shoesize" in one_error_line(err)


def test_users_show_by_email(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    user = a_user(cli, "mfaEnrollment.pushStatus:$eq:ENROLLED")
    code, out, err = run(capsys, "users", "show", user.email)
    assert code == 0, err
    assert user.id in out and user.username in out
    device = api(cli, lambda c: c.push_endpoints(user.id))[0]
    assert device.device.model in out

    code, out, err = run(capsys, "users", "show", user.username, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["user"]["_id"] == user.id
    assert [d["id"] for d in data["pushEndpoints"]] == [device.id]
    assert "totalCount" in data["pushAttempts"]


def test_hostile_names_print_literally_without_control_characters(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    hostile = "[b]x[/b] [@click=app.quit]y[/] \x1b]0;pwned\x07 \u202eevil"
    api(
        cli,
        lambda c: c.create_user(SystemUserCreate(username="mallory", email="mallory@example.com", displayname=hostile)),
    )
    api(cli, lambda c: c.create_user(SystemUserCreate(username="[red]eve[/red]", email="eve@example.com")))
    code, out, err = run(capsys, "users", "show", "eve@example.com")
    assert code == 0, err
    assert "User [red]eve[/red]" in out  # the table title is literal too
    code, out, err = run(capsys, "users", "list", "--search", "mallory")
    assert code == 0, err
    assert "[b]x[/b] [@click=app.quit]y[/]" in out  # markup shown as typed, not interpreted
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\ufffd]0;pwned\ufffd" in out

    code, out, err = run(capsys, "users", "show", "mallory", "--json")
    assert code == 0, err
    assert "\x1b" not in out  # JSON escapes it
    assert json.loads(out)["user"]["displayname"] == hostile


def test_settings_get(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "settings", "get")
    assert code == 0, err
    assert "push.concurrentLimit.max" in out and "1..10" in out and "totp.maxFailures" in out
    code, out, err = run(capsys, "settings", "get", "--json")
    settings, _ = api(cli, lambda c: c.get_settings())
    assert json.loads(out) == settings.model_dump(mode="json")


def test_attempts_for_one_user_and_status(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    victim = cli.seed_report["bombingVictim"]
    code, out, err = run(capsys, "attempts", "--user", victim, "--status", "blocked", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["totalCount"] > 0
    assert {a["userId"] for a in data["results"]} == {victim}
    assert {a["status"] for a in data["results"]} == {"blocked"}

    code, out, err = run(capsys, "attempts", "--user", victim, "--limit", "5")
    assert code == 0, err
    assert "blocked" in out and "push attempts, newest first" in out


def test_privacy_opted_out(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "privacy", "--opted-out", "--json")
    assert code == 0, err
    data = json.loads(out)
    summary = api(cli, lambda c: c.privacy_summary())
    assert data["summary"]["optedOut"] == summary.optedOut > 0
    assert data["devices"]["totalCount"] == summary.optedOut
    assert all(d["privacy"]["diagnosticsOptOut"] for d in data["devices"]["results"])

    code, out, err = run(capsys, "privacy")
    assert code == 0, err
    assert f"{summary.devices} devices, {summary.optedOut} opted out" in out
    assert "Not collected: user information" in out


# ---------------------------------------------------------------- changing


def test_mfa_reset_with_yes_changes_the_server(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    user = a_user(cli, "mfaEnrollment.pushStatus:$eq:ENROLLED", "mfaEnrollment.totpStatus:$eq:ENROLLED")
    code, out, err = run(capsys, "mfa", "reset", user.email, "--grace-days", "3", "--yes")
    assert code == 0, err
    assert f"Reset MFA of user {user.username}" in out and "grace period until" in out
    after = api(cli, lambda c: c.get_user(user.id))
    assert after.mfaEnrollment.pushStatus != "ENROLLED" and after.mfaEnrollment.totpStatus != "ENROLLED"
    assert after.mfa.exclusion is True
    assert api(cli, lambda c: c.push_endpoints(user.id)) == []


def test_totp_reset(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    user = a_user(cli, "mfaEnrollment.totpStatus:$eq:ENROLLED")
    code, _out, err = run(capsys, "totp", "reset", user.id, "--yes")
    assert code == 0, err
    assert api(cli, lambda c: c.get_user(user.id)).mfaEnrollment.totpStatus != "ENROLLED"


def test_unenroll_without_terminal_or_yes_refuses(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    user = a_user(cli, "mfaEnrollment.pushStatus:$eq:ENROLLED")
    code, out, err = run(capsys, "devices", "unenroll", user.username)
    assert code == 2 and out == ""
    assert "pass --yes" in one_error_line(err)
    assert len(api(cli, lambda c: c.push_endpoints(user.id))) == 1


def test_unenroll_asks_on_a_terminal(
    cli: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user = a_user(cli, "mfaEnrollment.pushStatus:$eq:ENROLLED")
    device = api(cli, lambda c: c.push_endpoints(user.id))[0]

    monkeypatch.setattr(sys, "stdin", FakeTty("n\n"))
    code, out, err = run(capsys, "devices", "unenroll", user.username)
    assert code == 1
    assert f"Unenroll device {device.name}" in err and f"of user {user.username}? [y/N]" in err
    assert "cancelled" in err
    assert len(api(cli, lambda c: c.push_endpoints(user.id))) == 1

    monkeypatch.setattr(sys, "stdin", FakeTty("y\n"))
    code, out, err = run(capsys, "devices", "unenroll", user.username)
    assert code == 0, err
    assert f"Unenrolled device {device.name}" in out
    assert api(cli, lambda c: c.push_endpoints(user.id)) == []


def test_settings_set_max_concurrent(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    before, _ = api(cli, lambda c: c.get_settings())
    target = 3 if before.push.concurrentLimit.max != 3 else 4
    code, out, err = run(capsys, "settings", "set", "push.max-concurrent", str(target), "--yes")
    assert code == 0, err
    assert f"push.concurrentLimit.max: {before.push.concurrentLimit.max} -> {target}" in out
    after, _ = api(cli, lambda c: c.get_settings())
    assert after.push.concurrentLimit.max == target
    assert after.push.timeoutSeconds == before.push.timeoutSeconds  # only that one changed


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("push.timeout", "120", ("push", "timeoutSeconds"), 120),
        ("push.require-biometric", "on", ("push", "requireUserVerification"), True),
        ("totp.max-failures", "7", ("totp", "maxFailures"), 7),
    ],
)
def test_settings_set_other_names(
    cli: Any, capsys: pytest.CaptureFixture[str], name: str, value: str, field: tuple[str, str], expected: Any
) -> None:
    code, _out, err = run(capsys, "settings", "set", name, value, "--yes")
    assert code == 0, err
    after, _ = api(cli, lambda c: c.get_settings())
    assert after.model_dump()[field[0]][field[1]] == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("push.max-concurrent", "11"), "push.max-concurrent: must be between 1 and 10, got 11"),
        (("push.max-concurrent", "three"), "push.max-concurrent: expected a whole number, got 'three'"),
        (("push.require-biometric", "maybe"), "push.require-biometric: expected true or false"),
        (("push.colour", "1"), "unknown setting 'push.colour'"),
    ],
)
def test_settings_set_bad_values(
    cli: Any, capsys: pytest.CaptureFixture[str], argv: tuple[str, str], message: str
) -> None:
    before, _ = api(cli, lambda c: c.get_settings())
    code, _out, err = run(capsys, "settings", "set", *argv, "--yes")
    assert code == 2
    assert message in one_error_line(err)
    assert api(cli, lambda c: c.get_settings())[0] == before


def test_settings_set_reports_a_concurrent_change(
    cli: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def someone_else_changes_the_timeout() -> None:
        with httpx.Client(base_url=cli.url, headers={"x-api-key": cli.admin_key}) as http:
            etag = http.get("/api/v2/protect/settings").headers["etag"]
            http.patch(
                "/api/v2/protect/settings", json={"push": {"timeoutSeconds": 90}}, headers={"if-match": etag}
            ).raise_for_status()

    monkeypatch.setattr(sys, "stdin", FakeTty("y\n", before_answer=someone_else_changes_the_timeout))
    code, _out, err = run(capsys, "settings", "set", "push.max-concurrent", "5")
    assert code == 1
    assert "Change push.concurrentLimit.max from 1 to 5? [y/N]" in err
    assert "someone else changed the settings" in err.splitlines()[-1]
    after, _ = api(cli, lambda c: c.get_settings())
    assert (after.push.concurrentLimit.max, after.push.timeoutSeconds) == (1, 90)


def test_readonly_flag_refuses_changes(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    user = a_user(cli, "mfaEnrollment.totpStatus:$eq:ENROLLED")
    code, _out, err = run(capsys, "totp", "reset", user.username, "--yes", "--readonly")
    assert code == 1
    assert "read-only" in one_error_line(err)
    assert api(cli, lambda c: c.get_user(user.id)).mfaEnrollment.totpStatus == "ENROLLED"


def test_readonly_key_gets_the_servers_refusal(
    cli: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user = a_user(cli, "mfaEnrollment.totpStatus:$eq:ENROLLED")
    monkeypatch.setenv("PROTECT_CONSOLE_API_KEY", cli.key("readonly"))
    code, out, err = run(capsys, "totp", "reset", user.username, "--yes")
    assert code == 1 and out == ""
    one_error_line(err)
    assert api(cli, lambda c: c.get_user(user.id)).mfaEnrollment.totpStatus == "ENROLLED"


# ------------------------------------------------------------------ errors


def test_unknown_user_is_one_line_and_exit_1(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for ref in ("nobody@example.com", "no.such.user", "0123456789abcdef01234567"):
        code, out, err = run(capsys, "users", "show", ref)
        assert code == 1 and out == ""
        assert ref in one_error_line(err)


def test_unreachable_url_is_a_clean_error(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PROTECT_CONSOLE_API_KEY", "k")
    code, out, err = run(capsys, "users", "list", "--url", f"http://127.0.0.1:{port}")
    assert code == 1 and out == ""
    assert f"cannot reach http://127.0.0.1:{port}" in one_error_line(err)


def test_missing_key_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(capsys, "settings", "get")
    assert code == 1
    assert "PROTECT_CONSOLE_API_KEY" in one_error_line(err)


def test_wrong_key_is_a_clean_error(
    cli: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROTECT_CONSOLE_API_KEY", "pc_not-a-real-key")
    code, out, err = run(capsys, "users", "list")
    assert code == 1 and out == ""
    one_error_line(err)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["users", "list", "--limit", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err
    assert main(["demo", "--role", "service"]) == 2
    assert "invalid choice: 'service'" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "users" in capsys.readouterr().out


# ------------------------------------------------------- local commands


def test_keys_create_prints_a_working_key_on_the_last_line(backend: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "keys", "create", "--name", "ci-bot", "--role", "helpdesk", "--db", str(backend.db_path)
    )
    assert code == 0, err
    key = out.rstrip("\n").splitlines()[-1]
    assert key and " " not in key
    assert out.count(key) == 1  # shown exactly once
    me = api(backend, lambda c: c.whoami(), key=key)
    assert (me.name, me.role) == ("ci-bot", "helpdesk")


def test_keys_create_rejects_an_empty_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "keys", "create", "--name", "  ", "--role", "admin", "--db", str(tmp_path / "k.db"))
    assert code == 2 and out == ""
    assert "name" in one_error_line(err)


@pytest.mark.parametrize(
    "command", [("keys", "create", "--name", "x", "--role", "admin"), ("seed", "--users", "5"), ("demo",), ("serve",)]
)
def test_unusable_database_path_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    not_a_directory = tmp_path / "plain-file"
    not_a_directory.write_text("")
    code, out, err = run(capsys, *command, "--db", str(not_a_directory / "protect.db"))
    assert code == 1 and out == ""
    assert f"cannot open database {not_a_directory / 'protect.db'}" in one_error_line(err)


def test_seed_writes_users_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "seed.db"
    code, out, err = run(capsys, "seed", "--users", "40", "--db", str(db), "--seed", "3")
    assert code == 0, err
    assert out.startswith(f"Seeded 40 users into {db} in ")
    assert "devices:" in out
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from users").fetchone()[0] == 40


def test_serve_prints_the_bootstrap_key_once_and_serves(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "console", "serve", "--db", str(tmp_path / "serve.db"), "--port", str(port)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert process.stdout is not None and process.stderr is not None
        key = process.stdout.readline().strip()  # stdout holds the key alone; the note is on stderr
        note = process.stderr.readline()
        assert "shown once" in note and key.startswith("pc_")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:  # poll the condition: the service answers
            try:
                me = httpx.get(f"{url}/api/v2/protect/whoami", headers={"x-api-key": key}, timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "serve did not answer within 20 s"
                time.sleep(0.05)  # polling interval, not a wait-for-luck
        assert me.json()["role"] == "admin"
    finally:
        process.terminate()
        process.wait(timeout=10)
