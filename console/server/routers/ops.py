"""Operations endpoints: ``/healthz`` for load balancers, ``/metrics`` for Prometheus."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from sqlalchemy import text

from ...models import ErrorBody
from ..errors import DATABASE_UNAVAILABLE, ApiProblem, ErrorResponses
from ..metrics import render
from ..services.keys import authenticate

router = APIRouter(tags=["operations"])
log = logging.getLogger("protect.server")

_metrics_key = APIKeyHeader(
    name="x-api-key",
    auto_error=False,
    scheme_name="MetricsKey",
    description="Any valid API key; needed only when the service runs with `--metrics-key`.",
)


class Health(BaseModel):
    status: str = "ok"


@router.get(
    "/healthz",
    response_model=Health,
    responses={
        503: {
            "model": ErrorBody,
            "description": "The database does not answer a query",
            "content": {"application/json": {"example": {"message": DATABASE_UNAVAILABLE}}},
        }
    },
)
def healthz(request: Request) -> Health | JSONResponse:
    """Liveness and readiness for load balancers: 200 while this process can query the database, else 503.
    No API key."""
    try:
        with request.app.state.store.read() as conn:
            conn.execute(text("SELECT 1")).scalar_one()
    except Exception as exc:  # noqa: BLE001 - any failure to answer is "not healthy"; the reason goes to the log
        log.warning("healthz: the database does not answer: %s", type(exc).__name__)
        return JSONResponse({"message": DATABASE_UNAVAILABLE}, status_code=503, headers={"Retry-After": "1"})
    return Health()


@router.get(
    "/metrics",
    response_class=Response,
    # The key is optional unless the service runs with `--metrics-key`: `{}` is "no key" in OpenAPI terms.
    openapi_extra={"security": [{}]},
    responses={
        200: {
            "description": "Prometheus text exposition format (version 0.0.4)",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **ErrorResponses.of(401),
    },
)
def metrics(request: Request, key: str | None = Depends(_metrics_key)) -> Response:
    """Prometheus metrics of every worker process of this instance: `protect_http_requests_total`
    (method, route template, status), `protect_http_request_duration_seconds` (histogram),
    `protect_push_attempts_total` (outcome) and `protect_totp_verifications_total` (outcome).
    No API key, unless the service runs with `--metrics-key` (then any valid key)."""
    if request.app.state.metrics_require_key:
        if not key:
            raise ApiProblem(401, "missing x-api-key header (this service requires a key for /metrics)")
        if authenticate(request.app.state.store, key) is None:
            raise ApiProblem(401, "invalid or revoked API key")
    body, content_type = render()
    return Response(body, media_type=content_type)
