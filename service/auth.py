"""API keys: random, prefixed ``sk_`` (recognisable when leaked), stored only as HMAC-SHA256(secret, key)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from service.cache import SingleFlight, TTLCache
from service.tables import ApiKey

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

    def __init__(self, ttl_s: float = 5.0) -> None:
        self._cache = TTLCache(ttl_s, size=10_000)
        self._lookups = SingleFlight()

    def lookup(self, sessions: sessionmaker[Session], plain: str, secret: str) -> ApiKey | None:
        """Check the database in a session of its own, closed at once, and remember a valid key."""
        with sessions() as session:
            record = find_key(session, plain, secret)
            if record is not None:
                session.expunge(record)
        if record is not None:
            self._cache.put(record.key_hash, record)
        return record

    async def get(self, sessions: sessionmaker[Session], plain: str, secret: str) -> ApiKey | None:
        """The cached key, else one lookup in the thread pool, shared by the requests that present the same key
        meanwhile (when the entry of a busy key expires, its concurrent requests wait for one query, not one each).
        The lookup's connection goes back to the pool before the request goes on."""
        digest = hash_key(plain, secret)
        record = self._cache.get(digest)
        if record is None:
            record = await self._lookups.run(digest, lambda: run_in_threadpool(self.lookup, sessions, plain, secret))
        return record
