"""The status page in Entra mode (OPERATOR_SIGN_IN=entra) in a real browser: no key is asked for or kept when
App Service Authentication has signed the user in, and a 401 says so when it has not."""

from __future__ import annotations

import uuid

import pytest

from dev import layout, showcase
from tests.ops.browsing import imports_loaded, one, open_page, shown_ids, wait

KEY = "status-page-entra-key-" + uuid.uuid4().hex


@pytest.fixture
def entra_page(app_env, monkeypatch):
    """The runner on the app indexed with OPERATOR_SIGN_IN=entra (the auth level is chosen at indexing), with one
    request that ran; yields (base URL, request id)."""
    import importlib

    import function_app
    from dev.runner import Runner
    from shared import app_context

    monkeypatch.setenv("OPERATOR_SIGN_IN", "entra")
    monkeypatch.setenv("RUNNER_FUNCTION_KEY", KEY)
    importlib.reload(function_app)
    app_context.reset()
    try:
        with Runner("function_app", env={**app_env, "OPERATOR_SIGN_IN": "entra", "RUNNER_FUNCTION_KEY": KEY},
                    http_port=0) as running:
            base = f"http://{layout.HOST}:{running.http_port}"
            app = showcase.App(base, KEY, app_env["IMPORT_QUEUE"])
            request_id = app.submit({"source": "docker.io/library/hello-world:latest",
                                     "targetTags": [f"entra/hello-world:{uuid.uuid4().hex[:6]}"]})
            app.wait_for(request_id, "succeeded")
            yield base, request_id
    finally:
        monkeypatch.delenv("OPERATOR_SIGN_IN")
        importlib.reload(function_app)
        app_context.reset()


def test_in_entra_mode_the_signed_in_browser_needs_no_key(entra_page, driver):
    """App Service Authentication cannot run locally: the header it adds to a signed-in user's requests is added
    by the browser here (DevTools' extra headers), which is all the app sees of it."""
    base, request_id = entra_page
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                           {"headers": {"X-MS-CLIENT-PRINCIPAL-ID": "00000000-0000-4000-8000-000000000001"}})
    open_page(driver, f"{base}/api/ui")
    assert shown_ids(driver) == [request_id] and not one(driver, "#key-panel").is_displayed()
    assert driver.execute_script("return sessionStorage.length") == 0  # no key anywhere
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})  # signed out
    marker = one(driver, "#imports-table").get_attribute("data-loaded")
    one(driver, "#reload").click()
    imports_loaded(driver, marker)
    wait(driver, lambda d: one(d, "#key-panel").is_displayed(), "a 401 did not say so")
    assert "401" in one(driver, "#imports-error").text


@pytest.fixture
def signed_out_front():
    """A stand-in for App Service Authentication after the session ended (it cannot run here): the page's files
    as the app serves them, and every /api/ops call answered as Easy Auth answers one it will not let through,
    a 302 to the Entra sign-in page."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from shared.ops import page

    class Front(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path.startswith("/api/ops/"):
                self.send_response(302)
                self.send_header("Location", "https://login.microsoftonline.com/common/oauth2/v2.0/authorize")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            answer = page.index() if path == "/api/ui" else page.asset(path.removeprefix("/api/ui/"))
            self.send_response(answer.status)
            for name, value in {**answer.headers, "Content-Type": f"{answer.mimetype}; charset=utf-8",
                                "Content-Length": str(len(answer.body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((layout.HOST, 0), Front)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{layout.HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.stack  # a browser: not for `make test-fast`
def test_a_sign_in_that_ended_is_named_not_taken_for_a_network_error(signed_out_front, driver):
    open_page(driver, f"{signed_out_front}/api/ui")
    wait(driver, lambda d: one(d, "#imports-error").is_displayed(), "the redirect to sign in was not shown")
    shown = one(driver, "#imports-error").text
    assert "reload the page to sign in again" in shown and "could not be reached" not in shown, shown
    assert not one(driver, "#key-panel").is_displayed()  # no key would help: it is the sign-in that ended


@pytest.mark.stack  # a browser: not for `make test-fast`
def test_a_key_no_header_can_carry_is_named_and_asked_for_again(signed_out_front, driver):
    """A key with a non-ASCII character cannot be sent as a header at all (fetch refuses it before any request,
    which reads as an unreachable app): the page says the key is wrong and asks for it, from the address or the
    form, and keeps none of it."""
    open_page(driver, f"{signed_out_front}/api/ui?code=%E2%9C%93-not-a-key")
    wait(driver, lambda d: one(d, "#key-panel").is_displayed(), "the key form was not shown")
    assert "not a function key" in one(driver, "#key-why").text
    assert "could not be reached" not in one(driver, "#imports-error").text
    assert driver.execute_script("return sessionStorage.length") == 0  # the bad key is not kept
    one(driver, "#key-input").send_keys("key with spaces\u00e9")
    one(driver, "#key-form button[type=submit]").click()
    assert "not a function key" in one(driver, "#key-why").text and one(driver, "#key-panel").is_displayed()
    assert driver.execute_script("return sessionStorage.length") == 0
