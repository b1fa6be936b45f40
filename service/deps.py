"""Request dependencies, as Annotated aliases so handler signatures read like sentences."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.db import commit_and_close, rollback_and_close
from service.errors import Unauthorized
from service.settings import Settings
from service.storage import BlobStore
from service.tables import ApiKey


# Dependencies that do no I/O are `async def`: FastAPI runs sync dependencies in its thread pool, and each hand-off
# costs more than these bodies (measured: the hot GET paid four hand-offs per request).
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's session: committed when the handler returns, rolled back when it raises.

    Opening a session does no I/O, so it happens on the event loop; the commit (or rollback) and close run in the
    thread pool in one hand-off. A sync generator dependency would cost two.
    """
    session = request.app.state.sessions()
    try:
        yield session
    except BaseException:
        await run_in_threadpool(rollback_and_close, session)
        raise
    await run_in_threadpool(commit_and_close, session)


async def get_store(request: Request) -> BlobStore:
    return request.app.state.store


async def get_queue(request: Request):
    return request.app.state.queue


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": the commit runs when the handler returns, before the response starts. FastAPI's default runs
# the code after `yield` once the response has been sent, so a client could get 201 for an upload, ask for a job
# using it at once, and be told the file does not exist.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
StoreDep = Annotated[BlobStore, Depends(get_store)]
QueueDep = Annotated[object, Depends(get_queue)]


# Declares the Bearer scheme in the OpenAPI document; the header itself is parsed below for precise errors.
bearer = HTTPBearer(auto_error=False, description="an API key: 'Authorization: Bearer sk_...'")


async def current_key(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> ApiKey:
    """No request session here: a cached key costs no I/O, and a lookup uses a short session of its own, so a route
    that needs no database (the polled GET /v1/jobs/{id}) opens none, and no request holds a pooled connection while
    it waits for another."""
    if not authorization:
        raise Unauthorized("send your API key as 'Authorization: Bearer sk_...'", code="missing_api_key")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be 'Bearer sk_...'", code="invalid_api_key")
    state = request.app.state
    key = await state.key_cache.get(state.sessions, token, state.settings.secret_key)
    if key is None:
        raise Unauthorized("invalid API key", code="invalid_api_key")
    return key


CurrentKey = Annotated[ApiKey, Depends(current_key)]

# A page's cursor: the id of the last object of the previous page (an empty one is no cursor). Ids are a prefix and
# 24 hex digits; anything else is refused by validation (422), an id of no object of the key's is 404.
ID_PATTERN = r"^([a-z]+_[0-9a-f]{24})?$"
CURSOR = "the last id of the previous page (its last_id); empty or absent: the first page"
Cursor = Annotated[str | None, Query(pattern=ID_PATTERN, description=CURSOR)]
EventCursor = Annotated[str | None, Query(pattern=r"^(evt_[0-9]+)?$", description=CURSOR)]  # events count up
