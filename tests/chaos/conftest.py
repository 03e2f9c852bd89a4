"""Keeps the outcome of each test on its item, so a fixture can keep the logs of a failed run."""

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"kezek_{report.when}", report)
