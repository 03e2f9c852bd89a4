"""Small helpers shared by tests (no timing assertions: waits only bound how long we wait)."""

import random
import string
import time


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, message: str = ""):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}: {last!r}")


def random_name(prefix: str = "t") -> str:
    return prefix + "-" + "".join(random.choices(string.ascii_lowercase, k=8))
