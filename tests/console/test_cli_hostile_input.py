"""QA: the CLI twin with hostile directory data, bad flags and failing backends.

``main([...])`` runs in-process against the real service; the key comes from the environment and
the config dir is a temp dir. What must hold: no control character reaches stdout/stderr, ``--json``
is valid JSON that round-trips the data exactly, errors are one ``error:`` line with a non-zero exit,
and refused changes change nothing.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import httpx
import pytest

from console.models import Role
from tests.helpers import point_cli_at
from tests.helpers import run_cli as run

OSC = "\x1b]0;pwn\x07"
HOSTILE = f"[@click=app.quit]x[/]{OSC}\u202eevil\u202c \x9b31m\x1b[2J👩‍💻 [bold]b[/bold] e\u0301"
CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e", "\u202c", "\x00")
IPHONE = {
    "make": "Apple",
    "model": "iPhone 15",
    "os": "iOS",
    "osVersion": "17.4",
    "appVersion": "2.6.0",
    "uvEnabled": True,
}


@pytest.fixture
def cli(backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    point_cli_at(monkeypatch, tmp_path, backend.url, backend.admin_key)
    return backend


def assert_clean(text: str, where: str) -> None:
    found = [c for c in CONTROLS if c in text]
    assert not found, f"{where}: {found!r}"


@pytest.fixture(scope="module")
def shared_backend(tmp_path_factory):
    """One real service for the read-only flag table below (same parts as conftest's ``backend``)."""
    from types import SimpleNamespace

    from console.server.app import create_app
    from console.server.runner import ServerThread
    from console.server.seed import seed_directory
    from console.server.services.keys import create_key
    from console.server.store import open_store

    store = open_store(tmp_path_factory.mktemp("qa-cli") / "protect.db")
    seed_directory(store, 300, rng_seed=7)
    server = ServerThread(create_app(store))
    server.start()
    yield SimpleNamespace(url=server.url, admin_key=create_key(store, "qa-admin", Role.ADMIN))
    server.stop()
    store.dispose()


@pytest.fixture
def shared_cli(shared_backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    point_cli_at(monkeypatch, tmp_path, shared_backend.url, shared_backend.admin_key)
    return shared_backend


@pytest.fixture
def hostile(cli) -> dict:
    """A user whose every text field, device and push context is hostile."""
    url = cli.url
    with httpx.Client(base_url=url, headers={"x-api-key": cli.admin_key}, timeout=30) as http:
        user = http.post(
            "/api/systemusers",
            json={
                "username": "hostile[/]",
                "email": "hostile[/]@cli.example",
                "firstname": HOSTILE,
                "lastname": HOSTILE,
                "displayname": HOSTILE,
            },
        ).json()
        code = http.post(f"/api/v2/protect/users/{user['_id']}/enrollments").json()["code"]
        device = dict(IPHONE, make="[bold]Evil" + OSC, model=HOSTILE, appVersion="2.6\u202e")
        phone = httpx.post(f"{url}/device/v1/enroll", json={"code": code, "name": HOSTILE, "device": device}).json()
        httpx.put(
            f"{url}/device/v1/settings",
            headers={"Authorization": f"Bearer {phone['token']}"},
            json={"diagnosticsOptOut": True},
        )
        httpx.post(
            f"{url}/api/v2/protect/push",
            headers={"x-api-key": cli.key(Role.SERVICE)},
            json={
                "userId": user["_id"],
                "resource": HOSTILE,
                "context": {"app": HOSTILE, "location": HOSTILE, "ip": "1.2.3.4\u202e"},
            },
        )
    return user


def test_hostile_data_in_every_table_is_defused(cli, hostile, capsys) -> None:
    for argv in (
        ("users", "list", "--search", "hostile"),
        ("users", "show", "hostile[/]"),
        ("users", "show", hostile["_id"]),
        ("users", "show", "hostile[/]@cli.example"),
        ("attempts", "--user", "hostile[/]"),
        ("attempts", "--limit", "5"),
        ("privacy", "--opted-out", "--limit", "500"),
    ):
        code, out, err = run(capsys, *argv)
        assert code == 0, (argv, err)
        assert_clean(out + err, " ".join(argv))
        assert "\ufffd]0;pwn\ufffd" in out, argv  # the data is shown, as data
        assert "[@click=app.quit]x[/]" in out or "[bold]Evil" in out, argv  # literal, not interpreted as markup


def test_hostile_data_in_confirmations_and_results_is_defused(cli, hostile, capsys, monkeypatch) -> None:
    class FakeTty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", FakeTty("n\n"))  # a person answering no at the prompt
    code, out, err = run(capsys, "devices", "unenroll", "hostile[/]")
    assert code == 1 and "cancelled" in err
    assert_clean(out + err, "unenroll prompt")
    assert "\ufffd]0;pwn\ufffd" in err  # the prompt names the device, defused
    code, out, err = run(capsys, "devices", "unenroll", "hostile[/]", "--yes")
    assert code == 0 and "Unenrolled" in out
    assert_clean(out + err, "unenroll result")
    code, out, err = run(capsys, "mfa", "reset", "hostile[/]", "--yes", "--grace-days", "2")
    assert code == 0
    assert_clean(out + err, "mfa reset")


def test_json_is_valid_and_round_trips_hostile_text_exactly(cli, hostile, capsys) -> None:
    outputs = {}
    for argv in (
        ("users", "list", "--search", "hostile", "--json"),
        ("users", "show", "hostile[/]", "--json"),
        ("attempts", "--user", "hostile[/]", "--json"),
        ("privacy", "--json", "--opted-out", "--limit", "500"),
        ("settings", "get", "--json"),
        ("users", "list", "--json", "--limit", "1000"),
    ):
        code, out, err = run(capsys, *argv)
        assert code == 0, (argv, err)
        assert_clean(out, " ".join(argv))  # JSON escapes, so even a raw terminal shows nothing hostile
        outputs[" ".join(argv[:3])] = json.loads(out)
    assert outputs["users list --search"]["results"][0]["displayname"] == HOSTILE
    everyone = outputs["users list --json"]
    assert len(everyone["results"]) == everyone["totalCount"] > 100  # paged through, not cut at one page
    shown = outputs["users show hostile[/]"]
    assert shown["user"]["firstname"] == HOSTILE and shown["pushEndpoints"][0]["device"]["model"] == HOSTILE
    assert shown["pushEndpoints"][0]["name"] == HOSTILE
    assert outputs["attempts --user hostile[/]"]["results"][0]["resource"] == HOSTILE
    assert any(d["device"]["model"] == HOSTILE for d in outputs["privacy --json --opted-out"]["devices"]["results"])


@pytest.mark.parametrize(
    ("argv", "exit_code", "says"),
    [
        (("users", "list", "--limit", "0"), 2, "--limit"),
        (("users", "list", "--limit", "-1"), 2, "--limit"),
        (("users", "list", "--limit", "1e3"), 2, "--limit"),
        (("users", "list", "--limit", "99999999999999999999999"), 0, None),
        (("users", "show"), 2, "USER"),
        (("users",), 2, "ACTION"),
        (("bogus",), 2, "bogus"),
        (("attempts", "--status", "nope"), 2, "--status"),
        (("mfa", "reset", "x", "--grace-days", "-1"), 2, "--grace-days"),
        (("mfa", "reset", "x", "--grace-days", "366"), 2, "--grace-days"),
        (("mfa", "reset", "x", "--grace-days", "abc"), 2, "--grace-days"),
        (("settings", "set", "push.max-concurrent", "11"), 2, "between 1 and 10"),
        (("settings", "set", "push.max-concurrent", "abc"), 2, "whole number"),
        (("settings", "set", "push.require-biometric", "perhaps"), 2, "true or false"),
        (("settings", "set", "nope", "1"), 2, "unknown setting"),
        (("settings", "set", "push.max-concurrent", "5"), 2, "--yes"),
        (("users", "show", "nobody-at-all"), 1, "nobody-at-all"),
        (("users", "show", OSC), 1, "no user"),
        (("users", "list", "--filter", "bogus:$eq:x"), 1, "bogus"),
        (("users", "list", "--filter", "state=activated"), 1, "state"),
        (("users", "list", "--sort", "nope"), 1, "nope"),
        (("users", "list", "--search", "s" * 1025), 1, "search"),
        (("users", "list", "--url", "http://127.0.0.1:1"), 1, "cannot reach"),
        (("users", "list", "--url", "not a url"), 1, None),
        (("users", "list", "--profile", "missing"), 1, "missing"),
        (("--version",), 2, None),
    ],
)
def test_bad_flags_and_failures_exit_non_zero_with_one_line(shared_cli, capsys, argv, exit_code, says) -> None:
    code, out, err = run(capsys, *argv)
    assert code == exit_code, (code, out[-200:], err)
    assert_clean(out + err, " ".join(argv))
    if exit_code == 1:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert out == ""
    if says:
        assert says in err, err
    assert "Traceback" not in err


def test_refused_changes_change_nothing(cli, capsys, monkeypatch) -> None:
    with httpx.Client(base_url=cli.url, headers={"x-api-key": cli.admin_key}) as http:
        before = http.get("/api/v2/protect/settings").json()
        user = http.get(
            "/api/systemusers",
            params=[
                ("filter", "mfaEnrollment.pushStatus:$eq:ENROLLED"),
                ("filter", "mfaEnrollment.totpStatus:$eq:ENROLLED"),
                ("limit", 1),
            ],
        ).json()["results"][0]
        # No confirmation possible (stdin is not a terminal): refused, exit 2.
        assert run(capsys, "settings", "set", "push.max-concurrent", "5")[0] == 2
        assert run(capsys, "devices", "unenroll", user["username"])[0] == 2
        assert run(capsys, "mfa", "reset", user["username"])[0] == 2
        # A read-only profile flag and a read-only key: refused with one line, exit 1.
        assert run(capsys, "devices", "unenroll", user["username"], "--yes", "--readonly")[0] == 1
        monkeypatch.setenv("PROTECT_CONSOLE_API_KEY", cli.key(Role.READONLY))
        code, _out, err = run(capsys, "totp", "reset", user["username"], "--yes")
        assert code == 1 and "readonly" in err
        code, _out, err = run(capsys, "settings", "set", "push.max-concurrent", "5", "--yes")
        assert code == 1 and "permission" in err
        assert http.get("/api/v2/protect/settings").json() == before
        assert len(http.get(f"/api/v2/users/{user['_id']}/pushendpoints").json()) == 1


def test_users_show_a_username_containing_an_at_sign(cli, capsys) -> None:
    """Was a bug (fixed in f27db3a): a ref with '@' was only ever looked up as an email."""
    with httpx.Client(base_url=cli.url, headers={"x-api-key": cli.admin_key}) as http:
        http.post("/api/systemusers", json={"username": "bob@corp", "email": "robert.jones@mail.example"})
    code, out, err = run(capsys, "users", "show", "bob@corp", "--json")
    assert code == 0, err
    assert json.loads(out)["user"]["username"] == "bob@corp"
    code, out, err = run(capsys, "users", "show", "robert.jones@mail.example", "--json")  # the email still wins first
    assert code == 0 and json.loads(out)["user"]["username"] == "bob@corp"
    code, _out, err = run(capsys, "users", "show", "nobody@corp")
    assert code == 1 and err.startswith("error: no user")
