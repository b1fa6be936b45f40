"""The HTTP side of the errors: the one handler that renders every domain error (service.errors), request
validation failure and unexpected exception as ``{"error": {"code", "message", "param"}}``, and the error statuses
routes declare in the OpenAPI document."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.errors import APIError, Unprocessable
from service.schemas import ErrorResponse

log = logging.getLogger("sparseq.api")


ERROR_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing or invalid API key",
    404: "Not found",
    409: "Conflict",
    413: "Upload too large",
    416: "The range starts past the end of the content",
    422: "Invalid request",
    429: "Too many requests: wait Retry-After seconds",
    503: "Unavailable",
}
# Headers that come with an error status, declared beside its body.
ERROR_HEADERS = {
    416: {"Content-Range": {"description": "bytes */<size>: the content's size", "schema": {"type": "string"}}},
    429: {
        "Retry-After": {
            "description": "seconds to wait before the next request",
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}


def responses(*statuses: int) -> dict:
    """``responses=`` for a route: the one error component (ErrorResponse) for each status it can answer with.

    422 is always included: any route can get a malformed parameter, and FastAPI would otherwise document its own
    ``{"detail": ...}`` shape, which this service never sends.
    """
    declared = {}
    for status in sorted({*statuses, 422}):
        declared[status] = {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]}
        if status in ERROR_HEADERS:
            declared[status]["headers"] = ERROR_HEADERS[status]
    return declared


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path (Starlette's 405 names only the first route that matched the path:
    ``GET`` for ``/v1/files``, which also takes ``POST``). Each method is tried against the app's routes as the router
    would (their public ``matches``), so routers included in routers are seen too."""
    scope = {key: request.scope[key] for key in ("type", "path", "root_path") if key in request.scope}
    routes = request.app.router.routes
    return sorted(m for m in METHODS if any(r.matches({**scope, "method": m})[0] is Match.FULL for r in routes))


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, error: APIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        # Field names only: a JSON decode error's location ends in a character offset, which is not a parameter.
        location = [p for p in first["loc"] if isinstance(p, str) and p not in ("body", "query", "path", "header")]
        message = first["msg"].removeprefix("Value error, ")
        param = None if first.get("type") == "json_invalid" else (".".join(location) or None)
        return JSONResponse(Unprocessable(message, param=param).body(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if isinstance(error.__cause__, UnicodeDecodeError):  # FastAPI's 400 for a JSON body that is not UTF-8
            # A JSON text is UTF-8 (RFC 8259): the same 422 as any other body that is not JSON.
            message = f"the request body is not UTF-8 JSON ({error.__cause__.reason} at byte {error.__cause__.start})"
            return JSONResponse(Unprocessable(message).body(), status_code=422)
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        headers = dict(getattr(error, "headers", None) or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(
            {"error": {"code": code, "message": str(error.detail), "param": None}},
            status_code=error.status_code,
            headers=headers or None,
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=error)
        return JSONResponse(
            {"error": {"code": "internal_error", "message": "internal server error", "param": None}}, status_code=500
        )
