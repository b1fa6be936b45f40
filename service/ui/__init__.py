"""The dashboard: server-rendered pages for people, at ``/ui`` of the API's own app (``/`` redirects there).

A sub-application mounted on the API app and sharing its state (database sessions, blob store, queue, key and job
caches), so that its errors are pages, not the API's JSON: a missing sign-in is a redirect to the sign-in page, an
APIError a page that says what went wrong, anything unexpected a page with no stack trace (logged as the API logs it).
Templates (Jinja2) and a little plain JavaScript, no build step, nothing from another host.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import APIError
from service.ui.policy import PagePolicyMiddleware
from service.ui.routes import page, router
from service.ui.session import COOKIE, ForeignOrigin, SignInRequired, to_sign_in

log = logging.getLogger("sparseq.ui")
STATIC = Path(__file__).parent / "static"


def create_dashboard(parent: FastAPI) -> FastAPI:
    dashboard = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    dashboard.state = parent.state  # the same sessions, store, queue and caches as the API
    dashboard.mount("/static", StaticFiles(directory=STATIC), name="static")
    dashboard.include_router(router)

    @dashboard.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _: SignInRequired):
        return to_sign_in(forget=bool(request.cookies.get(COOKIE)))

    @dashboard.exception_handler(ForeignOrigin)
    async def _foreign(request: Request, _: ForeignOrigin):
        return page(request, "error.html", 403, title="Refused", message="This form was posted from another site.")

    @dashboard.exception_handler(APIError)
    async def _api_error(request: Request, error: APIError):
        title = {404: "Not found", 409: "Not possible now"}.get(error.status, "Something is wrong")
        return page(request, "error.html", error.status, title=title, message=error.message)

    @dashboard.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(p) for p in first["loc"][1:]) or "the form"
        return page(request, "error.html", 422, title="Invalid form", message=f"{field}: {first['msg']}")

    @dashboard.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException):
        message = "There is no such page." if error.status_code == 404 else str(error.detail)
        return page(request, "error.html", error.status_code, title="Not found", message=message)

    @dashboard.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        log.exception("unhandled error on a dashboard page", exc_info=error)
        return page(request, "error.html", 500, title="Internal error", message="Something went wrong on our side.")

    return dashboard


def install(app: FastAPI) -> None:
    """Mount the dashboard at /ui, send visitors of / to it, and keep the pages for people (/docs, /redoc, /ui)
    from loading anything from another host."""

    @app.get("/", include_in_schema=False)
    async def _home() -> RedirectResponse:
        return RedirectResponse("/ui/jobs", status_code=307)

    app.mount("/ui", create_dashboard(app), name="ui")
    app.add_middleware(PagePolicyMiddleware)
