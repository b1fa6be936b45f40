"""Signing in to the dashboard: the API key lives in one browser-session cookie, never in a URL or a log line.

The cookie is HttpOnly (no script can read it), SameSite=Strict (no other site's page can make the browser send it,
so a form elsewhere cannot post to the dashboard as the user), Secure over HTTPS, scoped to ``/ui``, and has neither
Max-Age nor Expires: the browser forgets it when its session ends. Every request checks the key exactly as the API
does (the same cache, so a revoked key stops working within the same 5 seconds).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response

from service.tables import ApiKey

COOKIE = "sparseq_session"
PATH = "/ui"


class SignInRequired(Exception):
    """No valid key in the cookie: the sub-app answers with a redirect to the sign-in page."""


class ForeignOrigin(Exception):
    """A state-changing request whose Origin is another site."""


async def check_key(request: Request, plain: str) -> ApiKey | None:
    state = request.app.state
    return await state.key_cache.get(state.sessions, plain, state.settings.secret_key)


async def signed_in(request: Request) -> ApiKey:
    plain = request.cookies.get(COOKIE)
    key = await check_key(request, plain) if plain else None
    if key is None:
        raise SignInRequired
    request.state.ui_key = key
    if request.method == "POST":
        same_origin(request)
    return key


def same_origin(request: Request) -> None:
    """SameSite=Strict already keeps the cookie off cross-site posts; this refuses them outright too, for browsers
    that ignore SameSite."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise ForeignOrigin


def sign_in(response: Response, request: Request, plain: str) -> None:
    response.set_cookie(
        COOKIE,
        plain,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def sign_out(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")


def to_sign_in(*, forget: bool) -> RedirectResponse:
    response = RedirectResponse(f"{PATH}/signin", status_code=303)
    if forget:
        sign_out(response)
    return response


UiKey = Annotated[ApiKey, Depends(signed_in)]
