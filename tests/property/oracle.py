"""An independent statement of the queue rules (domain.md "Applications and the queue",
"Places, priority period"), written from the design, not from services.queue.domain, so the
property tests compare the service against it rather than against itself.
"""

from __future__ import annotations

from typing import Any, Iterable

# benefit tiers, strongest first; a claim counts only once an officer has verified it
TIER_ORDER = ("out_of_turn", "first_priority", "none")
# still in the queue: keeps (and is counted in) a queue number
ACTIVE = ("queued", "offered", "stop_listed")
# which group type a queue type may fill
FILLS = {"general": "general", "transfer": "general", "special": "special",
         "sanatorium": "sanatorium"}


def counted_tier(claimed: str | None, verified: bool) -> str:
    return claimed if verified and claimed in TIER_ORDER else "none"


def standing(entry: dict[str, Any]) -> tuple:
    """Where an entry stands: verified tier, then filing moment, then application number."""
    return (TIER_ORDER.index(counted_tier(entry.get("claimed_tier"),
                                          bool(entry.get("benefit_verified")))),
            entry["filed_at"], entry["application_number"])


def expected_numbers(entries: Iterable[dict[str, Any]]) -> dict[str, int | None]:
    """Application number -> queue number: 1-based position among its queue's active entries."""
    entries = list(entries)
    out: dict[str, int | None] = {e["application_number"]: None for e in entries}
    queues: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        if e["status"] in ACTIVE:
            queues.setdefault(e["queue_name"], []).append(e)
    for members in queues.values():
        for position, e in enumerate(sorted(members, key=standing), start=1):
            out[e["application_number"]] = position
    return out


def fits(entry: dict[str, Any], place: dict[str, Any], chosen_required: bool) -> bool:
    """May this entry take this place now? (Allocation in the priority period requires the
    organisation to be among the chosen ones; a vacancy claim does not.)"""
    return (entry["status"] == "queued"
            and int(entry["birth_year"]) == int(place["birth_year"])
            and entry["language"] == place["language"]
            and FILLS.get(entry["queue_type"]) == place["group_type"]
            and (not chosen_required
                 or int(place["organization_id"]) in
                 [int(o) for o in entry.get("preferred_organizations") or []]))


def first_eligible(entries: Iterable[dict[str, Any]], place: dict[str, Any],
                   chosen_required: bool) -> dict[str, Any] | None:
    """The entry that must get the place: the one standing highest among those who fit it."""
    eligible = [e for e in entries if fits(e, place, chosen_required)]
    return min(eligible, key=standing) if eligible else None
