"""API keys for the operator: list them, revoke one (``sparseqd keys``). The plain key is never stored or shown."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.auth import PREFIX
from service.tables import ApiKey, utcnow


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(session: Session, which: str) -> ApiKey:
    """Revoke the key with this id (``key_...``) or whose printed prefix (``sk_...``) this is; idempotent.

    Raises LookupError naming what matched, when nothing or more than one key does."""
    if which.startswith(PREFIX):
        matches = [k for k in list_keys(session) if k.prefix == which[: len(k.prefix)] or k.prefix.startswith(which)]
    else:
        matches = [k for k in [session.get(ApiKey, which)] if k is not None]
    if not matches:
        raise LookupError(f"no key {which!r} (sparseqd keys list shows them)")
    if len(matches) > 1:
        raise LookupError(f"{which!r} matches {len(matches)} keys ({', '.join(k.id for k in matches)}): give the id")
    key = matches[0]
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key
