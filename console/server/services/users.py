"""The user directory: listing, search, filters, profile changes and MFA resets.

Enrollment statuses that depend on time (a grace period or an enrolment code
running out) are computed in SQL from the stored state and the server clock,
so that the same rule serves both the filters and the output.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    column,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    table,
    true,
    union_all,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from ...models import (
    EnrollmentStatus,
    Mfa,
    MfaEnrollment,
    Page,
    PushBlock,
    ResetMfaRequest,
    SystemUser,
    SystemUserCreate,
    SystemUserUpdate,
    UserState,
)
from .. import search_index
from ..clock import from_wire, to_wire
from ..errors import ApiProblem, bad_request, conflict, not_found
from ..store import PUSH_IS_PENDING, SEARCH_INDEX_TABLE, Store, devices, enrollment_codes, folded, push_attempts, users
from . import paging
from .audit import keep_target_name, record
from .common import Principal, new_id
from .lockout import CLEAR, TotpFailures, totp_lock
from .paging import Key, beyond
from .settings import read_settings

ENROLLED = EnrollmentStatus.ENROLLED.value
DEFAULT_GRACE_DAYS = 7
MAX_GRACE_DAYS = 365  # same bound as exclusionDays: no open-ended MFA exemptions
# ------------------------------------------------------------ status rules


def push_status_expr(now: datetime) -> ColumnElement[str]:
    return case(
        (
            and_(users.c.push_status == EnrollmentStatus.PENDING_ACTIVATION.value, users.c.push_pending_until <= now),
            literal(EnrollmentStatus.ENROLLMENT_EXPIRED.value),
        ),
        else_=users.c.push_status,
    )


def overall_status_expr(now: datetime) -> ColumnElement[str]:
    any_enrolled = or_(
        users.c.totp_status == ENROLLED, users.c.push_status == ENROLLED, users.c.webauthn_status == ENROLLED
    )
    in_grace = and_(
        users.c.mfa_exclusion == true(),
        or_(users.c.mfa_exclusion_until.is_(None), users.c.mfa_exclusion_until > now),
    )
    grace_over = and_(users.c.mfa_exclusion == true(), users.c.mfa_exclusion_until <= now)
    return case(
        (any_enrolled, literal(ENROLLED)),
        (in_grace, literal(EnrollmentStatus.IN_ENROLLMENT.value)),
        (grace_over, literal(EnrollmentStatus.ENROLLMENT_EXPIRED.value)),
        (
            push_status_expr(now) == EnrollmentStatus.PENDING_ACTIVATION.value,
            literal(EnrollmentStatus.PENDING_ACTIVATION.value),
        ),
        else_=literal(EnrollmentStatus.NOT_ENROLLED.value),
    )


def push_block_until_expr(now: datetime) -> ColumnElement[Any]:
    """The end of the user's push block while it is in force, else NULL (compared with the server clock)."""
    return case((users.c.push_blocked_until > now, users.c.push_blocked_until), else_=None)


def _user_columns(now: datetime) -> list[Any]:
    return [
        users.c.id,
        users.c.username,
        users.c.email,
        users.c.firstname,
        users.c.lastname,
        users.c.displayname,
        users.c.state,
        users.c.account_locked,
        users.c.created,
        users.c.totp_status,
        users.c.webauthn_status,
        users.c.mfa_exclusion,
        users.c.mfa_exclusion_until,
        push_status_expr(now).label("push_status_now"),
        overall_status_expr(now).label("overall_status_now"),
        users.c.totp_failures,
        users.c.totp_failure_at,
        users.c.totp_locked_until,
        users.c.totp_lockouts,
        push_block_until_expr(now).label("push_blocked_now"),
        users.c.push_blocked_by,
        users.c.push_blocked_at,
        users.c.require_user_verification,
    ]


def push_block_from(until: datetime | None, by: str | None, at: datetime | None) -> PushBlock | None:
    if until is None:
        return None
    return PushBlock(blockedUntil=to_wire(until), blockedBy=by or "", blockedAt=to_wire(at or until))


def _to_user(row: Any, max_failures: int, now: datetime) -> SystemUser:
    overall = row.overall_status_now
    return SystemUser(
        id=row.id,
        username=row.username,
        email=row.email,
        firstname=row.firstname,
        lastname=row.lastname,
        displayname=row.displayname,
        state=row.state,
        account_locked=bool(row.account_locked),
        created=to_wire(row.created),
        totp_enabled=row.totp_status == ENROLLED,
        mfa=Mfa(
            configured=overall == ENROLLED,
            exclusion=bool(row.mfa_exclusion),
            exclusionUntil=to_wire(row.mfa_exclusion_until),
        ),
        mfaEnrollment=MfaEnrollment(
            overallStatus=overall,
            totpStatus=row.totp_status,
            pushStatus=row.push_status_now,
            webAuthnStatus=row.webauthn_status,
        ),
        totpLock=totp_lock(
            TotpFailures.of(row.totp_failures, row.totp_failure_at, row.totp_locked_until, row.totp_lockouts),
            max_failures,
            now,
        ),
        pushBlock=push_block_from(row.push_blocked_now, row.push_blocked_by, row.push_blocked_at),
        requireUserVerification=bool(row.require_user_verification),
    )


def _max_failures(conn: Connection) -> int:
    return read_settings(conn)[0].totp.maxFailures


# ------------------------------------------------------- filters and sorts

_OPS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "$eq": lambda a, b: a == b,
    "$ne": lambda a, b: a != b,
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}
_STATUS_VALUES = {s.value for s in EnrollmentStatus}


def _field_expr(field: str, now: datetime) -> tuple[ColumnElement[Any], str]:
    """(SQL expression, kind) for a filterable/sortable field, or a 400 naming it."""
    if field in ("username", "email"):
        return users.c[f"{field}_ci"], "text_ci"
    if field in ("firstname", "lastname", "displayname"):
        return users.c[field], "text"
    if field == "state":
        return users.c.state, "state"
    if field == "account_locked":
        return users.c.account_locked, "bool"
    if field == "totp_enabled":
        return (users.c.totp_status == ENROLLED), "bool"
    if field == "created":
        return users.c.created, "datetime"
    status_fields = {
        "mfaEnrollment.overallStatus": overall_status_expr(now),
        "mfaEnrollment.pushStatus": push_status_expr(now),
        "mfaEnrollment.totpStatus": users.c.totp_status,
        "mfaEnrollment.webAuthnStatus": users.c.webauthn_status,
    }
    if field in status_fields:
        return status_fields[field], "status"
    if field == "_id":
        return users.c.id, "text"
    raise bad_request(f"unknown filter field {field!r}")


def _coerce(field: str, kind: str, raw: Any) -> Any:
    if kind == "text_ci":
        return str(raw).casefold()
    if kind == "text":
        return str(raw)
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("true", "1"):
            return True
        if str(raw).lower() in ("false", "0"):
            return False
        raise bad_request(f"filter {field}: {raw!r} is not true or false")
    if kind == "datetime":
        try:
            value = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
            return from_wire(value)
        except ValueError:
            raise bad_request(f"filter {field}: {raw!r} is not an ISO 8601 date-time from 1970 to 9000") from None
    if kind == "state":
        if str(raw) not in {s.value for s in UserState}:
            raise bad_request(f"filter {field}: {raw!r} is not one of {', '.join(s.value for s in UserState)}")
        return str(raw)
    if kind == "status":
        if str(raw) not in _STATUS_VALUES:
            raise bad_request(f"filter {field}: {raw!r} is not an enrollment status")
        return str(raw)
    raise bad_request(f"filter {field}: unsupported")  # pragma: no cover


def _condition(field: str, op: str, raw: Any, now: datetime) -> ColumnElement[bool]:
    expr, kind = _field_expr(field, now)
    if op not in _OPS:
        raise bad_request(f"unknown filter operator {op!r} for field {field!r} (use one of {', '.join(_OPS)})")
    if kind == "bool" and op not in ("$eq", "$ne"):
        raise bad_request(f"filter operator {op!r} does not apply to the true/false field {field!r} (use $eq or $ne)")
    if isinstance(raw, (dict, list)) or raw is None:
        raise bad_request(f"filter {field}: the value must be a string, number or true/false")
    value = _coerce(field, kind, raw)
    if isinstance(value, str) and "\x00" in value:
        raise bad_request(f"filter {field}: the value must not contain NUL characters")
    return _OPS[op](expr, value)


MAX_FILTER_DEPTH = 8
MAX_FILTER_TERMS = 64


def parse_filter_strings(filters: Iterable[str]) -> list[tuple[str, str, str]]:
    """``field:$op:value`` strings -> triples; the value may itself contain colons."""
    filters = list(filters)
    if len(filters) > MAX_FILTER_TERMS:
        raise bad_request(f"filter: more than {MAX_FILTER_TERMS} conditions")
    parsed = []
    for text in filters:
        parts = text.split(":", 2)
        if len(parts) != 3 or not parts[0]:
            raise bad_request(f"filter {text!r} is not of the form field:$op:value")
        parsed.append((parts[0], parts[1], parts[2]))
    return parsed


def parse_filter_body(spec: Any, _depth: int = 0) -> list[tuple[str, str, Any]]:
    """The search body's filter: ``{field: value}``, ``{field: {"$op": value}}`` or ``{"and": [...]}``."""
    if _depth > MAX_FILTER_DEPTH:
        raise bad_request(f"filter: nested more than {MAX_FILTER_DEPTH} levels deep")
    if spec is None:
        return []
    if isinstance(spec, list):
        listed = [t for item in spec for t in parse_filter_body(item, _depth + 1)]
        if len(listed) > MAX_FILTER_TERMS:
            raise bad_request(f"filter: more than {MAX_FILTER_TERMS} conditions")
        return listed
    if not isinstance(spec, dict):
        raise bad_request("filter must be an object")
    triples: list[tuple[str, str, Any]] = []
    for field, value in spec.items():
        if field in ("and", "$and"):
            triples.extend(parse_filter_body(value, _depth + 1))
        elif isinstance(value, dict):
            for op, operand in value.items():
                triples.append((field, op, operand))
        else:
            triples.append((field, "$eq", value))
    return triples


# Names sort by their folded keys (accents and case folded), the other name breaking ties.
_NAME_SORTS = {
    "lastname": (users.c.lastname_sort, users.c.firstname_sort),
    "firstname": (users.c.firstname_sort, users.c.lastname_sort),
}


def _sort_tokens(sort: str | None) -> list[str]:
    return (sort or "").replace(",", " ").split()


def _sort_keys(sort: str | None, now: datetime) -> list[Key]:
    keys: list[Key] = []
    descending = False
    for token in _sort_tokens(sort):
        descending = token.startswith("-")
        field = token.lstrip("-+")
        if field in _NAME_SORTS:
            exprs: tuple[Any, ...] = _NAME_SORTS[field]
        else:
            try:
                exprs = (_field_expr(field, now)[0],)
            except ApiProblem:
                raise bad_request(f"unknown sort field {field!r}") from None
        keys.extend(Key(e, descending) for e in exprs)
    # A stable tiebreak keeps pages from overlapping; it follows the last key's direction,
    # so a reversed sort is exactly the reverse order (and walks the (key, id) index backwards).
    keys.append(Key(users.c.id, descending))
    return keys


def _like_escape(term: str) -> str:
    return term.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ------------------------------------------------------------------ search
#
# Words of 3+ characters match as substrings of a selected folded field, through the trigram index
# (FTS5 on SQLite, pg_trgm on PostgreSQL); a word of 1-2 characters in a several-word query matches
# as a prefix of a field (a range on the field's btree). A lone word of 1-2 characters keeps its
# substring meaning (no index can answer it; every existing client relies on it). Every word must
# match some field. Results: the user whose username or email is exactly the query first, then
# usernames starting with the first word, then the rest; by username within each group.

SEARCH_FIELDS = ("username", "email", "firstname", "lastname")  # a search's fields unless it names them
SHORT = 3  # words shorter than this have no trigram
EXACT, PREFIX, REST = 0, 1, 2
# Plan choice: walk the username index (checking each row) when matches are dense enough that
# the page is found within a few thousand rows; otherwise read every match and sort them.
WALK_FACTOR = 1
FILTERED_SPARSE_MAX = 30_000  # FTS candidates read whole when filters or prefix words may thin them out
VARIANTS_MAX = 16  # case variants of a prefix walked separately (each an index range)
FTS_WALK_MAX = 40_000  # SQLite: a walk of a search with at most this many matches tests rowids, not names
# Searches whose capped walk fell short: where their matches begin in username order (the walk starts there,
# see _walk_start), or None: read whole. By _count_key, each exact at one version.
_WALK_STARTS = search_index.VersionedCache[str | None](256)
WALK_CAP = 15_000  # names a walk passes at most before reading the matches whole (~2-4 us each)
WALK_CAP_FTS = 20_000  # the same for a walk that tests rowids (~0.3 us each)

_fts = table(SEARCH_INDEX_TABLE, column("rowid"))
_users_rowid: ColumnElement[Any] = literal_column("users.rowid")


@dataclass(frozen=True)
class _Search:
    words: tuple[str, ...]  # case-folded
    fields: tuple[str, ...]
    exact: str  # the whole query, folded and trimmed: an exact username or email sorts first
    # SQLite: indexed words that every user has in the request's snapshot (by kept counts: list_users), left
    # out of the FTS query, which then means the same set without reading their long lists (``example``).
    everyone: tuple[str, ...] = ()

    @property
    def substring_words(self) -> tuple[str, ...]:
        if len(self.words) == 1:
            return self.words
        return tuple(w for w in self.words if len(w) >= SHORT)

    @property
    def prefix_words(self) -> tuple[str, ...]:
        return () if len(self.words) == 1 else tuple(w for w in self.words if len(w) < SHORT)

    @property
    def indexed_words(self) -> tuple[str, ...]:
        return tuple(w for w in self.substring_words if len(w) >= SHORT)

    @property
    def lead(self) -> str:
        return self.words[0]


def _parse_search(search: str | None, fields: Sequence[str]) -> _Search | None:
    if not search:
        return None
    if "\x00" in search:
        raise bad_request("search: must not contain NUL characters")
    folded_term = search.casefold()
    words = tuple(folded_term.split()) or (folded_term,)  # only spaces: that text itself, as before
    return _Search(words, tuple(dict.fromkeys(fields)), folded_term.strip() or folded_term)


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (code point order)."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if 0xD800 <= last < 0xE000:
            last = 0xE000
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return None


def _starts_with(col: Any, prefix: str) -> ColumnElement[bool]:
    """``col`` starts with ``prefix``: a range, which a btree answers on both stores."""
    upper = _successor(prefix)
    return and_(col >= prefix, col < upper) if upper is not None else col >= prefix


def _contains_word(word: str, fields: Sequence[str], names: Any = users.c) -> ColumnElement[bool]:
    pattern = f"%{_like_escape(word)}%"
    return or_(*(names[f"{f}_ci"].like(pattern, escape="\\") for f in fields))


def _starts_word(word: str, fields: Sequence[str], names: Any = users.c) -> ColumnElement[bool]:
    return or_(*(_starts_with(names[f"{f}_ci"], word) for f in fields))


def _row_match(s: _Search, names: Any = users.c) -> ColumnElement[bool]:
    """The search as a test of one row (LIKE on its folded fields): for walks along an index, and (``names``:
    the change log's columns) for the logged names that bring a kept count forward."""
    return and_(
        *(_contains_word(w, s.fields, names) for w in s.substring_words),
        *(_starts_word(w, s.fields, names) for w in s.prefix_words),
    )


def _fts_query(s: _Search) -> str:
    columns = " ".join(f"{f}_ci" for f in s.fields)
    words = [w for w in s.indexed_words if w not in s.everyone]
    return " AND ".join(f'{{{columns}}} : "{w.replace(chr(34), chr(34) * 2)}"' for w in words)


def _fts_match(s: _Search) -> ColumnElement[bool]:
    """``users_search MATCH <the search>``; the query typed, as a word's own type (Unicode for ``zoë``) would
    make another statement to compile."""
    return literal_column(SEARCH_INDEX_TABLE).op("MATCH")(literal(_fts_query(s), String))


def _uses_fts(conn: Connection, s: _Search) -> bool:
    return conn.dialect.name == "sqlite" and bool(s.indexed_words)


def _index_match(conn: Connection, s: _Search, fts_rows: int | None = None) -> ColumnElement[bool]:
    """The search as a set read from the indexes: for counting, and for reading sparse matches whole."""
    if not _uses_fts(conn, s):
        return _row_match(s)  # PostgreSQL: the trigram GIN index serves these LIKEs
    # With prefix words too, start from whichever side is smaller: the FTS matches (each row then
    # checked), or the prefix ranges (each rowid looked up in the FTS matches). "+rowid" keeps
    # SQLite from driving the query by the FTS set.
    rowid = _users_rowid
    if s.prefix_words and _prefix_rows(conn, s) < (_fts_rows(conn, s) if fts_rows is None else fts_rows):
        rowid = literal_column("+users.rowid")
    in_fts = rowid.in_(select(_fts.c.rowid).where(_fts_match(s)))
    return and_(in_fts, *(_starts_word(w, s.fields) for w in s.prefix_words))


def _fts_rows(conn: Connection, s: _Search) -> int:
    query = select(func.count()).select_from(_fts).where(_fts_match(s))
    return conn.execute(query).scalar_one()


def _prefix_rows(conn: Connection, s: _Search) -> int:
    """Rows in the smallest prefix word's ranges (index-only counts)."""
    return min(
        sum(
            conn.execute(
                select(func.count()).select_from(users).where(_starts_with(users.c[f"{f}_ci"], w))
            ).scalar_one()
            for f in s.fields
        )
        for w in s.prefix_words
    )


def _count(conn: Connection, s: _Search | None, where: list[Any], fts_rows: int | None = None) -> int:
    if s is not None and _uses_fts(conn, s) and not where and not s.prefix_words:
        return _fts_rows(conn, s) if fts_rows is None else fts_rows  # the FTS index alone: no users row read
    match = [] if s is None else [_index_match(conn, s, fts_rows)]
    return conn.execute(select(func.count()).select_from(users).where(*match, *where)).scalar_one()


_COUNTS = search_index.VersionedCache[int]()
# The folded names typed: else a word's parameter takes its type from the word (Unicode for ``zoë``, String for
# ``zoe``), and each is another statement to compile.
_log = table(
    search_index.LOG_TABLE, column("version"), column("sign"), *(column(c, String) for c in search_index.COLUMNS)
)
_version_row = table(search_index.VERSION_TABLE, column("epoch"), column("version"), column("floor"))
_stored = table(search_index.COUNTS_TABLE, column("query"), column("epoch"), column("version"), column("total"))


def _count_key(conn: Connection, s: _Search | None) -> Hashable:
    """What an unfiltered count depends on besides the names' version: the database (its URL: PostgreSQL
    databases made from one template share an epoch), the words and fields."""
    where = str(conn.engine.url)  # the password masked
    return (where, None if s is None else (s.words, tuple(sorted(s.fields))))


def stored_count_key(search: str | None, fields: Sequence[str] = SEARCH_FIELDS) -> str:
    """The key a search's count is stored under (users_search_counts.query)."""
    return _stored_query(_parse_search(search, fields))


def _stored_query(s: _Search | None) -> str:
    """The search's key among the stored counts: its folded words and its fields."""
    return json.dumps(None if s is None else [list(s.words), sorted(s.fields)])


def _kept_count(conn: Connection, key: Hashable, s: _Search | None) -> int | None:
    """The count kept under ``key`` (or else stored by any process), brought to the names' current version;
    None: count in full."""
    found = _kept_at(conn, key, s)
    return None if found is None else found[1]


def _kept_at(conn: Connection, key: Hashable, s: _Search | None) -> tuple[int, int] | None:
    """(version, count): :func:`_kept_count` with the version it is exact at."""
    kept = _COUNTS.get(key)
    now = _brought_forward(conn, s, kept)
    if now is None:
        return None
    if kept is None or now[1] != kept[1]:
        _COUNTS.put(key, now)
    return now[1], now[2]


def _universal_words(conn: Connection, s: _Search) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    """The indexed words of a search of several words that every user has (a company's mail domain, or
    ``example`` in the seed), by kept counts equal to the directory's at one version; and the directory's
    (version, count). Nothing when a count is not kept: it is not known then."""
    if len(s.words) < 2:
        return (), None
    everyone = _kept_at(conn, _count_key(conn, None), None)
    if everyone is None:
        return (), None
    universal = []
    for word in dict.fromkeys(s.indexed_words):
        alone = _Search((word,), s.fields, word)
        if _kept_at(conn, _count_key(conn, alone), alone) == everyone:
            universal.append(word)
    return tuple(universal), everyone


def _count_without_universal(
    conn: Connection, s: _Search, universal: tuple[str, ...], everyone: tuple[int, int] | None
) -> int | None:
    """The count of a search of several words, from kept counts, when some words match every user
    (:func:`_universal_words`): the search then matches whom the other words match (``son example``
    counts as ``son``, whose count the gathering stored). None: no such word, or a count not kept (counted
    in full then). Every count read must be exact at one version."""
    if not universal or everyone is None:
        return None
    rest = [w for w in s.words if w not in universal]
    if not rest:
        return everyone[1]
    if len(rest) == 1 and len(rest[0]) < SHORT:
        return None  # alone, a word of 1-2 characters would match as a substring, not as a prefix
    reduced = _Search(tuple(rest), s.fields, " ".join(rest))
    found = _kept_at(conn, _count_key(conn, reduced), reduced)
    return found[1] if found is not None and found[0] == everyone[0] else None


def _brought_forward(
    conn: Connection, s: _Search | None, kept: tuple[str, int, int] | None
) -> tuple[str, int, int] | None:
    """``kept`` (epoch, version, count), or else the count stored for ``s``, at the names' current version:
    (epoch, version, count); None: none stored, or one the log cannot bring forward.

    Kept at version v, it moves by the change log's rows of versions v+1..V (added minus removed) that
    match the search: the same predicate (``_row_match``) on the logged folded names, in SQL, so it means
    what the count means. The version, the floor, the stored count and those rows are read in one
    statement (one snapshot).
    """
    at: Any = literal(kept[1]) if kept is not None else _stored.c.version
    usable = and_(_version_row.c.floor <= at, _version_row.c.version - at <= search_index.LOG_KEEP)
    match = [] if s is None else [_row_match(s, _log.c)]
    moved = (
        select(func.coalesce(func.sum(_log.c.sign), 0))
        .where(usable, _log.c.version > at, _log.c.version <= _version_row.c.version, *match)
        .scalar_subquery()
    )
    now = [_version_row.c.epoch, _version_row.c.version, _version_row.c.floor]
    if kept is not None:
        row = conn.execute(select(*now, moved)).one()
        epoch, at, count = kept
    else:
        stored = _version_row.join(_stored, _stored.c.query == _stored_query(s))
        found = conn.execute(
            select(*now, moved, _stored.c.epoch, _stored.c.version, _stored.c.total).select_from(stored)
        ).first()
        if found is None:
            return None
        row, epoch, at, count = found, str(found[4]), int(found[5]), int(found[6])
    now_epoch, now_at, floor, delta = str(row[0]), int(row[1]), int(row[2]), int(row[3])
    if now_epoch != epoch or now_at < at or floor > at or now_at - at > search_index.LOG_KEEP:
        return None  # another database, or the log does not reach back to v (pruned, a bulk load)
    return epoch, now_at, count + delta


def _keep_count(conn: Connection, key: Hashable, s: _Search | None, counted_at: tuple[str, int], total: int) -> None:
    """Keep a full count made at ``counted_at`` (this process), and store a large one for the others.

    Storing is a small write in its own transaction, best effort: it waits for no other writer (SQLite:
    a busy database is not waited for), and a failure only means the next process counts again.
    """
    _COUNTS.put(key, (*counted_at, total))
    if total >= search_index.STORED_MIN:
        _store_count(conn, s, counted_at, total)


def _store_count(conn: Connection, s: _Search | None, counted_at: tuple[str, int], total: int) -> None:
    """Store a count made at ``counted_at`` for every process (unless one as new or newer is stored)."""
    epoch, at = counted_at
    query = _stored_query(s)
    upsert = (
        f"INSERT INTO {search_index.COUNTS_TABLE} (query, epoch, version, total) VALUES (:q, :e, :v, :t) "
        f"ON CONFLICT (query) DO UPDATE SET epoch = excluded.epoch, version = excluded.version, "
        f"total = excluded.total WHERE {search_index.COUNTS_TABLE}.epoch <> excluded.epoch "
        f"OR {search_index.COUNTS_TABLE}.version < excluded.version"
    )
    sqlite = conn.dialect.name == "sqlite"
    try:
        with conn.engine.connect() as writer:
            raw = writer.connection.dbapi_connection
            if sqlite and raw is not None:  # outside SQLAlchemy's transaction (the driver's autocommit)
                raw.execute("PRAGMA busy_timeout = 0")
            try:
                with writer.execution_options(sqlite_begin="IMMEDIATE").begin():
                    if not sqlite:
                        writer.exec_driver_sql("SET LOCAL lock_timeout = '50ms'")
                    writer.execute(sql_text(upsert), {"q": query, "e": epoch, "v": at, "t": total})
            finally:
                if sqlite and raw is not None:
                    raw.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")
    except DBAPIError:
        pass  # busy, or a read-only database: the count stays this process's own


_SQLITE_BUSY_MS = 30_000  # the store's own busy_timeout (store.py), put back on the connection


def _directory_size(conn: Connection) -> int:
    """About how many users there are, without counting them (for choosing a plan)."""
    if conn.dialect.name == "sqlite":
        return int(conn.exec_driver_sql("SELECT coalesce(max(rowid), 0) FROM users").scalar_one())
    estimate = conn.exec_driver_sql("SELECT reltuples FROM pg_class WHERE oid = 'users'::regclass").scalar()
    return max(int(estimate or 0), 0)


def _rank(s: _Search) -> ColumnElement[int]:
    whens = []
    if s.exact:
        whens.append((or_(users.c.username_ci == s.exact, users.c.email_ci == s.exact), EXACT))
    whens.append((users.c.username_ci.like(f"{_like_escape(s.lead)}%", escape="\\"), PREFIX))
    return case(*whens, else_=REST)


@functools.cache
def _folds_to() -> dict[str, tuple[tuple[str, str], ...]]:
    """first character of a case fold -> (character, its fold), for the characters that fold to
    something else (a character that folds to itself is added where it is needed)."""
    found: dict[str, list[tuple[str, str]]] = {}
    # Case mappings end in plane 1 (Adlam); beyond, every character folds to itself. A block of 256 that
    # folds to itself whole is passed over at once: a new process's first search spends ~9 ms here, not
    # ~20 (a character at a time). Surrogates fold to themselves: never found.
    for start in range(0, 0x20000, 256):
        block = "".join(map(chr, range(start, start + 256)))
        if block.casefold() == block:
            continue
        for char in block:
            fold = char.casefold()
            if fold != char:
                found.setdefault(fold[0], []).append((char, fold))
    return {k: tuple(v) for k, v in found.items()}


def _case_variants(word: str, cap: int = VARIANTS_MAX) -> list[str] | None:
    """The shortest strings whose case folds start with ``word`` (``mar`` -> mar, maR, ..., MAR);
    a username folds to something starting with ``word`` exactly when it starts with one of them.
    None when there are more than ``cap``."""
    folds = _folds_to()
    found: list[str] = []

    def extend(prefix: str, rest: str) -> bool:
        itself = ((rest[0], rest[0]),) if rest[0].casefold() == rest[0] else ()
        for char, fold in itself + folds.get(rest[0], ()):
            if fold.startswith(rest):
                found.append(prefix + char)
                if len(found) > cap:
                    return False
            elif rest.startswith(fold) and not extend(prefix + char, rest[len(fold) :]):
                return False
        return True

    return found if extend("", word) else None


# ------------------------------------------------------------------ reads


@dataclass
class _Listing:
    """One request's listing: what to read, in which order, from where."""

    conn: Connection
    now: datetime
    keys: list[Key]
    where: list[Any]
    fp: str

    def select(self, *conds: Any) -> Any:
        labels = [k.expr.label(f"_k{i}") for i, k in enumerate(self.keys)]
        return select(*_user_columns(self.now), *labels).where(*self.where, *conds)

    def values(self, row: Any) -> list[Any]:
        return [row._mapping[f"_k{i}"] for i in range(len(self.keys))]

    def read(
        self, match: Any, bound: list[Any] | None, reverse: bool, skip: int, limit: int, counted: bool = False
    ) -> list[Any]:
        """Rows in the keys' order (reversed: backwards from ``bound``), past ``bound`` when given.

        ``counted``: each row also carries ``_total``, how many rows match in all (one pass
        over the matches for the page and the count, where both would read them all anyway)."""
        conds = [] if match is None else [match]
        if bound is not None:
            conds.append(beyond(self.keys, bound, reverse=reverse))
        query = self.select(*conds)
        if counted:
            query = query.add_columns(func.count().over().label("_total"))
        query = query.order_by(*(k.order(reverse) for k in self.keys)).offset(skip).limit(limit)
        return list(self.conn.execute(query))


def _walk_match(dialect: str, s: _Search, by_fts: bool = False) -> ColumnElement[bool]:
    """The search as a test of one row for the walks along the username index.

    ``by_fts`` (SQLite, every substring word indexed): the row's rowid in the FTS matches, which SQLite
    reads once into a temporary index; a walk then reads no users row per name passed, only the index.
    For a word of middling count whose matches come late in username order (a last name late in the
    alphabet: ``tanaka`` passes ~13,000 names for its first 100) that is 3x faster; for a dense word it
    costs more than the short walk it saves (reading the matches), and for a sparse one the matches are
    read whole instead (list_users chooses).

    PostgreSQL: the same test written so that no index can answer it (``strpos`` for ``LIKE '%w%'``,
    ``left`` for a prefix range; equal on the "C"-collated folded columns), so the planner walks the
    username index and stops at the page. Given the trigram LIKEs, it guesses a few hundred matches for
    a word that matches a tenth of the directory and reads them all through the trigram bitmap to sort
    them for the top 100 (``son``: 100,000 rows). The walk is only chosen when the count says the
    matches are dense. SQLite: the LIKEs (FTS5 is not an index its planner uses for them).
    """
    if by_fts:
        in_fts = literal_column("+users.rowid").in_(select(_fts.c.rowid).where(_fts_match(s)))
        return and_(in_fts, *(_starts_word(w, s.fields) for w in s.prefix_words))
    if dialect != "postgresql":
        return _row_match(s)

    def contains(word: str, col: Any) -> ColumnElement[bool]:
        return func.strpos(col, literal(word, col.type)) > 0

    def starts(word: str, col: Any) -> ColumnElement[bool]:
        return func.left(col, len(word)) == literal(word, col.type)

    return and_(
        *(or_(*(contains(w, users.c[f"{f}_ci"]) for f in s.fields)) for w in s.substring_words),
        *(or_(*(starts(w, users.c[f"{f}_ci"]) for f in s.fields)) for w in s.prefix_words),
    )


def _walk_search(
    listing: _Listing,
    s: _Search,
    bound: list[Any] | None,
    reverse: bool,
    skip: int,
    limit: int,
    by_fts: bool = False,
    cap: int | str | None = None,
    rest_from: str | None = None,
) -> list[Any]:
    """Rows ``skip`` to ``skip + limit`` in search order (exact, prefix, rest; by username), in one statement.

    Each group walks an index in username order and tests each row, so a dense search (``mar``) stops
    after a page's worth of rows instead of reading and sorting every match. A group reads only what the
    groups before it left of the page (``LIMIT`` from their counts: none once the page is full, so a rest
    group that is sparse is not walked at all then). The page's rows are read whole by id at the end.
    """
    dialect = listing.conn.dialect.name
    if bound is None and not listing.where:  # a search's first pages: the same walk again and again
        pages = _first_pages_walk(dialect, s, reverse, skip + limit, by_fts, cap, rest_from)
    else:
        pages = _pages_walk(dialect, s, listing.where, bound, reverse, skip + limit, by_fts, cap, rest_from)
    if pages is None:
        return []
    return list(listing.conn.execute(_page_of_walk(listing, pages, reverse, skip, limit)))


def _page_of_walk(listing: _Listing, pages: Any, reverse: bool, skip: int, limit: int) -> Any:
    """The page's rows read whole by id, in the walk's order."""
    keys = [pages.c.grp, pages.c.username, pages.c.id]
    return (
        listing.select()
        .join_from(users, pages, users.c.id == pages.c.id)
        .order_by(*(k.desc() if reverse else k.asc() for k in keys))
        .offset(skip)
        .limit(limit)
    )


@functools.lru_cache(maxsize=64)
def _first_pages_walk(
    dialect: str,
    s: _Search,
    reverse: bool,
    need: int,
    by_fts: bool = False,
    cap: int | str | None = None,
    rest_from: str | None = None,
) -> Any:
    """:func:`_pages_walk` without filters or a cursor, built once (its variants and branches cost a
    few ms of Python, a statement that holds no clock or user values can be run again as it is)."""
    return _pages_walk(dialect, s, [], None, reverse, need, by_fts, cap, rest_from)


def _pages_walk(
    dialect: str,
    s: _Search,
    where: list[Any],
    bound: list[Any] | None,
    reverse: bool,
    need: int,
    by_fts: bool = False,
    cap: int | str | None = None,
    rest_from: str | None = None,
) -> Any:
    """The first ``need`` (username, id, grp) of the search in its order, a subquery; None: no group to read.
    ``cap``: the last group walks at most that many names (fewer rows then: see list_users), or (a name) up
    to that name. ``rest_from`` (no cursor, forwards): the rest group's matches begin at that username."""
    match = _walk_match(dialect, s, by_fts)
    by_name = [Key(users.c.username), Key(users.c.id)]
    order = [k.order(reverse) for k in by_name]
    groups = [EXACT, PREFIX, REST][::-1] if reverse else [EXACT, PREFIX, REST]
    rank = _rank(s)
    exact = or_(users.c.username_ci == s.exact, users.c.email_ci == s.exact) if s.exact else None
    walked: list[Any] = []  # each group's (username, id, grp) as a CTE, in the order read
    for group in groups:
        if bound is not None and (group > bound[0] if reverse else group < bound[0]):
            continue
        if group == EXACT and exact is None:
            continue
        within = bound[1:] if bound is not None and group == bound[0] else None
        if group == REST and rest_from is not None and bound is None and not reverse:
            within = [rest_from, ""]  # (username, id) after (rest_from, ""): from rest_from on (ids are not empty)
        if group == EXACT:
            conds: list[Any] = [match, exact]
        elif group == PREFIX:
            conds = [_starts_with(users.c.username_ci, s.lead)]
            if exact is not None:
                # Not the exact group's rows, by id: the group is then read from the username_ci index
                # alone (ix_users_username_ci_order), not a users row per candidate (``karen``: 15,868).
                conds.append(users.c.id.not_in(select(walked[0].c.id)) if walked else ~exact)
            # A username starting with the lead word has it (as a substring, and as a prefix); a word everyone
            # has needs no test either. Only other words are tested (an FTS rowid list read for it costs ms).
            implied = {s.lead, *s.everyone} if "username" in s.fields else set(s.everyone)
            if set(s.words) - implied:
                conds.append(match)
        else:
            conds = [match, rank == group]
            if cap is not None:
                conds.append(_walk_edge(within, reverse, cap))
        if within is not None:
            conds.append(beyond(by_name, within, reverse=reverse))
        names = select(users.c.username, users.c.id, literal(group).label("grp")).where(*where, *conds)
        left: Any = need
        if walked:
            taken = sum((select(func.count()).select_from(w).scalar_subquery() for w in walked), literal(0))
            left = case((taken < need, need - taken), else_=0)
        variants = _case_variants(s.lead) if group == PREFIX else None
        if variants and len(variants) > 1:
            # The username index in ranges, one per case variant, merged: no sort of the whole group,
            # which can hold a tenth of the directory. (One username_ci range, when there are too many
            # variants or one, is read by that index and sorted.)
            ranges = [
                select(names.where(_starts_with(users.c.username, v)).order_by(*order).limit(need).subquery())
                for v in variants
            ]
            merged = union_all(*ranges).subquery()
            part = select(merged).order_by(*(Key(merged.c[k.expr.name]).order(reverse) for k in by_name)).limit(left)
        else:
            part = names.order_by(*order).limit(left)
        walked.append(part.cte(f"walk_{group}"))
    if not walked:
        return None
    return union_all(*(select(w) for w in walked)).subquery("walked")


def _walk_edge(within: list[Any] | None, reverse: bool, cap: int | str) -> ColumnElement[bool]:
    """The walk stops ``cap`` names past where it starts: at the name found by skipping that many entries
    of the username index (read alone: SQLite, ~1 ms), or at the last name when fewer are left; or at the
    name ``cap``."""
    if isinstance(cap, str):
        return users.c.username >= cap if reverse else users.c.username <= cap
    by_name = [Key(users.c.username), Key(users.c.id)]
    start = [beyond(by_name, within, reverse=reverse)] if within is not None else []
    order = [k.order(reverse) for k in by_name]
    edge = select(users.c.username).where(*start).order_by(*order).offset(cap).limit(1).scalar_subquery()
    if reverse:
        return users.c.username >= func.coalesce(edge, select(func.min(users.c.username)).scalar_subquery())
    return users.c.username <= func.coalesce(edge, select(func.max(users.c.username)).scalar_subquery())


_NAME_BOUNDS: dict[str, tuple[float, list[str], float]] = {}  # database URL -> (read at, bounds, rows per bucket)
_NAME_BOUNDS_LIFE = 600.0  # seconds the statistics are used before they are read again


def _pg_walk_edge(conn: Connection, start: str | None, reverse: bool) -> str | None:
    """PostgreSQL: a name about WALK_CAP names past ``start`` (or the index's end), from the planner's
    statistics (the histogram of ``users.username``: each bucket about as many rows); None: none known, or
    fewer left. Skipping entries as on SQLite would fetch a heap row per entry on pages that updates (TOTP
    codes) keep from being all-visible: ~20 ms for 15,000, on every walk."""
    where = str(conn.engine.url)
    found = _NAME_BOUNDS.get(where)
    if found is None or time.monotonic() - found[0] > _NAME_BOUNDS_LIFE:
        row = conn.exec_driver_sql(
            "SELECT s.histogram_bounds::text::text[], c.reltuples FROM pg_stats s JOIN pg_class c "
            "ON c.relname = s.tablename AND c.relnamespace = to_regnamespace(s.schemaname) "
            "WHERE s.schemaname = current_schema() AND s.tablename = 'users' AND s.attname = 'username'"
        ).first()
        bounds = list(row[0] or []) if row is not None else []
        per_bucket = float(row[1]) / max(len(bounds) - 1, 1) if row is not None and bounds else 0.0
        found = (time.monotonic(), bounds, per_bucket)
        _NAME_BOUNDS[where] = found
    _, bounds, per_bucket = found
    if not bounds or per_bucket <= 0:
        return None
    # bounds[i] .. bounds[i + 1] is one bucket; the walk's first one may be partly behind ``start``: one more.
    step = max(1, math.ceil(WALK_CAP / per_bucket))
    if reverse:
        at = len(bounds) - 1 if start is None else bisect.bisect_left(bounds, start) - 1
        return bounds[at - step] if at - step >= 0 else None
    at = 0 if start is None else bisect.bisect_right(bounds, start)
    return bounds[at + step] if at + step < len(bounds) else None


_UserPage = Page[SystemUser]  # made once: pydantic keeps a parametrized model only while it is referenced

WHOLE = None  # _walk_start: the search's matches are read whole, not walked
_UNKNOWN = ""  # _walk_start: not known where the matches begin (walk from the index's start)


def _walk_start(conn: Connection, key: Hashable, s: _Search) -> str | None:
    """Where the rest group's matches begin in username order, remembered by a search whose walk fell short
    (its first page read whole); WHOLE: read the matches whole; ``_UNKNOWN`` (""): walk from the start.

    A start remembered at version v holds while no user who matches was added or renamed since: the
    change log's rows of versions v+1..V (as _brought_forward reads them, one statement); removals cannot
    move it earlier. Else it is forgotten, and the next walk from the start finds it again."""
    kept = _WALK_STARTS.get(key)
    if kept is None:
        return _UNKNOWN
    epoch, at, start = kept
    if start is WHOLE:
        return WHOLE
    usable = and_(_version_row.c.floor <= at, _version_row.c.version - at <= search_index.LOG_KEEP)
    added = (
        select(_log.c.version)
        .where(usable, _log.c.version > at, _log.c.version <= _version_row.c.version, _log.c.sign > 0)
        .where(_row_match(s, _log.c))
        .exists()
    )
    row = conn.execute(select(_version_row.c.epoch, _version_row.c.version, _version_row.c.floor, added)).one()
    now_epoch, now_at, floor, moved = str(row[0]), int(row[1]), int(row[2]), bool(row[3])
    if now_epoch != epoch or now_at < at or floor > at or now_at - at > search_index.LOG_KEEP or moved:
        _WALK_STARTS.discard(key)
        return _UNKNOWN
    if now_at != at:
        _WALK_STARTS.put(key, (epoch, now_at, start))
    return start


def _remember_walk_start(key: Hashable, read_at: tuple[str, int], rows: list[Any]) -> None:
    """From a search's first page read whole (rank, username order): where its rest group begins, or
    WHOLE when the page holds none of it (the page was filled before it: nothing to walk from)."""
    rest = next((r for r in rows if r._mapping["_k0"] == REST), None)
    _WALK_STARTS.put(key, (*read_at, WHOLE if rest is None else str(rest._mapping["_k1"])))


def _plan_search(conn: Connection, walking: bool) -> None:
    """PostgreSQL, for the rest of the request's transaction, in one round trip: plan each search statement
    with its words (psycopg prepares a statement run often, and a generic plan cannot see the pattern: it
    may walk every user for a rare one); and for a walk (``walking``), no parallel workers, which cost
    more to start than the page costs to read."""
    settings = {"plan_cache_mode": "force_custom_plan"}
    if walking:
        settings["max_parallel_workers_per_gather"] = "0"
    values = ", ".join(f"set_config('{name}', '{value}', true)" for name, value in settings.items())
    conn.exec_driver_sql(f"SELECT {values}")


def list_users(
    conn: Connection,
    now: datetime,
    *,
    skip: int,
    limit: int,
    sort: str | None = None,
    conditions: Sequence[tuple[str, str, Any]] = (),
    search: str | None = None,
    search_fields: Sequence[str] = SEARCH_FIELDS,
    after: str | None = None,
    before: str | None = None,
    count: bool = True,
) -> Page[SystemUser]:
    """A page of users. ``after``/``before`` (a cursor, or ``before="end"``) page by keyset:
    the page at any depth costs what the first one costs. ``count=False``: no total (null)."""
    where = [_condition(f, op, v, now) for f, op, v in conditions]
    s = _parse_search(search, search_fields)
    if sort:
        keys = _sort_keys(sort, now)
    elif s is not None:
        keys = [Key(_rank(s)), Key(users.c.username), Key(users.c.id)]
    else:
        keys = [Key(users.c.username), Key(users.c.id)]
    fp = paging.fingerprint(
        "users",
        _sort_tokens(sort),
        list(s.words) if s else None,
        sorted(s.fields) if s else None,
        sorted([f, op, str(v)] for f, op, v in conditions),
    )
    if after is not None and before is not None:
        raise bad_request("after and before: give one of them, not both")
    reverse = before is not None
    bound: list[Any] | None = None
    if after is not None:
        bound = paging.decode(after, fp, "after", len(keys))
    elif before is not None and before != paging.END:
        bound = paging.decode(before, fp, "before", len(keys))
    listing = _Listing(conn, now, keys, where, fp)

    # A count that depends on the names alone (no filter) is kept with the names' version: a repeat (the
    # next page, the same search again, after changes too: see _kept_count) is answered without counting.
    # The first time is counted in full.
    count_key = _count_key(conn, s) if count and not where else None
    known = _kept_count(conn, count_key, s) if count_key is not None else None
    universal: tuple[str, ...] = ()
    everyone = None
    if s is not None and ((known is None and count_key is not None) or _uses_fts(conn, s)):
        universal, everyone = _universal_words(conn, s)
    if known is None and count_key is not None and s is not None:
        known = _count_without_universal(conn, s, universal, everyone)
    if s is not None and _uses_fts(conn, s) and universal and set(s.indexed_words) - set(universal):
        # SQLite reads the request in one snapshot: the counts above hold for every statement after them.
        s = dataclasses.replace(s, everyone=universal)
    # A full count is kept only when no change committed between these two reads of the version (the
    # count's statements may each see a newer state than the first read: the log must not apply twice).
    counted_at = search_index.version(conn) if count_key is not None and known is None else None
    total: int | None = known
    if s is None:
        if count and total is None:
            total = _count(conn, None, where)
        rows = listing.read(None, bound, reverse, skip, limit)
    else:
        planned = False  # PostgreSQL: _plan_search sent (once a request when the page needs no count first)
        if conn.dialect.name == "postgresql" and count and total is None:
            _plan_search(conn, walking=False)  # the count is planned with its words too
            planned = True
        # How many match (exactly, or at most: the FTS count alone, which is cheap) chooses the plan.
        if known is not None and _uses_fts(conn, s) and not s.prefix_words:
            fts_rows: int | None = known  # the FTS count is the count then (see _count)
        else:
            fts_rows = _fts_rows(conn, s) if _uses_fts(conn, s) else None
        if count and total is None and (fts_rows is None or (not where and not s.prefix_words)):
            total = _count(conn, s, where, fts_rows)
        estimate = fts_rows if fts_rows is not None else total
        if fts_rows is not None and (where or s.prefix_words):
            # The FTS count is only an upper bound here (filters and prefix words cut it down, by how
            # much is unknown): read the candidates whole while that stays affordable.
            sparse = fts_rows <= FILTERED_SPARSE_MAX
        else:
            sparse = estimate is not None and estimate * estimate <= WALK_FACTOR * (skip + limit) * _directory_size(
                conn
            )
        walking = not (estimate == 0 or sparse or sort)
        if conn.dialect.name == "postgresql" and estimate != 0 and (walking or not planned):
            _plan_search(conn, walking)
        if estimate == 0:
            rows, total = [], (0 if count else None)
        elif sparse:
            # Few matches: read them all and sort (counting them in the same pass when still needed).
            counted = count and total is None and bound is None
            rows = listing.read(_index_match(conn, s, fts_rows), bound, reverse, skip, limit, counted=counted)
            if counted and rows:
                total = rows[0]._mapping["_total"]
        elif sort:
            rows = listing.read(_row_match(s), bound, reverse, skip, limit)  # walks the sort's index
        else:
            by_fts = fts_rows is not None and s.indexed_words == s.substring_words and fts_rows <= FTS_WALK_MAX
            # The walk assumes the matches are spread along the username index; they may all come late
            # (``zoë``: users named Zoë are zoe.*, the walk passed ~985,000 names: 2.5-4 s). So it stops
            # after WALK_CAP names and, if the page is then short of matches there are, reads them whole.
            # The process then remembers where the matches begin, and a first page walks from there (15,544
            # matches read whole and sorted: ~35 ms; walked from zoe.adeyemi: a few ms); or, when that walk
            # fell short too (matches thinly spread), reads them whole from then on.
            start_key = _count_key(conn, s)
            first = bound is None and not reverse
            begins = _walk_start(conn, start_key, s)
            rest_from = begins if first and begins else None  # a start found before (not WHOLE or _UNKNOWN)
            rows = []
            if begins is not WHOLE:
                cap: int | str | None = WALK_CAP_FTS if by_fts else WALK_CAP
                if conn.dialect.name == "postgresql":
                    start = bound[1] if bound is not None and bound[0] == REST else rest_from
                    cap = _pg_walk_edge(conn, start, reverse)
                rows = _walk_search(listing, s, bound, reverse, skip, limit, by_fts, cap, rest_from)
                # Backwards the capped rest group is walked first: cut at its edge, it may have left rows that
                # belong to it to the groups after it. Not known: read whole.
                rest_first = reverse and cap is not None and (bound is None or bound[0] == REST)
                if rest_first and any(r._mapping["_k0"] != REST for r in rows):
                    rows = []
            exact_total = total if total is not None else (fts_rows if not where and not s.prefix_words else None)
            complete = bound is None and exact_total is not None and skip + len(rows) >= exact_total
            if len(rows) < limit and not complete:
                read_at = search_index.version(conn)  # before the read: a change after it is in the log
                rows = listing.read(_index_match(conn, s, fts_rows), bound, reverse, skip, limit)
                if first and skip == 0 and not where and begins == _UNKNOWN:
                    _remember_walk_start(start_key, read_at, rows)
                elif first and skip == 0 and rest_from is not None:
                    _WALK_STARTS.put(start_key, (*read_at, WHOLE))  # walked from the start, still short
        if count and total is None:
            total = _count(conn, s, where, fts_rows)
    if counted_at is not None and total is not None and search_index.version(conn) == counted_at:
        _keep_count(conn, count_key, s, counted_at, total)
    if reverse:
        rows.reverse()
    max_failures = _max_failures(conn)
    results = [_to_user(r, max_failures, now) for r in rows]
    return _UserPage(
        totalCount=total if count else None,
        results=results,
        startCursor=paging.encode(listing.values(rows[0]), fp) if rows else None,
        endCursor=paging.encode(listing.values(rows[-1]), fp) if rows else None,
    )


# ------------------------------------------------------------------ a serving process's first search

_NOBODY = "zqxjzqxj"  # a word for the counts the warm-up runs: nobody's name holds it, so they read next to nothing
_NOBODY_PREFIX = "~"  # the same for a word of 1-2 characters (a prefix: ``mary g``)


# Numbers of case variants worth a statement each at start-up (~10 ms to compile one): what most words of 1-4
# letters have (a-z: 2 each, 3 for some: k and s anywhere, a, f, h, i, j, t, w and y last; 16 at most, more
# are walked as one range, as are 5+ letters). Another number is compiled by its first search.
WARM_VARIANTS = (1, 2, 3, 4, 6, 8, 12, 16)


@functools.cache
def _walk_shapes() -> tuple[str, ...]:
    """A word for each number in WARM_VARIANTS: the walk's prefix group reads a username range per case
    variant of the word, so each number is another statement to compile."""
    shapes: dict[int, str] = {}
    for word in ("".join(chars) for size in (3, 4) for chars in itertools.product("0abs", repeat=size)):
        variants = _case_variants(word)
        shapes.setdefault(len(variants) if variants else 1, word)
    return tuple(shapes[n] for n in WARM_VARIANTS)


def _warm_walks(dialect: str) -> list[_Search]:
    """The searches whose walks warm_search compiles: a word for each number of case variants; and two words,
    and a word with a word of 1-2 characters (``karen example``, ``mary g``: each number of words is another
    shape of every statement)."""
    words = [_Search((w,), SEARCH_FIELDS, w) for w in _walk_shapes()]
    # Led by a name of 5+ letters (one range: ``karen``), or of 3 letters (8 or 12 variants: ``son``).
    leads = [_NOBODY, *(w for w in _walk_shapes() if len(w) == SHORT and len(_case_variants(w) or ()) in (8, 12))]
    for lead, extra in itertools.product(leads, (_NOBODY[::-1], _NOBODY_PREFIX)):
        words.append(_Search((lead, extra), SEARCH_FIELDS, f"{lead} {extra}"))
        if dialect == "sqlite" and len(extra) >= SHORT:  # a word everyone has: no test in the prefix group
            words.append(dataclasses.replace(words[-1], everyone=(extra,)))
    return words


def warm_search(conn: Connection, now: datetime, *, walks: bool = True) -> None:
    """Before a process serves: compile (and on PostgreSQL, plan) the statements of a first search over the
    default fields, which SQLAlchemy then keeps by shape: of one word, of two, and of a word and a prefix
    (``mary g``). In a new process they cost its first search more than running them does
    (bench/first_search.py). The case-fold table is built too.

    Reads next to nothing and keeps nothing: the counts are of a word nobody has, the pages are asked for with
    ``LIMIT 0`` (neither store runs a statement's plan for no row), no count is stored or kept in the process,
    and the walks built here are not kept either. ``walks=False``: the rest alone (another connection of the
    pool: its statements prepared, on PostgreSQL its backend's catalogs read)."""
    dialect = conn.dialect.name
    list_users(conn, now, skip=0, limit=1, count=False)  # the plain listing's page and what every answer reads
    at = (*search_index.version(conn), 0)  # a count kept at the current version: the log has nothing after it
    for search in (None, _Search((_NOBODY,), SEARCH_FIELDS, _NOBODY)):  # the directory's count, a word's
        _brought_forward(conn, search, None)  # the count stored: none for this word
        _brought_forward(conn, search, at)  # a count this process keeps (a search of several words reads both)
    for extra in ((), (_NOBODY[::-1],), (_NOBODY_PREFIX,)):
        nobody = _Search((_NOBODY, *extra), SEARCH_FIELDS, " ".join((_NOBODY, *extra)))
        _brought_forward(conn, nobody, None)
        if dialect == "postgresql":
            _plan_search(conn, walking=False)
        _count(conn, nobody, [])
        listing = _Listing(conn, now, [Key(_rank(nobody)), Key(users.c.username), Key(users.c.id)], [], "")
        for counted in (True, False):  # few matches: read whole (counting them too, or counted already)
            listing.read(_index_match(conn, nobody), None, False, 0, 1, counted=counted)
    short = _Search((_NOBODY_PREFIX,), SEARCH_FIELDS, _NOBODY_PREFIX)  # a word of 1-2 characters: no index
    listing = _Listing(conn, now, [Key(_rank(short)), Key(users.c.username), Key(users.c.id)], [], "")
    listing.read(_index_match(conn, short), None, False, 0, 0)  # LIMIT 0: not a pass over every user
    if dialect == "postgresql":
        _plan_search(conn, walking=True)
    # The walks' edge as list_users sets it (on PostgreSQL the statistics it comes from are read here).
    cap = _pg_walk_edge(conn, None, False) if dialect == "postgresql" else WALK_CAP
    for s in _warm_walks(dialect) if walks else ():  # many matches: the walks, one statement per shape
        listing = _Listing(conn, now, [Key(_rank(s)), Key(users.c.username), Key(users.c.id)], [], "")
        pages = _pages_walk(dialect, s, [], None, False, 1, cap=cap)
        if pages is not None:
            conn.execute(_page_of_walk(listing, pages, False, 0, 0))
        if dialect == "sqlite" and s.indexed_words:  # and the walk by FTS rowid (a word of middling count)
            pages = _pages_walk(dialect, s, [], None, False, 1, by_fts=True, cap=WALK_CAP_FTS)
            conn.execute(_page_of_walk(listing, pages, False, 0, 0))


# ------------------------------------------------------------------ counts gathered before anyone searches
#
# The first count ever of a common word reads every match: ~250 ms for a word most of a million users have
# ("example"), where a stored count brought forward through the log takes a few. So a serving process
# gathers them ahead, like a database's ANALYZE: it reads a sample of users, finds the words (substrings of
# their folded names) that enough of them have for their count to be stored (STORED_MIN), counts each in
# full and stores it. The log then keeps them exact. Again after a bulk load (the log's floor moved past
# them) or once the names changed GATHER_AGAIN times (the stored counts near the log's reach, and new
# common words may have appeared). One process at a time: a claim in the marker row.

GATHERED = json.dumps("gathered")  # the marker's key among the stored counts (a search's key is a list or null)
GATHER_SAMPLE = 5_000  # users read to find the words worth counting
GATHER_AGAIN = search_index.LOG_KEEP // 2  # changes to the names after which the counts are gathered again
# A claim older than this is a stopped process's (gathering 1M users on PostgreSQL takes ~12 min).
GATHER_CLAIM_SECONDS = 3_600

_marker = _stored.alias("gathered")


def gathering_due(conn: Connection, now: float, min_rows: int) -> tuple[str, int, Any] | None:
    """``(epoch, version, marker)`` when the counts should be gathered now (``marker``: the marker row's
    ``(epoch, version, total)`` as read, or None), else None: too few users for any count to be stored,
    gathered at a version the log still reaches, or claimed by a process still at it. ``now``: Unix time."""
    enough = select(func.count()).select_from(select(literal(1)).select_from(users).limit(min_rows).subquery())
    if conn.execute(enough).scalar_one() < min_rows:
        return None
    joined = _version_row.outerjoin(_marker, _marker.c.query == GATHERED)
    row = conn.execute(
        select(
            _version_row.c.epoch,
            _version_row.c.version,
            _version_row.c.floor,
            _marker.c.epoch,
            _marker.c.version,
            _marker.c.total,
        ).select_from(joined)
    ).one()
    epoch, at, floor = str(row[0]), int(row[1]), int(row[2])
    marker = None if row[3] is None else (str(row[3]), int(row[4]), int(row[5]))
    if marker is not None and marker[0] == epoch and marker[1] >= floor:
        claimed_at = -marker[2]  # a claim's total: minus the Unix time it was made
        if marker[2] < 0 and now - claimed_at < GATHER_CLAIM_SECONDS:
            return None
        if marker[2] >= 0 and at - marker[1] < GATHER_AGAIN:
            return None
    return epoch, at, marker


def claim_gathering(conn: Connection, due: tuple[str, int, Any], now: float) -> bool:
    """Claim the gathering due (in the caller's write transaction); False: another process claimed it first."""
    epoch, at, marker = due
    values = {"q": GATHERED, "e": epoch, "v": at, "t": -int(now)}
    if marker is None:
        claim = f"INSERT INTO {search_index.COUNTS_TABLE} (query, epoch, version, total) VALUES (:q, :e, :v, :t) "
        claim += "ON CONFLICT (query) DO NOTHING"
    else:
        claim = f"UPDATE {search_index.COUNTS_TABLE} SET epoch = :e, version = :v, total = :t "
        claim += "WHERE query = :q AND epoch = :old_e AND version = :old_v AND total = :old_t"
        values |= {"old_e": marker[0], "old_v": marker[1], "old_t": marker[2]}
    return conn.execute(sql_text(claim), values).rowcount == 1


def finish_gathering(conn: Connection, due: tuple[str, int, Any], now: float, words: int) -> None:
    """Mark the gathering claimed at ``now`` done: ``words`` counts stored at ``due``'s version or later."""
    epoch, at, _ = due
    conn.execute(
        sql_text(
            f"UPDATE {search_index.COUNTS_TABLE} SET total = :words "
            "WHERE query = :q AND epoch = :e AND version = :v AND total = :t"
        ),
        {"words": words, "q": GATHERED, "e": epoch, "v": at, "t": -int(now)},
    )


def sample_names(conn: Connection, size: int, everyone: int) -> list[tuple[str, ...]]:
    """About ``size`` of the ``everyone`` users' folded names in the default search fields, chosen at random (by
    rowid on SQLite, by page on PostgreSQL: neither reads the whole table)."""
    if conn.dialect.name == "sqlite":
        highest = _directory_size(conn)  # the highest rowid
        rowids = random.sample(range(1, highest + 1), min(size, highest))
        query = select(*(users.c[f"{f}_ci"] for f in SEARCH_FIELDS)).where(_users_rowid.in_(rowids))
    else:
        share = min(100.0, 200.0 * size / max(everyone, 1))  # twice the sample's share of the pages, then picked
        sampled = users.tablesample(func.system(share))
        query = select(*(sampled.c[f"{f}_ci"] for f in SEARCH_FIELDS))
    rows = [tuple(row) for row in conn.execute(query)]
    return random.sample(rows, min(size, len(rows)))


def gather_word(conn: Connection, word: str, min_rows: int) -> bool:
    """Store the count of a lone ``word`` over the default fields when at least ``min_rows`` match: brought
    forward from the one stored before when the log reaches it, else counted in full. False: a count stored
    recently enough already (or not a search's word), or fewer match."""
    s = _parse_search(word, SEARCH_FIELDS)
    if s is None or s.words != (word,) or not s.indexed_words:
        return False
    fresh = _version_row.join(
        _stored, and_(_stored.c.query == _stored_query(s), _stored.c.epoch == _version_row.c.epoch)
    )
    kept = (
        select(_stored.c.version)
        .select_from(fresh)
        .where(_stored.c.version >= _version_row.c.floor, _version_row.c.version - _stored.c.version < GATHER_AGAIN)
    )
    if conn.execute(kept).first() is not None:
        return False
    forward = _brought_forward(conn, s, None)  # stored long ago, but the log still reaches it: no full count
    if forward is not None:
        epoch, at, total = forward
        _store_count(conn, s, (epoch, at), total)
        return total >= min_rows
    counted_at = search_index.version(conn)
    if conn.dialect.name == "postgresql":
        _plan_search(conn, walking=False)
        conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")  # background work: one core
    total = _count(conn, s, [])
    if total < min_rows or search_index.version(conn) != counted_at:
        return False
    _store_count(conn, s, counted_at, total)
    return True


def gather_counts(
    store: Store,
    *,
    min_rows: int | None = None,
    sample: int = GATHER_SAMPLE,
    pause: float = 1.0,
    clock: Callable[[], float] = time.time,
) -> int | None:
    """Gather the stored counts when due: how many were stored; None when not due, or claimed by
    another process. Each count in its own read transaction, then ``pause`` times as long idle (background
    work beside the requests). ``min_rows``: search_index.STORED_MIN unless given."""
    min_rows = search_index.STORED_MIN if min_rows is None else min_rows
    with store.read() as conn:
        due = gathering_due(conn, clock(), min_rows)
    if due is None:
        return None
    claimed_at = clock()
    with store.write() as conn:
        if not claim_gathering(conn, due, claimed_at):
            return None
    with store.read() as conn:
        # The directory's total is stored too: a word whose count equals it matches everyone
        # (_count_without_universal).
        counted_at = search_index.version(conn)
        everyone = conn.execute(select(func.count()).select_from(users)).scalar_one()
        if search_index.version(conn) == counted_at:
            _store_count(conn, None, counted_at, everyone)
        names = sample_names(conn, sample, everyone)
    # Half the sample's share a word with min_rows matches has: the sample's noise does not drop it.
    words = search_index.frequent_substrings(names, min_rows * len(names) / max(everyone, 1) / 2, SHORT)
    stored = 0
    for word in words:
        started = time.monotonic()
        with store.read() as conn:
            stored += gather_word(conn, word, min_rows)
        time.sleep((time.monotonic() - started) * pause)
    with store.write() as conn:
        finish_gathering(conn, due, claimed_at, stored)
    return stored


def get_user(conn: Connection, user_id: str, now: datetime) -> SystemUser:
    row = conn.execute(select(*_user_columns(now)).where(users.c.id == user_id)).first()
    if row is None:
        raise not_found(f"user {user_id}")
    return _to_user(row, _max_failures(conn), now)


def require_user(conn: Connection, user_id: str, *, lock: bool = False) -> Any:
    """The raw user row (locked for update on PostgreSQL), or 404."""
    query = select(users).where(users.c.id == user_id)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise not_found(f"user {user_id}")
    return row


# ----------------------------------------------------------------- writes


def _check_unique(conn: Connection, field: str, value: str, exclude_id: str | None = None) -> None:
    query = select(users.c.id).where(users.c[f"{field}_ci"] == value.casefold())
    if exclude_id:
        query = query.where(users.c.id != exclude_id)
    if conn.execute(query.limit(1)).first() is not None:
        raise conflict(f"{field} {value!r} is already taken")


def create_user(store: Store, body: SystemUserCreate, actor: Principal, now: datetime) -> SystemUser:
    user_id = new_id()
    try:
        with store.write() as conn:
            _check_unique(conn, "username", body.username)
            _check_unique(conn, "email", body.email)
            fields = body.model_dump()
            conn.execute(insert(users).values(id=user_id, created=now, **fields, **folded(fields)))
            record(conn, actor, "user.create", user_id, {"after": body.model_dump()}, now)
            return get_user(conn, user_id, now)
    except IntegrityError:  # a racing create took the name between check and insert
        raise conflict("username or email is already taken") from None


# Wire field -> column, where they differ.
_UPDATE_COLUMNS = {"requireUserVerification": "require_user_verification"}


def update_user(store: Store, user_id: str, body: SystemUserUpdate, actor: Principal, now: datetime) -> SystemUser:
    requested = body.model_dump(exclude_unset=True, exclude_none=True)
    try:
        with store.write() as conn:
            row = require_user(conn, user_id, lock=True)
            # Only what differs is a change: the same values again write nothing and audit nothing.
            change = {k: v for k, v in requested.items() if row._mapping[_UPDATE_COLUMNS.get(k, k)] != v}
            for field in ("username", "email"):
                if field in change:
                    _check_unique(conn, field, change[field], exclude_id=user_id)
            before = {k: row._mapping[_UPDATE_COLUMNS.get(k, k)] for k in change}
            if change:
                values = {_UPDATE_COLUMNS.get(k, k): v for k, v in change.items()}
                conn.execute(update(users).where(users.c.id == user_id).values(**values, **folded(change)))
                record(conn, actor, "user.update", user_id, {"before": before, "after": change}, now)
            return get_user(conn, user_id, now)
    except IntegrityError:
        raise conflict("username or email is already taken") from None


def unlock_user(store: Store, user_id: str, actor: Principal, now: datetime) -> tuple[SystemUser, bool]:
    """Clear ``account_locked``. Returns (user, changed); an unlocked user is a no-op (not audited)."""
    with store.write() as conn:
        row = require_user(conn, user_id, lock=True)
        changed = bool(row.account_locked)
        if changed:
            conn.execute(update(users).where(users.c.id == user_id).values(account_locked=False))
            record(
                conn,
                actor,
                "user.unlock",
                user_id,
                {"before": {"account_locked": True}, "after": {"account_locked": False}},
                now,
            )
        return get_user(conn, user_id, now), changed


def delete_user(store: Store, user_id: str, actor: Principal, now: datetime) -> SystemUser:
    """Delete the user, their device, enrolment codes and pending pushes; answer the user as it was.

    The audit trail and the push-attempt history stay: both keep the username, so they
    still read (and filter) by name after the user row is gone.
    """
    with store.write() as conn:
        require_user(conn, user_id, lock=True)
        before = get_user(conn, user_id, now)
        device = remove_push_device(conn, user_id, now)
        cancelled = cancel_pending_pushes(conn, user_id, now)  # pushes pending without a device, if any
        codes = conn.execute(delete(enrollment_codes).where(enrollment_codes.c.user_id == user_id)).rowcount or 0
        conn.execute(update(push_attempts).where(push_attempts.c.user_id == user_id).values(username=before.username))
        conn.execute(delete(users).where(users.c.id == user_id))
        record(
            conn,
            actor,
            "user.delete",
            user_id,
            {
                "before": before.model_dump(mode="json", by_alias=True),
                "after": None,
                "removedDevice": device.id if device is not None else None,
                "removedEnrollmentCodes": codes,
                "cancelledPushes": cancelled + (device.cancelled if device is not None else 0),
            },
            now,
        )
        keep_target_name(conn, user_id, before.username)  # every event about them, this one included
        return before


def cancel_pending_pushes(conn: Connection, user_id: str, now: datetime) -> int:
    """Pending attempts end as expired when the device that could answer them goes away."""
    result = conn.execute(
        update(push_attempts)
        .where(push_attempts.c.user_id == user_id, PUSH_IS_PENDING, push_attempts.c.expires_at > now)
        .values(status="expired", expires_at=now)
    )
    return result.rowcount or 0


class RemovedDevice:
    """The removed device's row, and how many pending pushes died with it."""

    def __init__(self, row: Any, cancelled: int) -> None:
        self.row = row
        self.id = row.id
        self.cancelled = cancelled


def remove_push_device(conn: Connection, user_id: str, now: datetime) -> RemovedDevice | None:
    """Delete the user's device (its token dies with the row) and cancel its pending pushes."""
    device = conn.execute(select(devices).where(devices.c.user_id == user_id)).first()
    if device is None:
        return None
    conn.execute(delete(devices).where(devices.c.id == device.id))
    return RemovedDevice(device, cancel_pending_pushes(conn, user_id, now))


def _clear_totp() -> dict[str, Any]:
    return {"totp_secret": None, "totp_status": "NOT_ENROLLED", "totp_last_step": None, **CLEAR}


def _has_totp(row: Any) -> bool:
    """Whether a TOTP reset would change anything (a secret, an enrolment, or failures counted)."""
    return (
        row.totp_secret is not None
        or row.totp_status != "NOT_ENROLLED"
        or bool(row.totp_failures)
        or row.totp_locked_until is not None
    )


def reset_totp(store: Store, user_id: str, actor: Principal, now: datetime) -> tuple[SystemUser, bool]:
    """Clear the TOTP secret and its lock. Returns (user, changed); without TOTP it is a no-op (not audited)."""
    with store.write() as conn:
        row = require_user(conn, user_id, lock=True)
        changed = _has_totp(row)
        if changed:
            conn.execute(update(users).where(users.c.id == user_id).values(**_clear_totp()))
            record(
                conn,
                actor,
                "totp.reset",
                user_id,
                {
                    "before": {"totpStatus": row.totp_status, "failures": row.totp_failures},
                    "after": {"totpStatus": "NOT_ENROLLED", "failures": 0},
                },
                now,
            )
        return get_user(conn, user_id, now), changed


def reset_mfa(store: Store, user_id: str, body: ResetMfaRequest, actor: Principal, now: datetime) -> SystemUser:
    until: datetime | None = None
    if body.exclusion:
        if body.exclusionUntil is not None:
            try:
                until = from_wire(body.exclusionUntil)
            except ValueError:
                raise bad_request("exclusionUntil: date-time out of range") from None
            if until <= now:
                raise bad_request("exclusionUntil: must be in the future")
            if until > now + timedelta(days=MAX_GRACE_DAYS):
                raise bad_request(f"exclusionUntil: a grace period can last at most {MAX_GRACE_DAYS} days")
        else:
            until = now + timedelta(days=body.exclusionDays or DEFAULT_GRACE_DAYS)
    with store.write() as conn:
        row = require_user(conn, user_id, lock=True)
        before = get_user(conn, user_id, now)
        new_values = dict(
            **_clear_totp(),
            push_status="NOT_ENROLLED",
            push_pending_until=None,
            mfa_exclusion=bool(body.exclusion),
            mfa_exclusion_until=until,
        )
        device = remove_push_device(conn, user_id, now)
        codes = conn.execute(delete(enrollment_codes).where(enrollment_codes.c.user_id == user_id)).rowcount or 0
        if (
            device is None
            and not codes
            and not _has_totp(row)
            and all(row._mapping[k] == v for k, v in new_values.items() if not k.startswith("totp_"))
        ):
            return before  # nothing to remove and no grace to start or end: no change, no audit event
        conn.execute(update(users).where(users.c.id == user_id).values(**new_values))
        after = get_user(conn, user_id, now)
        record(
            conn,
            actor,
            "mfa.reset",
            user_id,
            {
                "before": before.mfaEnrollment.model_dump(mode="json"),
                "after": after.mfaEnrollment.model_dump(mode="json"),
                "removedDevice": device.id if device is not None else None,
                "graceUntil": until.isoformat() if until else None,
            },
            now,
        )
        return after


def count_users(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(users)).scalar_one()
