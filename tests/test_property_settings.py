"""Every property test runs without timing checks, so a busy machine cannot fail `make test` by chance."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from hypothesis import is_hypothesis_test

import tests
from tests.conftest import TIMING_HEALTH_CHECKS


def _property_tests():
    for info in pkgutil.walk_packages(tests.__path__, "tests."):
        if not info.name.rsplit(".", 1)[-1].startswith("test_"):
            continue
        module = importlib.import_module(info.name)
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("test_") and is_hypothesis_test(function):
                yield info.name, name, function


def test_the_suite_has_property_tests():
    assert len(list(_property_tests())) >= 8


def test_no_property_test_has_a_deadline_or_a_timing_health_check():
    for module, name, function in _property_tests():
        used = function._hypothesis_internal_use_settings  # the settings hypothesis will run the test with
        assert used.deadline is None, f"{module}.{name} has a deadline: it fails on a busy machine"
        for check in TIMING_HEALTH_CHECKS:
            assert check in used.suppress_health_check, f"{module}.{name} runs the {check.name} health check"
