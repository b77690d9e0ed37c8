"""The status page's files without a browser: what the routes answer, the allowlist, the headers, that the
files ship in the package, and that nothing in them can run or fetch what the CSP would refuse anyway."""

from __future__ import annotations

import fnmatch
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from shared.ops import page
from tests.helpers import user_function

REPO = Path(__file__).resolve().parents[2]


class Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in = tag

    def handle_data(self, data):
        if self._in in ("script", "style"):
            self.script_text += data.strip()

    def handle_endtag(self, tag):
        self._in = None


def parsed() -> Markup:
    markup = Markup()
    markup.feed(page.index().body.decode())
    return markup


def test_the_page_and_each_asset_are_served_with_the_security_headers():
    for answer, mimetype in ((page.index(), "text/html"), (page.asset("app.js"), "text/javascript"),
                             (page.asset("app.css"), "text/css")):
        assert answer.status == 200 and answer.mimetype == mimetype and answer.body
        assert answer.headers == page.SECURITY_HEADERS
    csp = page.SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp and "'unsafe" not in csp
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp


@pytest.mark.parametrize("name", ["index.html", "App.js", "app.js ", "../page.py", "..%2Fpage.py", "page/app.js",
                                  "", "app.js/", "%61pp.js", "__init__.py", "app.css\x00.js"])
def test_only_the_allowlist_is_served(name):
    answer = page.asset(name)
    assert answer.status == 404 and answer.body == b"not found\n"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_the_bindings_answer_through_the_page_module():
    import azure.functions as func

    asset = user_function("status_page_asset")(func.HttpRequest("GET", "http://h/api/ui/app.css", body=b"",
                                                                route_params={"asset": "app.css"}))
    assert asset.status_code == 200 and asset.mimetype == "text/css" and asset.charset == "utf-8"
    assert asset.headers["Content-Security-Policy"] == page.CONTENT_SECURITY_POLICY
    shell = user_function("status_page")(func.HttpRequest("GET", "http://h/api/ui?code=x", body=b""))
    assert shell.status_code == 200 and shell.get_body() == page.index().body  # the key is never echoed
    missing = user_function("status_page_asset")(func.HttpRequest("GET", "http://h/api/ui/x", body=b"",
                                                                  route_params={"asset": "x"}))
    assert missing.status_code == 404


def test_the_page_routes_are_anonymous_and_read_only():
    import function_app

    function_app.app.functions_bindings = {}
    bindings = {fn.get_function_name(): fn.get_bindings_dict()["bindings"][0]
                for fn in function_app.app.get_functions()}
    for name, route in (("status_page", "ui"), ("status_page_asset", "ui/{asset}")):
        assert bindings[name]["route"] == route and [str(m) for m in bindings[name]["methods"]] == ["GET"]
        assert str(bindings[name]["authLevel"]).upper().endswith("ANONYMOUS")


def test_the_html_has_no_inline_script_or_style_and_links_only_to_itself():
    markup = parsed()
    assert markup.script_text == "", "inline script or style (the CSP refuses it)"
    for tag, attrs in markup.tags:
        assert tag != "style" and "style" not in attrs, f"<{tag}> has inline style"
        assert not any(name.startswith("on") for name in attrs), f"<{tag}> has an inline handler"
        for name in ("src", "href", "action"):
            if attrs.get(name) is not None:
                assert re.fullmatch(r"(/api/ui/[a-z.]+|#[a-z-]+)", attrs[name] or ""), f"<{tag} {name}={attrs[name]}>"
    scripts = [attrs for tag, attrs in markup.tags if tag == "script"]
    assert scripts == [{"src": "/api/ui/app.js", "defer": None}]


def test_every_label_names_a_control_and_every_table_has_a_caption_and_scoped_headers():
    markup = parsed()
    ids = {attrs.get("id") for _, attrs in markup.tags}
    controls = [attrs for tag, attrs in markup.tags if tag in ("input", "select")]
    labelled = {attrs["for"] for tag, attrs in markup.tags if tag == "label"}
    assert all(c["id"] in labelled for c in controls), "a control without a label"
    assert labelled <= ids
    html = page.index().body.decode()
    assert html.count("<table") == html.count("<caption")
    assert html.count("<th ") == html.count('<th scope="col">')


def test_the_script_never_writes_markup():
    """Every stored field is producer-written text: the page builds nodes, never parses markup."""
    script = page.asset("app.js").body.decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setAttribute(\"on", "javascript:", "srcdoc", "createContextualFragment", "DOMParser"):
        assert sink not in script, sink


def _ignored(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    return any(fnmatch.fnmatch(path, p) or any(fnmatch.fnmatch(part, p.rstrip("/")) for part in parts)
               for p in patterns)


def test_the_page_files_ship_in_the_package():
    patterns = [line.strip() for line in (REPO / ".funcignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for name in (page.INDEX, *page.ASSETS):
        path = (page.PAGE_DIR / name).relative_to(REPO).as_posix()
        assert (REPO / path).is_file() and not _ignored(path, patterns), path
    assert _ignored("dev/browser.py", patterns) and _ignored("tests/ops/x.py", patterns)  # the check checks
