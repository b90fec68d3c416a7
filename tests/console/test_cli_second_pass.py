"""Issue 6 item 18 (and the CLI parts of 17 and 17b): the CLI twin, second pass.

Every test runs ``main([...])`` in-process against the real service on 127.0.0.1 (the key from
the environment, the config dir a temp dir) and checks the server's state through the API.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import httpx
import pyotp
import pytest

from console import models
from console.client import DeviceClient, ProtectClient, Unauthorized
from console.models import SystemUserUpdate
from tests.helpers import IPHONE, enrolled_device, new_user, point_cli_at
from tests.helpers import run_cli as run

T = TypeVar("T")


class FakeTty(io.StringIO):
    """A terminal on stdin that answers what it was given."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def cli(backend: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    point_cli_at(monkeypatch, tmp_path, backend.url, backend.admin_key)
    return backend


@pytest.fixture
def bare(make_backend: Any, manual_clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An empty directory on a frozen clock (TOTP codes cannot roll over mid-test)."""
    backend = make_backend(users=0, clock=manual_clock)
    point_cli_at(monkeypatch, tmp_path, backend.url, backend.admin_key)
    return backend


def api(backend: Any, call: Callable[[ProtectClient], Awaitable[T]], key: str | None = None) -> T:
    """The server's state, read independently of the CLI."""

    async def go() -> T:
        async with ProtectClient(backend.url, key or backend.admin_key) as client:
            return await call(client)

    return asyncio.run(go())


def audited(backend: Any, action: str, target: str) -> int:
    return api(backend, lambda c: c.audit(action=action, target=target, limit=1)).totalCount


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def user_with_device(backend: Any, name: str, *, totp: bool = False) -> tuple[models.SystemUser, str]:
    """A new user with an enrolled push device (and TOTP); returns the user and, with TOTP, its secret."""

    async def go() -> tuple[models.SystemUser, str]:
        async with ProtectClient(backend.url, backend.admin_key) as admin:
            user = await new_user(admin, name)
            phone = await enrolled_device(admin, backend.url, user.id)
            secret = ""
            if totp:
                uri = (await phone.enroll_totp()).otpauthUri
                secret = parse_qs(urlparse(uri).query)["secret"][0]
            await phone.aclose()
            return await admin.get_user(user.id), secret

    return asyncio.run(go())


def pending_pushes(backend: Any, user_id: str, count: int, **context: str) -> None:
    service = backend.key(models.Role.SERVICE)

    async def go() -> None:
        async with ProtectClient(backend.url, service) as svc:
            for i in range(count):
                await svc.create_push(user_id, f"Resource {i}", **context)

    asyncio.run(go())


# ------------------------------------------------------------- grace days


def test_grace_days_zero_means_no_grace_period(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    user, _ = user_with_device(cli, "grace.zero", totp=True)
    code, out, err = run(capsys, "mfa", "reset", user.username, "--grace-days", "0", "--yes")
    assert code == 0, err
    assert f"Reset MFA of user {user.username}: removed push device" in out and "the TOTP secret" in out
    assert "no grace period" in out
    after = api(cli, lambda c: c.get_user(user.id))
    assert after.mfa.exclusion is False and after.mfaEnrollment.pushStatus == "NOT_ENROLLED"
    assert after.mfaEnrollment.totpStatus == "NOT_ENROLLED"


def test_grace_days_zero_ends_a_grace_period_and_the_prompt_says_so(
    cli: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, _ = user_with_device(cli, "grace.ends")
    assert run(capsys, "mfa", "reset", user.username, "--grace-days", "3", "--yes")[0] == 0
    monkeypatch.setattr(sys, "stdin", FakeTty("y\n"))
    code, _out, err = run(capsys, "mfa", "reset", user.username, "--grace-days", "0")
    assert code == 0, err
    assert "end the grace period" in err and "no grace period" in err
    assert api(cli, lambda c: c.get_user(user.id)).mfa.exclusion is False


# ---------------------------------------------------- errors name our flags


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (("mfa", "reset", "{user}", "--grace-days", "400"), "--grace-days"),
        (("mfa", "reset", "{user}", "--grace-days", "-1"), "--grace-days"),
        (("attack", "stop", "{user}", "--minutes", "0"), "--minutes"),
        (("attack", "stop", "{user}", "--minutes", "100000"), "--minutes"),
        (("totp", "verify", "{user}", "12345"), "CODE"),
        (("totp", "verify", "{user}", "12a456"), "CODE"),
    ],
)
def test_out_of_range_values_are_refused_locally_naming_our_flag(
    cli: Any, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], flag: str
) -> None:
    user, _ = user_with_device(cli, "ranges", totp=True)
    code, out, err = run(
        capsys, *(a.format(user=user.username) for a in argv), "--yes" if argv[0] != "totp" else "--json"
    )
    assert code == 2 and out == ""
    assert f"argument {flag}:" in err
    assert not re.search(r"(?<![-\w])(exclusionDays|exclusionUntil|minutes|code|userId)\b", err), err  # no server field
    # The bounds are the models' (what the server validates with), not numbers retyped in the CLI.
    if flag == "--grace-days":
        assert f"from 0 to {models.ResetMfaRequest.model_fields['exclusionDays'].metadata[1].le}" in err
    if flag == "--minutes":
        assert f"from 1 to {models.PushBlockRequest.model_fields['minutes'].metadata[1].le}" in err
    after = api(cli, lambda c: c.get_user(user.id))  # nothing was sent
    assert after.mfaEnrollment.pushStatus == "ENROLLED" and after.pushBlock is None
    assert after.totpLock.failures == 0


def test_server_field_names_in_errors_become_our_flags(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "users", "list", "--search", "s" * (models.NAME_MAX + 1))
    assert code == 1 and out == ""
    line = one_error_line(err)
    assert line.startswith("error: --search: ") and "(query)" not in line
    from console.cli import flag_message  # new in this pass

    assert flag_message("exclusionDays: Input should be less than or equal to 365; minutes (body): too big") == (
        "--grace-days: Input should be less than or equal to 365; --minutes: too big"
    )
    assert flag_message("user 5f0c not found") == "user 5f0c not found"


# ------------------------------------------------------------- --json


def _twin_leaves() -> dict[str, argparse.ArgumentParser]:
    from console.cli import build_parser

    leaves = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            leaves[prefix.strip()] = parser
            return
        for name, child in subs[0].choices.items():
            walk(child, f"{prefix} {name}")

    walk(build_parser(), "")
    return leaves


def test_every_command_but_the_interactive_ones_has_json() -> None:
    leaves = _twin_leaves()
    assert {
        "totp verify",
        "devices deactivate",
        "devices activate",
        "enroll",
        "attack stop",
        "attack lift",
        "users unlock",
        "users delete",
        "keys list",
        "keys revoke",
    } <= set(leaves)
    for name, parser in leaves.items():
        if name in ("tui", "serve", "demo"):  # full-screen or long-running: nothing to print as JSON
            continue
        flags = {o for a in parser._actions for o in a.option_strings}
        assert "--json" in flags, name


def test_changing_commands_print_the_result_object_with_json(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    user, _ = user_with_device(cli, "json.changes", totp=True)
    device = api(cli, lambda c: c.push_endpoints(user.id))[0]

    code, out, err = run(capsys, "totp", "reset", user.username, "--yes", "--json")
    assert code == 0, err
    assert json.loads(out) == {"userId": user.id, "totpStatus": "NOT_ENROLLED", "changed": True}

    code, out, err = run(capsys, "devices", "deactivate", user.username, "--yes", "--json")
    assert code == 0, err
    [shown] = json.loads(out)
    assert (shown["id"], shown["state"]) == (device.id, "inactive")

    code, out, err = run(capsys, "settings", "set", "push.timeoutSeconds", "90", "--yes", "--json")
    assert code == 0, err
    assert json.loads(out)["push"]["timeoutSeconds"] == 90

    code, out, err = run(capsys, "mfa", "reset", user.username, "--grace-days", "2", "--yes", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["_id"] == user.id and data["mfa"]["exclusion"] is True

    code, out, err = run(capsys, "devices", "unenroll", user.username, "--yes", "--json")  # nothing left
    assert code == 0 and json.loads(out) == []


# ------------------------------------------------- no-ops say so, no audit


def test_totp_reset_twice_says_nothing_to_reset_and_writes_one_audit_event(
    cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    user, _ = user_with_device(cli, "jane", totp=True)
    code, out, err = run(capsys, "totp", "reset", user.username, "--yes")
    assert code == 0, err
    assert "Reset TOTP of user jane" in out
    code, out, err = run(capsys, "totp", "reset", user.username, "--yes")
    assert code == 0, err
    assert out.strip() == "TOTP was not enrolled for jane: nothing to reset."
    assert audited(cli, "totp.reset", user.id) == 1
    code, out, err = run(capsys, "totp", "reset", user.username, "--json")  # no --yes needed: nothing to confirm
    assert code == 0 and json.loads(out)["changed"] is False


def test_changes_that_change_nothing_say_so_and_write_no_audit_event(
    cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    bare_user = api(cli, lambda c: new_user(c, "nothing.here"))
    user, _ = user_with_device(cli, "active.phone")
    checks = [
        (
            ("mfa", "reset", bare_user.username),
            "has no push device, TOTP or grace period: nothing to reset",
            "mfa.reset",
            bare_user.id,
        ),
        (("devices", "activate", user.username), "is already active: nothing to activate", "device.", user.id),
        (
            ("devices", "unenroll", bare_user.username),
            "has no push device: nothing to unenroll",
            "device.",
            bare_user.id,
        ),
        (("users", "unlock", user.username), "is not locked: nothing to unlock", "user.unlock", user.id),
        (
            ("attack", "lift", user.username),
            "No push block in force for user active.phone: nothing to lift",
            "push.unblock",
            user.id,
        ),
        (("settings", "set", "push.concurrentLimit.max", "1"), "is already 1: nothing to change", "settings.", ""),
    ]
    events_before = api(cli, lambda c: c.audit(limit=1)).totalCount
    for argv, says, _action, _target in checks:
        code, out, err = run(capsys, *argv)  # no --yes, no terminal: a real change would be refused
        assert code == 0, (argv, err)
        assert says in out, (argv, out)
    assert api(cli, lambda c: c.audit(limit=1)).totalCount == events_before


# -------------------------------------------------------------- totp verify


def test_totp_verify_valid_wrong_and_locked(bare: Any, capsys: pytest.CaptureFixture[str], manual_clock: Any) -> None:
    from console.server.services.totp import current_step

    user, secret = user_with_device(bare, "caller", totp=True)
    totp = pyotp.TOTP(secret)
    step = current_step(manual_clock.now())
    good = totp.generate_otp(step)
    near = {totp.generate_otp(s) for s in (step - 1, step, step + 1)}
    wrong = next(c for c in ("000000", "111111", "222222", "333333") if c not in near)

    code, out, err = run(capsys, "totp", "verify", user.username, good)
    assert code == 0, err
    assert out.strip() == "Code valid for user caller."

    code, out, err = run(capsys, "totp", "verify", user.username, wrong)
    assert code == 1
    maximum = api(bare, lambda c: c.get_settings())[0].totp.maxFailures
    assert out.startswith("Code NOT valid for user caller: ")
    assert f"(1 of {maximum} wrong codes)" in out

    code, out, err = run(capsys, "totp", "verify", user.username, wrong, "--json")
    assert code == 1 and json.loads(out)["valid"] is False
    assert f"has 1 of {maximum} wrong codes" in err and "counts toward the lock-out" in err  # warned first

    for _ in range(maximum - 2):
        run(capsys, "totp", "verify", user.username, wrong)
    assert api(bare, lambda c: c.get_user(user.id)).totpLock.locked
    code, out, err = run(capsys, "totp", "verify", user.username, good)
    assert code == 1 and out == ""
    assert "is locked" in one_error_line(err) and f"totp reset {user.username}" in err


def test_totp_verify_without_totp_says_so_and_counts_nothing(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    user, _ = user_with_device(cli, "no.totp")
    code, out, err = run(capsys, "totp", "verify", user.username, "123456")
    assert code == 1 and out == ""
    assert "has no TOTP enrolled" in one_error_line(err)


def test_totp_verify_is_refused_by_a_readonly_profile(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    user, _ = user_with_device(cli, "ro.verify", totp=True)
    code, _out, err = run(capsys, "totp", "verify", user.username, "123456", "--readonly")
    assert code == 1 and "read-only" in one_error_line(err)
    assert api(cli, lambda c: c.get_user(user.id)).totpLock.failures == 0


# ------------------------------------------------- devices (de)activate


def test_devices_deactivate_and_activate(
    cli: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, _ = user_with_device(cli, "lost.phone")
    assert run(capsys, "devices", "deactivate", user.username)[0] == 2  # no terminal, no --yes
    monkeypatch.setattr(sys, "stdin", FakeTty("y\n"))
    code, out, err = run(capsys, "devices", "deactivate", user.username)
    assert code == 0, err
    assert "Deactivate the push device" in err and "[y/N]" in err
    assert "Deactivated the push device" in out
    assert api(cli, lambda c: c.push_endpoints(user.id))[0].state == "inactive"
    code, out, err = run(capsys, "devices", "deactivate", user.username, "--yes")
    assert code == 0 and "already inactive: nothing to deactivate" in out

    monkeypatch.setenv("PROTECT_CONSOLE_API_KEY", cli.key("helpdesk"))
    code, out, err = run(capsys, "devices", "activate", user.username, "--yes")
    assert code == 1 and "devices.write" in one_error_line(err)
    monkeypatch.setenv("PROTECT_CONSOLE_API_KEY", cli.admin_key)
    code, out, err = run(capsys, "devices", "activate", user.username, "--yes")
    assert code == 0 and "Activated the push device" in out
    assert api(cli, lambda c: c.push_endpoints(user.id))[0].state == "active"


# ------------------------------------------------------------------ enroll


def test_enroll_prints_code_expiry_and_a_qr_code_that_enrolls(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    user = api(cli, lambda c: new_user(c, "new.starter"))
    code, out, err = run(capsys, "enroll", user.username, "--yes")
    assert code == 0, err
    match = re.search(r"Enrollment code for user new\.starter: (\S+)", out)
    assert match, out
    uri = out.strip().splitlines()[-1]
    assert uri.startswith("protect://enroll?code=")
    from console.cli import qr_lines  # new in this pass

    assert "\n".join(qr_lines(uri)) in out  # the QR code of that URI, whole
    assert "Expires " in out and "Z (in about 10 min)" in out

    async def enroll_with_it() -> str:
        async with DeviceClient(cli.url) as phone:
            await phone.enroll(match.group(1), "Pixel", IPHONE)
        return (await _get_user(cli, user.id)).mfaEnrollment.pushStatus

    assert asyncio.run(enroll_with_it()) == "ENROLLED"

    code, out, err = run(capsys, "enroll", user.username, "--yes", "--json")
    assert code == 0, err
    assert set(json.loads(out)) == {"code", "expiresAt", "uri"}


async def _get_user(backend: Any, user_id: str) -> models.SystemUser:
    async with ProtectClient(backend.url, backend.admin_key) as admin:
        return await admin.get_user(user_id)


def test_enroll_warns_that_an_active_device_keeps_approving(
    cli: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, _ = user_with_device(cli, "still.active")
    monkeypatch.setattr(sys, "stdin", FakeTty("n\n"))
    code, _out, err = run(capsys, "enroll", user.username)
    assert code == 1 and "cancelled" in err
    assert "still active and keeps approving" in err and f"devices deactivate {user.username}" in err
    assert audited(cli, "enrollment.create", user.id) == 1  # only the helper's own enrolment


# ------------------------------------------------------------------- attack


def test_attack_stop_and_lift(cli: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    user, _ = user_with_device(cli, "bombed")
    pending_pushes(cli, user.id, 2)
    monkeypatch.setenv("PROTECT_CONSOLE_API_KEY", cli.key("helpdesk", "desk-anna"))  # helpdesk may stop an attack
    monkeypatch.setattr(sys, "stdin", FakeTty("y\n"))
    code, out, err = run(capsys, "attack", "stop", user.username, "--minutes", "30", "--require-biometric")
    assert code == 0, err
    assert "cancel 2 pending pushes, refuse new pushes for 30 minutes, require biometric approval" in err
    assert "Stopped the push attack on user bombed: new pushes refused until" in out
    assert "2 pending pushes cancelled; biometric approval required from now on" in out
    after = api(cli, lambda c: c.get_user(user.id))
    assert after.pushBlock is not None and after.pushBlock.blockedBy == "desk-anna"
    assert after.requireUserVerification is True
    assert api(cli, lambda c: c.push_attempts(user_id=user.id, status="pending")).totalCount == 0
    with httpx.Client(base_url=cli.url, headers={"x-api-key": cli.key("service")}) as http:
        refused = http.post("/api/v2/protect/push", json={"userId": user.id, "resource": "VPN"})
    assert refused.status_code == 429

    code, out, err = run(capsys, "users", "show", user.username)
    assert code == 0 and "Push blocked" in out and "by desk-anna" in out

    code, out, err = run(capsys, "attack", "lift", user.username, "--yes", "--json")
    assert code == 0, err
    assert json.loads(out) == {"lifted": True}
    assert api(cli, lambda c: c.get_user(user.id)).pushBlock is None
    code, out, err = run(capsys, "attack", "lift", user.username, "--yes")
    assert code == 0 and "nothing to lift" in out
    assert audited(cli, "push.unblock", user.id) == 1


def test_attack_stop_keep_pending(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    user, _ = user_with_device(cli, "keep.pending")
    pending_pushes(cli, user.id, 1)
    code, out, err = run(capsys, "attack", "stop", user.username, "--keep-pending", "--yes", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["cancelled"] == 0 and data["blockedUntil"]
    assert api(cli, lambda c: c.push_attempts(user_id=user.id, status="pending")).totalCount == 1
    assert api(cli, lambda c: c.get_user(user.id)).requireUserVerification is False


# ---------------------------------------------------------- unlock, delete


def test_users_unlock(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    user = api(cli, lambda c: new_user(c, "locked.out"))
    api(cli, lambda c: c.update_user(user.id, SystemUserUpdate(account_locked=True)))
    assert run(capsys, "users", "unlock", user.username)[0] == 2  # no terminal, no --yes
    code, out, err = run(capsys, "users", "unlock", user.username, "--yes")
    assert code == 0, err
    assert out.strip() == "Unlocked user locked.out."
    assert api(cli, lambda c: c.get_user(user.id)).account_locked is False
    assert audited(cli, "user.unlock", user.id) == 1


def test_users_delete_asks_to_type_the_username(
    cli: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, _ = user_with_device(cli, "leaver")
    code, out, err = run(capsys, "users", "delete", user.username)
    assert code == 2 and "pass --yes" in one_error_line(err)

    monkeypatch.setattr(sys, "stdin", FakeTty("y\n"))  # y is not the username
    code, out, err = run(capsys, "users", "delete", user.username)
    assert code == 1 and "Type the username to delete" in err and "cancelled" in err
    assert api(cli, lambda c: c.get_user(user.id)).username == "leaver"

    monkeypatch.setattr(sys, "stdin", FakeTty("leaver\n"))
    code, out, err = run(capsys, "users", "delete", user.username, "--json")
    assert code == 0, err
    assert json.loads(out)["_id"] == user.id
    code, out, err = run(capsys, "users", "show", user.id)
    assert code == 1 and "no user" in one_error_line(err)
    assert audited(cli, "user.delete", user.id) == 1


def test_helpdesk_cannot_delete(cli: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    user = api(cli, lambda c: new_user(c, "stays"))
    monkeypatch.setenv("PROTECT_CONSOLE_API_KEY", cli.key("helpdesk"))
    code, out, err = run(capsys, "users", "delete", user.username, "--yes")
    assert code == 1 and out == ""
    one_error_line(err)
    assert api(cli, lambda c: c.get_user(user.id)).username == "stays"


# ------------------------------------------------------------------- keys


def test_keys_list_and_revoke(
    backend: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    point_cli_at(monkeypatch, tmp_path, backend.url, backend.admin_key)
    db = str(backend.db_path)
    code, out, err = run(capsys, "keys", "create", "--name", "ci-bot", "--role", "helpdesk", "--db", db)
    assert code == 0, err
    key = out.strip().splitlines()[-1]
    assert api(backend, lambda c: c.whoami(), key=key).name == "ci-bot"

    code, out, err = run(capsys, "keys", "list", "--db", db)
    assert code == 0, err
    assert "ci-bot" in out and key[:8] in out and "helpdesk" in out and "test-admin" in out
    assert key not in out and key[8:] not in out
    code, out, err = run(capsys, "keys", "list", "--db", db, "--json")
    listed = {k["name"]: k for k in json.loads(out)}
    assert set(listed["ci-bot"]) == {
        "id",
        "prefix",
        "name",
        "role",
        "status",
        "created",
        "lastUsed",
        "expires",
        "revoked",
        "resources",
    }
    assert listed["ci-bot"]["revoked"] is None and listed["ci-bot"]["prefix"] == key[:8]
    assert key not in out

    assert run(capsys, "keys", "revoke", "ci-bot", "--db", db)[0] == 2  # no terminal, no --yes
    monkeypatch.setattr(sys, "stdin", FakeTty("n\n"))
    code, out, err = run(capsys, "keys", "revoke", key[:8], "--db", db)
    assert code == 1 and "Revoke helpdesk key 'ci-bot'" in err and "cancelled" in err
    assert api(backend, lambda c: c.whoami(), key=key).name == "ci-bot"

    code, out, err = run(capsys, "keys", "revoke", "ci-bot", "--db", db, "--yes")
    assert code == 0, err
    assert out.strip() == f"Revoked helpdesk key 'ci-bot' ({key[:8]})."
    with pytest.raises(Unauthorized):
        api(backend, lambda c: c.whoami(), key=key)
    code, out, err = run(capsys, "keys", "revoke", listed["ci-bot"]["id"], "--db", db, "--yes")
    assert code == 0 and "already revoked: nothing to revoke" in out
    assert audited(backend, "key.revoke", listed["ci-bot"]["id"]) == 1
    code, out, err = run(capsys, "keys", "list", "--db", db, "--json")
    assert {k["name"]: k for k in json.loads(out)}["ci-bot"]["revoked"]


def test_keys_revoke_refuses_an_ambiguous_or_unknown_name(
    backend: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = str(backend.db_path)
    backend.key("helpdesk", "desk")
    backend.key("readonly", "desk")
    code, _out, err = run(capsys, "keys", "revoke", "desk", "--db", db, "--yes")
    assert code == 2 and "2 active keys match 'desk'" in one_error_line(err) and "give the id" in err
    code, _out, err = run(capsys, "keys", "revoke", "nobody", "--db", db, "--yes")
    assert code == 1 and "no API key with id, prefix or name 'nobody'" in one_error_line(err)
    code, _out, err = run(capsys, "keys", "list", "--db", str(tmp_path / "missing.db"))
    assert code == 1 and "no database at" in one_error_line(err)
    assert not (tmp_path / "missing.db").exists()


# ----------------------------------------------------------- setting names


def test_setting_names_are_the_consoles(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from console.tui.screens.settings import SETTINGS as CONSOLE_SETTINGS

    code, out, err = run(capsys, "settings", "get")
    assert code == 0, err
    shown = re.findall(r"^│ (\S+)", out, flags=re.M)
    assert [s for s in shown if s != "Setting"] == [spec.key for spec in CONSOLE_SETTINGS]
    for spec in CONSOLE_SETTINGS:
        if spec.range:
            assert f"{spec.range[0]}..{spec.range[1]}" in out

    code, out, err = run(capsys, "settings", "set", "push.concurrentLimit.max", "3", "--yes")
    assert code == 0, err
    assert out.strip() == "push.concurrentLimit.max: 1 -> 3"
    code, out, err = run(capsys, "settings", "set", "push.requireUserVerification", "on", "--yes")
    assert code == 0 and out.strip() == "push.requireUserVerification: off -> on"
    code, out, err = run(capsys, "settings", "set", "push.max-concurrent", "4", "--yes")  # the old name still works
    assert code == 0 and out.strip() == "push.concurrentLimit.max: 3 -> 4"
    low, high = models.SETTING["totp.maxFailures"].range or (0, 0)
    code, out, err = run(capsys, "settings", "set", "totp.maxFailures", str(high + 1), "--yes")
    assert code == 2 and f"totp.maxFailures: must be between {low} and {high}" in one_error_line(err)


# ------------------------------------------------- connection flags anywhere


@pytest.mark.parametrize("where", ["before", "after"])
def test_url_and_profile_work_before_or_after_the_command(
    backend: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    point_cli_at(monkeypatch, tmp_path, "http://127.0.0.1:1", backend.admin_key)  # the env points nowhere
    monkeypatch.delenv("PROTECT_CONSOLE_URL")
    command = ("users", "list", "--limit", "1", "--json")

    flags = ("--url", backend.url)
    argv = (*flags, *command) if where == "before" else (*command, *flags)
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert json.loads(out)["totalCount"] > 0

    config = tmp_path / "xdg" / "protect-console" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[profiles.lab]\nurl = "{backend.url}"\napi_key_env = "LAB_KEY"\n')
    monkeypatch.setenv("LAB_KEY", backend.admin_key)
    monkeypatch.delenv("PROTECT_CONSOLE_API_KEY")
    flags = ("--profile", "lab")
    argv = (*flags, *command) if where == "before" else (*command, *flags)
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert json.loads(out)["totalCount"] > 0

    code, out, err = run(capsys, "--profile", "lab", "--readonly", "totp", "reset", "anyone", "--yes")
    assert code == 1 and "read-only" in one_error_line(err)


# ------------------------------------------------------------------- tables


def _table_rows(out: str) -> list[str]:
    """The body lines of the first table (between the header rule and the bottom border)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("┡"))
    end = next(i for i, line in enumerate(lines) if line.startswith("└"))
    return lines[start + 1 : end]


def test_tables_never_split_a_value_across_lines(
    cli: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    user, _ = user_with_device(cli, "wide.values")
    location = "Saint-Rémy-de-Provence, Provence-Alpes-Côte d'Azur, France"
    pending_pushes(cli, user.id, 3, app="Workday Enterprise Portal", location=location, ip="104.89.25.96")
    point_cli_at(monkeypatch, tmp_path, cli.url, cli.admin_key, columns=100)

    code, out, err = run(capsys, "attempts", "--user", user.username)
    assert code == 0, err
    rows = _table_rows(out)
    assert len(rows) == 3  # one line per attempt: nothing wrapped onto a second line
    assert all(len(line) <= 100 for line in out.splitlines())
    for row in rows:
        cells = [c.strip() for c in row.strip("│").split("│")]
        ip = cells[-1]
        assert ip == "104.89.25.96" or ip.endswith("…"), cells  # whole, or visibly cut
        assert location not in row and "…" in row  # the long location is cut, with a mark
    assert not re.search(r"^│.*│\s*6\s*│$", out, flags=re.M)  # the old split: `104.89.25.9` then `6`

    code, out, err = run(capsys, "attempts", "--user", user.username, "--wide")
    assert code == 0, err
    rows = _table_rows(out)
    assert len(rows) == 3 and all("104.89.25.96" in row and location in row for row in rows)

    point_cli_at(monkeypatch, tmp_path, cli.url, cli.admin_key, columns=80)
    code, out, err = run(capsys, "users", "list", "--search", "wide.values")
    assert code == 0, err
    [row] = _table_rows(out)
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[0] == "wide.values"  # the username keeps its width; the id gives way first
    assert cells[-1].endswith("…") and user.id not in out
    code, out, err = run(capsys, "users", "list", "--search", "wide.values", "--wide")
    assert code == 0 and user.id in out and user.email in out


# ------------------------------------------- every change asks first


def test_every_new_change_refuses_without_a_terminal_and_without_yes(
    cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    user, _ = user_with_device(cli, "target", totp=True)
    api(cli, lambda c: c.update_user(user.id, SystemUserUpdate(account_locked=True)))
    api(cli, lambda c: c.block_push(user.id, minutes=5, cancel_pending=False))
    events = api(cli, lambda c: c.audit(limit=1)).totalCount
    for argv in (
        ("users", "unlock"),
        ("users", "delete"),
        ("devices", "deactivate"),
        ("enroll",),
        ("attack", "stop"),
        ("attack", "lift"),
        ("mfa", "reset"),
        ("totp", "reset"),
        ("devices", "unenroll"),
    ):
        code, out, err = run(capsys, *argv, user.username)
        assert code == 2 and out == "", argv
        assert "stdin is not a terminal; pass --yes" in one_error_line(err), argv
    assert api(cli, lambda c: c.audit(limit=1)).totalCount == events  # nothing happened
    after = api(cli, lambda c: c.get_user(user.id))
    assert after.account_locked and after.pushBlock is not None and after.mfaEnrollment.totpStatus == "ENROLLED"


def test_new_prompts_and_results_defuse_hostile_names(
    cli: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = "[b]x[/b]\u202eevil\x9b31m"
    osc = "\x1b]0;pwn\x07"

    async def make() -> models.SystemUser:
        async with ProtectClient(cli.url, cli.admin_key) as admin:
            # The service refuses C1 controls in a username (\x9b is one); the names around it take any text.
            user = await new_user(admin, hostile.replace("\x9b", ""), first=hostile, last=hostile, display=hostile)
            code = await admin.create_enrollment(user.id)
            async with DeviceClient(cli.url) as phone:
                await phone.enroll(code.code, f"phone{osc}", IPHONE)
            return user

    user = asyncio.run(make())
    monkeypatch.setattr(sys, "stdin", FakeTty("n\n"))
    for argv in (("devices", "deactivate"), ("enroll",), ("attack", "stop"), ("users", "delete"), ("mfa", "reset")):
        monkeypatch.setattr(sys, "stdin", FakeTty("n\n"))
        code, out, err = run(capsys, *argv, user.id)
        assert code == 1 and "cancelled" in err, (argv, err)
        for bad in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert bad not in out + err, (argv, bad)
        assert "[b]x[/b]" in err  # shown literally
    code, out, err = run(capsys, "attack", "stop", user.id, "--yes")
    assert code == 0 and "\u202e" not in out and "[b]x[/b]" in out
