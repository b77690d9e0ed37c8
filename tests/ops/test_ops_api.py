"""The operator endpoints under /api/ops: shapes, bounds, 400s naming the parameter, access (key and entra), and
the records they read (dead-letter copies, the replication journal, refresh runs, queue depths) written by the
app's own code into Azurite.

End to end through the runner's real HTTP server where the route matters (the function key, entra mode, the
answer's headers); straight through the app's functions (`user_function`, as the host calls them) where the
runner's queue listeners would take the messages a test puts on the import queue to measure its depth."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from datetime import UTC, datetime, timedelta

import azure.functions as func
import pytest
import requests
from azure.storage.queue import QueueClient, QueueServiceClient

from dev import layout
from shared import app_context
from shared.azure.queues import ImportQueues
from shared.azure.status import REPLICATION_PARTITION, StatusRecord, StatusStore, prune_expired
from shared.core.outcome import State
from shared.core.settings import load_settings
from shared.ops import health as ops_health
from shared.ops.answers import MAX_LIMIT
from shared.refresh.run import RefreshLog, RefreshSummary
from shared.replication import journal
from shared.replication.replicate import replicate
from tests.conftest import FUNCTION_KEY as KEY
from tests.helpers import dead_letters, deliver, user_function
from tests.replication.test_events import SAMPLE

XSS = '"><img src=x onerror=alert(1)></script><script>alert(2)</script>'
PLANTED = "planted-inline-password-7c1e"
A, B = layout.SOURCE_ACR.resource_id, layout.TARGET_ACR.resource_id


def get(api: str, path: str, params=(), **kwargs) -> requests.Response:
    kwargs.setdefault("headers", {"x-functions-key": KEY})
    return requests.get(f"{api}/ops/{path}", params=list(params), timeout=15, **kwargs)


def ok(answer: requests.Response) -> dict:
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    return answer.json()


def fields(answer) -> list[str]:
    status, body = (answer.status_code, answer.json()) if isinstance(answer, requests.Response) else \
        (answer.status_code, json.loads(answer.get_body()))
    assert status == 400, body
    assert all(set(e) == {"field", "rule"} for e in body["errors"])
    return [e["field"] for e in body["errors"]]


def call(name: str, query: str = "", route_params: dict | None = None,
         headers: dict | None = None) -> func.HttpResponse:
    """An HTTP function called as the host calls it (no runner, so no queue listener takes test messages)."""
    request = func.HttpRequest(method="GET", url=f"http://127.0.0.1/api/ops/x{'?' + query if query else ''}",
                               headers=headers or {}, params={}, route_params=route_params or {}, body=b"")
    return user_function(name)(request)


def body_of(answer: func.HttpResponse) -> dict:
    assert answer.status_code == 200, answer.get_body()
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    return json.loads(answer.get_body())


def store() -> StatusStore:
    return StatusStore(load_settings().status_table)


def row(request_id: str, state: State, at: datetime, **fields) -> StatusRecord:
    stamp = at.isoformat()
    return StatusRecord(id=request_id, state=state, source=fields.pop("source", f"docker.io/library/{request_id}:1"),
                        created_at=stamp, updated_at=stamp, transitions=[{"state": str(state), "at": stamp}], **fields)


# --- imports -------------------------------------------------------------------------------------------------
def test_the_list_is_get_api_imports_itself(api, app_env):
    now = datetime.now(UTC)
    for i, state in enumerate(State):
        store().create(row(f"l-{i}-{state}", state, now - timedelta(hours=i)))
    store().create(row("l-xss", State.REJECTED, now, source=f"docker.io/library/x:1{XSS}", reason=XSS))
    for params in ([], [("state", "failed,rejected")], [("limit", "2")], [("q", "<SCRIPT>")]):
        mine = ok(get(api, "imports", params))
        assert mine == requests.get(f"{api}/imports", params=params, headers={"x-functions-key": KEY},
                                    timeout=15).json()
    assert [i["reason"] for i in ok(get(api, "imports", [("q", "l-xss")]))["items"]] == [XSS]
    token = ok(get(api, "imports", [("limit", "3")]))["continuation"]
    assert ok(get(api, "imports", [("limit", "3"), ("continuation", token)]))["items"]
    assert fields(get(api, "imports", [("limit", "0"), ("colour", "blue")])) == \
        ["colour", "limit"]


def test_a_request_shows_its_dead_letter_redacted(api, app_env):
    """A real rejection (an inline password the app refuses) written by the worker: the row, and the letter the
    dead-letter queue got, found by id, with the password gone from both."""
    request_id = f"dl-{uuid.uuid4().hex[:8]}"
    deliver({"id": request_id, "source": "docker.io/library/nginx:1.27", "username": "someone",
             "password": PLANTED})
    answer = get(api, f"imports/{request_id}")
    assert PLANTED not in answer.text
    detail = ok(answer)
    assert detail["id"] == request_id and detail["state"] == "rejected"
    letter = detail["deadLetter"]
    assert set(letter) >= {"id", "state", "reason", "kind", "code", "attempts", "deadLetteredAt", "body"}
    assert (letter["id"], letter["state"], letter["kind"], letter["code"]) == (request_id, "rejected", "rejected",
                                                                               "InvalidRequest")
    assert letter["body"]["source"] == "docker.io/library/nginx:1.27" and letter["body"]["password"] != PLANTED
    [queued] = [m for m in dead_letters(app_env) if m["id"] == request_id]  # the queue's copy is still there
    assert queued["reason"] == letter["reason"] and queued["body"] == letter["body"]
    without = {k: v for k, v in detail.items() if k != "deadLetter"}
    assert without == requests.get(f"{api}/imports/{request_id}", headers={"x-functions-key": KEY},
                                   timeout=15).json()


def test_a_failed_request_keeps_its_letter_too(app_env, monkeypatch):
    """The worker's other dead-letter path: a Force request while BACKUP_TAG_TEMPLATE is broken ends `failed`
    (SettingsInvalid) at once; its letter is found by id, and the configured credential password is nowhere."""
    monkeypatch.setenv("BACKUP_TAG_TEMPLATE", "{nope}")
    app_context.reset()
    password = app_env["SOURCE_CREDENTIALS__CONTOSO__PASSWORD"]
    request_id = f"fl-{uuid.uuid4().hex[:8]}"
    deliver({"id": request_id, "source": f"docker.io/library/nginx:{password}", "mode": "Force"})
    detail = body_of(call("ops_import_detail", route_params={"id": request_id}))
    assert detail["state"] == "failed" and detail["deadLetter"]["code"] == "SettingsInvalid"
    assert detail["deadLetter"]["state"] == "failed" and "BACKUP_TAG_TEMPLATE" in detail["deadLetter"]["reason"]
    assert password not in json.dumps(detail)


def test_a_request_without_a_dead_letter_and_the_errors(api, app_env):
    store().create(row("fine-1", State.SUCCEEDED, datetime.now(UTC), reason=XSS))
    detail = ok(get(api, "imports/fine-1"))
    assert detail["deadLetter"] is None and detail["reason"] == XSS
    missing = get(api, "imports/never-seen")
    assert missing.status_code == 404 and [e["field"] for e in missing.json()["errors"]] == ["id"]
    assert fields(get(api, "imports/bad%20id")) == ["id"]
    assert fields(get(api, "imports/fine-1", [("limit", "5")])) == ["limit"]
    assert ok(get(api, "imports/fine-1", [("code", KEY)]))["id"] == "fine-1"


def test_a_message_reusing_an_id_does_not_replace_that_requests_dead_letter(app_env):
    request_id = f"dl-{uuid.uuid4().hex[:8]}"
    deliver({"id": request_id, "source": "docker.io/library/nginx:1.27", "username": "u", "password": PLANTED})
    first = store().dead_letter(request_id)
    deliver({"id": request_id, "source": "not a reference"})  # rejected, dead-lettered, but not its row
    assert store().dead_letter(request_id) == first
    assert len([m for m in dead_letters(app_env) if m["id"] == request_id]) == 2


def test_a_huge_hostile_letter_is_kept_bounded(app_env):
    from shared.imports.recorder import dead_letter

    worker = app_context.worker()
    reason = "\ud800\u202e<script>" * 20_000
    dead_letter(worker, {"id": "huge-1", "state": "failed", "reason": reason, "body": {"x": ["\\\"" * 5000] * 50}})
    kept = store().dead_letter("huge-1")
    assert kept["bodyTruncated"] and kept["reasonTruncated"] and kept["reason"] == reason[:4000]


# --- health --------------------------------------------------------------------------------------------------
def test_health_counts_states_and_buckets_and_reads_every_queue(app_env):
    now = datetime.now(UTC)
    for i, (state, ago) in enumerate([(State.SUCCEEDED, timedelta(minutes=5)), (State.FAILED, timedelta(minutes=10)),
                                      (State.RUNNING, timedelta(minutes=1)), (State.REJECTED, timedelta(hours=3)),
                                      (State.SUCCEEDED, timedelta(hours=5)), (State.SKIPPED, timedelta(hours=23)),
                                      (State.FAILED, timedelta(days=2))]):
        store().create(row(f"h-{i}", state, now - ago))
    service = QueueServiceClient.from_connection_string(layout.AZURITE_CONNECTION_STRING)
    depths = {"import": 3, "rejected": 2, "poison": 0}
    names = {"import": app_env["IMPORT_QUEUE"], "rejected": app_env["IMPORT_QUEUE"] + "-rejected",
             "poison": app_env["IMPORT_QUEUE"] + "-poison"}
    for role, count in depths.items():
        for n in range(count):
            service.get_queue_client(names[role]).send_message(json.dumps({"n": n}))
    answer = body_of(call("ops_health"))
    assert answer["counts"]["lastHour"] == {"received": 0, "running": 1, "retrying": 0, "succeeded": 1,
                                            "skipped": 0, "rejected": 0, "failed": 1}
    assert answer["counts"]["lastDay"] == {"received": 0, "running": 1, "retrying": 0, "succeeded": 2,
                                           "skipped": 1, "rejected": 1, "failed": 1}
    assert answer["scanned"] == 6 and answer["truncated"] is False
    timeline = answer["timeline"]
    assert len(timeline) == 24 and all(datetime.fromisoformat(b["end"]) - datetime.fromisoformat(b["start"]) ==
                                       timedelta(hours=1) for b in timeline)
    assert datetime.fromisoformat(timeline[-1]["start"]) <= now < datetime.fromisoformat(timeline[-1]["end"])
    assert sum(b["ended"] for b in timeline) == 5 and sum(b["failed"] for b in timeline) == 2
    queues = {q["role"]: q for q in answer["queues"]}
    assert [q["role"] for q in answer["queues"]] == ["import", "rejected", "poison"]
    for role, count in depths.items():
        assert queues[role]["name"] == names[role] and queues[role]["depth"] == count
        assert queues[role]["error"] is None
        assert (queues[role]["oldestAgeSeconds"] is None) == (count == 0)
    assert 0 <= queues["import"]["oldestAgeSeconds"] < 3600
    assert fields(call("ops_health", "since=1h")) == ["since"]
    assert body_of(call("ops_health", f"code={KEY}"))["scanned"] == 6


def test_a_queue_that_cannot_be_read_is_an_error_in_the_answer(app_env):
    """A deleted poison queue, then a queue service that refuses the app's key (Azurite checks the signature):
    each queue says why, the counts are still there, and no key or connection string is shown."""
    QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"] + "-poison") \
        .delete_queue()
    answer = body_of(call("ops_health"))
    poison = answer["queues"][2]
    assert poison["depth"] is None and poison["error"] == "the queue does not exist" and answer["counts"]
    assert answer["queues"][0]["error"] is None

    wrong = "A" * 86 + "=="
    connection = app_env["AzureWebJobsStorage"]
    bad = ";".join(f"AccountKey={wrong}" if p.startswith("AccountKey=") else p for p in connection.split(";"))
    settings = load_settings()
    worker = app_context.worker()
    refused = ops_health.health("http://x/api/ops/health", settings, worker.status,
                                ImportQueues(settings, QueueServiceClient.from_connection_string(bad)),
                                datetime.now(UTC))
    text = refused.text()
    assert refused.status == 200 and wrong not in text and "AccountKey" not in text and "devstoreaccount1" not in text
    for queue in refused.body["queues"]:
        assert queue["depth"] is None and queue["error"].startswith("the queue service answered HTTP 403")


# --- refresh -------------------------------------------------------------------------------------------------
def summary(at: datetime, **changes) -> RefreshSummary:
    fields = dict(started_at=at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), duration_ms=1200, dry_run=False, checked=10,
                  changed=1, missing=0, unchanged=9, skipped=0, errors=0, enqueued=1,
                  rate_limit_remaining={"registry-1.docker.io": 87}, backoff_until={}, problems=[], referrers=0)
    return RefreshSummary(**{**fields, **changes})


def test_refresh_runs_newest_first_with_backoff_and_rate_limits(api, app_env):
    log = RefreshLog(app_env["IMPORT_STATUS_TABLE"])
    now = datetime.now(UTC)
    starts = [now - timedelta(days=40), now - timedelta(days=3), now - timedelta(hours=5), now - timedelta(hours=1)]
    for i, at in enumerate(starts):
        log.record(summary(at, checked=i, problems=[f"problem {i}: {XSS}"] * (i + 1)))
    future = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    past = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    log.record(summary(now - timedelta(minutes=2), checked=99, rate_limit_remaining={"registry-1.docker.io": 42,
                                                                                       "ghcr.io": None},
                       backoff_until={"quay.io": future, "gcr.io": past}))
    answer = ok(get(api, "refresh"))
    assert answer["schedule"] == app_env["REFRESH_SCHEDULE"]
    assert answer["lastRunAt"] == (now - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert [r["checked"] for r in answer["runs"]] == [99, 3, 2, 1, 0]
    run = answer["runs"][1]
    assert set(run) == {"startedAt", "durationMs", "dryRun", "checked", "changed", "missing", "unchanged",
                        "skipped", "errors", "enqueued", "referrers", "problems", "problemsOmitted"}
    assert run["problems"] == [f"problem 3: {XSS}"] * 4 and run["dryRun"] is False and run["durationMs"] == 1200
    assert answer["backoff"] == [{"host": "quay.io", "until": datetime.fromisoformat(future).isoformat()}]
    assert answer["rateLimits"] == [{"host": "ghcr.io", "remaining": None},
                                    {"host": "registry-1.docker.io", "remaining": 42}]
    assert [r["checked"] for r in ok(get(api, "refresh", [("limit", "2")]))["runs"]] == [99, 3]
    for bad in ("0", str(MAX_LIMIT + 1), "two", "-1", "\uff12"):
        assert fields(get(api, "refresh", [("limit", bad)])) == ["limit"]
    assert fields(get(api, "refresh", [("limit", "1"), ("limit", "2"), ("since", "x")])) == ["since", "limit"]


def test_refresh_before_any_run(api, app_env):
    assert ok(get(api, "refresh")) == {"schedule": app_env["REFRESH_SCHEDULE"], "lastRunAt": None, "runs": [],
                                       "skipped": [], "backoff": [], "rateLimits": []}


# --- replication ---------------------------------------------------------------------------------------------
@pytest.fixture
def rules(app_env, tmp_path, monkeypatch):
    path = tmp_path / "replication-rules.json"
    path.write_text(json.dumps({"version": 1, "rules": [{"source": A, "targets": [B]}]}))
    monkeypatch.setenv("REPLICATION_RULES", str(path))
    monkeypatch.setenv("ALLOWED_TARGET_REGISTRIES", f"{A},{B}")
    app_context.reset()


def event(event_id: str, *, topic: str = A, event_type: str = "Microsoft.ContainerRegistry.ImagePushed",
          tag: str = "v1") -> dict:
    raw = copy.deepcopy(SAMPLE)
    raw.update(id=event_id, topic=topic, eventType=event_type)
    raw["data"]["target"]["tag"] = tag
    return raw


def test_every_handled_event_gets_a_journal_row_and_the_endpoint_counts_them(rules, app_env):
    worker = app_context.worker()
    [planned] = replicate(worker, event("e-planned"))
    [duplicate] = replicate(worker, event("e-planned"))
    [ignored] = replicate(worker, event("e-deleted", event_type="Microsoft.ContainerRegistry.ImageDeleted"))
    [rejected] = replicate(worker, event("e-stranger", topic=A.replace("mysourceregistry", "strangerregistry")))
    [hostile] = replicate(worker, event(f"e-{XSS}", tag=XSS))
    assert [r.outcome for r in (planned, duplicate, ignored, rejected, hostile)] == \
        ["planned", "duplicate", "ignored", "rejected", "rejected"]
    answer = body_of(call("ops_replication"))
    assert answer["counts"] == {"received": 5, "planned": 1, "ignored": 1, "rejected": 2, "duplicate": 1}
    assert answer["truncated"] is False
    events = answer["events"]
    assert [e["id"] for e in events] == [f"e-{XSS}", "e-stranger", "e-deleted", "e-planned", "e-planned"]
    newest_planned = events[-1]
    assert set(newest_planned) == {"id", "at", "topic", "repository", "tag", "digest", "action", "outcome", "reason",
                                   "imports", "importsOmitted", "unreadable"}
    assert (newest_planned["outcome"], newest_planned["imports"], newest_planned["action"]) == \
        ("planned", list(planned.request_ids), "ImagePushed")
    assert newest_planned["repository"] == "aci-helloworld" and newest_planned["digest"].startswith("sha256:")
    assert events[-2]["imports"] == list(planned.request_ids) and events[-2]["outcome"] == "duplicate"
    assert events[0]["outcome"] == "rejected" and XSS in events[0]["id"]
    assert "no replication rule names this registry" in events[1]["reason"]
    assert [e["id"] for e in body_of(call("ops_replication", "limit=2"))["events"]] == [f"e-{XSS}", "e-stranger"]
    assert fields(call("ops_replication", "limit=101&x=1")) == ["x", "limit"]


def test_replication_endpoint_end_to_end_with_nothing_yet(api, app_env):
    assert ok(get(api, "replication")) == {"counts": {"received": 0, "planned": 0, "ignored": 0, "rejected": 0,
                                                      "duplicate": 0}, "truncated": False, "events": []}


def test_journal_keys_run_newest_first():
    now = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
    keys = [journal.row_key(now + timedelta(microseconds=n), "e") for n in (0, 1, 10**6, 10**12)]
    assert keys == sorted(keys, reverse=True) and len({len(k) for k in keys}) == 1


# --- prune ---------------------------------------------------------------------------------------------------
def test_prune_removes_old_dead_letter_copies_and_journal_rows(rules, app_env):
    worker = app_context.worker()
    deliver({"id": "old-dl", "source": "not a reference"})
    replicate(worker, event("e-old"))
    RefreshLog(app_env["IMPORT_STATUS_TABLE"]).record(summary(datetime.now(UTC)))
    table = worker.status._client()

    def partition(name: str) -> list[str]:
        return [e["RowKey"] for e in table.query_entities("PartitionKey eq @p", parameters={"p": name})]

    assert partition("deadletter") == ["old-dl"] and len(partition(REPLICATION_PARTITION)) == 1
    assert prune_expired(worker.status, 1) == 0  # everything is new
    prune_expired(worker.status, 1, now=datetime.now(UTC) + timedelta(days=1, minutes=5))
    assert partition("deadletter") == [] and partition(REPLICATION_PARTITION) == []
    assert partition("refresh") == ["latest"] and worker.status.get("old-dl") is None


# --- access --------------------------------------------------------------------------------------------------
def test_key_mode_asks_the_host_for_the_function_key(api, app_env):
    for path in ("imports", "imports/x-1", "health", "refresh", "replication"):
        assert get(api, path, headers={}).status_code == 401
        assert get(api, path, headers={"X-MS-CLIENT-PRINCIPAL-ID": "someone"}).status_code == 401
    assert ok(get(api, "health", headers={}, params=[("code", KEY)]))["scanned"] == 0


def test_entra_mode_needs_the_signed_in_principal_and_the_machine_api_keeps_its_key(entra_api, app_env):
    signed_in = {"X-MS-CLIENT-PRINCIPAL-ID": "00000000-0000-4000-8000-000000000001"}
    for path in ("imports", "imports/x-1", "health", "refresh", "replication"):
        refused = get(entra_api, path, headers={})
        assert refused.status_code == 401 and refused.headers["X-Content-Type-Options"] == "nosniff"
        assert [e["field"] for e in refused.json()["errors"]] == ["X-MS-CLIENT-PRINCIPAL-ID"]
        assert get(entra_api, path, headers={"X-MS-CLIENT-PRINCIPAL-ID": ""}).status_code == 401
        assert get(entra_api, path, headers=signed_in).status_code in (200, 404)
    assert ok(get(entra_api, "health", headers={"x-ms-client-principal-id": "someone"}))["scanned"] == 0
    assert requests.get(f"{entra_api}/imports", headers=signed_in, timeout=15).status_code == 401
    assert requests.get(f"{entra_api}/imports", headers={"x-functions-key": KEY}, timeout=15).status_code == 200


def principal(*claims: tuple[str, str], role_typ: str = "roles") -> str:
    """An X-MS-CLIENT-PRINCIPAL value as App Service writes it (Base64 JSON of the token's claims)."""
    document = {"auth_typ": "aad", "name_typ": "name", "role_typ": role_typ,
                "claims": [{"typ": t, "val": v} for t, v in claims]}
    return base64.b64encode(json.dumps(document).encode()).decode()


@pytest.mark.parametrize("entra_api", ["acr-importer.read"], indirect=True)
def test_with_an_app_role_set_only_a_principal_carrying_it_reads_the_endpoints(entra_api):
    someone = {"X-MS-CLIENT-PRINCIPAL-ID": "00000000-0000-4000-8000-000000000001"}
    for path in ("imports", "health", "refresh", "replication"):
        assert get(entra_api, path, headers={}).status_code == 401
        for claims in (someone, {**someone, "X-MS-CLIENT-PRINCIPAL": principal(("roles", "acr-importer.write"))},
                       {**someone, "X-MS-CLIENT-PRINCIPAL": principal(("groups", "acr-importer.read"))}):
            refused = get(entra_api, path, headers=claims)
            assert refused.status_code == 403 and "acr-importer.read" in refused.json()["errors"][0]["rule"]
            assert refused.json()["errors"][0]["field"] == "X-MS-CLIENT-PRINCIPAL"
        granted = {**someone, "X-MS-CLIENT-PRINCIPAL": principal(("name", "a"), ("roles", "acr-importer.read"))}
        assert get(entra_api, path, headers=granted).status_code == 200
        long_form = principal(("http://schemas.microsoft.com/ws/2008/06/identity/claims/role", "acr-importer.read"),
                              role_typ="http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
        assert get(entra_api, path, headers={**someone, "X-MS-CLIENT-PRINCIPAL": long_form}).status_code == 200


def test_a_wrong_sign_in_setting_keeps_the_key_and_names_the_setting(app_env, monkeypatch):
    from shared.ops.access import operator_access

    assert operator_access({"OPERATOR_SIGN_IN": "Entra"}).auth_level == "function"
    assert operator_access({"OPERATOR_SIGN_IN": "entra"}).auth_level == "anonymous"
    assert operator_access({}).auth_level == "function"
    monkeypatch.setenv("OPERATOR_SIGN_IN", "entraid")
    app_context.reset()
    answer = call("ops_health")
    assert answer.status_code == 500
    assert [e["field"] for e in json.loads(answer.get_body())["errors"]] == ["OPERATOR_SIGN_IN"]
