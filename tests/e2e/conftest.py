"""The whole system as `make run` starts it (tests/system.py), one per test session."""

import pytest

from tests.system import ALL_SERVICES, System, running_system, start_system  # noqa: F401


@pytest.fixture(scope="session")
def system(tmp_path_factory) -> System:
    with running_system(tmp_path_factory.mktemp("system")) as running:
        yield running
