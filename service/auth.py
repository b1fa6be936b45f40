"""API keys: random, prefixed ``sk_`` (recognisable when leaked), stored only as HMAC-SHA256(secret, key)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time

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


class KeyCache:
    """Valid keys for a few seconds, so that a busy client does not pay an HMAC and a query on every request.

    Only successful lookups are cached, by the key's hash; a revoked key stops working within ``ttl_s`` seconds.
    """

    def __init__(self, ttl_s: float = 5.0, size: int = 10_000) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._entries: dict[str, tuple[float, ApiKey]] = {}
        self._lock = threading.Lock()

    def cached(self, plain: str, secret: str) -> ApiKey | None:
        """The key if it was found valid less than ``ttl_s`` ago, without touching the database."""
        with self._lock:
            found = self._entries.get(hash_key(plain, secret))
        if found is not None and time.monotonic() - found[0] < self.ttl_s:
            return found[1]
        return None

    def lookup(self, session: Session, plain: str, secret: str) -> ApiKey | None:
        digest = hash_key(plain, secret)
        now = time.monotonic()
        with self._lock:
            found = self._entries.get(digest)
        if found is not None and now - found[0] < self.ttl_s:
            return found[1]
        record = find_key(session, plain, secret)
        if record is not None:
            session.expunge(record)
            with self._lock:
                if len(self._entries) >= self.size:
                    self._entries.clear()
                self._entries[digest] = (now, record)
        return record
