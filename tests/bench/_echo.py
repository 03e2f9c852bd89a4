"""An empty Nameko service for the RPC floor of tests/bench/floors.py (not a benchmark)."""

from nameko.rpc import rpc

from services.common.metrics import Metrics


class BenchEchoService:
    name = "bench_echo"

    metrics = Metrics()

    @rpc
    def ping(self):
        return None
