"""Headless Chromium from Debian under Selenium, for the status page's tests and screenshots.

The browser and its driver are the system packages (`chromium`, `chromium-driver`: `make system-deps`), named
by path so Selenium Manager never downloads a browser or a driver (nothing may be fetched here). Every
session gets a fresh profile folder and the flags that keep Chromium from calling home.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1280, 800)  # a laptop screen: what the page is made to fit
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
         "--hide-scrollbars", "--force-device-scale-factor=1", "--lang=en-US")


def missing() -> str | None:
    """What is not installed, said so a reader knows the fix; None when both are there."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing: install the Debian package {package} (`make system-deps`)"
    return None


@contextmanager
def chromium(*, window: tuple[int, int] = WINDOW) -> Iterator:
    """A Selenium Chrome driver on the system Chromium, quit and its profile deleted afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    problem = missing()
    if problem:
        raise RuntimeError(problem)
    profile = tempfile.mkdtemp(prefix="acr-importer-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(60)
        # --window-size is the window; make the page's viewport the size asked for (what a screenshot shows)
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        driver.set_window_size(2 * window[0] - inner[0], 2 * window[1] - inner[1])
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
