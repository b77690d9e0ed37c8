"""The status page's tests drive Debian's headless Chromium (dev/browser.py); each test gets a fresh browser.
The runner on the app indexed for Entra sign-in (`entra_api`) serves several modules."""

from __future__ import annotations

import importlib

import pytest

from dev import browser, layout
from shared import app_context
from tests.conftest import FUNCTION_KEY as KEY


@pytest.fixture
def driver():
    with browser.chromium() as chromium:
        yield chromium


@pytest.fixture
def entra_api(app_env, monkeypatch, request):
    """The runner on the app indexed with OPERATOR_SIGN_IN=entra (the auth level is chosen at indexing), and
    OPERATOR_APP_ROLE when the test is parametrized with one."""
    import function_app
    from dev.runner import Runner

    role = getattr(request, "param", "")
    monkeypatch.setenv("OPERATOR_SIGN_IN", "entra")
    monkeypatch.setenv("OPERATOR_APP_ROLE", role)
    monkeypatch.setenv("RUNNER_FUNCTION_KEY", KEY)
    importlib.reload(function_app)
    app_context.reset()
    try:
        with Runner("function_app", env={**app_env, "OPERATOR_SIGN_IN": "entra", "OPERATOR_APP_ROLE": role,
                                         "RUNNER_FUNCTION_KEY": KEY}, http_port=0) as running:
            yield f"http://{layout.HOST}:{running.http_port}/api"
    finally:
        monkeypatch.delenv("OPERATOR_SIGN_IN")
        importlib.reload(function_app)
        app_context.reset()
