"""Every queue and binding, declared before anything publishes (rule 3 of architecture.md).

A publish to an exchange with no bound queue is confirmed and dropped, so ``kezek migrate``
declares every event-handler queue of every service, the dead-letter queue and the audit queue.
"""

from __future__ import annotations

import importlib

from services.common import amqp
from services.common.config import settings
from services.common.events import ReliableEventHandler, handler_queue

SERVICE_CLASSES = [
    "services.registry.service:RegistryService",
    "services.applications.service:ApplicationsService",
    "services.queue.service:QueueService",
    "services.allocation.service:AllocationService",
    "services.audit.service:AuditService",
    "services.gateway.service:GatewayService",
]


def service_classes() -> list[type]:
    classes = []
    for path in SERVICE_CLASSES:
        module, name = path.split(":")
        classes.append(getattr(importlib.import_module(module), name))
    return classes


def handler_queues(config: dict) -> list:
    max_attempts = int(settings(config).get("HANDLER_MAX_ATTEMPTS", 5))
    queues = []
    for cls in service_classes():
        for attr in dir(cls):
            method = getattr(cls, attr, None)
            for entrypoint in getattr(method, "nameko_entrypoints", ()):
                if isinstance(entrypoint, ReliableEventHandler):
                    queues.append(handler_queue(entrypoint.source_service,
                                                entrypoint.event_type, cls.name, attr,
                                                max_attempts, config))
    return queues


def declare_all(config: dict) -> int:
    """Declare the DLQ, the audit queue and every handler queue; returns how many queues."""
    queues = [amqp.dead_letter_queue(), amqp.audit_queue(), *handler_queues(config)]
    amqp.declare(config["AMQP_URI"], queues)
    return len(queues)
