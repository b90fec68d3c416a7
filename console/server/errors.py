"""One error shape for the whole API: ``{"message": "..."}`` with a precise status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..models import ErrorBody

log = logging.getLogger("protect.server")

DATABASE_UNAVAILABLE = "the database is not answering; try again shortly"


def is_outage(exc: BaseException) -> bool:
    """A database error that says the database cannot be reached or used right now (not a bug in a query)."""
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeoutError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class ApiProblem(Exception):
    """A refusal the caller can act on."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra


def bad_request(message: str) -> ApiProblem:
    return ApiProblem(400, message)


def not_found(what: str) -> ApiProblem:
    return ApiProblem(404, f"{what} not found")


def conflict(message: str) -> ApiProblem:
    return ApiProblem(409, message)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        source, parts = parts[0], parts[1:]
        if not parts:
            return "request body" if source == "body" else source
        if source != "body":
            return f"{'.'.join(parts)} ({source})"
    return ".".join(parts)


def _validation_message(exc: RequestValidationError) -> tuple[str, list[dict[str, str]]]:
    errors = []
    for err in exc.errors():
        field = _field(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif err.get("type") == "json_invalid":
            field, msg = "request body", "is not valid JSON"
        errors.append({"field": field, "message": msg})
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5]) or "invalid request"
    return summary, errors


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def _problem(_request: Request, exc: ApiProblem) -> JSONResponse:
        return JSONResponse({"message": exc.message, **exc.extra}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, errors = _validation_message(exc)
        return JSONResponse({"message": message, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        return JSONResponse({"message": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeoutError)
    async def _database(_request: Request, exc: Exception) -> JSONResponse:
        if not is_outage(exc):
            log.exception("unhandled database error", exc_info=exc)
            return JSONResponse({"message": "internal error"}, status_code=500)
        # One line, no traceback: the database is down or unreachable; the pool reconnects by itself.
        reason = str(getattr(exc, "orig", None) or type(exc).__name__).strip().splitlines() or ["?"]
        log.warning("database unavailable: %s", reason[0])
        return JSONResponse({"message": DATABASE_UNAVAILABLE}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse({"message": "internal error"}, status_code=500)


def _error(description: str, example: dict[str, Any]) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description, "content": {"application/json": {"example": example}}}


class ErrorResponses:
    """OpenAPI descriptions of the error envelope (``{"message": ...}``, see ``ErrorBody``)."""

    rate_limited = {
        "description": "Concurrency cap reached; retry after `retryAfter` seconds",
        "content": {"application/json": {"example": {"message": "too many concurrent push attempts", "retryAfter": 42}}},
    }
    push_refused = _error(
        "Refused and recorded as a `blocked` attempt: either the user's pushes are blocked (Stop attack; "
        "`blockedUntil` says until when) or the concurrency cap is reached. Retry after `retryAfter` seconds "
        "(also in the `Retry-After` header).",
        {
            "message": "pushes to this user are blocked until 2026-01-01T14:05:00+00:00 (an admin stopped a push "
            "attack); try again later",
            "retryAfter": 840,
            "blockedUntil": "2026-01-01T14:05:00+00:00",
        },
    )
    unauthorized = _error("Missing, invalid or revoked `x-api-key`", {"message": "invalid or revoked API key"})
    forbidden = _error(
        "The key's role lacks the permission", {"message": "role 'readonly' does not have permission 'push.block'"}
    )
    user_not_found = _error("No such user", {"message": "user 5f0c1a2b3c4d5e6f7a8b9c0d not found"})
    invalid = _error(
        "The request does not validate; `message` names the field", {"message": "minutes: Input should be less than or equal to 1440"}
    )
    unavailable = _error("The database is not answering (an outage); retry after `Retry-After` seconds",
                         {"message": DATABASE_UNAVAILABLE})
    bad_request = _error("A parameter is out of range; `message` names it", {"message": "since: date-time out of range (1970..9000)"})

    @staticmethod
    def of(*statuses: int) -> dict[int | str, dict[str, Any]]:
        """``responses=`` for a route that can answer these error statuses."""
        table = {
            400: ErrorResponses.bad_request,
            401: ErrorResponses.unauthorized,
            403: ErrorResponses.forbidden,
            404: ErrorResponses.user_not_found,
            422: ErrorResponses.invalid,
            429: ErrorResponses.push_refused,
            503: ErrorResponses.unavailable,
        }
        return {status: table[status] for status in statuses}
