"""The status page's tests drive Debian's headless Chromium (dev/browser.py); each test gets a fresh browser."""

from __future__ import annotations

import pytest

from dev import browser


@pytest.fixture
def driver():
    with browser.chromium() as chromium:
        yield chromium
