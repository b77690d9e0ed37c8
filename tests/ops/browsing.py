"""What the status page's browser tests do the same way: find things, read tables as a reader sees them, and
wait, always on a condition of the page (WebDriverWait), with room for a loaded CI machine; nothing is timed."""

from __future__ import annotations

WAIT = 90  # seconds a condition may take on a loaded machine (a ceiling, never a measurement)


def wait(driver, condition, message: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition, message)


def by_css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def one(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait(driver, lambda d: d.execute_script("return document.body.dataset.loaded"), "the page did not load")


def table_rows(driver, table: str, *, folded: bool = False) -> list[list[str]]:
    """The table's rows as the reader sees them (`folded`: its text, for a table in a closed <details>), read in
    one script so a redraw cannot replace a row between two reads (a stale element)."""
    return driver.execute_script(
        "const folded = arguments[1];"
        "return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr'))"
        "  .filter((row) => !row.querySelector('td.empty'))"
        "  .map((row) => Array.from(row.querySelectorAll('td'))"
        "    .map((cell) => (folded ? cell.textContent : cell.innerText).trim()));", table, folded)


def imports_loaded(driver, after: str | None) -> str:
    """Wait for the imports table to be redrawn after the value `after` of its marker, with no newer load still
    running (`aria-busy`: a click's load starts before the click returns); returns the new marker."""
    def drawn(d):
        table = one(d, "#imports-table")
        marker = table.get_attribute("data-loaded") or None
        return marker if marker != after and table.get_attribute("aria-busy") != "true" else None

    return wait(driver, drawn, "no new imports page")


def shown_ids(driver) -> list[str]:
    return [row[0] for row in table_rows(driver, "imports-table")]


def apply(driver, **fields: str) -> str:
    """Fill the filter fields and apply them; returns the marker of the page drawn for them."""
    marker = one(driver, "#imports-table").get_attribute("data-loaded")
    for name, value in fields.items():
        box = one(driver, f"#{name}")
        box.clear()
        box.send_keys(value)
    one(driver, "#apply").click()
    return imports_loaded(driver, marker)
