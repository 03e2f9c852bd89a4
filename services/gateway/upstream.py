"""RPC proxies to the services with a deadline on every call.

``registry = Upstream("registry")`` behaves like nameko's RpcProxy, except that a call not
answered within ``RPC_TIMEOUT_SECONDS`` raises UpstreamTimeout (504) instead of waiting forever.
"""

from __future__ import annotations

from typing import Any

import eventlet
from nameko.rpc import RpcProxy

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


class Upstream(RpcProxy):
    def setup(self) -> None:
        super().setup()
        self.timeout = float(settings(self.container.config).get("RPC_TIMEOUT_SECONDS", 10))

    def get_dependency(self, worker_ctx) -> _TimedService:
        return _TimedService(super().get_dependency(worker_ctx), self.target_service, self.timeout)
