"""One AMQP connection a process for RPC replies and read requests, without per-call producers.

Nameko sends every RPC request and every reply through a kombu producer taken from a pool, in
publisher-confirm mode: a frame out and a confirm back for the request, the same again for the
reply, and the reply listener acknowledges each reply. For a read that answers in a fraction of
a millisecond this is most of the cost of the call (docs/performance.md). The two classes here
keep Nameko's wire format (JSON ``{"args", "kwargs"}`` requests on the ``nameko-rpc`` exchange,
``{"result", "error"}`` replies with the request's ``correlation_id``), so any Nameko client or
service still talks to them, but send over one long-lived channel each:

- :class:`ReplyChannel` (services' side): replies go out without a confirm. A reply is of use
  only to a caller that is waiting now on a queue that lives as long as its connection; if the
  broker loses it, the caller's own deadline answers, as it would if the service had died.
- :class:`CallChannel` (the gateway's side): read requests go out without a confirm but
  ``mandatory``; a request no service queue takes comes back as a ``basic.return`` and fails
  its call at once with Nameko's ``UnknownService``, as the confirming path does. Replies
  arrive on an exclusive, non-durable queue consumed without acknowledgements.

Both keep heartbeats, serialise their writes (greenthreads share the socket), and reconnect on
the next use after the connection is lost; calls waiting on a lost connection fail at once with
:class:`ChannelLost`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Callable

import amqp
import eventlet
from eventlet.event import Event
from eventlet.semaphore import Semaphore
from kombu import Connection
from kombu.utils.json import dumps, loads
from nameko.exceptions import UnknownService, deserialize

log = logging.getLogger(__name__)

JSON = "application/json"
HEARTBEAT_SECONDS = 60
TRANSIENT, PERSISTENT = 1, 2


class ChannelLost(ConnectionError):
    """The connection to the broker went away before the reply came."""


class _Channel:
    """A connection and one channel, reconnected on demand; writes under one lock."""

    def __init__(self, amqp_uri: str, heartbeat: int = HEARTBEAT_SECONDS):
        self.amqp_uri = amqp_uri
        self.heartbeat = heartbeat
        self._lock = Semaphore()
        self._conn: Connection | None = None
        self._channel: amqp.Channel | None = None
        self._threads: list = []
        self._closed = False

    def _open(self) -> amqp.Channel:
        """The channel, connecting first if needed. Call with the lock held."""
        if self._channel is not None:
            return self._channel
        if self._closed:
            raise ChannelLost("the channel is closed")
        conn = Connection(self.amqp_uri, heartbeat=self.heartbeat, connect_timeout=5)
        conn.connect()
        channel = conn.connection.channel()
        try:
            self._prepare(channel)
        except Exception:
            conn.release()
            raise
        self._conn, self._channel = conn, channel
        self._threads = [eventlet.spawn(self._drain, conn), eventlet.spawn(self._beat, conn)]
        return channel

    def _prepare(self, channel: amqp.Channel) -> None:
        """Declare and consume what the subclass needs on a new channel."""

    def _lost(self, conn: Connection, exc: BaseException | None) -> None:
        """Forget ``conn`` (if still current) so the next use reconnects."""
        if self._conn is not conn:
            return
        self._conn = self._channel = None
        try:
            conn.collect()  # drop the socket without a closing handshake: it is dead or unwanted
        except Exception:  # noqa: BLE001 - closing a dead connection
            pass
        if exc is not None and not self._closed:
            log.warning("RPC channel to the broker lost (%r); reconnecting on next use", exc)

    def _drain(self, conn: Connection) -> None:
        raw = conn.connection
        try:
            while self._conn is conn:
                raw.drain_events()
        except Exception as exc:  # noqa: BLE001 - any failure ends this connection
            self._lost(conn, exc)

    def _beat(self, conn: Connection) -> None:
        raw = conn.connection
        try:
            while self._conn is conn:
                eventlet.sleep(1.0)
                with self._lock:
                    if self._conn is conn:
                        raw.heartbeat_tick(rate=2)
        except Exception as exc:  # noqa: BLE001 - missed heartbeats or a dead socket
            self._lost(conn, exc)

    def _publish(self, message: amqp.Message, exchange: str, routing_key: str,
                 mandatory: bool = False) -> None:
        with self._lock:
            channel = self._open()
            conn = self._conn
            try:
                channel.basic_publish(message, exchange=exchange, routing_key=routing_key,
                                      mandatory=mandatory)
            except Exception as exc:
                self._lost(conn, exc)
                raise ChannelLost(f"could not publish to the broker: {exc!r}") from exc

    def close(self) -> None:
        self._closed = True
        threads, self._threads = self._threads, []
        for thread in threads:  # the reader first: the closing handshake reads the socket
            thread.kill()
        with self._lock:
            conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # noqa: BLE001 - the broker is already gone
                pass


class ReplyChannel(_Channel):
    """Sends RPC replies (services' side)."""

    def reply(self, request: Any, exchange: str, result: Any, error: dict | None) -> None:
        """Publish ``{"result", "error"}`` to the caller of ``request`` (a kombu message).

        Raises TypeError/ValueError when ``result`` is not JSON (the caller turns that into
        Nameko's UnserializableValueError) and ChannelLost when the broker cannot be reached.
        """
        properties = request.properties
        body = dumps({"result": result, "error": error})
        message = amqp.Message(body, content_type=JSON, content_encoding="utf-8",
                               delivery_mode=TRANSIENT,
                               correlation_id=properties.get("correlation_id"))
        self._publish(message, exchange, properties["reply_to"])


class CallChannel(_Channel):
    """Sends RPC requests and takes their replies (callers' side)."""

    def __init__(self, amqp_uri: str, exchange: str, caller: str,
                 heartbeat: int = HEARTBEAT_SECONDS):
        super().__init__(amqp_uri, heartbeat)
        self.exchange = exchange
        self.caller = caller
        self._waiting: dict[str, Event] = {}
        self.routing_key = ""

    def _prepare(self, channel: amqp.Channel) -> None:
        self.routing_key = str(uuid.uuid4())
        queue = f"rpc.reply-{self.caller}-{self.routing_key}"
        channel.exchange_declare(self.exchange, "topic", durable=True, auto_delete=False)
        channel.queue_declare(queue, durable=False, exclusive=True, auto_delete=True)
        channel.queue_bind(queue, self.exchange, self.routing_key)
        channel.basic_consume(queue, no_ack=True, callback=self._on_reply)
        channel.events["basic_return"].add(self._on_return)

    def _lost(self, conn: Connection, exc: BaseException | None) -> None:
        current = self._conn is conn
        super()._lost(conn, exc)
        if current:  # replies to this connection's queue can no longer arrive
            waiting, self._waiting = self._waiting, {}
            for event in waiting.values():
                event.send_exception(ChannelLost("the connection to the broker was lost"))

    def _on_reply(self, message: amqp.Message) -> None:
        event = self._waiting.pop(message.properties.get("correlation_id"), None)
        if event is not None:
            event.send(message.body)

    def _on_return(self, exc, exchange, routing_key, message) -> None:
        event = self._waiting.pop(message.properties.get("correlation_id"), None)
        if event is not None:
            event.send_exception(UnknownService(routing_key.split(".")[0]))

    def call(self, service: str, method: str, args: tuple, kwargs: dict,
             headers: dict[str, Any] | None = None, persistent: bool = False) -> Any:
        """Call ``service.method(*args, **kwargs)`` and return its result (or raise its error).

        Waits as long as the reply takes: the caller sets the deadline (eventlet.Timeout)."""
        correlation_id = str(uuid.uuid4())
        event = Event()
        body = dumps({"args": args, "kwargs": kwargs})
        self._waiting[correlation_id] = event
        try:
            with self._lock:  # the reply queue's routing key is known once connected
                self._open()
                reply_to = self.routing_key
            message = amqp.Message(body, content_type=JSON, content_encoding="utf-8",
                                   delivery_mode=PERSISTENT if persistent else TRANSIENT,
                                   reply_to=reply_to, correlation_id=correlation_id,
                                   application_headers=headers or {})
            self._publish(message, self.exchange, f"{service}.{method}", mandatory=True)
            reply = loads(event.wait())
        finally:
            self._waiting.pop(correlation_id, None)
        error = reply.get("error")
        if error:
            raise deserialize(error)
        return reply["result"]


def method_caller(channel: CallChannel, service: str, headers: Callable[[], dict],
                  persistent: bool = False) -> Callable[[str], Callable[..., Any]]:
    """``getattr``-style factory of callables ``service.method(*args, **kwargs)``."""

    def factory(method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return channel.call(service, method, args, kwargs, headers(), persistent)

        call.__name__ = method
        return call

    return factory
