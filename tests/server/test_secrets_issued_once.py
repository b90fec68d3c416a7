"""QA: API keys, device tokens, enrolment codes and TOTP secrets leave the server once, when issued.

They (and their stored hashes) must not show up in any later API answer, the audit log, the CLI's
output (tables and ``--json``), or what ``protect-console serve`` prints.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from console.models import Role
from tests.helpers import point_cli_at, run_cli
from tests.serve_helpers import IPHONE, free_port

REPO = Path(__file__).resolve().parents[2]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def forms(secrets: dict[str, str]) -> dict[str, str]:
    """Each secret, its normalised form and its stored hash: none may leak."""
    out: dict[str, str] = {}
    for name, value in secrets.items():
        out[name] = value
        out[f"{name} (hash)"] = sha256(value)
        bare = value.replace("-", "").upper()
        if bare != value:
            out[f"{name} (normalised)"] = bare
            out[f"{name} (normalised hash)"] = sha256(bare)
    return out


def assert_no_secret(text: str, secrets: dict[str, str], where: str) -> None:
    leaked = [name for name, value in secrets.items() if value and value in text]
    assert not leaked, f"{where} shows {leaked}"


def make_world(url: str, admin_key: str, keys: dict[str, str]) -> tuple[dict[str, str], dict]:
    """A user with a device, TOTP, push history, an unused code and every kind of change; returns its secrets."""
    secrets = {f"{role} key": key for role, key in keys.items()} | {"admin key": admin_key}
    with httpx.Client(base_url=url, headers={"x-api-key": admin_key}, timeout=30) as http:
        user = http.post(
            "/api/systemusers",
            json={"username": "secret.keeper", "email": "keeper@secrets.example", "displayname": "Secret Keeper"},
        ).json()
        uid = user["_id"]
        first = http.post(f"/api/v2/protect/users/{uid}/enrollments").json()
        secrets["enrollment code (used)"] = first["code"]
        enrolled = httpx.post(
            f"{url}/device/v1/enroll", json={"code": first["code"], "name": "phone", "device": IPHONE}
        ).json()
        secrets["device token"] = enrolled["token"]
        phone = {"Authorization": f"Bearer {enrolled['token']}"}
        uri = httpx.post(f"{url}/device/v1/totp", headers=phone).json()["otpauthUri"]
        secrets["TOTP secret"] = parse_qs(urlparse(uri).query)["secret"][0]
        secrets["otpauth URI"] = uri
        import pyotp

        code = pyotp.parse_uri(uri).now()
        http.post("/api/v2/protect/totp/verify", json={"userId": uid, "code": code})  # the audited caller check
        service = {"x-api-key": keys["service"]}
        push = httpx.post(
            f"{url}/api/v2/protect/push",
            headers=service,
            json={"userId": uid, "resource": "VPN", "context": {"app": "Okta", "ip": "192.0.2.1"}},
        ).json()
        httpx.post(
            f"{url}/device/v1/pushes/{push['id']}/respond",
            headers=phone,
            json={"decision": "approve", "userVerified": True},
        )
        httpx.put(f"{url}/device/v1/settings", headers=phone, json={"diagnosticsOptOut": True})
        device_id = enrolled["deviceId"]
        http.patch(f"/api/v2/users/{uid}/pushendpoints/{device_id}", json={"name": "renamed phone"})
        http.post(f"/api/v2/protect/users/{uid}/totp/reset")
        second = http.post(f"/api/v2/protect/users/{uid}/enrollments").json()
        secrets["enrollment code (unused)"] = second["code"]
        http.put(f"/api/systemusers/{uid}", json={"firstname": "Secret", "account_locked": False})
    return secrets, user


def crawl(url: str, key: str, user_id: str) -> dict[str, str]:
    """Every read endpoint, every page: {where: body}."""
    seen: dict[str, str] = {}
    with httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=30) as http:

        def paged(path: str, **params: str) -> None:
            skip = 0
            while True:
                response = http.get(path, params={**params, "skip": skip, "limit": 100})
                assert response.status_code == 200, (path, response.text)
                seen[f"{path}?skip={skip}"] = response.text + json.dumps(dict(response.headers))
                body = response.json()
                skip += len(body["results"])
                if skip >= body["totalCount"] or not body["results"]:
                    return

        paged("/api/systemusers", search="secret")
        paged("/api/v2/protect/privacy/devices")
        paged("/api/v2/protect/pushattempts", userId=user_id)
        paged("/api/v2/protect/audit")
        for path in (
            f"/api/systemusers/{user_id}",
            f"/api/v2/users/{user_id}/pushendpoints",
            "/api/v2/protect/whoami",
            "/api/v2/protect/settings",
            "/api/v2/protect/privacy/summary",
            "/openapi.json",
        ):
            response = http.get(path)
            seen[path] = response.text + json.dumps(dict(response.headers))
        seen["search"] = http.post("/api/search/systemusers", json={"searchFilter": {"searchTerm": "keeper"}}).text
    return seen


def test_no_api_answer_or_audit_event_repeats_a_secret(backend) -> None:
    keys = {role.value: backend.key(role) for role in (Role.HELPDESK, Role.READONLY, Role.SERVICE)}
    secrets, user = make_world(backend.url, backend.admin_key, keys)
    secret_forms = forms(secrets)
    for role, key in {"admin": backend.admin_key, **keys}.items():
        if role == "service":
            continue  # may not read
        for where, body in crawl(backend.url, key, user["_id"]).items():
            assert_no_secret(body, secret_forms, f"{role}: GET {where}")
    # The changing endpoints' answers, after the one issuing moment, don't repeat them either.
    with httpx.Client(base_url=backend.url, headers={"x-api-key": backend.admin_key}, timeout=30) as http:
        device = http.get(f"/api/v2/users/{user['_id']}/pushendpoints").json()[0]
        answers = [
            http.patch(f"/api/v2/users/{user['_id']}/pushendpoints/{device['id']}", json={"state": "inactive"}),
            http.delete(f"/api/v2/users/{user['_id']}/pushendpoints/{device['id']}"),
            http.post(f"/api/systemusers/{user['_id']}/resetmfa", json={"exclusion": True, "exclusionDays": 2}),
            http.post(f"/api/v2/protect/users/{user['_id']}/totp/reset"),
        ]
        for answer in answers:
            assert_no_secret(answer.text, secret_forms, f"{answer.request.method} {answer.request.url.path}")
        audit = http.get("/api/v2/protect/audit", params={"limit": 100}).text
        assert_no_secret(audit, secret_forms, "audit log after the changes")
        assert '"totp.verify"' in audit and '"device.unenroll"' in audit and '"mfa.reset"' in audit


@pytest.fixture
def cli_env(backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    point_cli_at(monkeypatch, tmp_path, backend.url, backend.admin_key)
    return backend


def test_cli_output_never_shows_a_secret(cli_env, capsys, monkeypatch) -> None:
    backend = cli_env
    keys = {role.value: backend.key(role) for role in (Role.HELPDESK, Role.READONLY, Role.SERVICE)}
    secrets, _user = make_world(backend.url, backend.admin_key, keys)
    secret_forms = forms(secrets)
    commands = [
        ("users", "show", "secret.keeper"),
        ("users", "show", "secret.keeper", "--json"),
        ("users", "show", "keeper@secrets.example", "--json", "--attempts", "100"),
        ("users", "list", "--search", "secret"),
        ("users", "list", "--search", "secret", "--json"),
        ("attempts", "--user", "secret.keeper"),
        ("attempts", "--user", "secret.keeper", "--json"),
        ("privacy", "--opted-out", "--limit", "500"),
        ("privacy", "--json", "--limit", "500"),
        ("settings", "get"),
        ("settings", "get", "--json"),
        ("totp", "reset", "secret.keeper", "--yes"),
        ("mfa", "reset", "secret.keeper", "--grace-days", "3", "--yes"),
    ]
    for argv in commands:
        code, out, err = run_cli(capsys, *argv)
        assert code == 0, (argv, err)
        assert_no_secret(out + err, secret_forms, " ".join(argv))
    # Errors: a refused or wrong key is never echoed back.
    for bad_key in (keys["service"], "pc_" + "x" * 40, keys["readonly"]):
        monkeypatch.setenv("PROTECT_CONSOLE_API_KEY", bad_key)
        for argv in (("users", "show", "secret.keeper"), ("totp", "reset", "secret.keeper", "--yes")):
            code, out, err = run_cli(capsys, *argv)
            assert bad_key not in out + err, argv
            assert_no_secret(out + err, secret_forms, f"{' '.join(argv)} with a refused key")
    # A key coming from api_key_command that fails: its stderr is quoted, but never a key it printed on stdout.
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "protect-console" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    script = config.parent / "leaky-key.sh"
    script.write_text(f"#!/bin/sh\necho {backend.admin_key}\necho 'vault: locked' >&2\nexit 3\n")
    script.chmod(0o700)
    config.write_text(f'[profiles.default]\nurl = "{backend.url}"\napi_key_command = "{script}"\n')
    monkeypatch.delenv("PROTECT_CONSOLE_API_KEY")
    code, out, err = run_cli(capsys, "users", "list")
    assert code == 1 and "vault: locked" in err and backend.admin_key not in out + err


# ------------------------------------------------------------------ protect-console serve


class Serve:
    """``protect-console serve`` in a subprocess, its output collected as it comes."""

    def __init__(self, db: Path | str, port: int, home: Path) -> None:
        env = {
            **os.environ,
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("PROTECT_CONSOLE_API_KEY", None)
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console", "serve", "--db", str(db), "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(s, b), daemon=True)
            for s, b in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, buffer: list[str]) -> None:
        for line in stream:
            buffer.append(line)

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "".join(self.err)
            try:
                httpx.get(f"{self.url}/openapi.json", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError("serve did not start:\n" + "".join(self.err))

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(timeout=15)
        for reader in self._readers:
            reader.join(timeout=5)
        return "".join(self.out) + "".join(self.err)


def test_serve_prints_the_first_admin_key_once_and_no_secret_ever(tmp_path: Path, new_db) -> None:
    db = new_db(migrated=False)  # an empty SQLite file path or PostgreSQL database: serve makes the schema
    first = Serve(db, free_port(), tmp_path)
    try:
        first.wait_ready()
        printed = [line.strip() for line in first.out if line.startswith("pc_")]
        assert len(printed) == 1, first.out
        admin_key = printed[0]
        from console.server.services.keys import create_key
        from console.server.store import open_store

        store = open_store(db)
        try:
            keys = {
                role.value: create_key(store, f"qa {role.value}", role)
                for role in (Role.HELPDESK, Role.READONLY, Role.SERVICE)
            }
        finally:
            store.dispose()
        secrets, user = make_world(first.url, admin_key, keys)
        crawl(first.url, admin_key, user["_id"])
        # Hostile requests for the log: a wrong key, an escape in the path and the query, a bad body.
        httpx.get(f"{first.url}/api/systemusers", headers={"x-api-key": "pc_not_a_key"})
        httpx.get(f"{first.url}/api/systemusers/%1B]0;pwn%07", headers={"x-api-key": admin_key})
        httpx.get(f"{first.url}/api/systemusers", params={"search": "\x1b]0;pwn\x07"}, headers={"x-api-key": admin_key})
        httpx.post(
            f"{first.url}/device/v1/enroll",
            json={"code": secrets["enrollment code (unused)"], "name": "x", "device": {}},
        )
    finally:
        output = first.stop()
    assert output.count(admin_key) == 1  # the issuing moment, and only that
    others = {
        name: value for name, value in forms(secrets).items() if value != admin_key and name != "admin key (hash)"
    }
    assert_no_secret(output, others, "serve output")
    assert sha256(admin_key) not in output
    for control in ("\x1b]", "\x07", "\x9b"):
        assert control not in output, repr(control)
    assert "GET /api/systemusers" in output  # the access log is there: we did read it

    again = Serve(db, free_port(), tmp_path)
    try:
        again.wait_ready()
    finally:
        output = again.stop()
    assert "pc_" not in output and "API key" not in output  # not on a database that has keys
