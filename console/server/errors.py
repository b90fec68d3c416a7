"""One error shape for the whole API: ``{"message": "..."}`` with a precise status."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, APIRouter
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..models import ErrorBody, ValidationErrorBody

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


def _utf8(raw: bytes) -> str | None:
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return None


def invalid_query(query_string: bytes) -> ApiProblem | None:
    """A 422 naming the first query parameter whose name or value is not UTF-8 once percent-decoded (a lone
    surrogate's bytes, %ED%A0%80): Starlette would read it as U+FFFD, another value than the one sent."""
    for pair in query_string.split(b"&"):
        name, _, value = pair.partition(b"=")
        field = _utf8(name)
        if field is None or _utf8(value) is None:
            where = f"{field} (query)" if field else "query"
            message = "is not valid UTF-8 text (percent-encoded bytes of no character)"
            return ApiProblem(422, f"{where}: {message}", errors=[{"field": where, "message": message}])
    return None


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
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI's "error parsing the body": not UTF-8
            errors = [{"field": "request body", "message": "is not valid JSON (not UTF-8)"}]
            return JSONResponse(
                {"message": "request body: is not valid JSON (not UTF-8)", "errors": errors}, status_code=422
            )
        detail: object = exc.detail  # FastAPI's HTTPException takes any detail, Starlette's a str
        message = detail if isinstance(detail, str) else "request refused"
        headers = exc.headers
        if exc.status_code == 405:  # Starlette names the methods of the first route on the path only
            headers = {**(headers or {}), "Allow": ", ".join(_methods_on(app, request.scope))}
        return JSONResponse({"message": message}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeoutError)
    async def _database(_request: Request, exc: Exception) -> JSONResponse:
        if not is_outage(exc):
            log.error("unhandled database error", exc_info=exc)
            return JSONResponse({"message": "internal error"}, status_code=500)
        # One line, no traceback: the database is down or unreachable; the pool reconnects by itself.
        reason = str(getattr(exc, "orig", None) or type(exc).__name__).strip().splitlines() or ["?"]
        log.warning("database unavailable: %s", reason[0])
        return JSONResponse({"message": DATABASE_UNAVAILABLE}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return JSONResponse({"message": "internal error"}, status_code=500)


def _error(description: str, example: dict[str, Any]) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description, "content": {"application/json": {"example": example}}}


class ErrorResponses:
    """OpenAPI descriptions of the error envelope (``{"message": ...}``, see ``ErrorBody``)."""

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
    unauthorized = _error(
        "Missing, invalid, revoked or expired credentials (`x-api-key`, or a device's token)",
        {"message": "invalid or revoked API key"},
    )
    forbidden = _error(
        "The key's role lacks the permission", {"message": "role 'readonly' does not have permission 'push.block'"}
    )
    not_found = _error("No such thing: `message` says which", {"message": "user 5f0c1a2b3c4d5e6f7a8b9c0d not found"})
    conflict = _error(
        "The request conflicts with the current state; `message` says how",
        {"message": "username 'ada' is already taken"},
    )
    stale = _error(
        "`If-Match` is not the current ETag: someone changed it since you read it; read it again",
        {"message": "settings were changed by someone else since you read them; read them again"},
    )
    precondition_required = _error(
        "`If-Match` is missing: read first and send back the ETag",
        {"message": "If-Match header is required: read the settings and send back their ETag"},
    )
    too_large = _error(
        "The body is over the limit (1 MiB); refused before it is read",
        {"message": "request body larger than 1048576 bytes: refused before reading it"},
    )
    invalid = {
        "model": ValidationErrorBody,
        "description": "The request does not validate; `message` names the field (each one in `errors`)",
        "content": {
            "application/json": {
                "example": {
                    "message": "minutes: Input should be less than or equal to 1440",
                    "errors": [{"field": "minutes", "message": "Input should be less than or equal to 1440"}],
                }
            }
        },
    }
    throttled = _error(
        "Too many requests, or locked out for now; retry after `Retry-After` seconds",
        {"message": "too many requests; try again in 12 s", "retryAfter": 12},
    )
    unavailable = _error(
        "The database is not answering (an outage), or the service is busy; retry after `Retry-After` seconds",
        {"message": DATABASE_UNAVAILABLE},
    )
    bad_request = _error(
        "Well-formed but refused: a cursor from another listing, a filter or date out of range; "
        "`message` names the parameter",
        {"message": "since: date-time out of range (1970..9000)"},
    )

    @staticmethod
    def table() -> dict[int, dict[str, Any]]:
        return {
            400: ErrorResponses.bad_request,
            401: ErrorResponses.unauthorized,
            403: ErrorResponses.forbidden,
            404: ErrorResponses.not_found,
            409: ErrorResponses.conflict,
            412: ErrorResponses.stale,
            413: ErrorResponses.too_large,
            422: ErrorResponses.invalid,
            428: ErrorResponses.precondition_required,
            429: ErrorResponses.throttled,
            503: ErrorResponses.unavailable,
        }

    @staticmethod
    def of(*statuses: int) -> dict[int | str, dict[str, Any]]:
        """``responses=`` for a route that can answer these error statuses (beyond those derived, below)."""
        table = ErrorResponses.table()
        return {status: table[status] for status in statuses}


def api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every APIRoute of an app, those of included routers too."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # FastAPI includes a router as one route that holds it
            yield from api_routes(route.original_router.routes)


def _methods_on(app: FastAPI, scope: Mapping[str, Any]) -> list[str]:
    """Every method some route answers on this request's path."""
    path = scope.get("path", "")
    return sorted({m for r in api_routes(app.routes) if r.path_regex.match(path) for m in r.methods or ()})


# ------------------------------------------------------------------ documented statuses

# The error statuses every API operation documents, derived from what its route declares, so that a route
# added later is described without hand-editing. Where each comes from:
#   401  a security requirement: an API key or a device token (auth.py's dependencies)
#   403  a role check among its dependencies (auth.require / auth.require_hot: the Can* aliases of deps.py)
#   404  an id in its path: the thing may not exist
#   422  parameters or a body: validation, answered by install_error_handlers naming the field
#   413  any route: a body over the limit is refused before it is read (limits.py)
#   503  any route: a database outage (above) or the requests-in-progress cap (limits.py)
# Statuses a route's service decides (400, 409, 412, 428, 429 from a rate limit, a 404 for an id in the body) the route declares
# itself with ErrorResponses.of(...); what a route declares wins. The operations endpoints (/healthz,
# /metrics) describe their own.
_EVERYWHERE = (413, 503)
_REF = "#/components/schemas/{model}"
_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "options", "head")


def dependants(dependant: Dependant) -> Iterator[Dependant]:
    """A route's dependency and all it depends on."""
    yield dependant
    for sub in dependant.dependencies:
        yield from dependants(sub)


def _checks_role(route: APIRoute) -> bool:
    return any(
        getattr(d.call, "__qualname__", "").startswith(("require.", "require_hot."))
        for d in dependants(route.dependant)
    )


def derived_statuses(operation: dict[str, Any], path: str, route: APIRoute | None) -> list[int]:
    """The error statuses :func:`document_errors` documents for one operation (see the table above)."""
    statuses = set(_EVERYWHERE)
    if operation.get("security"):
        statuses.add(401)
    if route is not None and _checks_role(route):
        statuses.add(403)
    if "{" in path:
        statuses.add(404)
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.add(422)
    return sorted(statuses)


def _content(model: type) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}}


def _add_error_statuses(schema: dict[str, Any], routes: dict[tuple[str, str], APIRoute]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorBody, ValidationErrorBody):
        definition = model.model_json_schema(ref_template=_REF)
        components.update(definition.pop("$defs", {}))
        components[model.__name__] = definition
    table = ErrorResponses.table()
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in _HTTP_METHODS or "operations" in operation.get("tags", ()):
                continue
            responses = operation.setdefault("responses", {})
            for status in derived_statuses(operation, path, routes.get((path, method.upper()))):
                entry = table[status]
                responses.setdefault(str(status), {"description": entry["description"], "content": entry["content"]})
            for status, response in responses.items():
                if not status.isdigit() or int(status) < 400:
                    continue
                model = ValidationErrorBody if status == "422" else ErrorBody
                body = response.get("content", {}).get("application/json", {})
                if "HTTPValidationError" in str(body.get("schema")):  # FastAPI's default 422 is not our body
                    response["description"] = table[422]["description"]
                    body = {}
                if "schema" not in body:
                    example = body.get("example") or table.get(int(status), {}).get("content", {}).get(
                        "application/json", {}
                    ).get("example")
                    response["content"] = _content(model)
                    if example is not None:
                        response["content"]["application/json"]["example"] = example


def document_errors(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    """Make ``app``'s OpenAPI document every error status each operation can answer, each with the
    ``{"message"}`` body (see the table above). ``routers``: the API's routers, for what their routes check."""
    routes = {
        (r.path, m): r for router in routers for r in router.routes if isinstance(r, APIRoute) for m in r.methods or ()
    }
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        _add_error_statuses(schema, routes)  # idempotent: FastAPI keeps the document it built
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
