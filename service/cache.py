"""A tiny time-limited cache of rendered objects, for the routes clients poll."""

from __future__ import annotations

import threading
import time

JOB_CACHE_S = 0.25


class RenderedCache:
    """(owner, id) -> JSON text for ``ttl_s`` seconds. Keyed by owner too: one owner never reads another's entry."""

    def __init__(self, ttl_s: float = JOB_CACHE_S, size: int = 50_000) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._entries: dict[tuple[str, str], tuple[float, str]] = {}
        self._lock = threading.Lock()

    def get(self, owner: str, object_id: str) -> str | None:
        with self._lock:
            found = self._entries.get((owner, object_id))
        if found is not None and time.monotonic() - found[0] < self.ttl_s:
            return found[1]
        return None

    def put(self, owner: str, object_id: str, body: str) -> None:
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[(owner, object_id)] = (time.monotonic(), body)

    def drop(self, owner: str, object_id: str) -> None:
        with self._lock:
            self._entries.pop((owner, object_id), None)
