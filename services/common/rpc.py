"""``@rpc`` for Kezek services: nameko's entrypoint with a lighter reply path that never kills
the service.

- Replies to JSON requests (every Kezek caller and Nameko's own proxies) go out over one
  connection of the service's (:class:`~services.common.rpc_channel.ReplyChannel`) without a
  publisher confirm, instead of a pooled producer and a confirm per reply. The wire format is
  Nameko's, so Nameko clients read them as before. Other content types take Nameko's path.
- A reply that cannot be sent (the broker is restarting) is given up instead of ending the worker
  thread, which in Nameko kills the whole service container. The caller's own deadline answers
  it with a timeout, and state-changing calls are idempotent, so the caller may retry. The
  request message is acknowledged, as nameko would have done.
- The arguments are checked against the method's signature, computed once instead of per call.

Use ``from services.common.rpc import rpc`` in place of ``from nameko.rpc import rpc``.
"""

from __future__ import annotations

import inspect
import logging
import sys

from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.exceptions import IncorrectSignature, UnserializableValueError, serialize
from nameko.rpc import Rpc, RpcConsumer, get_rpc_exchange

from services.common.events import settle
from services.common.rpc_channel import JSON, ReplyChannel

log = logging.getLogger(__name__)


class ReplyTolerantRpcConsumer(RpcConsumer):
    replies: ReplyChannel | None = None

    def setup(self) -> None:
        super().setup()
        self.exchange = get_rpc_exchange(self.container.config).name
        self.replies = ReplyChannel(self.container.config[AMQP_URI_CONFIG_KEY])

    def stop(self) -> None:  # after the service's workers have finished (and replied)
        super().stop()
        if self.replies is not None:
            self.replies.close()

    def kill(self) -> None:
        super().kill()
        if self.replies is not None:
            self.replies.close()

    def handle_result(self, message, result, exc_info):
        properties = message.properties
        if properties.get("content_type") != JSON or not properties.get("reply_to"):
            return self._nameko_reply(message, result, exc_info)
        error = serialize(exc_info[1]) if exc_info is not None else None
        try:
            try:
                self.replies.reply(message, self.exchange, result, error)
            except (TypeError, ValueError):  # the result is not JSON: say so, as Nameko does
                exc_info = sys.exc_info()
                unserializable, result = result, None
                self.replies.reply(message, self.exchange, None,
                                   serialize(UnserializableValueError(unserializable)))
        except Exception as exc:  # noqa: BLE001 - the broker went away under the reply
            log.warning("could not send the reply to %s (%r); the caller will time out",
                        message.delivery_info.get("routing_key"), exc)
        # the ack fails too when the connection is gone: the broker redelivers the request
        settle(self.queue_consumer.ack_message, message)
        return result, exc_info

    def _nameko_reply(self, message, result, exc_info):
        try:
            return super().handle_result(message, result, exc_info)
        except Exception as exc:  # noqa: BLE001 - the broker went away under the reply
            log.warning("could not send the reply to %s (%r); the caller will time out",
                        message.delivery_info.get("routing_key"), exc)
            settle(self.queue_consumer.ack_message, message)
            return result, exc_info


class KezekRpc(Rpc):
    rpc_consumer = ReplyTolerantRpcConsumer()
    _signature: inspect.Signature | None = None

    def check_signature(self, args, kwargs):
        if self._signature is None:
            self._signature = inspect.signature(getattr(self.container.service_cls,
                                                        self.method_name))
        try:
            self._signature.bind(None, *args, **kwargs)  # None stands for self
        except TypeError as exc:
            raise IncorrectSignature(str(exc)) from None


rpc = KezekRpc.decorator
