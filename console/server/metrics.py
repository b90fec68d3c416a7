"""Prometheus metrics: HTTP requests, push attempts and TOTP verifications.

Labels never carry user data: routes are templates (``/api/systemusers/{id}``), never paths,
and outcomes are a closed set. Under ``serve --workers N`` the runner points
``PROMETHEUS_MULTIPROC_DIR`` at a temporary directory *before* this module is imported
(prometheus-client picks its value store at import time), every worker writes its samples
there, and ``/metrics`` in any worker sums all of them.
"""

from __future__ import annotations

import os
import time
from enum import StrEnum
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "<unmatched>"  # a path no route matched: never the path itself (it could name a user)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # anything else is "OTHER"


class PushOutcome(StrEnum):
    ADMITTED = "admitted"
    BLOCKED_CAP = "blocked_cap"  # refused: max concurrent pending pushes for the user and resource
    BLOCKED_USER_CAP = "blocked_user_cap"  # refused: max pending pushes for the user across all resources
    BLOCKED_ATTACK = "blocked_attack"  # refused: an admin's Stop attack block is in force
    APPROVED = "approved"
    DENIED = "denied"
    FRAUD = "fraud"  # denied and reported as fraud (not also counted as denied)
    EXPIRED = "expired"  # the service recorded the expiry (late answer, or cancelled by Stop attack)


class TotpOutcome(StrEnum):
    VALID = "valid"
    WRONG_CODE = "wrong_code"
    REPLAY = "replay"
    LOCKED = "locked"
    NOT_ENROLLED = "not_enrolled"


HTTP_REQUESTS = Counter(
    "protect_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "protect_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
PUSH_ATTEMPTS = Counter("protect_push_attempts", "Push attempts by outcome", ["outcome"])
TOTP_VERIFICATIONS = Counter("protect_totp_verifications", "TOTP verifications by outcome", ["outcome"])
TOTP_LOCKOUTS = Counter("protect_totp_lockouts", "TOTP lock-outs started (too many wrong codes)")
RATE_LIMITED = Counter(
    "protect_rate_limited",
    "Requests refused with 429 by a rate limit, by route and subject (key or address)",
    ["route", "subject"],
)


# Labelled children, made once: .labels() takes a lock and builds a key on every call.
_PUSH = {outcome: PUSH_ATTEMPTS.labels(outcome=outcome.value) for outcome in PushOutcome}
_TOTP = {outcome: TOTP_VERIFICATIONS.labels(outcome=outcome.value) for outcome in TotpOutcome}
_HTTP: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def push_outcome(outcome: PushOutcome, count: int = 1) -> None:
    if count:
        _PUSH[outcome].inc(count)


def totp_outcome(outcome: TotpOutcome) -> None:
    _TOTP[outcome].inc()


def totp_lockout() -> None:
    TOTP_LOCKOUTS.inc()


def rate_limited(route: str, subject: str) -> None:
    """``route`` one of services.ratelimit.Route, ``subject`` "key" or "address" (closed sets)."""
    RATE_LIMITED.labels(route=route, subject=subject).inc()


def _http_children(method: str, route: str, status: str) -> tuple[Any, Any]:
    children = _HTTP.get((method, route, status))
    if children is None:
        children = (
            HTTP_REQUESTS.labels(method=method, route=route, status=status),
            HTTP_LATENCY.labels(method=method, route=route),
        )
        if len(_HTTP) < 10_000:  # routes x methods x statuses: a closed set, bounded all the same
            _HTTP[(method, route, status)] = children
    return children


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def render() -> tuple[bytes, str]:
    """The exposition text: this process's registry, or every worker's samples in multiprocess mode."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # its __init__ has no annotations
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(DEFAULT_REGISTRY), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts every HTTP response by route template and status, and times it (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = scope.get("method", "GET")
            method = method if method in METHODS else "OTHER"  # a client cannot mint label values
            count_http(method, template, status, time.perf_counter() - started)


def count_http(method: str, template: str, status: int, seconds: float) -> None:
    """One HTTP answer: ``method`` one of METHODS (or "OTHER"), ``template`` a route template or UNMATCHED."""
    count, latency = _http_children(method, template, str(status))
    count.inc()
    latency.observe(seconds)
