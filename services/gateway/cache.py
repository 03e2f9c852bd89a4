"""A short-lived cache of public registry pages (``PUBLIC_CACHE_SECONDS``, 0 turns it off).

The queue registry (05-18) is public, anonymous and the same for everyone who asks for the same
filters and page, and a busy day sends the same few pages over and over. Each gateway process
keeps an answer for a couple of seconds; whoever asks meanwhile gets it with ``Age`` and
``Cache-Control: public, max-age`` saying how old it is (the body's ``republished_at`` says when
the registry last changed). Requests that miss the same page at the same moment wait for one
call instead of each making it. Every request is still rate limited and audited: the cache only
stands in for the registry call. Per-child answers (the queue-number lookup) are never cached.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Hashable

from eventlet.event import Event
from nameko.extensions import DependencyProvider

from services.common.config import settings

DEFAULT_SECONDS = 2.0
MAX_ENTRIES = 5000


class Hit:
    """What a handler gets back: the value and how old it is (0 when just fetched)."""

    __slots__ = ("value", "age", "max_age")

    def __init__(self, value: Any, age: float, max_age: float):
        self.value, self.age, self.max_age = value, age, max_age


class PublicCache:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = MAX_ENTRIES):
        self.seconds = float(seconds)
        self.clock = clock
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._pending: dict[Hashable, Event] = {}

    def get(self, key: Hashable, fetch: Callable[[], Any]) -> Hit:
        """The cached value of ``key`` if younger than the limit, else ``fetch()`` (stored
        only when it returns; an exception reaches every caller waiting for it)."""
        if self.seconds <= 0:
            return Hit(fetch(), 0.0, 0.0)
        while True:
            now = self.clock()
            found = self._entries.get(key)
            if found is not None and now - found[0] < self.seconds:
                return Hit(found[1], now - found[0], self.seconds)
            pending = self._pending.get(key)
            if pending is None:
                break
            pending.wait()  # another request is fetching this page: take its answer
        event = self._pending[key] = Event()
        try:
            value = fetch()
        except BaseException as exc:
            del self._pending[key]
            event.send_exception(exc)
            raise
        stored_at = self.clock()
        if len(self._entries) >= self.max_entries:
            self._prune(stored_at)
        self._entries[key] = (stored_at, value)
        del self._pending[key]
        event.send(value)
        return Hit(value, 0.0, self.seconds)

    def _prune(self, now: float) -> None:
        for key in [k for k, (at, _) in self._entries.items() if now - at >= self.seconds]:
            del self._entries[key]
        if len(self._entries) >= self.max_entries:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class PublicCacheProvider(DependencyProvider):
    """``cache = PublicCacheProvider()``: one PublicCache per gateway process."""

    def setup(self) -> None:
        seconds = settings(self.container.config).get("PUBLIC_CACHE_SECONDS", DEFAULT_SECONDS)
        self.cache = PublicCache(float(DEFAULT_SECONDS if seconds is None else seconds))

    def get_dependency(self, worker_ctx) -> PublicCache:
        return self.cache
