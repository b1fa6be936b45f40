"""Per-key rate limits on job creation, uploads and estimates: 429 with ``Retry-After``.

Counted by the ``limits`` library (moving windows, atomic Lua scripts in Redis) in the broker's Redis, so every API
process of a deployment shares one count per key; ``memory://`` keeps them per process. A key is identified by the
HMAC of the presented token (what the database stores), so counting needs no database lookup; the route still
authenticates. Plain ASGI, so the two limited routes stay untouched and every other route pays one comparison.
"""

from __future__ import annotations

import json
import logging
import math
import time

from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.concurrency import run_in_threadpool

from service.auth import hash_key
from service.errors import RateLimited
from service.settings import Settings

log = logging.getLogger("sparseq.api")


def storage_url(settings: Settings) -> str:
    """The broker's Redis in the ``limits`` library's notation (kombu says redis+socket:// for a unix socket)."""
    url = settings.rate_limit_storage_url or settings.resolved_broker_url
    return "redis+unix://" + url.removeprefix("redis+socket://") if url.startswith("redis+socket://") else url


class RateLimits:
    """``(method, path) -> limits`` checked for one key at a time."""

    def __init__(self, settings: Settings) -> None:
        self.secret = settings.secret_key
        self.routes: dict[tuple[str, str], tuple[str, list[RateLimitItem]]] = {
            ("POST", "/v1/jobs"): ("jobs", parse_many(settings.rate_limit_jobs)),
            ("POST", "/v1/files"): ("uploads", parse_many(settings.rate_limit_uploads)),
            ("POST", "/v1/estimate"): ("estimates", parse_many(settings.rate_limit_estimates)),
        }
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage_url(settings)))

    def check(self, name: str, key_hash: str) -> None:
        """Count one request of kind ``name`` (jobs, uploads, estimates) for the key with this hash: the dashboard's
        forms, which the middleware does not see (they are signed in by cookie), share the key's count with the API.
        Raises RateLimited when a limit is spent; serves when the counter's store is down, as the middleware does."""
        items = next(items for kind, items in self.routes.values() if kind == name)
        try:
            wait = self.retry_after(name, items, key_hash)
        except Exception as error:
            log.warning("rate limit not checked (%s: %s)", type(error).__name__, error)
            return
        if wait is not None:
            raise RateLimited(refusal(name, items, wait), retry_after=wait)

    def retry_after(self, name: str, items: list[RateLimitItem], key_hash: str) -> int | None:
        """Count one request; seconds until the key may try again when a limit is spent, else None."""
        for item in items:
            if not self.limiter.hit(item, name, key_hash):
                reset = self.limiter.get_window_stats(item, name, key_hash).reset_time
                return max(1, math.ceil(reset - time.time()))
        return None


class RateLimitMiddleware:
    def __init__(self, app, limits: RateLimits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope, receive, send) -> None:
        route = self.limits.routes.get((scope.get("method"), scope.get("path"))) if scope["type"] == "http" else None
        token = _bearer(scope) if route else None
        if token is None:  # not a limited route, or no key (the route answers 401)
            await self.app(scope, receive, send)
            return
        name, items = route
        try:
            wait = await run_in_threadpool(self.limits.retry_after, name, items, hash_key(token, self.limits.secret))
        except Exception as error:  # the counter's store is down: serve rather than refuse everyone
            log.warning("rate limit not checked (%s: %s)", type(error).__name__, error)
            wait = None
        if wait is None:
            await self.app(scope, receive, send)
            return
        body = RateLimited(refusal(name, items, wait), retry_after=wait).body()
        payload = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"retry-after", str(wait).encode()),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def refusal(name: str, items: list[RateLimitItem], wait: int) -> str:
    limit = ", ".join(str(item) for item in items)
    return f"too many {name} for this API key (limit: {limit}); retry after {wait} s"


def _bearer(scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return (token.strip() or None) if scheme.lower() == "bearer" else None
    return None
