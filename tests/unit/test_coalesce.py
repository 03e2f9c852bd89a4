"""The group commit behind the audit publisher and the gateway's queue-number lookups."""

import eventlet
import pytest
from eventlet.event import Event

from services.common.coalesce import Coalescer


class Handler:
    """Records each batch; the first batch waits until ``release`` when ``hold`` is set."""

    def __init__(self, hold: bool = False, fail_on=None, raises=None):
        self.batches: list[list] = []
        self.hold = Event() if hold else None
        self.fail_on, self.raises = fail_on, raises

    def __call__(self, items):
        self.batches.append(list(items))
        if self.hold is not None and len(self.batches) == 1:
            self.hold.wait()
        if self.raises is not None:
            raise self.raises
        return [ValueError(f"no {i}") if i == self.fail_on else i * 10 for i in items]

    def release(self):
        self.hold.send(None)


def on_its_way(handler, batches=1):
    """Let the other greenthreads run until ``batches`` batches have reached the handler."""
    for _ in range(100):
        if len(handler.batches) >= batches:
            return
        eventlet.sleep(0)
    raise AssertionError(f"{len(handler.batches)} batches reached the handler, not {batches}")


def settle():
    for _ in range(5):
        eventlet.sleep(0)


def submit_all(coalescer, items):
    """Submit each item from its own greenthread; their outcomes (value or exception)."""
    def one(item):
        try:
            return coalescer.submit(item)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            return exc

    return [eventlet.spawn(one, item) for item in items]


def test_a_lone_item_is_handled_at_once_on_its_own():
    handler = Handler()
    assert Coalescer(handler).submit(4) == 40
    assert handler.batches == [[4]]


def test_items_that_arrive_while_a_batch_is_on_its_way_go_together_next():
    handler = Handler(hold=True)
    coalescer = Coalescer(handler)
    first = submit_all(coalescer, [1])
    on_its_way(handler)
    rest = submit_all(coalescer, [2, 3, 4, 5])
    settle()  # every submitter is waiting
    assert handler.batches == [[1]]
    handler.release()
    assert [t.wait() for t in first + rest] == [10, 20, 30, 40, 50]
    assert handler.batches == [[1], [2, 3, 4, 5]] and coalescer.batches == 2


def test_a_batch_holds_at_most_batch_size_items():
    handler = Handler(hold=True)
    coalescer = Coalescer(handler, batch_size=3)
    threads = submit_all(coalescer, [0])
    on_its_way(handler)
    threads += submit_all(coalescer, range(1, 8))
    settle()  # every submitter is waiting
    handler.release()
    assert [t.wait() for t in threads] == [i * 10 for i in range(8)]
    assert [len(b) for b in handler.batches] == [1, 3, 3, 1]


def test_with_two_in_flight_a_second_item_does_not_wait_for_the_first():
    handler = Handler(hold=True)
    coalescer = Coalescer(handler, in_flight=2)
    first = submit_all(coalescer, [1])
    on_its_way(handler)
    assert coalescer.submit(2) == 20  # while the first is still held
    handler.release()
    assert first[0].wait() == 10


def test_an_item_that_fails_fails_alone():
    handler = Handler(hold=True, fail_on=3)
    coalescer = Coalescer(handler)
    threads = submit_all(coalescer, [1])
    on_its_way(handler)
    threads += submit_all(coalescer, [2, 3, 4])
    settle()  # every submitter is waiting
    handler.release()
    outcomes = [t.wait() for t in threads]
    assert outcomes[:2] == [10, 20] and outcomes[3] == 40
    assert isinstance(outcomes[2], ValueError) and str(outcomes[2]) == "no 3"


def test_when_the_handler_fails_every_item_of_its_batch_hears_it():
    handler = Handler(raises=ConnectionError("broker gone"))
    coalescer = Coalescer(handler)
    outcomes = [t.wait() for t in submit_all(coalescer, [1, 2, 3])]
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    with pytest.raises(ConnectionError):
        coalescer.submit(4)  # and the next item is still handled (and told)
    assert sum(len(b) for b in handler.batches) == 4


def test_a_handler_that_answers_for_the_wrong_number_of_items_fails_the_batch():
    coalescer = Coalescer(lambda items: items[:-1])
    outcomes = [t.wait() for t in submit_all(coalescer, [1, 2])]
    assert [str(o) for o in outcomes] == ["1 outcomes for 2 items"] * 2
    assert all(isinstance(o, RuntimeError) for o in outcomes)
