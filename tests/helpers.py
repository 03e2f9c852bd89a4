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


def raw_yaml_loader():
    """A SafeLoader that leaves ``${VAR:default}`` as text.

    ``services.common.config.load_config`` registers nameko's env-var resolver on yaml's
    SafeLoader for the whole process; files that are checked as written (compose, k8s,
    config.yaml's defaults) must be read without it, whatever ran earlier.
    """
    import yaml

    class RawLoader(yaml.SafeLoader):
        pass

    RawLoader.yaml_implicit_resolvers = {
        key: [r for r in resolvers if r[0] != "!env_var"]
        for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return RawLoader


def load_yaml_as_written(text: str):
    import yaml

    return yaml.load(text, Loader=raw_yaml_loader())


def load_all_yaml_as_written(text: str):
    import yaml

    return yaml.load_all(text, Loader=raw_yaml_loader())
