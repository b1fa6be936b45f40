"""A small thread-safe cache whose entries expire after ``ttl_s`` seconds (API keys, polled jobs)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

JOB_CACHE_S = 0.25  # a polled job may be this much behind the database (the worker writes progress ~once a second)


class TTLCache:
    def __init__(self, ttl_s: float, size: int = 50_000) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            found = self._entries.get(key)
        if found is not None and time.monotonic() - found[0] < self.ttl_s:
            return found[1]
        return None

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            if len(self._entries) >= self.size:  # crude, but bounded: a full cache starts over
                self._entries.clear()
            self._entries[key] = (time.monotonic(), value)

    def drop(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)


class SingleFlight:
    """Concurrent callers that miss a cache for the same key share one load instead of each starting their own.

    Without it, an expired entry that 50 clients poll at once costs 50 thread-pool hand-offs and 50 database reads
    (and, for API keys, 50 pooled connections at once). For one event loop; the load is shielded, so a caller that
    goes away does not cancel it for the others.
    """

    def __init__(self) -> None:
        self._pending: dict[Hashable, asyncio.Future] = {}

    async def run(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        pending = self._pending.get(key)
        if pending is None or pending.get_loop() is not asyncio.get_running_loop():
            pending = asyncio.ensure_future(load())
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(pending)

    def _forget(self, key: Hashable, done: asyncio.Future) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]
        if not done.cancelled():
            done.exception()  # retrieved: a failure every waiter has gone away from is not logged as unhandled
