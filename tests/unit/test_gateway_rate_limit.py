"""Token buckets and temporary blocks (05-24..05-28), with a fake clock."""

import pytest

from services.gateway.abuse import RateLimiter
from services.gateway.errors import RateLimited, TemporarilyBlocked


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def limiter(clock, per_minute=60, burst=3, block_after=3, block_seconds=120):
    return RateLimiter(per_minute, burst, block_after, block_seconds, clock=clock)


def test_a_burst_is_allowed_then_refused_with_retry_after():
    clock = Clock()
    rl = limiter(clock)
    for _ in range(3):
        rl.check("a")
    with pytest.raises(RateLimited) as err:
        rl.check("a")
    assert err.value.code == "RATE_LIMITED"
    assert err.value.retry_after == pytest.approx(1.0)  # 60 a minute: one token a second


def test_tokens_come_back_with_time():
    clock = Clock()
    rl = limiter(clock)
    for _ in range(3):
        rl.check("a")
    clock.now += 2.0
    rl.check("a")
    rl.check("a")
    with pytest.raises(RateLimited):
        rl.check("a")


def test_keys_are_independent():
    clock = Clock()
    rl = limiter(clock, burst=1)
    rl.check("a")
    rl.check("b")
    with pytest.raises(RateLimited):
        rl.check("a")


def test_repeated_excess_blocks_for_block_seconds():
    clock = Clock()
    rl = limiter(clock, burst=1, block_after=3, block_seconds=120)
    rl.check("a")
    for _ in range(2):
        with pytest.raises(RateLimited) as err:
            rl.check("a")
        assert not isinstance(err.value, TemporarilyBlocked)
    with pytest.raises(TemporarilyBlocked) as err:
        rl.check("a")
    assert err.value.code == "TEMPORARILY_BLOCKED"
    assert err.value.retry_after == 120
    clock.now += 60  # tokens are back, but the block holds
    with pytest.raises(TemporarilyBlocked) as err:
        rl.check("a")
    assert err.value.retry_after == pytest.approx(60)
    clock.now += 61
    rl.check("a")


def test_excesses_spread_over_more_than_a_minute_do_not_block():
    clock = Clock()
    rl = limiter(clock, per_minute=1, burst=1, block_after=2)
    rl.check("a")
    with pytest.raises(RateLimited):
        rl.check("a")
    clock.now += 61  # the earlier excess has left the window; a token is back
    rl.check("a")
    with pytest.raises(RateLimited) as err:
        rl.check("a")
    assert not isinstance(err.value, TemporarilyBlocked)


def test_idle_keys_are_forgotten_when_the_table_is_full():
    clock = Clock()
    rl = RateLimiter(60, 2, 3, 60, clock=clock, max_keys=10)
    for i in range(10):
        rl.check(f"k{i}")
    clock.now += 5  # everyone's bucket has refilled
    rl.check("new")
    assert len(rl) == 1


def test_nonsense_limits_are_refused():
    with pytest.raises(ValueError):
        RateLimiter(0, 1, 1, 1)
