"""The allocation service: places, releases, priority periods, directions and their life cycle.

Entrypoints validate nothing themselves beyond what the commands do: each calls one function of
services.allocation.commands and returns its plain result.
"""

from __future__ import annotations

from typing import Any, Callable

import eventlet
from nameko.dependency_providers import Config
from nameko.rpc import RpcProxy
from nameko.timer import Timer

from services.allocation import commands, storage
from services.allocation.domain import Rules
from services.common import contracts
from services.common.config import settings
from services.common.db import GroupedWakeDatabase as Database
from services.common.db import each
from services.common.errors import UpstreamTimeout
from services.common.events import reliable_handler
from services.common.metrics import Metrics
from services.common.rpc import rpc
from services.common.timers import run_exclusively


class SettingTimer(Timer):
    """A Nameko timer whose interval (seconds) is read from the KEZEK settings at setup."""

    def __init__(self, setting: str, default: float, **kwargs):
        super().__init__(interval=default, **kwargs)
        self.setting = setting
        self.default = default

    def setup(self):
        self.interval = float(settings(self.container.config).get(self.setting, self.default))


setting_timer = SettingTimer.decorator



# built once per configuration: the holiday file is read once per process
_rules_cache: dict[tuple, Rules] = {}


def rules_for(config: dict) -> Rules:
    s = settings(config)
    key = tuple(sorted((k, str(v)) for k, v in s.items() if not isinstance(v, dict)))
    rules = _rules_cache.get(key)
    if rules is None:
        calendar = storage.load_calendar(s.get("HOLIDAYS_FILE") or None)
        rules = _rules_cache[key] = Rules.from_settings(s, calendar)
    return rules


class AllocationService:
    name = "allocation"

    db = Database("allocation")
    metrics = Metrics()
    config = Config()
    queue = RpcProxy("queue")
    registry = RpcProxy("registry")

    # -- helpers (not entrypoints) ---------------------------------------------------------------
    @property
    def rules(self) -> Rules:
        return rules_for(self.config)

    def remote(self, method) -> Callable[..., Any]:
        """An RPC method that gives up after RPC_TIMEOUT_SECONDS instead of waiting forever,
        with UpstreamTimeout (an Exception: eventlet's own Timeout is a BaseException, which
        nameko's worker does not catch, so the message or call would never be answered)."""
        timeout = float(settings(self.config).get("RPC_TIMEOUT_SECONDS", 10))
        name = f"{getattr(method, 'service_name', '?')}.{getattr(method, 'method_name', '?')}"

        def call(*args, **kwargs):
            error = UpstreamTimeout(f"{name} did not answer within {timeout:g}s")
            with eventlet.Timeout(timeout, error):
                return method(*args, **kwargs)

        return call

    # -- RPC -----------------------------------------------------------------------------------
    @rpc
    def release_places(self, organization_id, group_id, places, actor, idempotency_key=None):
        """Release N places of a group (staff of its organisation).

        ``release_places(7, 31, 2, {"id": "staff:+77010000001", "role": "staff",
        "organization_id": 7})`` -> ``{"place_ids": ["5f0c...", "9a1e..."], "release_id": 12}``
        """
        return commands.release_places(
            self.db, self.rules, organization_id, group_id, places, actor,
            get_group=self.remote(self.registry.get_group), idempotency_key=idempotency_key)

    @rpc
    def claim_vacancy(self, place_id, application_number, actor):
        """An applicant claims a public vacancy for their application.

        -> ``{"status": "pooled", "direction": None, "pool_closes_at": "..."}`` within the claim
        window, else ``{"status": "issued", "direction": {...}}``.
        """
        return commands.claim_vacancy(
            self.db, self.rules, place_id, application_number, actor,
            check_fit=self.remote(self.queue.check_fit),
            reserve_claimant=self.remote(self.queue.reserve_claimant),
            release_reservation=self.remote(self.queue.release_reservation))

    @rpc
    def enroll(self, direction_number, actor):
        """The child arrived (staff of the direction's organisation) -> the direction."""
        return commands.enroll(self.db, self.rules, direction_number, actor,
                               get_group=self.remote(self.registry.get_group))

    @rpc
    def decline(self, direction_number, actor):
        """The applicant declines their direction -> the direction (status declined)."""
        return commands.decline(self.db, self.rules, direction_number, actor)

    @rpc
    def revoke(self, direction_number, reason, actor):
        """A department officer revokes a direction with a reason -> the direction."""
        return commands.revoke(self.db, self.rules, direction_number, reason, actor)

    @rpc
    def get_direction(self, direction_number):
        """``get_direction("D000000042")`` -> the direction (api.md shape)."""
        return commands.get_direction(self.db, direction_number)

    @rpc
    def export_places(self, after_place_id=None, limit=1000, place_ids=None):
        """Place snapshots for ``kezek registry reconcile``, in place-id order:
        ``{"items": [place_changed data...], "next": "5f0c..."}`` (None on the last page);
        with ``place_ids``, exactly those places."""
        return commands.export_places(self.db, after_place_id, limit, place_ids)

    @rpc
    def export_directions(self, after_number=None, limit=1000, numbers=None):
        """Direction snapshots for ``kezek registry reconcile``, in number order:
        ``{"items": [direction_changed data...], "next": "D000001000"}``."""
        return commands.export_directions(self.db, after_number, limit, numbers)

    @rpc
    def export_releases(self, after_seq=0, limit=1000, place_ids=None):
        """The release history for ``kezek registry reconcile``: every place_released event's
        data as the journal keeps it, plus ``release_kind`` and ``seq``, in journal order:
        ``{"items": [...], "next": 1234}``; with ``place_ids``, every release of those places."""
        return commands.export_releases(self.db, after_seq, limit, place_ids)

    # -- events --------------------------------------------------------------------------------
    @reliable_handler("allocation", "place_released", batch=True)
    def on_place_released(self, payloads):
        """Allocate each released place to the first eligible child, or open it as a vacancy
        (batched: the places released while a batch is handled go next, together, in one
        transaction)."""
        reserve_next = self.remote(self.queue.reserve_next)
        release_reservation = self.remote(self.queue.release_reservation)
        if len(payloads) > 1:
            return commands.allocate_batch(
                self.db, self.rules, payloads, self.remote(self.queue.reserve_next_many),
                reserve_next, release_reservation)
        return each(self.db, payloads, lambda db, payload: commands.allocate_place(
            db, self.rules, payload["event_id"],
            contracts.parse(payload, "allocation", "place_released"),
            reserve_next=reserve_next, release_reservation=release_reservation,
            request_id=payload.get("request_id")))

    # -- timers (every instance ticks; one runs each job) -----------------------------------------
    @setting_timer("ALLOCATION_TIMER_SECONDS", 5.0)
    def end_priority_periods(self):
        """Places still in their priority period past its end become public vacancies."""
        run_exclusively(self.db, "end_priority_periods",
                        lambda: commands.end_priority_periods(self.db))

    @setting_timer("ALLOCATION_TIMER_SECONDS", 5.0)
    def resolve_claim_pools(self):
        """Vacancies whose claim window closed go to the pooled claimant highest in the queue."""
        run_exclusively(self.db, "resolve_claim_pools", lambda: commands.resolve_due_pools(
            self.db, self.rules, self.remote(self.queue.reserve_claimant),
            self.remote(self.queue.release_reservation)))

    @setting_timer("ALLOCATION_TIMER_SECONDS", 5.0)
    def expire_directions(self):
        """Issued directions past their expiry expire and their places are released again."""
        run_exclusively(self.db, "expire_directions",
                        lambda: commands.expire_due(self.db, self.rules))
