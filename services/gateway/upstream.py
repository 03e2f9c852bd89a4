"""RPC proxies to the services with a deadline on every call.

``registry = Upstream("registry")`` behaves like nameko's RpcProxy, except that:

- a call not answered within ``RPC_TIMEOUT_SECONDS`` raises UpstreamTimeout (504) instead of
  waiting forever;
- the calls a read (GET) makes go over the gateway's one
  :class:`~services.common.rpc_channel.CallChannel`: no producer per call, no publisher
  confirm, replies taken without acknowledgements, transient messages (should the broker
  restart while one waits in a queue, the caller gets the same 504 as when it restarts while
  the service works on the answer; a read is safe to retry). ``mandatory`` still makes a call
  to a service that is not running fail at once (nameko's UnknownService);
- calls made by a mutating request take Nameko's path: persistent, with publisher confirms
  (the broker has the request before the gateway waits for the answer), replies to a
  non-durable queue (a reply is only of use to this running process) that is declared again
  whenever the connection is re-established.

``lookup = Coalesced("registry", "queue_lookups")`` gives a worker ``lookup(number)``: one
item of a batch method, the items of concurrent requests sent together in one call over the
same channel (services.common.coalesce), each request with its own outcome and deadline.
"""

from __future__ import annotations

from typing import Any

import eventlet
import kombu.pools
from kombu import Queue
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.exceptions import deserialize
from nameko.extensions import DependencyProvider, SharedExtension
from nameko.messaging import HeaderEncoder
from nameko.rpc import ReplyListener, RpcProxy, ServiceProxy, get_rpc_exchange

from services.common.coalesce import Coalescer
from services.common.config import settings
from services.common.rpc_channel import CallChannel
from services.gateway.errors import UpstreamTimeout


def deadline(service: str, seconds: float) -> eventlet.Timeout:
    """The deadline of a call to ``service``: UpstreamTimeout (504) after ``seconds``."""
    return eventlet.Timeout(
        seconds, UpstreamTimeout(f"the {service} service did not answer in time"))


class _TimedService:
    def __init__(self, proxy, name: str, timeout: float):
        self._proxy = proxy
        self._name = name
        self._timeout = timeout

    def __getattr__(self, method: str):
        target = getattr(self._proxy, method)

        def call(*args: Any, **kwargs: Any) -> Any:
            with deadline(self._name, self._timeout):
                return target(*args, **kwargs)

        call.__name__ = method
        return call


class TransientReplyListener(ReplyListener):
    """nameko's reply listener with its queue non-durable (it already expires when unused)."""

    def setup(self) -> None:
        super().setup()
        queue = self.queue
        self.queue = Queue(
            queue.name,
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            durable=False,
            queue_arguments=queue.queue_arguments,
        )


class ReadCalls(SharedExtension):
    """The container's one channel for the RPC calls of reads."""

    channel: CallChannel | None = None

    def setup(self) -> None:
        config = self.container.config
        self.channel = CallChannel(config[AMQP_URI_CONFIG_KEY], get_rpc_exchange(config).name,
                                   self.container.service_name)

    def stop(self) -> None:
        self.channel.close()

    def kill(self) -> None:
        self.channel.close()


class _ReadProxy:
    """``proxy.method(*args, **kwargs)`` over the read channel, with the worker's context."""

    _headers = HeaderEncoder()

    def __init__(self, channel: CallChannel, service: str, worker_ctx):
        self._channel, self._service, self._worker_ctx = channel, service, worker_ctx

    def __getattr__(self, method: str):
        def call(*args: Any, **kwargs: Any) -> Any:
            headers = self._headers.get_message_headers(self._worker_ctx)
            return self._channel.call(self._service, method, args, kwargs, headers)

        return call


def is_read(worker_ctx) -> bool:
    """True when the worker serves a request that changes nothing (a GET route)."""
    call = worker_ctx.args[0] if worker_ctx.args else None
    route = getattr(call, "route", None)
    return route is not None and not route.mutating and route.method == "GET"


class Upstream(RpcProxy):
    rpc_reply_listener = TransientReplyListener()
    read_calls = ReadCalls()

    def setup(self) -> None:
        super().setup()
        config = self.container.config
        self.timeout = float(settings(config).get("RPC_TIMEOUT_SECONDS", 10))
        # nameko publishes through kombu's process-wide pools of producers, 10 by default, and
        # holds one until the broker confirms: with more workers calling at once than that,
        # the rest wait for a producer. One per worker, and as many for the replies of the
        # services that share this process in the development runner.
        needed = 2 * int(config.get("max_workers") or 10)
        if kombu.pools.get_limit() < needed:
            kombu.pools.set_limit(needed)

    def get_dependency(self, worker_ctx) -> _TimedService:
        if is_read(worker_ctx):
            proxy = _ReadProxy(self.read_calls.channel, self.target_service, worker_ctx)
        else:
            proxy = ServiceProxy(worker_ctx, self.target_service, self.rpc_reply_listener,
                                 **self.options)
        return _TimedService(proxy, self.target_service, self.timeout)


class Coalesced(DependencyProvider):
    """``call(item)`` of ``service.method(items) -> [{"result"} | {"error"}, ...]``, the items
    of concurrent workers in one read call (at most ``COALESCE_BATCH`` items; up to
    ``COALESCE_IN_FLIGHT`` calls on their way at once, so a lone request never waits for
    another's). The headers sent are the first item's worker's. Each worker waits at most
    ``RPC_TIMEOUT_SECONDS`` (UpstreamTimeout), as a call of its own would."""

    read_calls = ReadCalls()
    _headers = HeaderEncoder()

    def __init__(self, service: str, method: str):
        super().__init__()
        self.service, self.method = service, method

    def setup(self) -> None:
        s = settings(self.container.config)
        self.timeout = float(s.get("RPC_TIMEOUT_SECONDS", 10))
        self.coalescer = Coalescer(self._call, int(s.get("COALESCE_IN_FLIGHT", 1)),
                                   int(s.get("COALESCE_BATCH", 100)))

    def _call(self, batch: list[tuple[Any, Any]]) -> list[Any]:
        headers = self._headers.get_message_headers(batch[0][1])
        with deadline(self.service, self.timeout):
            outcomes = self.read_calls.channel.call(
                self.service, self.method, ([item for item, _ in batch],), {}, headers)
        return [deserialize(o["error"]) if o.get("error") else o["result"] for o in outcomes]

    def get_dependency(self, worker_ctx):
        def call(item: Any) -> Any:
            with deadline(self.service, self.timeout):
                return self.coalescer.submit((item, worker_ctx))

        return call
