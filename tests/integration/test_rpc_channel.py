"""The lean RPC path (services/common/rpc_channel.py) against real RabbitMQ: the gateway's reads
go out over one CallChannel, services reply over one ReplyChannel, and both still speak Nameko's
wire format to Nameko's own clients."""

from __future__ import annotations

import socket
import time
import uuid

import eventlet
import pytest
from nameko.exceptions import IncorrectSignature, MethodNotFound, UnknownService
from nameko.rpc import get_rpc_exchange

from services.common.errors import NotFound
from services.common.rpc import rpc
from services.common.rpc_channel import CallChannel, ChannelLost


def make_service(name: str):
    class Echo:
        @rpc
        def echo(self, value, suffix=""):
            return {"value": value, "suffix": suffix}

        @rpc
        def missing(self, number):
            raise NotFound(f"no application {number}", field="application_number")

        @rpc
        def slow(self, seconds):
            eventlet.sleep(seconds)
            return "done"

        @rpc
        def not_json(self):
            return {1, 2, 3}

    return type(f"Echo_{name}", (Echo,), {"name": name})


@pytest.fixture
def echo(kezek_config, start_services):
    name = f"echo_{uuid.uuid4().hex[:8]}"
    runner = start_services(make_service(name))
    yield name, runner


@pytest.fixture
def calls(kezek_config):
    channel = CallChannel(kezek_config["AMQP_URI"], get_rpc_exchange(kezek_config).name,
                          f"test-{uuid.uuid4().hex[:8]}")
    yield channel
    channel.close()


def drop_socket(connection) -> None:
    """What a broken network does to a connection: the socket dies under it."""
    connection.connection.transport.sock.shutdown(socket.SHUT_RDWR)


def test_a_read_call_gets_the_result_and_the_services_errors(echo, calls):
    name, _ = echo
    assert calls.call(name, "echo", ("a",), {"suffix": "!"}) == {"value": "a", "suffix": "!"}
    with pytest.raises(NotFound) as raised:
        calls.call(name, "missing", ("A-1",), {})
    assert raised.value.field == "application_number"
    with pytest.raises(IncorrectSignature):
        calls.call(name, "echo", (), {"unknown": 1})
    with pytest.raises(MethodNotFound):
        calls.call(name, "no_such_method", (), {})


def test_a_result_that_is_not_json_is_an_error_not_a_dead_service(echo, calls):
    name, _ = echo
    with pytest.raises(Exception, match="Unserializable value"):
        calls.call(name, "not_json", (), {})
    assert calls.call(name, "echo", (1,), {}) == {"value": 1, "suffix": ""}


def test_the_lean_replies_reach_nameko_clients(echo, rpc):
    name, _ = echo
    with rpc(timeout=10) as cluster:
        assert getattr(cluster, name).echo("b") == {"value": "b", "suffix": ""}
        with pytest.raises(NotFound):
            getattr(cluster, name).missing("A-2")


def test_a_call_to_a_service_that_is_not_running_fails_at_once(calls):
    started = time.monotonic()
    with pytest.raises(UnknownService):
        with eventlet.Timeout(10):
            calls.call(f"absent_{uuid.uuid4().hex[:8]}", "echo", (1,), {})
    assert time.monotonic() - started < 5


def test_calls_waiting_on_a_lost_connection_fail_and_the_next_call_reconnects(echo, calls):
    name, _ = echo
    assert calls.call(name, "echo", (1,), {})["value"] == 1
    waiting = eventlet.spawn(calls.call, name, "slow", (1.0,), {})
    eventlet.sleep(0.2)
    drop_socket(calls._conn)
    with pytest.raises(ChannelLost):
        with eventlet.Timeout(10):
            waiting.wait()
    assert calls.call(name, "echo", (2,), {})["value"] == 2


def test_a_service_whose_reply_connection_was_lost_replies_on_a_new_one(echo, calls):
    name, runner = echo
    assert calls.call(name, "echo", (1,), {})["value"] == 1
    container = next(c for c in runner.containers if c.service_name == name)
    consumer = next(e for e in container.subextensions if hasattr(e, "replies"))
    drop_socket(consumer.replies._conn)
    eventlet.sleep(0.2)  # the channel's reader sees the connection end
    with eventlet.Timeout(10):
        assert calls.call(name, "echo", (3,), {})["value"] == 3


def test_concurrent_calls_each_get_their_own_reply(echo, calls):
    name, _ = echo
    pool = eventlet.GreenPool(50)
    with eventlet.Timeout(20):
        results = list(pool.imap(lambda i: calls.call(name, "echo", (i,), {})["value"],
                                 range(200)))
    assert results == list(range(200))
