"""API keys: random, prefixed ``sk_`` (recognisable when leaked), stored only as HMAC-SHA256(secret, key)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import ApiKey

PREFIX = "sk_"


def hash_key(key: str, secret: str) -> str:
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def create_key(session: Session, *, owner: str, name: str, secret: str) -> tuple[ApiKey, str]:
    """A new key for ``owner``; the plain key is returned once and never stored."""
    plain = PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(owner=owner, name=name, key_hash=hash_key(plain, secret), prefix=plain[:10])
    session.add(record)
    session.flush()
    return record, plain


def find_key(session: Session, plain: str, secret: str) -> ApiKey | None:
    if not plain.startswith(PREFIX):
        return None
    record = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(plain, secret)))
    if record is None or record.revoked_at is not None:
        return None
    return record
