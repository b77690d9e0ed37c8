"""The HTTP API through the runner's real HTTP server, function keys and all: submit, follow, look up."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

from dev import layout, oci, seed
from shared.imports.http_api import status_url
from tests.conftest import FUNCTION_KEY as KEY


def post(api: str, body, **kwargs) -> requests.Response:
    kwargs.setdefault("params", {"code": KEY})
    return requests.post(f"{api}/imports", json=body, timeout=10, **kwargs)


def follow(url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = requests.get(url, headers={"x-functions-key": KEY}, timeout=10)
        assert answer.status_code == 200, answer.text
        if answer.json()["terminal"]:
            return answer.json()
        time.sleep(0.2)
    raise AssertionError(f"{url} did not reach a terminal state")


def test_a_multi_arch_import_is_accepted_and_its_status_followed_to_success(api, stack):
    tag = f"api-{uuid.uuid4().hex[:6]}"
    answer = post(api, {"source": "docker.io/library/hello-world:latest", "targetTags": [f"hw:{tag}"]})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["state"] == "received"
    assert body["statusUrl"] == f"{api}/imports/{body['id']}" == answer.headers["Location"]
    assert KEY not in answer.text
    final = follow(body["statusUrl"])
    assert final["state"] == "succeeded", final
    assert [t["state"] for t in final["transitions"]][:2] == ["received", "running"]
    assert final["targetTags"] == [f"hw:{tag}"] and final["attempts"] == 1
    image = oci.inspect_image(seed.admin_client(layout.TARGET_ACR.login_server), "hw", tag)
    assert image.digest == stack.digest("docker.io", "library/hello-world", "latest")
    assert len(image.platforms) == 4


def test_bad_input_gets_400_with_every_problem_and_no_secret(api):
    answer = post(api, {"source": "nginx:1.27", "targetTags": ["Bad:Tag:x"], "mode": "Sometimes",
                        "colour": "blue", "username": "me", "password": "hunter2-very-secret"})
    assert answer.status_code == 400
    fields = {e["field"] for e in answer.json()["errors"]}
    assert {"targetTags[0]", "mode", "colour", "password"} <= fields, answer.json()
    assert all(set(e) == {"field", "rule"} for e in answer.json()["errors"])
    assert "hunter2" not in answer.text


def test_fields_only_the_app_sets_are_refused(api):
    answer = post(api, {"source": "nginx:1.27", "operation": {
        "url": "https://attacker.example/op", "startedAt": "2026-01-01T00:00:00+00:00", "checks": 1}})
    assert answer.status_code == 400
    assert [e["field"] for e in answer.json()["errors"]] == ["operation"]


def test_not_json_is_a_400_naming_the_message(api):
    answer = requests.post(f"{api}/imports", data=b"nginx please", params={"code": KEY}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == "(message)"


def test_function_key_is_required_in_the_query_or_header(api):
    body = {"source": "nginx:1.27"}
    assert post(api, body, params={}).status_code == 401
    assert post(api, body, params={"code": "wrong"}).status_code == 401
    assert requests.get(f"{api}/imports/x", timeout=10).status_code == 401
    assert requests.get(f"{api}/imports/unknown-id", headers={"x-functions-key": KEY}, timeout=10).status_code == 404


def test_an_unknown_id_is_404_and_a_reused_id_409(api):
    request_id = f"api-{uuid.uuid4().hex[:8]}"
    missing = requests.get(f"{api}/imports/{request_id}", params={"code": KEY}, timeout=10)
    assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "id"
    first = post(api, {"id": request_id, "source": "nginx:1.27", "targetTags": [f"web:{request_id}"]})
    assert first.status_code == 202
    again = post(api, {"id": request_id, "source": "nginx:1.27", "targetTags": [f"web:{request_id}"]})
    assert again.status_code == 409
    assert again.json()["statusUrl"] == first.json()["statusUrl"]
    assert follow(first.json()["statusUrl"])["state"] == "succeeded"


def test_wrong_method_and_unknown_route_are_404(api):
    assert requests.delete(f"{api}/imports/x", params={"code": KEY}, timeout=10).status_code == 404
    assert requests.get(f"{api}/nothing", params={"code": KEY}, timeout=10).status_code == 404


@pytest.mark.parametrize(("url", "expected"), [
    ("https://app.azurewebsites.net/api/imports?code=secret", "https://app.azurewebsites.net/api/imports/r1"),
    ("http://127.0.0.1:7071/api/imports/", "http://127.0.0.1:7071/api/imports/r1"),
])
def test_status_url_never_carries_the_key(url, expected):
    assert status_url(url, "r1") == expected


def test_a_request_the_queue_never_got_is_a_503_naming_why_and_leaves_no_row(app_env):
    """The HTTP API's answer (shared/imports/http_api.py, what function_app returns) when the queue service cannot be
    reached: 503, kind transient, a reason naming the queue, Retry-After; no status row, and the id stays free
    so the same request can be sent again. Real table (Azurite), real queue client on a port nobody serves."""
    from azure.storage.queue import QueueServiceClient

    from shared.azure.queues import ImportQueues
    from shared.azure.status import StatusStore
    from shared.core.settings import load_settings
    from shared.imports.http_api import submit_import
    from tests.cli.test_cli_mistakes import unreachable_storage

    settings = load_settings()
    store = StatusStore(settings.status_table)
    down = ImportQueues(settings, service=QueueServiceClient.from_connection_string(
        unreachable_storage(), retry_total=0))
    request_id = f"api-down-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"id": request_id, "source": "nginx:1.27", "targetTags": ["web:down"]}).encode()
    answer = submit_import(body, "http://localhost/api/imports?code=k", settings, store, down.enqueue)
    assert answer.status == 503 and answer.headers.get("Retry-After"), answer
    assert answer.body["kind"] == "transient" and answer.body["id"] == request_id
    assert settings.import_queue in answer.body["reason"] and "did not answer" in answer.body["reason"]
    assert "send it again" in answer.body["reason"]
    assert store.get(request_id) is None
    again = submit_import(body, "http://localhost/api/imports", settings, store, ImportQueues(settings).enqueue)
    assert again.status == 202, again
    assert store.get(request_id) is not None
