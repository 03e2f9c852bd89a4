"""Acking a message on a connection RabbitMQ just closed must not kill the service (the broker
redelivers the message; the inbox drops the copy). Any other error still surfaces."""

import pytest
from amqp.exceptions import RecoverableConnectionError

from services.common.events import settle


def fail_with(exc):
    def action(message):
        raise exc
    return action


@pytest.mark.parametrize("exc", [ConnectionResetError(104, "Connection reset by peer"),
                                 BrokenPipeError(32, "Broken pipe"),
                                 RecoverableConnectionError("connection already closed")])
def test_a_broker_gone_under_the_ack_is_logged_not_raised(exc, caplog):
    settle(fail_with(exc), object())
    assert "delivered again" in caplog.text


def test_other_errors_are_not_swallowed():
    with pytest.raises(ValueError):
        settle(fail_with(ValueError("a bug")), object())


def test_the_action_runs_on_the_message():
    seen = []
    settle(seen.append, "message")
    assert seen == ["message"]
