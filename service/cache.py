"""A small thread-safe cache whose entries expire after ``ttl_s`` seconds (API keys, polled jobs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import Any

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
