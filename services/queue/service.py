"""The queue service: queue entries, their order, the stop-list and reservations per place.

Entrypoints validate, call one function of :mod:`services.queue.commands` and return its plain
result. Interface: docs/rpc.md, section "queue".
"""

from __future__ import annotations

from typing import Any

from nameko.timer import Timer

from services.common import contracts
from services.common.config import settings
from services.common.contracts import PoisonMessage
from services.common.db import GroupedWakeDatabase as Database
from services.common.db import each
from services.common.errors import BadInput
from services.common.events import reliable_handler
from services.common.metrics import Metrics
from services.common.rpc import rpc
from services.common.timers import run_exclusively
from services.queue import commands

STOP_LIST_TIMER_DEFAULT_SECONDS = 5.0


class SettingTimer(Timer):
    """A nameko timer whose interval is read from a KEZEK setting when the service starts."""

    def __init__(self, setting: str, default: float, **kwargs):
        super().__init__(interval=default, **kwargs)
        self.setting = setting

    def setup(self):
        self.interval = float(settings(self.container.config).get(self.setting, self.interval))


setting_timer = SettingTimer.decorator




def _handled(result: Any) -> str:
    return commands.DUPLICATE if result == commands.DUPLICATE else "ok"


class QueueService:
    name = "queue"

    db = Database("queue")
    metrics = Metrics()

    # -- RPC ---------------------------------------------------------------------------------------
    @rpc
    def enqueue(self, entry: dict) -> dict:
        """Put a filed application into its queue; idempotent by application number.

        ``entry`` is the applications.application_filed data. Returns
        ``{"application_number": "A-000123", "queue_name": "Almaty/general/2022",
        "queue_number": 17, "status": "queued"}``.
        """
        return commands.enqueue(self.db, entry)

    @rpc
    def lookup(self, application_number: str) -> dict:
        """The queue row (05-22) with the live ``queue_number``; NotFound if unknown."""
        return commands.lookup(self.db, application_number)

    @rpc
    def reserve_next(self, place: dict) -> dict | None:
        """Reserve the first eligible child who chose the place's organisation, now ``offered``.

        ``place`` is ``{"place_id", "organization_id", "birth_year", "language",
        "group_type"}``; the same place_id again returns the same entry while the reservation
        is open. None when nobody fits.
        """
        return commands.reserve_next(self.db, place)

    @rpc
    def reserve_next_many(self, places: list[dict]) -> list[dict | None]:
        """:meth:`reserve_next` for each place in turn, in one transaction: a list of the
        reserved entries (or None) in the order of ``places`` (at most 200). Allocation sends
        the places of a batch of releases together."""
        return commands.reserve_next_many(self.db, places)

    @rpc
    def reserve_claimant(self, place: dict, application_numbers: list[str]) -> dict | None:
        """Reserve the claimant highest in the queue who fits the place; idempotent by place."""
        return commands.reserve_claimant(self.db, place, application_numbers)

    @rpc
    def check_fit(self, place: dict, application_number: str) -> dict:
        """``{"fits": false, "reason": "birth_year", "applicant_id": "applicant:+7701..."}``:
        may this child claim this place (the organisation need not be chosen)?"""
        return commands.check_fit(self.db, place, application_number)

    @rpc
    def release_reservation(self, place_id: str) -> dict:
        """Return the entry reserved for a place whose direction was not issued to the queue.

        ``{"place_id", "application_number", "released": true}``; ``released`` false when the
        place has no open reservation.
        """
        return commands.release_reservation(self.db, place_id)

    @rpc
    def postpone(self, application_number: str, until: str, actor: dict) -> dict:
        """The applicant stop-lists their own application until ``until`` (ISO date/time)."""
        return commands.postpone(self.db, application_number, until, actor)

    @rpc
    def resume(self, application_number: str, actor: dict) -> dict:
        """Back to the queue from the stop-list, keeping the original filing moment."""
        return commands.resume(self.db, application_number, actor)

    @rpc
    def stop_list_enter(self, application_number: str, reason: str, until: str | None,
                        actor: dict) -> dict:
        """An officer stop-lists an application (reason postponed, direction_declined,
        direction_expired or documents_check; ``until`` optional)."""
        return commands.stop_list_enter(self.db, application_number, reason, until, actor)

    @rpc
    def stop_list_exit(self, application_number: str, actor: dict) -> dict:
        """An officer takes an application off the stop-list."""
        return commands.stop_list_exit(self.db, application_number, actor)

    @rpc
    def export_entries(self, after_application_number: str | None = None, limit: int = 1000,
                       application_numbers: list[str] | None = None) -> dict:
        """Entry snapshots for ``kezek registry reconcile``: ``{"items": [queue_entry_changed
        data...], "next": "A000001000"}`` in application-number order (``next`` None on the
        last page); with ``application_numbers``, exactly those entries."""
        return commands.export_entries(self.db, after_application_number, limit,
                                       application_numbers)

    # -- events ------------------------------------------------------------------------------------
    # Batched (services.common.events): the events delivered while a batch is handled go
    # next, together, in one transaction (services.common.db.each).
    def _on(self, payloads: list[dict], source: str, event_type: str, method: str,
            command, read_together: bool = False) -> list[str]:
        # read_together: the batch's entries are locked and read in one statement
        # (commands._locked); only where the command reads its entry once, straight away
        numbers = contracts.batch_values(payloads, "application_number")

        def apply(db, payload):
            tx = getattr(db, "tx", None)  # the batch's shared transaction (each)
            if read_together and tx is not None and len(payloads) > 1:
                tx.batch_numbers = numbers
            data = contracts.parse(payload, source, event_type)
            try:
                result = command(db, data, event=(f"queue.{method}", payload["event_id"]),
                                 request_id=payload.get("request_id"))
            except BadInput as exc:  # the event's data can never be applied: dead-letter it
                raise PoisonMessage(str(exc)) from exc
            return _handled(result)

        return each(self.db, payloads, apply, claim=f"queue.{method}")

    @reliable_handler("applications", "application_filed", batch=True)
    def on_application_filed(self, payloads: list[dict]) -> list[str]:
        return self._on(payloads, "applications", "application_filed", "on_application_filed",
                        commands.enqueue)

    @reliable_handler("applications", "application_withdrawn", batch=True)
    def on_application_withdrawn(self, payloads: list[dict]) -> list[str]:
        return self._on(payloads, "applications", "application_withdrawn",
                        "on_application_withdrawn", commands.application_withdrawn)

    @reliable_handler("applications", "benefit_verified", batch=True)
    def on_benefit_verified(self, payloads: list[dict]) -> list[str]:
        return self._on(payloads, "applications", "benefit_verified", "on_benefit_verified",
                        commands.benefit_verified)

    @reliable_handler("allocation", "direction_issued", batch=True)
    def on_direction_issued(self, payloads: list[dict]) -> list[str]:
        return self._on(payloads, "allocation", "direction_issued", "on_direction_issued",
                        commands.direction_event, read_together=True)

    @reliable_handler("allocation", "direction_changed", batch=True)
    def on_direction_changed(self, payloads: list[dict]) -> list[str]:
        return self._on(payloads, "allocation", "direction_changed", "on_direction_changed",
                        commands.direction_event, read_together=True)

    # -- timers ------------------------------------------------------------------------------------
    @setting_timer("QUEUE_STOP_LIST_TIMER_SECONDS", STOP_LIST_TIMER_DEFAULT_SECONDS)
    def stop_list_exits(self) -> None:
        """Entries whose stop-list exit moment has come go back to the queue (one instance)."""
        run_exclusively(self.db, "stop_list_exits", lambda: commands.exit_due(self.db))
