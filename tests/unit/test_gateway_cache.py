"""The gateway's short-lived cache of public registry pages (services/gateway/cache.py)."""

import eventlet
import pytest

from services.gateway.cache import PublicCache


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_an_answer_is_kept_for_the_given_seconds_then_fetched_again():
    clock, calls = Clock(), []
    cache = PublicCache(2, clock=clock)

    def fetch():
        calls.append(clock.now)
        return {"items": [len(calls)]}

    first = cache.get("page", fetch)
    assert (first.value, first.age, first.max_age) == ({"items": [1]}, 0.0, 2.0)
    clock.now += 1.5
    again = cache.get("page", fetch)
    assert (again.value, again.age) == ({"items": [1]}, 1.5)
    assert cache.get("other page", fetch).value == {"items": [2]}
    clock.now += 0.5
    assert cache.get("page", fetch).value == {"items": [3]}  # 2 s old: asked again
    assert len(calls) == 3


def test_zero_seconds_turns_it_off():
    cache, calls = PublicCache(0), []
    for _ in range(3):
        hit = cache.get("page", lambda: calls.append(1) or len(calls))
        assert hit.max_age == 0
    assert len(calls) == 3 and len(cache) == 0


def test_a_failure_is_not_kept():
    cache = PublicCache(2, clock=Clock())

    def fail():
        raise TimeoutError("registry did not answer")

    with pytest.raises(TimeoutError):
        cache.get("page", fail)
    assert cache.get("page", lambda: "fresh").value == "fresh"


def test_requests_that_miss_together_wait_for_one_fetch():
    cache, calls = PublicCache(2), []

    def slow():
        calls.append(1)
        eventlet.sleep(0.05)
        return "answer"

    pool = eventlet.GreenPool()
    results = list(pool.imap(lambda _: cache.get("page", slow).value, range(10)))
    assert results == ["answer"] * 10 and len(calls) == 1


def test_waiters_get_the_failure_of_the_fetch_they_waited_for():
    cache = PublicCache(2)

    def slow_fail():
        eventlet.sleep(0.05)
        raise TimeoutError("no answer")

    def one(_):
        try:
            return cache.get("page", slow_fail).value
        except TimeoutError as exc:
            return str(exc)

    pool = eventlet.GreenPool()
    assert list(pool.imap(one, range(3))) == ["no answer"] * 3


def test_it_never_grows_past_its_bound():
    clock = Clock()
    cache = PublicCache(2, clock=clock, max_entries=10)
    for i in range(25):
        cache.get(i, lambda: i)
    assert len(cache) <= 10
