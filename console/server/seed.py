"""A realistic synthetic directory for demos, tests and benchmarks.

Deterministic for a given ``rng_seed``. Proportions follow the product brief:
about 60% of users with a push device, 50% with TOTP, 10% with WebAuthn, 15%
with no MFA; about 20% of devices opted out of diagnostics; a history of push
attempts, with one push-bombing episode in the last hour.
"""

from __future__ import annotations

import random
import secrets
import time
import unicodedata
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pyotp
from sqlalchemy import func, insert, select

from .clock import Clock
from .services.common import digest, dumps
from .store import Store, devices, diagnostics, folded, push_attempts, users

FIRST = [
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth", "William",
    "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen", "Christopher", "Lisa",
    "Daniel", "Nancy", "Matthew", "Sandra", "Anthony", "Betty", "Mark", "Ashley", "José", "María", "Zoë", "Björn",
    "Søren", "Chloé", "Łukasz", "Agnieszka", "Ngozi", "Chinedu", "Aiko", "Haruto", "Wei", "Mei", "Priya", "Arjun",
    "Fatima", "Omar", "Yusuf", "Leila", "Olga", "Dmitri", "Anaïs", "François", "Siobhán", "Eoin", "Kai", "Noa",
    "Mateo", "Lucía", "Ayşe", "Mehmet", "Thandiwe", "Sipho",
]
LAST = [
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Hernandez",
    "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez",
    "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Müller", "Schröder", "Núñez",
    "O'Brien", "Kowalski", "Nowak", "Okafor", "Adeyemi", "Tanaka", "Suzuki", "Chen", "Wang", "Patel", "Sharma",
    "Haddad", "Khan", "Ivanova", "Petrov", "Dubois", "Lefèvre", "Ó Briain", "Nakamura", "Cohen", "Levi",
    "Fernández", "Yılmaz", "Dlamini", "Nkosi", "van der Berg", "da Silva",
]
DOMAINS = ["example.com", "corp.example", "acme.example", "globex.example"]
IOS_MODELS = ["iPhone 12", "iPhone 13", "iPhone 13 mini", "iPhone 14", "iPhone 14 Pro", "iPhone 15", "iPhone 15 Pro Max", "iPhone 16", "iPhone SE (3rd generation)"]
ANDROID_MODELS = [
    ("Samsung", "Galaxy S21"), ("Samsung", "Galaxy S23"), ("Samsung", "Galaxy S24 Ultra"), ("Samsung", "Galaxy A54"),
    ("Google", "Pixel 6"), ("Google", "Pixel 7a"), ("Google", "Pixel 8 Pro"), ("Google", "Pixel 9"),
    ("OnePlus", "12"), ("Motorola", "moto g power"), ("Xiaomi", "Redmi Note 12"),
]
IOS_VERSIONS = ["15.8", "16.7.2", "17.4.1", "17.6", "18.1", "18.3"]
ANDROID_VERSIONS = ["10", "11", "12", "13", "14", "15"]
LEGACY = {"iOS": ["12.5.7"], "Android": ["7.1.2"]}  # enrolled before the minimum was raised
APP_VERSIONS = ["2.3.1", "2.4.0", "2.5.2", "2.6.0"]
RESOURCES = ["Okta SSO", "VPN", "Salesforce", "GitHub", "AWS Console", "Workday", "Jira", "Slack", "Zoom", "macOS login"]
LOCATIONS = [
    "Denver, US", "Boulder, US", "London, GB", "Berlin, DE", "Paris, FR", "Madrid, ES", "Warsaw, PL", "Lagos, NG",
    "Tokyo, JP", "Singapore, SG", "Bengaluru, IN", "São Paulo, BR", "Toronto, CA", "Sydney, AU",
]
APPS = ["JumpCloud User Portal", "Okta", "Cisco AnyConnect", "Chrome on macOS", "Safari on iOS", "Edge on Windows"]
BATCH = 5000


# Letters that NFKD does not decompose into ASCII (Ł, ø, ß...).
_TRANSLIT = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "ß": "ss", "æ": "ae", "Æ": "AE", "đ": "d", "ı": "i"})


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text.translate(_TRANSLIT)).encode("ascii", "ignore").decode()
    return "".join(c for c in ascii_text.lower() if c.isalnum())


def _ip(rng: random.Random) -> str:
    return f"{rng.choice([73, 81, 98, 104, 151, 185, 203])}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


ANALYZE_AFTER = 5000  # users seeded at once (PostgreSQL)


def _chunks(rows: list[dict[str, Any]], size: int = BATCH) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _new_id(rng: random.Random) -> str:
    return "%024x" % rng.getrandbits(96)


def seed_directory(store: Store, users_count: int, *, rng_seed: int = 1, clock: Clock | None = None) -> dict[str, Any]:
    """Add ``users_count`` synthetic users (with devices and push history) to ``store``."""
    if users_count < 0:
        raise ValueError("users: must be 0 or more")
    started = time.perf_counter()
    rng = random.Random(rng_seed)
    now = (clock or Clock()).now()
    taken: set[str] = set()
    with store.read() as conn:
        if conn.execute(select(func.count()).select_from(users)).scalar_one():
            taken = {u for (u,) in conn.execute(select(users.c.username_ci))}
            # Ids come from the seeded RNG: move a re-seed onto a different stream.
            rng = random.Random(f"{rng_seed}:{len(taken)}")

    user_rows: list[dict[str, Any]] = []
    device_rows: list[dict[str, Any]] = []
    attempt_rows: list[dict[str, Any]] = []
    push_users: list[tuple[str, str]] = []

    for _ in range(users_count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        base = f"{_slug(first)}.{_slug(last)}" or "user"
        username = base
        while username in taken:
            username = f"{base}{rng.randrange(2, 100_000)}"
        taken.add(username)
        user_id = _new_id(rng)
        created = now - timedelta(days=rng.uniform(1, 3 * 365))
        roll = rng.random()
        state = "ACTIVATED" if roll < 0.90 else ("STAGED" if roll < 0.96 else "SUSPENDED")
        row: dict[str, Any] = dict(
            id=user_id, username=username, email=f"{username}@{rng.choice(DOMAINS)}", firstname=first, lastname=last,
            displayname=f"{first} {last}", state=state, account_locked=rng.random() < 0.01, created=created,
            totp_secret=None, totp_status="NOT_ENROLLED", totp_last_step=None, totp_failures=0,
            push_status="NOT_ENROLLED", push_pending_until=None, webauthn_status="NOT_ENROLLED",
            mfa_exclusion=False, mfa_exclusion_until=None,
        )
        row.update(folded(row))
        has_push = has_totp = has_webauthn = False
        if rng.random() >= 0.15:
            # Conditional on having some MFA (85%). Users who drew nothing fall back to TOTP,
            # so TOTP's own draw is lower: overall shares come out near 60/50/10.
            has_push = rng.random() < 0.60 / 0.85
            has_totp = rng.random() < 0.444
            has_webauthn = rng.random() < 0.10 / 0.85
            if not (has_push or has_totp or has_webauthn):
                has_totp = True
        elif rng.random() < 0.15:
            row.update(mfa_exclusion=True, mfa_exclusion_until=now + timedelta(days=rng.randint(-3, 14)))
        if has_totp:
            row.update(totp_secret=pyotp.random_base32(), totp_status="ENROLLED")
        if has_webauthn:
            row["webauthn_status"] = "ENROLLED"
        if has_push:
            row["push_status"] = "ENROLLED"
            device_rows.append(_device(rng, user_id, created, now))
            push_users.append((user_id, device_rows[-1]["id"]))
        user_rows.append(row)

    report_rows = [
        _report(rng, d, now) for d in device_rows if not d["diagnostics_opt_out"] and rng.random() < 0.3
    ]
    for user_id, device_id in push_users:
        for _ in range(rng.choice((0, 1, 1, 2, 3, 4, 6))):
            attempt_rows.append(_attempt(rng, user_id, device_id, now - timedelta(hours=rng.uniform(0.02, 30 * 24))))
    if push_users:
        victim, device_id = push_users[0]
        attempt_rows.extend(_bombing(rng, victim, device_id, now))

    with store.write() as conn:
        for chunk in _chunks(user_rows):
            conn.execute(insert(users), chunk)
        for chunk in _chunks(device_rows):
            conn.execute(insert(devices), chunk)
        for chunk in _chunks(attempt_rows):
            conn.execute(insert(push_attempts), chunk)
        for chunk in _chunks(report_rows):
            conn.execute(insert(diagnostics), chunk)
    if not store.is_sqlite and len(user_rows) >= ANALYZE_AFTER:
        # PostgreSQL plans from statistics and counts through the visibility map: after a bulk
        # load, refresh both now rather than whenever autovacuum comes by.
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE) users, devices, push_attempts, diagnostics")
    return {
        "users": len(user_rows),
        "devices": len(device_rows),
        "pushAttempts": len(attempt_rows),
        "diagnosticsReports": len(report_rows),
        "bombingVictim": push_users[0][0] if push_users else None,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _device(rng: random.Random, user_id: str, created: datetime, now: datetime) -> dict[str, Any]:
    if rng.random() < 0.55:
        os_name, make, model = "iOS", "Apple", rng.choice(IOS_MODELS)
    else:
        os_name = "Android"
        make, model = rng.choice(ANDROID_MODELS)
    versions = IOS_VERSIONS if os_name == "iOS" else ANDROID_VERSIONS
    os_version = rng.choice(LEGACY[os_name]) if rng.random() < 0.01 else rng.choice(versions)
    enrolled = created + (now - created) * rng.uniform(0.0, 0.5)
    opted_out = rng.random() < 0.20
    return dict(
        id=_new_id(rng), user_id=user_id, name=f"{model}", state="active" if rng.random() > 0.02 else "inactive",
        make=make, model=model, os=os_name, os_version=os_version, app_version=rng.choice(APP_VERSIONS),
        uv_enabled=rng.random() < 0.55, token_hash=digest(secrets.token_urlsafe(16)), enrolled_at=enrolled,
        last_used_at=enrolled + (now - enrolled) * rng.uniform(0.5, 1.0), diagnostics_opt_out=opted_out,
        privacy_updated_at=enrolled if opted_out else None, notifications_enabled=rng.random() > 0.05,
        diagnostics_dropped=rng.randrange(0, 20) if opted_out else 0,
    )


def _report(rng: random.Random, device: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A diagnostics report as the app sends it: app and OS facts, no user information."""
    payload = {
        "appVersion": device["app_version"], "os": f'{device["os"]} {device["os_version"]}',
        "event": rng.choice(["push_received_late", "app_start", "crash", "notification_permission_denied"]),
        "latencyMs": rng.randrange(80, 4000),
    }
    return dict(device_id=device["id"], received_at=now - timedelta(hours=rng.uniform(0, 72)), payload=dumps(payload))


def _attempt(
    rng: random.Random, user_id: str, device_id: str, created: datetime, status: str | None = None,
    resource: str | None = None, location: str | None = None,
) -> dict[str, Any]:
    if status is None:
        roll = rng.random()
        status = "approved" if roll < 0.75 else "denied" if roll < 0.82 else "expired" if roll < 0.95 else "blocked"
    responded = created + timedelta(seconds=rng.uniform(2, 40)) if status in ("approved", "denied") else None
    return dict(
        id=_new_id(rng), user_id=user_id, device_id=device_id, resource=resource or rng.choice(RESOURCES), status=status,
        fraud=status == "denied" and rng.random() < 0.2, user_verified=status == "approved" and rng.random() < 0.6,
        created_at=created, expires_at=created if status == "blocked" else created + timedelta(seconds=60),
        responded_at=responded, app=rng.choice(APPS), location=location or rng.choice(LOCATIONS), ip=_ip(rng),
    )


def _bombing(rng: random.Random, user_id: str, device_id: str, now: datetime) -> list[dict[str, Any]]:
    """One user hammered with pushes for a VPN from abroad: mostly blocked by the cap, some denied as fraud."""
    start = now - timedelta(minutes=25)
    rows = []
    for i in range(48):
        at = start + timedelta(seconds=i * rng.uniform(15, 25))
        status = "denied" if i % 8 == 0 else ("expired" if i % 8 == 4 else "blocked")
        row = _attempt(rng, user_id, device_id, at, status=status, resource="VPN", location="Unknown (Tor exit node)")
        row["fraud"] = status == "denied"
        rows.append(row)
    return rows
