"""Group commit: the items of concurrent callers handled together, one batch at a time.

A caller ``submit``\\s an item and waits for its own outcome. While ``in_flight`` batches are
on their way, the items of other callers queue up and go next, together, in one call of
``handle`` (at most ``batch_size`` of them). A lone caller is handled at once, so a quiet
process adds no delay; a busy one pays a call's fixed cost (a broker round trip, a confirm, a
statement) once per batch instead of once per item.

``handle(items)`` returns one outcome per item, in order: a value, or an exception instance
that ``submit`` raises for that item alone. If ``handle`` itself raises, every item of the
batch gets that exception.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Sequence

import eventlet
from eventlet.event import Event


class Coalescer:
    def __init__(self, handle: Callable[[list[Any]], Sequence[Any]], in_flight: int = 1,
                 batch_size: int = 100):
        self.handle = handle
        self.in_flight = max(int(in_flight), 1)
        self.batch_size = max(int(batch_size), 1)
        self._waiting: deque[tuple[Any, Event]] = deque()
        self._senders = 0
        self.batches = 0  # how many calls of handle so far

    def submit(self, item: Any) -> Any:
        """Handle ``item`` with whatever else is waiting; its outcome, or raise its error.

        A caller's deadline (eventlet.Timeout) ends its wait; its item may still be handled."""
        done = Event()
        self._waiting.append((item, done))
        if self._senders < self.in_flight:
            self._senders += 1
            eventlet.spawn_n(self._send_waiting)
        outcome = done.wait()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _send_waiting(self) -> None:
        try:
            while self._waiting:
                take = min(len(self._waiting), self.batch_size)
                batch = [self._waiting.popleft() for _ in range(take)]
                self.batches += 1
                try:
                    outcomes = list(self.handle([item for item, _ in batch]))
                    if len(outcomes) != len(batch):
                        raise RuntimeError(f"{len(outcomes)} outcomes for {len(batch)} items")
                except Exception as exc:  # noqa: BLE001 - whoever waits must hear of it
                    outcomes = [exc] * len(batch)
                for (_, done), outcome in zip(batch, outcomes):
                    done.send(outcome)
        finally:
            self._senders -= 1
