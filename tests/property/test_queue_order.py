"""Property-based tests of the queue order and the fit rules (services.queue.domain): no
database, no broker, many examples.

For random sets of entries (tiers claimed, verified or not, filing moments with ties, numbers,
statuses, several queues) the queue number the domain computes must be the entry's position in
its queue as the design states it (tests/property/oracle.py).
"""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.queue import domain
from tests.property import oracle

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
QUEUES = ("Almaly/general/2022", "Almaly/general/2021", "Medeu/special/2022")
TIERS = (None, "none", "first_priority", "out_of_turn")


@st.composite
def entries(draw, min_size: int = 0, max_size: int = 25, queues=QUEUES,
            statuses=domain.STATUSES) -> list[dict]:
    """Entries with unique application numbers; filing minutes collide often (ties are broken
    by the application number)."""
    numbers = draw(st.lists(st.integers(1, 999_999_999), min_size=min_size, max_size=max_size,
                            unique=True))
    out = []
    for n in numbers:
        out.append({
            "application_number": f"A{n:09d}",
            "queue_name": draw(st.sampled_from(queues)),
            "claimed_tier": draw(st.sampled_from(TIERS)),
            "benefit_verified": draw(st.booleans()),
            "filed_at": T0 + dt.timedelta(minutes=draw(st.integers(0, 8))),
            "status": draw(st.sampled_from(statuses)),
        })
    return out


def numbers(rows: list[dict]) -> dict[str, int | None]:
    return {e["application_number"]: domain.queue_number(e, rows) for e in rows}


@SETTINGS
@given(entries())
def test_queue_number_is_the_position_among_active_entries_of_the_queue(rows):
    assert numbers(rows) == oracle.expected_numbers(rows)


@SETTINGS
@given(entries())
def test_numbers_run_from_one_to_n_without_gaps_in_every_queue(rows):
    got = numbers(rows)
    for queue in QUEUES:
        active = [e for e in rows if e["queue_name"] == queue and e["status"] in oracle.ACTIVE]
        assert sorted(got[e["application_number"]] for e in active) == \
            list(range(1, len(active) + 1))
    assert all(got[e["application_number"]] is None for e in rows
               if e["status"] in ("provided", "withdrawn"))


@SETTINGS
@given(entries(min_size=1), st.data())
def test_an_unverified_claim_never_moves_anyone(rows, data):
    i = data.draw(st.integers(0, len(rows) - 1))
    unclaimed = [dict(e) for e in rows]
    unclaimed[i].update(claimed_tier=None, benefit_verified=False)
    claimed = [dict(e) for e in unclaimed]
    claimed[i]["claimed_tier"] = data.draw(st.sampled_from(TIERS))
    assert numbers(claimed) == numbers(unclaimed)
    assert domain.effective_tier(claimed[i]["claimed_tier"], False) == "none"


@SETTINGS
@given(entries(queues=QUEUES[:1]), st.integers(1, 999_999_999))
def test_verifying_out_of_turn_of_the_last_filed_makes_it_first(rows, n):
    """The last filed child (unverified: last in the queue) goes to the front once its
    out-of-turn benefit is verified; only children with a verified out-of-turn benefit (all
    filed earlier) stay ahead of it, and everyone else moves back by exactly one."""
    number = f"B{n:09d}"  # "B" sorts after every "A" number: last even among equal moments
    last = {"application_number": number, "queue_name": QUEUES[0],
            "claimed_tier": "out_of_turn", "benefit_verified": False, "status": "queued",
            "filed_at": max([e["filed_at"] for e in rows], default=T0) + dt.timedelta(seconds=1)}
    before = numbers(rows + [last])
    active = [e for e in rows if e["status"] in oracle.ACTIVE]
    assert before[number] == len(active) + 1

    verified = dict(last, benefit_verified=True)
    after = numbers(rows + [verified])
    ahead = [e for e in active if e["benefit_verified"] and e["claimed_tier"] == "out_of_turn"]
    assert after[number] == len(ahead) + 1
    if not ahead:
        assert after[number] == 1
    for e in active:
        moved = 0 if e in ahead else 1
        assert after[e["application_number"]] == before[e["application_number"]] + moved


@SETTINGS
@given(entries(min_size=1), st.data())
def test_stop_list_and_offer_keep_the_place_leaving_moves_those_behind_up(rows, data):
    i = data.draw(st.integers(0, len(rows) - 1))
    base = [dict(e) for e in rows]
    base[i]["status"] = data.draw(st.sampled_from(oracle.ACTIVE))
    before = numbers(base)

    switched = [dict(e) for e in base]
    switched[i]["status"] = data.draw(st.sampled_from(oracle.ACTIVE))
    assert numbers(switched) == before  # stop-listed or offered: same place in the order

    left = [dict(e) for e in base]
    left[i]["status"] = data.draw(st.sampled_from(("provided", "withdrawn")))
    after = numbers(left)
    me = base[i]
    assert after[me["application_number"]] is None
    for e in base:
        if e is me or before[e["application_number"]] is None:
            continue
        behind = (e["queue_name"] == me["queue_name"]
                  and before[e["application_number"]] > before[me["application_number"]])
        assert after[e["application_number"]] == before[e["application_number"]] - behind


@SETTINGS
@given(entries(min_size=2, queues=QUEUES[:1], statuses=("queued",)), st.data())
def test_order_key_sorts_as_the_design_orders(rows, data):
    assert sorted(rows, key=domain.order_key) == sorted(rows, key=oracle.standing)
    # verifying a benefit never moves the child back, nor changes the order of the others
    i = data.draw(st.integers(0, len(rows) - 1))
    tier = data.draw(st.sampled_from(oracle.TIER_ORDER))
    changed = [dict(e) for e in rows]
    changed[i].update(claimed_tier=tier, benefit_verified=True)
    if rows[i]["benefit_verified"] and rows[i]["claimed_tier"] in oracle.TIER_ORDER:
        return  # already counted: a change of tier is a different decision
    before, after = numbers(rows), numbers(changed)
    me = rows[i]["application_number"]
    assert after[me] <= before[me]
    others = [e["application_number"] for e in rows if e["application_number"] != me]
    assert sorted(others, key=before.get) == sorted(others, key=after.get)


PLACES = st.fixed_dictionaries({
    "place_id": st.just("p"),
    "organization_id": st.integers(1, 4),
    "birth_year": st.integers(2020, 2022),
    "language": st.sampled_from(("kk", "ru")),
    "group_type": st.sampled_from(("general", "special", "sanatorium", "short_stay")),
})
CHILDREN = st.fixed_dictionaries({
    "status": st.sampled_from(domain.STATUSES),
    "birth_year": st.integers(2020, 2022),
    "language": st.sampled_from(("kk", "ru")),
    "queue_type": st.sampled_from(domain.QUEUE_TYPES),
    "preferred_organizations": st.lists(st.integers(1, 4), max_size=3, unique=True),
})


@settings(SETTINGS, max_examples=400)
@given(CHILDREN, PLACES, st.booleans())
def test_fit_reason_is_ok_exactly_when_the_child_may_take_the_place(child, place, chosen):
    reason = domain.fit_reason(child, place, require_preferred=chosen)
    assert (reason == "ok") == oracle.fits(child, place, chosen_required=chosen)
    if child["status"] != "queued":
        assert reason == child["status"]  # the status is named first
    if reason == "ok" and chosen:
        # whoever may have a place in its priority period may also claim it as a vacancy
        assert domain.fit_reason(child, place, require_preferred=False) == "ok"


@settings(SETTINGS, max_examples=300)
@given(st.lists(st.tuples(CHILDREN, st.sampled_from(TIERS), st.booleans(), st.integers(0, 5)),
                min_size=1, max_size=12), PLACES)
def test_the_place_goes_to_the_highest_child_who_fits(children, place):
    """The winner's standing is never worse than that of any other child who fits: nobody who
    stands higher and fits is passed over (the rule the candidates index implements)."""
    rows = [{**child, "application_number": f"A{n:09d}", "claimed_tier": tier,
             "benefit_verified": verified, "filed_at": T0 + dt.timedelta(minutes=minute)}
            for n, (child, tier, verified, minute) in enumerate(children)]
    fitting = [e for e in rows if domain.fit_reason(e, place, require_preferred=True) == "ok"]
    winner = min(fitting, key=domain.order_key) if fitting else None
    assert winner == oracle.first_eligible(rows, place, chosen_required=True)
    for e in fitting:
        assert domain.order_key(winner) <= domain.order_key(e)
