"""A realistic synthetic directory for demos, tests and benchmarks.

Deterministic for a given ``rng_seed``. Proportions follow the product brief:
about 60% of users with a push device, 50% with TOTP, 10% with WebAuthn, 15%
with no MFA; about 20% of devices opted out of diagnostics; a history of push
attempts, with one push-bombing episode in the last hour.

Built for a million users: rows are generated as tuples (the random draws are
exactly those of ``random.Random.choice``/``uniform``/``randrange``, made without
their Python call overhead, so a seed gives the same directory as ever) and bulk
loaded: ``executemany`` on SQLite, ``COPY`` on PostgreSQL, with the tables'
secondary indexes (and the search index) dropped before and built after when
the load is large compared with what the table already holds.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import itertools
import pickle
import queue
import random
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
import unicodedata
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Column, Index, Table, func, inspect, literal, select
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateIndex, DropIndex
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from . import search_index, secretbox
from .clock import Clock
from .services.common import digest, dumps
from .store import Store, devices, diagnostics, folded, push_attempts, users

FIRST = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Christopher",
    "Lisa",
    "Daniel",
    "Nancy",
    "Matthew",
    "Sandra",
    "Anthony",
    "Betty",
    "Mark",
    "Ashley",
    "José",
    "María",
    "Zoë",
    "Björn",
    "Søren",
    "Chloé",
    "Łukasz",
    "Agnieszka",
    "Ngozi",
    "Chinedu",
    "Aiko",
    "Haruto",
    "Wei",
    "Mei",
    "Priya",
    "Arjun",
    "Fatima",
    "Omar",
    "Yusuf",
    "Leila",
    "Olga",
    "Dmitri",
    "Anaïs",
    "François",
    "Siobhán",
    "Eoin",
    "Kai",
    "Noa",
    "Mateo",
    "Lucía",
    "Ayşe",
    "Mehmet",
    "Thandiwe",
    "Sipho",
]
LAST = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Müller",
    "Schröder",
    "Núñez",
    "O'Brien",
    "Kowalski",
    "Nowak",
    "Okafor",
    "Adeyemi",
    "Tanaka",
    "Suzuki",
    "Chen",
    "Wang",
    "Patel",
    "Sharma",
    "Haddad",
    "Khan",
    "Ivanova",
    "Petrov",
    "Dubois",
    "Lefèvre",
    "Ó Briain",
    "Nakamura",
    "Cohen",
    "Levi",
    "Fernández",
    "Yılmaz",
    "Dlamini",
    "Nkosi",
    "van der Berg",
    "da Silva",
]
DOMAINS = ["example.com", "corp.example", "acme.example", "globex.example"]
IOS_MODELS = [
    "iPhone 12",
    "iPhone 13",
    "iPhone 13 mini",
    "iPhone 14",
    "iPhone 14 Pro",
    "iPhone 15",
    "iPhone 15 Pro Max",
    "iPhone 16",
    "iPhone SE (3rd generation)",
]
ANDROID_MODELS = [
    ("Samsung", "Galaxy S21"),
    ("Samsung", "Galaxy S23"),
    ("Samsung", "Galaxy S24 Ultra"),
    ("Samsung", "Galaxy A54"),
    ("Google", "Pixel 6"),
    ("Google", "Pixel 7a"),
    ("Google", "Pixel 8 Pro"),
    ("Google", "Pixel 9"),
    ("OnePlus", "12"),
    ("Motorola", "moto g power"),
    ("Xiaomi", "Redmi Note 12"),
]
IOS_VERSIONS = ["15.8", "16.7.2", "17.4.1", "17.6", "18.1", "18.3"]
ANDROID_VERSIONS = ["10", "11", "12", "13", "14", "15"]
LEGACY = {"iOS": ["12.5.7"], "Android": ["7.1.2"]}  # enrolled before the minimum was raised
APP_VERSIONS = ["2.3.1", "2.4.0", "2.5.2", "2.6.0"]
RESOURCES = [
    "Okta SSO",
    "VPN",
    "Salesforce",
    "GitHub",
    "AWS Console",
    "Workday",
    "Jira",
    "Slack",
    "Zoom",
    "macOS login",
]
LOCATIONS = [
    "Denver, US",
    "Boulder, US",
    "London, GB",
    "Berlin, DE",
    "Paris, FR",
    "Madrid, ES",
    "Warsaw, PL",
    "Lagos, NG",
    "Tokyo, JP",
    "Singapore, SG",
    "Bengaluru, IN",
    "São Paulo, BR",
    "Toronto, CA",
    "Sydney, AU",
]
APPS = ["JumpCloud User Portal", "Okta", "Cisco AnyConnect", "Chrome on macOS", "Safari on iOS", "Edge on Windows"]
BATCH = 10_000  # rows a batch: generated, then inserted (executemany or one COPY) while the next is made
ANALYZE_AFTER = 5000  # users seeded at once (PostgreSQL)
# The username bases are first.last; a taken one gets a numeric suffix drawn from this range.
SUFFIXES = (2, 100_000)
# Bulk load (indexes dropped, then built over whole tables) when the seed adds at least this many
# users per user already there: building an index once beats as many random index inserts.
BULK_RATIO = 1.0
# SQLite, on the seed's connection for its transaction only (put back after): a page cache for the
# tables being loaded (KiB when negative), helper threads for CREATE INDEX's sorts, and no fsync at
# the commit's checkpoint: the gigabytes a big seed writes reach the disk when the OS flushes them
# rather than while the command waits. journal_mode stays WAL: a crash of the process loses nothing;
# only an OS crash or power cut before that flush could hurt the file.
# Foreign keys are not checked row by row during the load: the seed's rows refer only to users it adds.
SQLITE_LOAD_PRAGMAS = {"cache_size": -1_048_576, "threads": 2, "synchronous": 0, "foreign_keys": 0}
POSTGRES_LOAD_SETTINGS = {"maintenance_work_mem": "1GB"}  # index builds sort in memory (the GIN trigram one most)

T = TypeVar("T")
Row = tuple[Any, ...]  # a row as its table's columns, in a batch's column order

# Letters that NFKD does not decompose into ASCII (Ł, ø, ß...).
_TRANSLIT = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "ß": "ss", "æ": "ae", "Æ": "AE", "đ": "d", "ı": "i"})


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text.translate(_TRANSLIT)).encode("ascii", "ignore").decode()
    return "".join(c for c in ascii_text.lower() if c.isalnum())


# ---------------------------------------------------------------- draws
# random.Random.choice(seq) is seq[_randbelow(len(seq))], randrange(a, b) is a + _randbelow(b - a)
# and uniform(a, b) is a + (b - a) * random(). The helpers below make the same draws from the same
# generator (so a seed gives the same directory as the plain calls did) in one Python call instead
# of three; tests/server/test_seed_bulk.py checks them against the plain calls.


def _picker(rng: random.Random, seq: Sequence[T]) -> Callable[[], T]:
    """A function drawing ``rng.choice(seq)``."""
    getrandbits = rng.getrandbits
    n = len(seq)
    k = n.bit_length()

    def pick() -> T:
        r = getrandbits(k)
        while r >= n:
            r = getrandbits(k)
        return seq[r]

    return pick


def _ranged(rng: random.Random, start: int, stop: int) -> Callable[[], int]:
    """A function drawing ``rng.randrange(start, stop)``."""
    getrandbits = rng.getrandbits
    n = stop - start
    k = n.bit_length()

    def draw() -> int:
        r = getrandbits(k)
        while r >= n:
            r = getrandbits(k)
        return start + r

    return draw


def _ip(rng: random.Random) -> str:
    return f"{rng.choice([73, 81, 98, 104, 151, 185, 203])}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _new_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(96):024x}"


def _totp_secrets() -> Iterator[str]:
    """What pyotp.random_base32() makes (32 base32 characters, 160 random bits), a block of them at a time."""
    while True:
        block = base64.b32encode(secrets.token_bytes(20 * 1024)).decode()  # 20 bytes: exactly 32 characters
        yield from (block[i : i + 32] for i in range(0, len(block), 32))


_isoformat = datetime.isoformat


def _stamp(moment: datetime) -> str:
    """A timestamp as SQLAlchemy stores it on SQLite (``YYYY-MM-DD HH:MM:SS.ffffff``); PostgreSQL's COPY reads it."""
    return _isoformat(moment, " ", "microseconds")


# ---------------------------------------------------------------- rows
# Tuples in these column orders (timestamps as _stamp text); columns not named get their declared
# default, or NULL (see _defaults).
USER_COLUMNS = (
    "id",
    "username",
    "email",
    "firstname",
    "lastname",
    "displayname",
    "state",
    "account_locked",
    "created",
    "totp_secret",
    "totp_status",
    "push_status",
    "webauthn_status",
    "mfa_exclusion",
    "mfa_exclusion_until",
)
DEVICE_COLUMNS = (
    "id",
    "user_id",
    "name",
    "state",
    "make",
    "model",
    "os",
    "os_version",
    "app_version",
    "uv_enabled",
    "token_hash",
    "enrolled_at",
    "last_used_at",
    "diagnostics_opt_out",
    "privacy_updated_at",
    "notifications_enabled",
    "diagnostics_dropped",
)
ATTEMPT_COLUMNS = (
    "id",
    "user_id",
    "device_id",
    "resource",
    "status",
    "fraud",
    "user_verified",
    "created_at",
    "expires_at",
    "responded_at",
    "app",
    "location",
    "ip",
)
REPORT_COLUMNS = ("device_id", "received_at", "payload")
_D_ID, _D_OS, _D_OS_VERSION, _D_APP_VERSION, _D_OPT_OUT = (
    DEVICE_COLUMNS.index(c) for c in ("id", "os", "os_version", "app_version", "diagnostics_opt_out")
)


@dataclass
class Batch:
    """Rows for one table, as tuples in ``columns`` order."""

    table: Table
    columns: tuple[str, ...]
    rows: list[Row]


@dataclass
class Complete:
    """In a stream of batches: no more rows for these tables."""

    tables: tuple[Table, ...]


Batches = Generator[Batch | Complete, None, None]


@dataclass
class Summary:
    """What a generation made (complete once its batches are exhausted)."""

    users: int = 0
    devices: int = 0
    attempts: int = 0
    reports: int = 0
    bombing_victim: str | None = None

    def count(self, batch: Batch) -> None:
        name = {users: "users", devices: "devices", push_attempts: "attempts", diagnostics: "reports"}[batch.table]
        setattr(self, name, getattr(self, name) + len(batch.rows))


def _derived_columns() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """folded()'s columns for the login fields and for the name fields, in its order."""
    return (
        tuple(folded({"username": "a", "email": "a@b"})),
        tuple(folded({"firstname": "a", "lastname": "b", "displayname": "a b"})),
    )


def generate(
    users_count: int,
    *,
    rng: random.Random,
    now: datetime,
    taken: set[str] | None = None,
    summary: Summary | None = None,
    batch_size: int = BATCH,
) -> Iterator[Batch | Complete]:
    """The synthetic directory as batches of rows, parents first (no database involved).

    A ``Complete`` follows a table's last batch. ``taken``: usernames in use (added to); ``summary``
    is filled in as the batches are made.
    """
    taken = set() if taken is None else taken
    summary = Summary() if summary is None else summary
    random_ = rng.random
    getrandbits = rng.getrandbits
    first_of, last_of, domain_of = _picker(rng, FIRST), _picker(rng, LAST), _picker(rng, DOMAINS)
    suffix = _ranged(rng, *SUFFIXES)
    exclusion_days = _ranged(rng, -3, 15)  # randint(-3, 14)
    ios_model, android_model = _picker(rng, IOS_MODELS), _picker(rng, ANDROID_MODELS)
    version_of = {"iOS": _picker(rng, IOS_VERSIONS), "Android": _picker(rng, ANDROID_VERSIONS)}
    legacy_of = {os_name: _picker(rng, versions) for os_name, versions in LEGACY.items()}
    app_version_of = _picker(rng, APP_VERSIONS)
    dropped_of = _ranged(rng, 0, 20)
    totp_secret = _totp_secrets().__next__

    login_columns, name_columns = _derived_columns()
    user_columns = USER_COLUMNS + login_columns + name_columns
    # Names, their slugs and folded forms, once per first/last pair (64 x 60 of them), and whether
    # folded() leaves that pair's usernames and emails (ASCII: slugs, digits, domains) as they are.
    names: dict[tuple[str, str], tuple[str, str, tuple[str, ...], bool]] = {}
    all_devices: list[Row] = []
    push_users: list[tuple[str, str]] = []
    add_push_user = push_users.append
    push_share, webauthn_share = 0.60 / 0.85, 0.10 / 0.85
    age_span = 3 * 365 - 1  # uniform(1, 3 * 365)

    for first_user in range(0, users_count, batch_size):
        user_rows: list[Row] = []
        device_rows: list[Row] = []
        add_user, add_device = user_rows.append, device_rows.append
        for _ in range(min(batch_size, users_count - first_user)):
            first, last = first_of(), last_of()
            named = names.get((first, last))
            if named is None:
                displayname = f"{first} {last}"
                derived = folded({"firstname": first, "lastname": last, "displayname": displayname})
                base = f"{_slug(first)}.{_slug(last)}"
                probe = f"{base}0123456789@{'.'.join(DOMAINS)}"
                as_is = login_columns == ("username_ci", "email_ci") and folded(
                    {"username": probe, "email": probe}
                ) == {"username_ci": probe, "email_ci": probe}
                named = names[first, last] = (base, displayname, tuple(derived[c] for c in name_columns), as_is)
            base, displayname, name_values, as_is = named
            username = base
            while username in taken:  # about 1.003 tries a user at 1,000,000 users (3,840 bases x 99,998 suffixes)
                username = f"{base}{suffix()}"
            taken.add(username)
            user_id = f"{getrandbits(96):024x}"
            created = now - timedelta(days=1 + age_span * random_())
            roll = random_()
            state = "ACTIVATED" if roll < 0.90 else ("STAGED" if roll < 0.96 else "SUSPENDED")
            email = f"{username}@{domain_of()}"
            locked = random_() < 0.01
            has_push = has_totp = has_webauthn = exclusion = False
            exclusion_until = None
            if random_() >= 0.15:
                # Conditional on having some MFA (85%). Users who drew nothing fall back to TOTP,
                # so TOTP's own draw is lower: overall shares come out near 60/50/10.
                has_push = random_() < push_share
                has_totp = random_() < 0.444
                has_webauthn = random_() < webauthn_share
                if not (has_push or has_totp or has_webauthn):
                    has_totp = True
            elif random_() < 0.15:
                exclusion, exclusion_until = True, _stamp(now + timedelta(days=exclusion_days()))
            if as_is:
                logins = (username, email)
            else:
                derived = folded({"username": username, "email": email})
                logins = tuple(derived[c] for c in login_columns)
            if has_push:
                # The device's draws follow its user's.
                if random_() < 0.55:
                    os_name, make, model = "iOS", "Apple", ios_model()
                else:
                    os_name = "Android"
                    make, model = android_model()
                os_version = legacy_of[os_name]() if random_() < 0.01 else version_of[os_name]()
                enrolled = created + (now - created) * (0.5 * random_())  # uniform(0.0, 0.5)
                opted_out = random_() < 0.20
                device_id = f"{getrandbits(96):024x}"
                enrolled_at = _stamp(enrolled)
                add_device(
                    (
                        device_id,
                        user_id,
                        model,
                        "active" if random_() > 0.02 else "inactive",
                        make,
                        model,
                        os_name,
                        os_version,
                        app_version_of(),
                        random_() < 0.55,
                        digest(secrets.token_urlsafe(16)),
                        enrolled_at,
                        _stamp(enrolled + (now - enrolled) * (0.5 + 0.5 * random_())),
                        opted_out,
                        enrolled_at if opted_out else None,
                        random_() > 0.05,
                        dropped_of() if opted_out else 0,
                    )
                )
                add_push_user((user_id, device_id))
            add_user(
                (
                    user_id,
                    username,
                    email,
                    first,
                    last,
                    displayname,
                    state,
                    locked,
                    _stamp(created),
                    totp_secret() if has_totp else None,
                    "ENROLLED" if has_totp else "NOT_ENROLLED",
                    "ENROLLED" if has_push else "NOT_ENROLLED",
                    "ENROLLED" if has_webauthn else "NOT_ENROLLED",
                    exclusion,
                    exclusion_until,
                    *logins,
                    *name_values,
                )
            )
        all_devices.extend(device_rows)
        for batch in (Batch(users, user_columns, user_rows), Batch(devices, DEVICE_COLUMNS, device_rows)):
            summary.count(batch)
            yield batch
    summary.bombing_victim = push_users[0][0] if push_users else None
    # The loader can index these while the history is being made.
    yield Complete((users, devices))

    for rows in _batches(_reports(rng, all_devices, now), batch_size):
        batch = Batch(diagnostics, REPORT_COLUMNS, rows)
        summary.count(batch)
        yield batch
    yield Complete((diagnostics,))
    del all_devices
    attempts = itertools.chain(
        _attempts(rng, push_users, now),
        _bombing(rng, *push_users[0], now) if push_users else (),
    )
    for rows in _batches(attempts, batch_size):
        batch = Batch(push_attempts, ATTEMPT_COLUMNS, rows)
        summary.count(batch)
        yield batch
    yield Complete((push_attempts,))


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _reports(rng: random.Random, device_rows: list[Row], now: datetime) -> Iterator[Row]:
    """Diagnostics reports as the app sends them: app and OS facts, no user information."""
    random_ = rng.random
    event_of = _picker(rng, ["push_received_late", "app_start", "crash", "notification_permission_denied"])
    latency_of = _ranged(rng, 80, 4000)
    for device in device_rows:
        if device[_D_OPT_OUT] or not random_() < 0.3:
            continue
        payload = {
            "appVersion": device[_D_APP_VERSION],
            "os": f"{device[_D_OS]} {device[_D_OS_VERSION]}",
            "event": event_of(),
            "latencyMs": latency_of(),
        }
        yield device[_D_ID], _stamp(now - timedelta(hours=72 * random_())), dumps(payload)  # uniform(0, 72)


def _attempts(rng: random.Random, push_users: list[tuple[str, str]], now: datetime) -> Iterator[Row]:
    """Each push user's history over the last 30 days: what _attempt makes, drawn the same way."""
    random_ = rng.random
    getrandbits = rng.getrandbits
    count_of = _picker(rng, (0, 1, 1, 2, 3, 4, 6))
    resource_of, app_of, location_of = _picker(rng, RESOURCES), _picker(rng, APPS), _picker(rng, LOCATIONS)
    ip_head = _picker(rng, [73, 81, 98, 104, 151, 185, 203])
    octet, last_octet = _ranged(rng, 0, 256), _ranged(rng, 1, 255)
    span = 30 * 24 - 0.02  # uniform(0.02, 30 * 24) hours ago
    minute = timedelta(seconds=60)
    for user_id, device_id in push_users:
        for _ in range(count_of()):
            created = now - timedelta(hours=0.02 + span * random_())
            roll = random_()
            status = "approved" if roll < 0.75 else "denied" if roll < 0.82 else "expired" if roll < 0.95 else "blocked"
            responded = (
                _stamp(created + timedelta(seconds=2 + 38 * random_())) if status in ("approved", "denied") else None
            )
            created_at = _stamp(created)
            yield (
                f"{getrandbits(96):024x}",
                user_id,
                device_id,
                resource_of(),
                status,
                status == "denied" and random_() < 0.2,
                status == "approved" and random_() < 0.6,
                created_at,
                created_at if status == "blocked" else _stamp(created + minute),
                responded,
                app_of(),
                location_of(),
                f"{ip_head()}.{octet()}.{octet()}.{last_octet()}",
            )


def _attempt(
    rng: random.Random,
    user_id: str,
    device_id: str,
    created: datetime,
    status: str | None = None,
    resource: str | None = None,
    location: str | None = None,
) -> dict[str, Any]:
    if status is None:
        roll = rng.random()
        status = "approved" if roll < 0.75 else "denied" if roll < 0.82 else "expired" if roll < 0.95 else "blocked"
    responded = created + timedelta(seconds=rng.uniform(2, 40)) if status in ("approved", "denied") else None
    # Drawn in this order (the keys' order): a seed's history depends on it.
    return {
        "id": _new_id(rng),
        "user_id": user_id,
        "username": None,
        "device_id": device_id,
        "resource": resource or rng.choice(RESOURCES),
        "status": status,
        "fraud": status == "denied" and rng.random() < 0.2,
        "user_verified": status == "approved" and rng.random() < 0.6,
        "created_at": created,
        "expires_at": created if status == "blocked" else created + timedelta(seconds=60),
        "responded_at": responded,
        "app": rng.choice(APPS),
        "location": location or rng.choice(LOCATIONS),
        "ip": _ip(rng),
    }


def _bombing(rng: random.Random, user_id: str, device_id: str, now: datetime) -> Iterator[Row]:
    """One user hammered with pushes for a VPN from abroad: mostly blocked by the cap, some denied as fraud."""
    start = now - timedelta(minutes=25)
    for i in range(48):
        at = start + timedelta(seconds=i * rng.uniform(15, 25))
        status = "denied" if i % 8 == 0 else ("expired" if i % 8 == 4 else "blocked")
        row = _attempt(rng, user_id, device_id, at, status=status, resource="VPN", location="Unknown (Tor exit node)")
        row["fraud"] = status == "denied"
        yield tuple(_stamp(row[c]) if isinstance(row[c], datetime) else row[c] for c in ATTEMPT_COLUMNS)


# ---------------------------------------------------------------- loading


def seed_directory(store: Store, users_count: int, *, rng_seed: int = 1, clock: Clock | None = None) -> dict[str, Any]:
    """Add ``users_count`` synthetic users (with devices and push history) to ``store``."""
    if users_count < 0:
        raise ValueError("users: must be 0 or more")
    started = time.perf_counter()
    rng = random.Random(rng_seed)
    now = (clock or Clock()).now()
    taken: set[str] = set()
    with store.read() as conn:
        held = conn.execute(select(func.count()).select_from(users)).scalar_one()
        if held:
            taken = {u for (u,) in conn.execute(select(users.c.username_ci))}
            # Ids come from the seeded RNG: move a re-seed onto a different stream.
            rng = random.Random(f"{rng_seed}:{len(taken)}")

    summary = Summary()
    sealing = _sealing(store)
    # closing(): a failed load stops the process making the rows at once.
    with contextlib.closing(
        _rows_for(users_count, rng=rng, now=now, taken=taken, summary=summary, sealing=sealing)
    ) as batches:
        # Bulk load (indexes built after) into an empty directory or one that at least doubles; a small
        # re-seed goes through the live indexes.
        load(store, batches, bulk=users_count > 0 and users_count >= held * BULK_RATIO, first=not held)
    if not store.is_sqlite and users_count >= ANALYZE_AFTER:
        # PostgreSQL plans from statistics and counts through the visibility map: after a bulk
        # load, refresh both now rather than whenever autovacuum comes by.
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE) users, devices, push_attempts, diagnostics")
    return {
        "users": summary.users,
        "devices": summary.devices,
        "pushAttempts": summary.attempts,
        "diagnosticsReports": summary.reports,
        "bombingVictim": summary.bombing_victim,
        "seconds": round(time.perf_counter() - started, 2),
    }


@dataclass(frozen=True)
class _Sealing:
    """Where the key comes from and which one seals: TOTP secrets go in encrypted, under the database's
    current key (secretbox.py). Picklable, so the process making the rows can seal them itself."""

    source: secretbox.KeySource
    kid: str

    def sealer(self) -> Callable[[str, str], str]:
        """``seal(user_id, secret)``."""
        box, kid = secretbox.SecretBox(self.source), self.kid
        box.key(kid)  # a key gone since is refused before any row is made
        return lambda user_id, secret: box.seal(user_id, secret, kid)


def _sealing(store: Store) -> _Sealing:
    box = secretbox.box_of(store)
    with store.write() as conn:
        kid = secretbox.ensure_current(conn, box, datetime.utcnow())
    box.key(kid)  # a missing key is refused now, before any row is made
    return _Sealing(box.source, kid)


def _sealed(batches: Iterable[Batch | Complete], seal: Callable[[str, str], str]) -> Batches:
    """``batches`` with the users' TOTP secrets encrypted (each for its user: the user id is bound in)."""
    at, id_at = USER_COLUMNS.index("totp_secret"), USER_COLUMNS.index("id")
    for item in batches:
        if isinstance(item, Batch) and item.table is users:
            item.rows = [
                row if row[at] is None else (*row[:at], seal(row[id_at], row[at]), *row[at + 1 :]) for row in item.rows
            ]
        yield item


def load(store: Store, batches: Iterable[Batch | Complete], *, bulk: bool, first: bool = False) -> None:
    """Insert ``batches`` (parents before their children) in one write transaction.

    ``bulk``: the seeded tables' declared indexes that the database has (``store.metadata``'s, so
    nothing is listed twice) are dropped first and built once a table is complete, and the users
    search index likewise through ``search_index``. Otherwise rows go through the live indexes.
    """
    with _write(store, bulk=bulk, first=first) as conn:
        if bulk:
            search_index.drop_for_bulk_load(conn)
        dropped = {table: _existing_indexes(conn, table) for table in SEEDED} if bulk else {}
        for index in itertools.chain(*dropped.values()):
            conn.execute(DropIndex(index))

        def complete(table: Table) -> None:
            if table not in dropped:
                return
            for index in dropped.pop(table):
                conn.execute(CreateIndex(index))
            if table is users:
                search_index.restore_after_bulk_load(conn)

        for item in batches:
            if isinstance(item, Complete):
                for table in item.tables:
                    complete(table)
            else:
                _insert(conn, item)
        for table in list(dropped):
            complete(table)


@contextlib.contextmanager
def _write(store: Store, *, bulk: bool, first: bool = False) -> Iterator[Connection]:
    """``store.write()``, with the bulk-load settings for a bulk load.

    SQLite's PRAGMAs are set on the connection before its transaction begins (``synchronous`` cannot
    change inside one) and put back after it commits, so the pool gets the connection as it was.
    """
    if not bulk:
        with store.write() as conn:
            yield conn
        return
    if not store.is_sqlite:
        with store.write() as conn:
            for name, value in POSTGRES_LOAD_SETTINGS.items():
                conn.exec_driver_sql(f"SET LOCAL {name} = '{value}'")
            yield conn
        return
    if first:
        store.engine.dispose()  # the pool's idle connections would keep the file in WAL mode (see below)
    with store.engine.connect() as conn:
        driver: Any = conn.connection.driver_connection  # outside SQLAlchemy's transaction: no BEGIN yet
        before = {name: driver.execute(f"PRAGMA {name}").fetchone()[0] for name in SQLITE_LOAD_PRAGMAS}
        journal = first and _journal_in_memory(driver)
        try:
            for pragma, level in SQLITE_LOAD_PRAGMAS.items():
                driver.execute(f"PRAGMA {pragma}={int(level)}")
            conn.execution_options(sqlite_begin="IMMEDIATE")  # as store.write(): the write lock from the start
            with conn.begin():
                yield conn
        finally:
            for pragma, level in before.items():
                driver.execute(f"PRAGMA {pragma}={int(level)}")
            if journal:
                with contextlib.suppress(sqlite3.OperationalError):  # else the next connection sets it (store.py)
                    driver.execute("PRAGMA journal_mode=WAL")


def _journal_in_memory(driver: Any) -> bool:
    """The first load into a database (no users yet) writes each page once, to the file, instead of
    to the WAL and again at the checkpoint: the rollback journal in memory for its transaction.

    A failed load still rolls back (the journal holds the few pages the file had); only the process
    dying mid-load (kill -9, power cut) can leave the file damaged, and a first seed is simply run
    again into a new file. A seed into a directory with users keeps WAL. Leaving WAL needs the file
    to itself: when another connection has it open (a running ``serve``), the load stays in WAL.
    """
    timeout = driver.execute("PRAGMA busy_timeout").fetchone()[0]
    driver.execute("PRAGMA busy_timeout=0")  # ask once: a file in use is answered at once
    try:
        return str(driver.execute("PRAGMA journal_mode=MEMORY").fetchone()[0]).lower() == "memory"
    except sqlite3.OperationalError:
        return False
    finally:
        driver.execute(f"PRAGMA busy_timeout={int(timeout)}")


SEEDED = (users, devices, push_attempts, diagnostics)


def _existing_indexes(conn: Connection, table: Table) -> list[Index]:
    """The table's declared indexes that this database has (a dialect's own ones only where made)."""
    present = {ix["name"] for ix in inspect(conn).get_indexes(table.name)}
    return sorted((ix for ix in table.indexes if ix.name in present), key=lambda ix: ix.name or "")


def _default(column: Column[Any]) -> Any:
    """A column's declared scalar default (only such columns are in _defaults)."""
    return column.default.arg if isinstance(column.default, ScalarElementColumnDefault) else None


@functools.cache
def _defaults(table: Table, columns: tuple[str, ...]) -> tuple[Column[Any], ...]:
    """The columns ``columns`` leaves out that have a declared default (the rest are NULL)."""
    left = []
    for column in table.c:
        if column.name in columns:
            continue
        default = column.default
        if default is not None and default.is_scalar:
            left.append(column)
        elif not (column.nullable or (column.primary_key and column.autoincrement in (True, "auto"))):
            raise ValueError(f"seed: no value for {table.name}.{column.name}")
    return tuple(left)


def _insert(conn: Connection, batch: Batch) -> None:
    defaulted = _defaults(batch.table, batch.columns)
    quote = conn.dialect.identifier_preparer.quote
    table = quote(batch.table.name)
    columns = ", ".join(quote(name) for name in batch.columns + tuple(c.name for c in defaulted))
    driver: Any = conn.connection.driver_connection
    if conn.dialect.name == "sqlite":
        # Defaults as literals in the statement: nothing to bind for them.
        values = ["?"] * len(batch.columns) + [
            str(literal(_default(c), c.type).compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            for c in defaulted
        ]
        cursor = driver.cursor()
        try:
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(values)})", batch.rows)
        finally:
            cursor.close()
        return
    extra = tuple(_default(c) for c in defaulted)
    with driver.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        write = copy.write_row
        for row in batch.rows:
            write(row + extra if extra else row)


APART_FROM = 50_000  # users: from this many up, a child process makes the rows while this one loads them


def _rows_for(
    users_count: int,
    *,
    rng: random.Random,
    now: datetime,
    taken: set[str],
    summary: Summary,
    sealing: _Sealing,
) -> Batches:
    """The rows to load, TOTP secrets sealed: made here, or (many) by a child process, which seals them too."""
    if users_count < APART_FROM:
        seal = sealing.sealer()
        return _sealed(generate(users_count, rng=rng, now=now, taken=taken, summary=summary), seal)
    return _generated_apart(users_count, rng=rng, now=now, taken=taken, summary=summary, sealing=sealing)


# The child's program: the parent's import path first (it may run from a checkout), then the rows.
_CHILD = (
    "import pickle, sys; sys.path[:0] = pickle.load(sys.stdin.buffer); "
    "from console.server.seed import _generate_to_stdout; _generate_to_stdout()"
)


def _generated_apart(
    users_count: int,
    *,
    rng: random.Random,
    now: datetime,
    taken: set[str],
    summary: Summary,
    sealing: _Sealing,
) -> Batches:
    """generate()'s batches, made (and their TOTP secrets sealed) by a child process: generating and
    loading take a core each. Loading is the longer part, so the child seals (its key from the same
    source as this process's: the key file, or the inherited environment).

    A thread would not do (the GIL would hand the loader back only every switch interval), nor
    multiprocessing's spawn (it runs the caller's main module again in the child).
    """
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    tables = {table.name: table for table in SEEDED}
    try:
        with child.stdin:
            pickle.dump(sys.path, child.stdin)
            pickle.dump((users_count, rng, now, taken, sealing), child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        read = child.stdout.read
        while True:
            head = read(8)
            if len(head) < 8:
                raise RuntimeError(f"seed: the process making the rows ended early (exit code {child.wait()})")
            message = pickle.loads(read(int.from_bytes(head, "little")))
            if message[0] == "batch":
                _, name, columns, rows = message
                yield Batch(tables[name], columns, rows)
            elif message[0] == "complete":
                yield Complete(tuple(tables[name] for name in message[1]))
            elif message[0] == "done":
                for key, value in vars(message[1]).items():
                    setattr(summary, key, value)
                return
            else:
                raise RuntimeError(f"seed: making the rows failed:\n{message[1]}")
    finally:
        if child.poll() is None:  # the load failed or was abandoned: the rest of the rows are not wanted
            child.kill()
        child.wait()
        child.stdout.close()


def _generate_to_stdout(depth: int = 4) -> None:
    """The child of _generated_apart: length-prefixed pickles ("batch", table, columns, rows) and
    ("complete", tables)... then ("done", summary).

    A thread writes while the main one generates (the write lets go of the GIL).
    """
    users_count, rng, now, taken, sealing = pickle.load(sys.stdin.buffer)
    out = sys.stdout.buffer
    pending: queue.Queue[bytes | None] = queue.Queue(depth)

    def write() -> None:
        while (data := pending.get()) is not None:
            out.write(len(data).to_bytes(8, "little"))
            out.write(data)
        out.flush()

    writer = threading.Thread(target=write, name="seed-write")
    writer.start()

    def send(message: Row) -> None:
        pending.put(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    try:
        summary = Summary()
        seal = sealing.sealer()
        for item in _sealed(generate(users_count, rng=rng, now=now, taken=taken, summary=summary), seal):
            if isinstance(item, Complete):
                send(("complete", [table.name for table in item.tables]))
            else:
                send(("batch", item.table.name, item.columns, item.rows))
        send(("done", summary))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        send(("error", traceback.format_exc()))
    finally:
        pending.put(None)
        writer.join()
