"""RPC proxies to the services with a deadline on every call.

``registry = Upstream("registry")`` behaves like nameko's RpcProxy, except that:

- a call not answered within ``RPC_TIMEOUT_SECONDS`` raises UpstreamTimeout (504) instead of
  waiting forever;
- the calls a read (GET) makes are sent as transient messages: the broker confirms them without
  writing them to disk. Should the broker restart while one waits in a queue, the caller gets
  the same 504 as when it restarts while the service works on the answer (the reply would be
  lost either way); a read is safe to retry. Calls made by a mutating request stay persistent;
- replies come to a non-durable queue: a reply is only of use to this running process, so the
  broker need not write replies to disk before confirming them to the service. The queue is
  declared again whenever the connection is re-established.

Calls still use publisher confirms and ``mandatory``, so a call to a service that is not
running fails at once (nameko's UnknownService) instead of waiting for the deadline.
"""

from __future__ import annotations

from typing import Any

import eventlet
import kombu.pools
from kombu import Queue
from nameko.constants import NON_PERSISTENT
from nameko.rpc import ReplyListener, RpcProxy, ServiceProxy

from services.common.config import settings
from services.gateway.errors import UpstreamTimeout


class _TimedService:
    def __init__(self, proxy, name: str, timeout: float):
        self._proxy = proxy
        self._name = name
        self._timeout = timeout

    def __getattr__(self, method: str):
        target = getattr(self._proxy, method)

        def call(*args: Any, **kwargs: Any) -> Any:
            timeout = eventlet.Timeout(
                self._timeout, UpstreamTimeout(f"the {self._name} service did not answer in time")
            )
            with timeout:
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


def is_read(worker_ctx) -> bool:
    """True when the worker serves a request that changes nothing (a GET route)."""
    call = worker_ctx.args[0] if worker_ctx.args else None
    route = getattr(call, "route", None)
    return route is not None and not route.mutating and route.method == "GET"


class Upstream(RpcProxy):
    rpc_reply_listener = TransientReplyListener()

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
        options = dict(self.options)
        if is_read(worker_ctx):
            options.setdefault("delivery_mode", NON_PERSISTENT)
        proxy = ServiceProxy(worker_ctx, self.target_service, self.rpc_reply_listener, **options)
        return _TimedService(proxy, self.target_service, self.timeout)
