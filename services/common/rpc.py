"""``@rpc`` for Kezek services: nameko's, except that a reply that cannot be sent does not kill
the service.

Nameko publishes an RPC reply with a few quick retries and, should they fail (the broker is
restarting), lets the exception end the worker thread, which kills the whole service container:
the process then stops serving until something restarts it. Here the reply is given up instead
(the caller's own deadline answers it with a timeout, and state-changing calls are idempotent, so
the caller may retry) and the request message is acknowledged, as nameko would have done.

Use ``from services.common.rpc import rpc`` in place of ``from nameko.rpc import rpc``.
"""

from __future__ import annotations

import logging

from nameko.rpc import Rpc, RpcConsumer

from services.common.events import settle

log = logging.getLogger(__name__)


class ReplyTolerantRpcConsumer(RpcConsumer):
    def handle_result(self, message, result, exc_info):
        try:
            return super().handle_result(message, result, exc_info)
        except Exception as exc:  # noqa: BLE001 - the broker went away under the reply
            log.warning("could not send the reply to %s (%r); the caller will time out",
                        message.delivery_info.get("routing_key"), exc)
            # the ack fails too when the connection is gone: the broker redelivers the request
            settle(self.queue_consumer.ack_message, message)
            return result, exc_info


class KezekRpc(Rpc):
    rpc_consumer = ReplyTolerantRpcConsumer()


rpc = KezekRpc.decorator
