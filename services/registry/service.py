"""The registry service: preschool organisations and groups (master data) and every public
registry and statistic, kept as read models fed by the other services' events."""

from __future__ import annotations

from typing import Any

from nameko.dependency_providers import Config
from nameko.exceptions import serialize

from services.common import contracts
from services.common.config import settings
from services.common.db import Database, each
from services.common.events import reliable_handler
from services.common.metrics import Metrics
from services.common.rpc import rpc
from services.registry import commands, domain


class RegistryService:
    name = "registry"

    db = Database("registry")
    metrics = Metrics()
    config = Config()

    @property
    def settings(self) -> domain.RegistrySettings:
        return domain.RegistrySettings.from_settings(settings(self.config))

    # -- master data ---------------------------------------------------------------------------

    @rpc
    def create_organization(self, data: dict, actor: dict) -> dict:
        """Officer: ``{"name": "Балапан", "address": "...", "district": "Алмалы",
        "ownership": "state", "kind": "kindergarten", "languages": ["kk", "ru"],
        "monthly_fee_kzt": 0}`` -> organisation with ``id``, ``groups`` and ``vacancies``."""
        return commands.create_organization(self.db, data, actor)

    @rpc
    def update_organization(self, organization_id: int, data: dict, actor: dict) -> dict:
        """Officer: change some fields of an organisation -> organisation."""
        return commands.update_organization(self.db, organization_id, data, actor)

    @rpc
    def add_group(self, organization_id: int, data: dict, actor: dict) -> dict:
        """Officer (or staff of that organisation): ``{"name": "Күншуақ",
        "group_type": "general", "birth_year": 2022, "language": "kk", "capacity": 25,
        "enrolled": 0}`` -> group with ``organization_id``."""
        return commands.add_group(self.db, organization_id, data, actor)

    @rpc
    def get_organization(self, organization_id: int) -> dict:
        """One organisation with its ``groups`` and ``vacancies``; NotFound."""
        return commands.get_organization(self.db, organization_id)

    @rpc
    def get_group(self, group_id: int) -> dict:
        """A group plus ``organization_id``, ``organization_name``, ``district``,
        ``ownership``, ``address``; NotFound."""
        return commands.get_group(self.db, group_id)

    @rpc
    def check_preferences(self, organization_ids: list, birth_year: int, language: str,
                          queue_type: str) -> None:
        """None when every chosen organisation exists and has a fitting group; else BadInput
        on ``preferred_organizations`` naming the organisation."""
        return commands.check_preferences(self.db, organization_ids, birth_year, language,
                                          queue_type, self.settings)

    @rpc
    def list_districts(self) -> list:
        """``[{"name": "Алмалы"}, ...]``"""
        return commands.list_districts(self.db)

    # -- public registries ---------------------------------------------------------------------

    @rpc
    def list_organizations(self, filters: dict | None = None, page: int = 1,
                           page_size: int = 50) -> dict:
        """Registry of organisations (05-17); filters district, language, age_group/birth_year,
        ownership, kind, has_vacancies, group_type, queue_type, organization_id."""
        return commands.list_organizations(self.db, filters, page, page_size, self.settings)

    @rpc
    def list_queue(self, filters: dict | None = None, page: int = 1,
                   page_size: int = 50) -> dict:
        """Queue registry (05-18) ordered by queue and queue number; filters district,
        queue_type, birth_year, language, organization_id, status, benefit_tier, queue_name,
        from, to (filing date)."""
        return commands.list_queue(self.db, filters, page, page_size, self.settings)

    @rpc
    def queue_lookup(self, application_number: str) -> dict:
        """Queue-number information (05-22) for ``"A-000123"``; NotFound."""
        return commands.queue_lookup(self.db, application_number, self.settings)

    @rpc
    def queue_lookups(self, application_numbers: list) -> list:
        """:meth:`queue_lookup` of up to 200 numbers in one call and one statement (the gateway
        sends the lookups of concurrent requests together): for each number, in order,
        ``{"result": row}`` or ``{"error": ...}`` (NotFound, BadInput) in Nameko's serialised
        form."""
        outcomes = commands.queue_lookups(self.db, application_numbers, self.settings)
        return [o if "result" in o else {"error": serialize(o["error"])} for o in outcomes]

    @rpc
    def list_vacancies(self, filters: dict | None = None, page: int = 1,
                       page_size: int = 50) -> dict:
        """Vacant places (05-19): places in their priority period or open vacancies."""
        return commands.list_vacancies(self.db, filters, page, page_size, self.settings)

    @rpc
    def list_releases(self, filters: dict | None = None, page: int = 1,
                      page_size: int = 50) -> dict:
        """Place-release protocol (05-20), newest first; ``from``/``to`` on the release date."""
        return commands.list_releases(self.db, filters, page, page_size, self.settings)

    @rpc
    def list_directions(self, filters: dict | None = None, page: int = 1,
                        page_size: int = 50) -> dict:
        """Directions protocol (05-21), newest first, without application numbers."""
        return commands.list_directions(self.db, filters, page, page_size, self.settings)

    @rpc
    def statistics(self, filters: dict | None = None) -> dict:
        """Anonymised statistics (05-23); a figure about fewer than 5 children is
        ``{"count": null, "suppressed": true}``."""
        return commands.statistics(self.db, filters, self.settings)

    # -- read models ---------------------------------------------------------------------------

    # Batched (services.common.events): the events delivered while a batch is handled go
    # next, together. A lone event is applied as it always was; a batch of several in one
    # transaction and a few set-based statements (commands.apply_batch).
    def _apply(self, payloads: list[dict[str, Any]], source: str, event_type: str, method: str,
               apply, clean, apply_many, *args) -> list[str]:
        handler = f"registry.{method}"
        if len(payloads) == 1:
            return each(self.db, payloads, lambda db, payload: apply(
                db, payload["event_id"], contracts.parse(payload, source, event_type), *args,
                self.settings, handler=handler))
        events = [(payload["event_id"], clean(contracts.parse(payload, source, event_type)))
                  for payload in payloads]
        return commands.apply_batch(self.db, handler, events, lambda tx, snapshots: apply_many(
            tx, snapshots, *args, self.settings))

    @reliable_handler("queue", "queue_entry_changed", batch=True)
    def on_queue_entry_changed(self, payloads: list[dict[str, Any]]) -> list[str]:
        return self._apply(payloads, "queue", "queue_entry_changed", "on_queue_entry_changed",
                           commands.apply_queue_entry, domain.clean_entry,
                           commands.apply_queue_entries)

    @reliable_handler("allocation", "place_released", batch=True)
    def on_place_released(self, payloads: list[dict[str, Any]]) -> list[str]:
        return self._apply(payloads, "allocation", "place_released", "on_place_released",
                           commands.apply_place, domain.clean_place, commands.apply_places,
                           True)

    @reliable_handler("allocation", "place_changed", batch=True)
    def on_place_changed(self, payloads: list[dict[str, Any]]) -> list[str]:
        return self._apply(payloads, "allocation", "place_changed", "on_place_changed",
                           commands.apply_place, domain.clean_place, commands.apply_places,
                           False)

    @reliable_handler("allocation", "direction_issued", batch=True)
    def on_direction_issued(self, payloads: list[dict[str, Any]]) -> list[str]:
        return self._apply(payloads, "allocation", "direction_issued", "on_direction_issued",
                           commands.apply_direction, domain.clean_direction,
                           commands.apply_directions)

    @reliable_handler("allocation", "direction_changed", batch=True)
    def on_direction_changed(self, payloads: list[dict[str, Any]]) -> list[str]:
        return self._apply(payloads, "allocation", "direction_changed", "on_direction_changed",
                           commands.apply_direction, domain.clean_direction,
                           commands.apply_directions)

    @reliable_handler("registry", "organization_changed")
    def on_organization_changed(self, payload: dict[str, Any]) -> str:
        # Also keeps a queue bound to registry.events: the outbox relay publishes mandatory,
        # and an unroutable organization_changed would stall the registry's outbox.
        data = contracts.parse(payload, "registry", "organization_changed")
        return commands.apply_organization_changed(self.db, payload["event_id"], data,
                                                   self.settings)
