"""Issue 9 item 2: TOTP secrets encrypted at rest (console/server/secretbox.py), on both stores.

No secret readable in the database (nor, on SQLite, in its file or WAL) after enrolment, seeding or a
reset; a secret copied to another user's row does not decrypt; a missing key is a clear error naming it;
`protect-console secrets rotate` runs while a served instance keeps verifying; new database files are
private; a 0005 database with plain-text secrets upgrades to encrypted ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pyotp
import pytest
from alembic import command
from sqlalchemy import text

from console.models import Role
from console.server import secretbox
from console.server.app import create_app
from console.server.clock import Clock
from console.server.runner import ServerThread
from console.server.seed import seed_directory
from console.server.services.keys import create_key
from console.server.store import Store, _alembic_config, _connected, open_store, parse_db
from tests.helpers import run_cli
from tests.serve_helpers import IPHONE, Served

ROOT = Path(__file__).resolve().parents[2]
VERIFY = "/api/v2/protect/totp/verify"


@pytest.fixture(autouse=True)
def own_key_file(store_kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path | None:
    """PostgreSQL: a key file of this test's own (the default is one per host). SQLite: the default, <db>.key."""
    monkeypatch.delenv(secretbox.KEY_ENV, raising=False)
    monkeypatch.delenv(secretbox.KEY_FILE_ENV, raising=False)
    if store_kind == "postgresql":
        path = tmp_path / "keys" / "pg-secret.key"
        monkeypatch.setenv(secretbox.KEY_FILE_ENV, str(path))
        return path
    return None


def key_file(db: str, own: Path | None) -> Path:
    return own if own is not None else Path(db + ".key")


def stored_secret(store: Store, user_id: str) -> str | None:
    with store.read() as conn:
        return conn.execute(text("SELECT totp_secret FROM users WHERE id = :id"), {"id": user_id}).scalar()


def file_bytes(db: str) -> bytes:
    """The SQLite database and its WAL, as they are on disk now."""
    return b"".join(Path(db + suffix).read_bytes() for suffix in ("", "-wal") if Path(db + suffix).exists())


def enrol(url: str, admin: httpx.Client, name: str) -> tuple[str, pyotp.TOTP, dict]:
    """A new user with a device and TOTP: (user id, their authenticator, the device's auth header)."""
    user = admin.post("/api/systemusers", json={"username": name, "email": f"{name}@secrets.example"}).json()
    code = admin.post(f"/api/v2/protect/users/{user['_id']}/enrollments").json()["code"]
    token = httpx.post(f"{url}/device/v1/enroll", json={"code": code, "name": "phone", "device": IPHONE}).json()[
        "token"
    ]
    phone = {"Authorization": f"Bearer {token}"}
    answer = httpx.post(f"{url}/device/v1/totp", headers=phone)
    assert answer.status_code == 200, answer.text
    return user["_id"], pyotp.parse_uri(answer.json()["otpauthUri"]), phone


def test_no_secret_in_the_database_after_enrolment_seeding_and_reset(make_backend, store_kind) -> None:
    backend = make_backend(users=40)
    with httpx.Client(base_url=backend.url, headers={"x-api-key": backend.admin_key}, timeout=30) as admin:
        user_id, totp, _ = enrol(backend.url, admin, "sealed.user")
        stored = stored_secret(backend.store, user_id)
        assert stored.startswith("v1:") and totp.secret not in stored
        if store_kind == "sqlite":
            assert totp.secret.encode() not in file_bytes(backend.db)  # nor in the WAL the enrolment went to
        answer = admin.post(VERIFY, json={"userId": user_id, "code": totp.now()})
        assert answer.status_code == 200 and answer.json()["valid"] is True, answer.text

        assert admin.post(f"/api/v2/protect/users/{user_id}/totp/reset").status_code == 200
        assert stored_secret(backend.store, user_id) is None
        if store_kind == "sqlite":
            assert totp.secret.encode() not in file_bytes(backend.db)
            with contextlib.closing(sqlite3.connect(backend.db)) as conn:
                assert conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()[0] == 0  # every frame copied back
            # secure_delete: the replaced ciphertext is zeroed, not left in a free part of the page
            assert stored.encode() not in Path(backend.db).read_bytes()
    with backend.store.read() as conn:
        seeded = [r[0] for r in conn.execute(text("SELECT totp_secret FROM users WHERE totp_secret IS NOT NULL"))]
    assert seeded and all(value.startswith("v1:") for value in seeded)
    box = secretbox.box_of(backend.store)
    with backend.store.read() as conn:
        uid, value = conn.execute(text("SELECT id, totp_secret FROM users WHERE totp_secret IS NOT NULL")).first()
    assert len(box.open(uid, value)) == 32  # a seeded secret opens for its user


def test_a_secret_copied_to_another_users_row_does_not_decrypt(make_backend) -> None:
    backend = make_backend(users=0)
    service = create_key(backend.store, "login-flow", Role.SERVICE)
    with httpx.Client(base_url=backend.url, headers={"x-api-key": backend.admin_key}, timeout=30) as admin:
        alice, alice_totp, _ = enrol(backend.url, admin, "alice")
        bob, _, _ = enrol(backend.url, admin, "bob")
        with backend.store.write() as conn:
            conn.execute(
                text("UPDATE users SET totp_secret = (SELECT totp_secret FROM users WHERE id = :a) WHERE id = :b"),
                {"a": alice, "b": bob},
            )
        code = alice_totp.now()
        for key in (service, backend.admin_key):  # the login flow's hot path and the support desk's check
            answer = httpx.post(
                f"{backend.url}{VERIFY}", json={"userId": bob, "code": code}, headers={"x-api-key": key}
            )
            assert answer.status_code == 409, answer.text
            assert "cannot be used" in answer.json()["message"] and "reset TOTP" in answer.json()["message"]
        answer = admin.post(VERIFY, json={"userId": alice, "code": code})
        assert answer.json()["valid"] is True, answer.text


def test_plain_text_left_in_a_row_is_never_used(make_backend) -> None:
    backend = make_backend(users=0)
    with httpx.Client(base_url=backend.url, headers={"x-api-key": backend.admin_key}, timeout=30) as admin:
        user_id, totp, _ = enrol(backend.url, admin, "plain.left")
        with backend.store.write() as conn:
            conn.execute(text("UPDATE users SET totp_secret = :s WHERE id = :id"), {"s": totp.secret, "id": user_id})
        answer = admin.post(VERIFY, json={"userId": user_id, "code": totp.now()})
        assert answer.status_code == 409 and "it is not encrypted (plain text" in answer.json()["message"], answer.text


def test_a_secret_under_a_key_the_service_lacks_is_a_503_naming_the_key(make_backend, tmp_path) -> None:
    backend = make_backend(users=0)
    other = tmp_path / "other.key"
    secretbox.write_key_file(other, [secretbox.new_key()])
    foreign = secretbox.SecretBox(secretbox.KeySource(other))
    with httpx.Client(base_url=backend.url, headers={"x-api-key": backend.admin_key}, timeout=30) as admin:
        user_id, totp, phone = enrol(backend.url, admin, "foreign.key")
        with backend.store.write() as conn:
            conn.execute(
                text("UPDATE users SET totp_secret = :s WHERE id = :id"),
                {"s": foreign.seal(user_id, totp.secret, foreign.ids[0]), "id": user_id},
            )
        answer = admin.post(VERIFY, json={"userId": user_id, "code": totp.now()})
        assert answer.status_code == 503, answer.text
        message = answer.json()["message"]
        assert foreign.ids[0] in message and "key" in message and str(tmp_path) not in message
        # Enrolling again replaces it under the database's own key: the user is back.
        again = pyotp.parse_uri(httpx.post(f"{backend.url}/device/v1/totp", headers=phone).json()["otpauthUri"])
        answer = admin.post(VERIFY, json={"userId": user_id, "code": again.now()})
        assert answer.json()["valid"] is True, answer.text


def serve_once(db: str, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`protect-console serve` that must refuse to start (it is killed if it does not within the timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "console", "serve", "--db", db, "--port", "0", *extra],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_without_the_key_refuses_to_start_with_one_line(new_db, own_key_file, tmp_path) -> None:
    db = new_db()
    store = open_store(db)
    try:
        seed_directory(store, 20, rng_seed=3)
        with store.read() as conn:
            (kid,) = [r[0] for r in conn.execute(text("SELECT id FROM secret_keys"))]
    finally:
        store.dispose()
    path = key_file(db, own_key_file)
    saved = path.read_bytes()
    path.unlink()
    done = serve_once(db)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and kid in lines[0] and str(path) in lines[0] and "does not exist" in lines[0], lines
    assert not path.exists()  # no new key made for a database that needs the old one

    wrong = tmp_path / "wrong.key"
    secretbox.write_key_file(wrong, [secretbox.new_key()])
    done = serve_once(db, "--secret-key-file", str(wrong))
    assert done.returncode == 1 and kid in done.stderr and str(wrong) in done.stderr, done.stderr

    done = serve_once(db, env={secretbox.KEY_ENV: "not-a-key"})
    assert done.returncode == 1, done.stderr
    assert secretbox.KEY_ENV in done.stderr and "base64" in done.stderr and "Traceback" not in done.stderr

    path.write_bytes(saved)  # the key restored from its backup: the database opens again
    open_store(db).dispose()


def test_the_key_may_come_from_the_environment(new_db, monkeypatch, own_key_file) -> None:
    key = secretbox.new_key()
    monkeypatch.setenv(secretbox.KEY_ENV, key)
    db = new_db()
    store = open_store(db)
    try:
        seed_directory(store, 10, rng_seed=4)
        with store.read() as conn:
            kids = {r[0] for r in conn.execute(text("SELECT id FROM secret_keys"))}
            values = [r[0] for r in conn.execute(text("SELECT totp_secret FROM users WHERE totp_secret IS NOT NULL"))]
    finally:
        store.dispose()
    kid = secretbox.key_id(secretbox.parse_key(key, "test"))
    assert kids == {kid} and values and all(v.startswith(f"v1:{kid}:") for v in values)
    assert not key_file(db, own_key_file).exists()  # no file is made when the key is in the environment


def verify_all(url: str, key: str, users: list[tuple[str, str]]) -> list[tuple[int, str]]:
    """Each user's current code checked once through the service: (status, body) for each."""
    answers = []
    with httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=60) as http:
        for user_id, secret in users:
            answer = http.post(VERIFY, json={"userId": user_id, "code": pyotp.TOTP(secret).now()})
            answers.append((answer.status_code, answer.text))
    return answers


def test_rotate_while_a_served_instance_keeps_verifying(new_db, own_key_file, tmp_path) -> None:
    db = new_db()
    store = open_store(db)
    try:
        seed_directory(store, 1600, rng_seed=9)
        service = create_key(store, "login-flow", Role.SERVICE)
        box = secretbox.box_of(store)
        with store.read() as conn:
            old = conn.execute(text("SELECT id FROM secret_keys WHERE is_current")).scalar()
            rows = conn.execute(text("SELECT id, totp_secret FROM users WHERE totp_secret IS NOT NULL ORDER BY id"))
            users = [(uid, box.open(uid, value)) for uid, value in rows]
    finally:
        store.dispose()
    assert len(users) > 600
    served = Served(db=db, home=tmp_path / "serve").start()
    try:
        rotate = subprocess.Popen(
            [sys.executable, "-m", "console", "secrets", "rotate", "--db", db, "--json"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        answers, checked = [], 0
        while rotate.poll() is None and checked < len(users) - 100:  # checks go on while the rotation runs
            answers += verify_all(served.url, service, users[checked : checked + 10])
            checked += 10
        out, err = rotate.communicate(timeout=120)
        assert rotate.returncode == 0, err
        # After it: every secret is under the new key, which the service did not have when it started.
        answers += verify_all(served.url, service, users[checked : checked + 100])
    finally:
        served.stop()
    assert answers and all(status == 200 and '"valid":true' in body for status, body in answers), [
        a for a in answers if a[0] != 200 or '"valid":true' not in a[1]
    ][:3]
    report = json.loads(out)
    assert report["keyId"] != old and report["generated"] is True and report["previous"] == [old]
    assert report["reencrypted"] == len(users) and report["unreadable"] == 0
    store = open_store(db)
    try:
        status = secretbox.status(store)
        assert {k["id"]: k["secrets"] for k in status["keys"]} == {report["keyId"]: len(users), old: 0}
        secretbox.retire(store, old, Clock().now())  # nothing needs the old key any more
        assert old not in secretbox.SecretBox(secretbox.key_source(store.target)).ids
    finally:
        store.dispose()


def test_rotate_retire_and_status_from_the_cli(new_db, capsys) -> None:
    db = new_db()
    store = open_store(db)
    try:
        seed_directory(store, 30, rng_seed=2)
    finally:
        store.dispose()
    code, out, err = run_cli(capsys, "secrets", "status", "--db", db)
    assert code == 0 and "current" in out, err
    old = out.split("\n")[1].split()[0]
    code, out, err = run_cli(capsys, "secrets", "retire", "--db", db, old)
    assert code == 1 and "current key" in err
    code, out, err = run_cli(capsys, "secrets", "rotate", "--db", db)
    assert code == 0 and "Re-encrypted" in out and f"secrets retire {old}" in out, err
    code, out, err = run_cli(capsys, "secrets", "retire", "--db", db, old)
    assert code == 0 and f"Retired key {old}" in out, err
    code, out, err = run_cli(capsys, "secrets", "status", "--db", db)
    assert old not in out and "current" in out
    store = open_store(db)
    try:
        with store.read() as conn:
            events = conn.execute(text("SELECT actor, action, details FROM audit WHERE target = 'secrets' ORDER BY id"))
            events = [(actor, action, json.loads(details)) for actor, action, details in events]
    finally:
        store.dispose()
    assert [(actor, action) for actor, action, _ in events] == [
        ("local cli", "secrets.rotate"),
        ("local cli", "secrets.retire"),
    ]
    assert events[0][2]["previousKeyId"] == old and events[1][2] == {"keyId": old}
    # Several hosts: the key is added first (copied to each), then made current.
    code, out, err = run_cli(capsys, "secrets", "rotate", "--prepare", "--db", db, "--json")
    assert code == 0, err
    prepared = json.loads(out)["keyId"]
    code, out, err = run_cli(capsys, "secrets", "status", "--db", db)
    assert f"{prepared}  not used yet" in out, out
    code, out, err = run_cli(capsys, "secrets", "rotate", "--db", db, "--json")
    assert code == 0 and json.loads(out)["keyId"] == prepared and json.loads(out)["generated"] is False, (out, err)


def test_new_database_files_and_folders_are_private(tmp_path, store_kind, new_db, own_key_file) -> None:
    if store_kind == "postgresql":
        store = open_store(new_db())
        store.dispose()
        assert stat.S_IMODE(own_key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(own_key_file.parent.stat().st_mode) == 0o700
        return
    db = tmp_path / "fresh" / "data" / "protect.db"
    store = open_store(db)
    try:
        with store.write() as conn:  # the WAL and shared-memory files exist while it is open
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS scratch (x)")
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in db.parent.iterdir()}
    finally:
        store.dispose()
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert modes == {
        "protect.db": 0o600,
        "protect.db-wal": 0o600,
        "protect.db-shm": 0o600,
        "protect.db.lock": 0o600,
        "protect.db.key": 0o600,
    }
    existing = tmp_path / "shared"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    open_store(existing / "protect.db").dispose()
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755  # a folder we did not make keeps its mode
    assert stat.S_IMODE((existing / "protect.db").stat().st_mode) == 0o600


def insert_user_at_0005(conn, user_id: str, name: str, secret: str | None) -> None:
    conn.execute(
        text(
            "INSERT INTO users (id, username, email, firstname, lastname, displayname, username_ci, email_ci, "
            "firstname_ci, lastname_ci, displayname_ci, firstname_sort, lastname_sort, state, account_locked, created, "
            "totp_secret, totp_status, totp_failures, push_status, webauthn_status, mfa_exclusion, "
            "require_user_verification) VALUES (:id, :n, :e, '', '', '', :n, :e, '', '', '', '', '', 'ACTIVATED', "
            ":f, :created, :secret, :status, 0, 'NOT_ENROLLED', 'NOT_ENROLLED', :f, :f)"
        ),
        {
            "id": user_id,
            "n": name,
            "e": f"{name}@old.example",
            "f": False,
            "created": Clock().now(),
            "secret": secret,
            "status": "ENROLLED" if secret else "NOT_ENROLLED",
        },
    )


def test_a_0005_database_with_plain_secrets_upgrades_to_encrypted_ones(
    new_db, store_kind, own_key_file, capsys
) -> None:
    db = new_db(migrated=False)
    target = parse_db(db)
    raw = Store(_connected(target), target)
    secrets = {f"{i:024x}": pyotp.random_base32() for i in range(1, 2500)}
    try:
        with raw.write() as conn:
            command.upgrade(_alembic_config(conn), "0005")
            for i, (user_id, secret) in enumerate(secrets.items()):
                insert_user_at_0005(conn, user_id, f"old.user{i}", secret)
            insert_user_at_0005(conn, "f" * 24, "no.totp", None)
    finally:
        raw.dispose()
    path = key_file(db, own_key_file)
    assert not path.exists()
    code, out, err = run_cli(capsys, "db", "upgrade", "--db", db)
    assert code == 0 and "from schema 0005" in out, err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the migration made the key it sealed them under
    store = open_store(db)
    try:
        with store.read() as conn:
            stored = dict(conn.execute(text("SELECT id, totp_secret FROM users")).all())
        assert stored["f" * 24] is None
        assert all(stored[uid].startswith("v1:") and secret not in stored[uid] for uid, secret in secrets.items())
        if store_kind == "sqlite":
            data = file_bytes(db)
            assert not [s for s in list(secrets.values())[:200] if s.encode() in data]
        user_id, secret = next(iter(secrets.items()))
        admin = create_key(store, "upgrade-admin", Role.ADMIN)
        server = ServerThread(create_app(store))
        server.start()
        try:
            answer = httpx.post(
                f"{server.url}{VERIFY}",
                json={"userId": user_id, "code": pyotp.TOTP(secret).now()},
                headers={"x-api-key": admin},
                timeout=30,
            )
        finally:
            server.stop()
        assert answer.status_code == 200 and answer.json()["valid"] is True, answer.text
    finally:
        store.dispose()


def test_a_key_file_others_can_read_is_warned_about(tmp_path, caplog) -> None:
    path = tmp_path / "open.key"
    secretbox.write_key_file(path, [secretbox.new_key()])
    with caplog.at_level("WARNING", logger="protect.server"):
        secretbox.SecretBox(secretbox.KeySource(path))
        assert not caplog.records  # 0600 as written
        path.chmod(0o644)
        secretbox.SecretBox(secretbox.KeySource(path))
    assert [r.getMessage() for r in caplog.records] == [
        f"the key file {path} is mode 644: anyone who can read it can read the TOTP secrets; chmod 600 it"
    ]
