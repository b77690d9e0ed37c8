"""`python -m dev.screenshots`: pictures of the status page for docs/operations.md, taken from the real thing.

Starts the local stack (or reuses a running one), runs the app on the local runner with the showcase's
requests in every state, a refresh run and replication events (dev/showcase.py), opens `/api/ui` in headless
Chromium at 1280x800 (dev/browser.py) and writes PNGs to docs/images/. Look at them after a change to the
page: they are what a reader of the docs sees.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path

from dev import browser, layout, seed, showcase, stack
from dev.app_settings import create_app_queues, local_app_settings

OUT = layout.REPO_ROOT / "docs" / "images"
WAIT = 90.0


def _wait(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition, message)


def _css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def _imports_redrawn(driver, before: str | None) -> None:
    _wait(driver, lambda d: _css(d, "#imports-table").get_attribute("data-loaded") != before, "no new imports page")


def _show(driver, selector: str) -> None:
    """Scroll so the element's top is at the top of the window (the shot is the 1280x800 window)."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'}); window.scrollBy(0, -8);",
                          _css(driver, selector))


def take(driver, page_url: str, key: str, shown: showcase.Showcase, out: Path) -> list[Path]:
    from selenium.webdriver.common.keys import Keys

    written: list[Path] = []

    def shot(name: str) -> None:
        path = out / f"status-page-{name}.png"
        driver.save_screenshot(str(path))
        written.append(path)

    driver.get(f"{page_url}?code={key}")
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.loaded"), "the page did not load")
    shot("overview")

    before = _css(driver, "#imports-table").get_attribute("data-loaded")
    _css(driver, "#state-failed").click()
    _css(driver, "#state-rejected").click()
    _css(driver, "#apply").click()
    _imports_redrawn(driver, before)
    _show(driver, "#imports-heading")
    shot("filtered")

    button = next(b for b in driver.find_elements("css selector", "#imports-table tbody button")
                  if b.text == shown.ids["rejected"])
    button.send_keys(Keys.ENTER)
    _wait(driver, lambda d: _css(d, "#detail").get_attribute("data-loaded") == shown.ids["rejected"], "no detail")
    _show(driver, "#detail")
    shot("detail")
    _css(driver, "#close-detail").click()

    _show(driver, "#refresh-heading")
    shot("refresh-replication")

    driver.execute_script("sessionStorage.clear()")
    driver.get(page_url)
    _wait(driver, lambda d: _css(d, "#key-panel").is_displayed(), "no key form")
    shot("key")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.screenshots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the PNGs go (default {OUT})")
    args = parser.parse_args(argv)
    problem = browser.missing()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    from dev.azure_standin.control import StandinControl
    from dev.runner import Runner

    print("Starting the local stack (registries, Azure stand-in, Azurite)...", flush=True)
    started = stack.up()
    try:
        seeded = seed.seed_world()
        run = uuid.uuid4().hex[:6]
        key = f"screenshots-{uuid.uuid4().hex}"
        settings = {**local_app_settings(queue=f"shots-{run}", table=f"shots{run}"),
                    **showcase.settings(Path(tempfile.mkdtemp(prefix="acr-importer-shots-")), run),
                    "RUNNER_FUNCTION_KEY": key}
        os.environ.update(settings)
        create_app_queues(settings["IMPORT_QUEUE"])
        control = StandinControl()
        control.reset()
        with Runner("function_app", env=settings, http_port=0) as runner:
            base = f"http://{layout.HOST}:{runner.http_port}"
            app = showcase.App(base, key, settings["IMPORT_QUEUE"], runner.eventgrid_key)
            shown = showcase.make_requests(app, control, run)
            runner.trigger_timer("refresh_tracked_images")
            digest = next(s.digest for s in seeded if (s.registry, s.repo, s.tag) ==
                          (layout.SOURCE_ACR.login_server, "aci-helloworld", "latest"))
            showcase.make_events(app, digest)
            args.out.mkdir(parents=True, exist_ok=True)
            with browser.chromium() as driver:
                written = take(driver, f"{base}/api/ui", key, shown, args.out)
        control.reset()
        for path in written:
            print(f"wrote {path.relative_to(layout.REPO_ROOT) if path.is_relative_to(layout.REPO_ROOT) else path}")
        return 0
    finally:
        stack.down(started)


if __name__ == "__main__":
    sys.exit(main())
