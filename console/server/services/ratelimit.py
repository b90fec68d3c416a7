"""Rate limits on the routes a guesser or a flood would use, shared by every process through the database.

Each API key and, separately, each client address may make ``rateLimits.<route>PerMinute`` requests
(settings) to a route per minute of the server clock. A request adds one to the counter row of each
of its subjects, ``(route, "key:<key id>", minute)`` and ``(route, "ip:<address>", minute)``, in one
UPSERT that returns the new counts; over the limit the answer is 429 with ``Retry-After`` (the
seconds left in the minute). Fixed windows: at a window's edge a subject can make up to twice the
limit within a few seconds, which is acceptable for limits set well above normal use. Refused
requests count too: a client that keeps hammering stays refused until the minute ends.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, delete, false, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ...models import ProtectSettings
from ..errors import ApiProblem
from ..metrics import rate_limited
from ..store import Decision, Step, Store, rate_limit_hits, write_only, write_rows
from .settings import read_settings

WINDOW_SECONDS = 60


class Route(StrEnum):
    """The limited routes (the counter rows' ``route``)."""

    TOTP_VERIFY = "totp"
    PUSH = "push"
    ENROLL = "enroll"


_WHAT = {Route.TOTP_VERIFY: "TOTP checks", Route.PUSH: "push requests", Route.ENROLL: "device enrolments"}
KEY, ADDRESS = "key:", "ip:"


def limit_for(route: Route, cfg: ProtectSettings) -> int:
    """The setting that limits ``route`` (per API key and per client address, per minute)."""
    limits = cfg.rateLimits
    return {
        Route.TOTP_VERIFY: limits.totpVerifyPerMinute,
        Route.PUSH: limits.pushPerMinute,
        Route.ENROLL: limits.enrollPerMinute,
    }[route]


class RateLimited(ApiProblem):
    """429: the key or the address made more requests to the route than the limit this minute."""

    def __init__(self, route: Route, subject: str, limit: int, retry_after: int) -> None:
        who = "this API key" if subject.startswith(KEY) else "this client address"
        super().__init__(
            429,
            f"too many {_WHAT[route]} from {who} (limit {limit} a minute); try again in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
            retryAfter=retry_after,
        )


class Hits:
    """The counts one request brought its subjects to, in the minute starting at ``window``."""

    def __init__(self, route: Route, window: int, epoch: int, counts: dict[str, int]) -> None:
        self.route, self.window, self.epoch, self.counts = route, window, epoch, counts

    def check(self, cfg: ProtectSettings) -> None:
        """Raise :class:`RateLimited` if a subject is over the limit in force."""
        limit = limit_for(self.route, cfg)
        for subject, count in self.counts.items():
            if count > limit:
                rate_limited(self.route.value, "key" if subject.startswith(KEY) else "address")
                raise RateLimited(self.route, subject, limit, max(1, self.window + WINDOW_SECONDS - self.epoch))


def client_address(client: Any) -> str | None:
    """The address a rate limit counts: the peer's host (``scope["client"]`` or Starlette's ``request.client``).

    Behind a proxy it is the proxy's unless uvicorn is told to trust its forwarded headers (README)."""
    return client[0] if client else None


def _subjects(key_id: str | None, address: str | None) -> list[str]:
    subjects = []
    if key_id:
        subjects.append(KEY + key_id)
    if address:
        subjects.append(ADDRESS + address[:64])
    return subjects


_UPSERTS: dict[tuple[str, int], Any] = {}


def _upsert(dialect: str, n: int) -> Any:
    """``INSERT ... ON CONFLICT DO UPDATE SET hits = hits + 1 RETURNING subject, hits`` for ``n`` subjects."""
    statement = _UPSERTS.get((dialect, n))
    if statement is None:
        make = sqlite.insert if dialect == "sqlite" else postgresql.insert
        rows = [
            {
                "route": bindparam("route"),
                "subject": bindparam(f"subject{i}"),
                "window_start": bindparam("window"),
                "hits": 1,
            }
            for i in range(n)
        ]
        statement = _UPSERTS[(dialect, n)] = (
            make(rate_limit_hits)
            .values(rows)
            .on_conflict_do_update(
                index_elements=[rate_limit_hits.c.route, rate_limit_hits.c.subject, rate_limit_hits.c.window_start],
                set_={"hits": rate_limit_hits.c.hits + 1},
            )
            .returning(rate_limit_hits.c.subject, rate_limit_hits.c.hits)
        )
    return statement


# A new minute's first request clears the windows before the last one (the index on window_start).
_PRUNE = delete(rate_limit_hits).where(rate_limit_hits.c.window_start < bindparam("before"))


def _window(now: datetime) -> tuple[int, int]:
    epoch = int(now.replace(tzinfo=UTC).timestamp())
    return epoch - epoch % WINDOW_SECONDS, epoch


def _params(route: Route, subjects: list[str], window: int) -> dict[str, Any]:
    return {"route": route.value, "window": window, **{f"subject{i}": s for i, s in enumerate(subjects)}}


class Counting:
    """A hot route's count as a step (:class:`~console.server.store.Step`): the UPSERT, sent by the decision
    (with its read, on PostgreSQL, in one round trip), then :meth:`hits` on the rows it returned."""

    def __init__(self, store: Store, route: Route, *, key_id: str | None, address: str | None, now: datetime) -> None:
        self.route = route
        self.window, self.epoch = _window(now)
        self.subjects = subjects = _subjects(key_id, address)
        if subjects:
            statement = _upsert(store.engine.dialect.name, len(subjects))
            self.step = write_rows(statement, **_params(route, subjects, self.window))
        else:
            self.step = write_rows(_NOTHING)  # no subject to count (never on the hot routes: they need a key)

    def hits(self, rows: list[Any]) -> Decision[Hits]:
        """The counts; a new minute's first request also clears the windows before the last one."""
        hits, prune = self.tally(rows)
        if prune is not None:
            yield prune
        return hits

    def tally(self, rows: list[Any]) -> tuple[Hits, Step | None]:
        """The counts, and the clearing a new minute's first request owes (to run outside a transaction
        that locks other rows)."""
        counts: dict[str, int] = dict(rows)
        prune = write_only(_PRUNE, before=self.window - WINDOW_SECONDS) if 1 in counts.values() else None
        return Hits(self.route, self.window, self.epoch, counts), prune


_NOTHING = select(rate_limit_hits.c.subject, rate_limit_hits.c.hits).where(false())

# PostgreSQL: each subject's requests of a batch added in one UPSERT (the rows in the order given).
_COUNT_MANY = text(
    "INSERT INTO rate_limit_hits (route, subject, window_start, hits)"
    " SELECT CAST(:route AS VARCHAR), v.subject, CAST(:window AS BIGINT), v.n"
    " FROM unnest(CAST(:subjects AS TEXT[]), CAST(:ns AS INTEGER[])) AS v(subject, n)"
    " ON CONFLICT (route, subject, window_start) DO UPDATE SET hits = rate_limit_hits.hits + excluded.hits"
    " RETURNING subject, hits"
)


def _lock_order(subject: str) -> tuple[bool, str]:
    """Keys before addresses, as one request counts them (:func:`_subjects`): batches and single requests
    lock the counter rows in one order, so they cannot deadlock."""
    return not subject.startswith(KEY), subject


class CountingMany:
    """The counts of requests decided together (PostgreSQL, console/server/batching.py): one UPSERT adds each
    subject's number of requests, and each request gets the count it would have got had they come one after
    another in the batch's order."""

    def __init__(self, route: Route, requests: list[tuple[str | None, str | None]], *, now: datetime) -> None:
        self.route = route
        self.window, self.epoch = _window(now)
        self._subjects = [_subjects(key_id, address) for key_id, address in requests]
        self._totals = totals = Counter(s for subjects in self._subjects for s in subjects)
        ordered = sorted(totals, key=_lock_order)
        params = {"route": route.value, "window": self.window, "subjects": ordered, "ns": [totals[s] for s in ordered]}
        self.step = write_rows(_COUNT_MANY, **params) if ordered else write_rows(_NOTHING)

    def tally(self, rows: list[Any]) -> tuple[list[Hits], Step | None]:
        """Each request's counts, and the clearing a new minute's first request owes (see :meth:`Counting.tally`)."""
        reached: dict[str, int] = dict(rows)
        before = {s: reached[s] - n for s, n in self._totals.items()}
        hits = []
        for subjects in self._subjects:
            counts = {}
            for s in subjects:
                before[s] += 1
                counts[s] = before[s]
            hits.append(Hits(self.route, self.window, self.epoch, counts))
        fresh = any(reached[s] == n for s, n in self._totals.items())  # some subject's row made by this batch
        prune = write_only(_PRUNE, before=self.window - WINDOW_SECONDS) if fresh else None
        return hits, prune


def count(conn: Connection, route: Route, *, key_id: str | None, address: str | None, now: datetime) -> Hits:
    """The count on a SQLAlchemy connection (in the caller's transaction)."""
    window, epoch = _window(now)
    subjects = _subjects(key_id, address)
    if not subjects:
        return Hits(route, window, epoch, {})
    statement = _upsert(conn.dialect.name, len(subjects))
    counts = dict(conn.execute(statement, _params(route, subjects, window)).all())
    if 1 in counts.values():
        conn.execute(_PRUNE, {"before": window - WINDOW_SECONDS})
    return Hits(route, window, epoch, counts)


def admit(store: Store, route: Route, *, key_id: str | None, address: str | None, now: datetime) -> None:
    """Count the request in a transaction of its own, then refuse it if it is over the limit.

    For the routes that are not hot (the audited TOTP check, device enrolment): the count is
    committed before the request's own work, so requests that then fail (a wrong enrolment code,
    an unknown user) still count.
    """
    with store.write() as conn:
        hits = count(conn, route, key_id=key_id, address=address, now=now)
        cfg = read_settings(conn)[0]
    hits.check(cfg)
