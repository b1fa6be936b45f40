"""Request dependencies, as Annotated aliases so handler signatures read like sentences."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.auth import find_key
from service.db import session_scope
from service.errors import Unauthorized
from service.models import ApiKey
from service.settings import Settings
from service.storage import BlobStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """The request's session: committed when the handler returns, rolled back when it raises."""
    with session_scope(request.app.state.sessions) as session:
        yield session


def get_store(request: Request) -> BlobStore:
    return request.app.state.store


def get_queue(request: Request):
    return request.app.state.queue


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
StoreDep = Annotated[BlobStore, Depends(get_store)]
QueueDep = Annotated[object, Depends(get_queue)]


# Declares the Bearer scheme in the OpenAPI document; the header itself is parsed below for precise errors.
bearer = HTTPBearer(auto_error=False, description="an API key: 'Authorization: Bearer sk_...'")


def current_key(
    session: SessionDep,
    settings: SettingsDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> ApiKey:
    if not authorization:
        raise Unauthorized("send your API key as 'Authorization: Bearer sk_...'", code="missing_api_key")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer sk_...'", code="invalid_api_key")
    key = find_key(session, token.strip(), settings.secret_key)
    if key is None:
        raise Unauthorized("invalid API key", code="invalid_api_key")
    return key


CurrentKey = Annotated[ApiKey, Depends(current_key)]
