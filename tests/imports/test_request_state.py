"""Hostile producers against the app's own state: forged `operation`/`retry`, ids taken in advance, the same
id with another request, concurrent duplicates, oversized retry copies.

The app keeps a request's state on its status row and claims the row with ETags (shared/imports/claims.py); these
tests write what an attacker with queue access would write and check what a user would notice: how many
imports ARM was asked for (the stand-in counts them), where requests went (the stand-in records every ARM
request; a local listener records any connection), the request's row, the dead letters."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from dev import layout
from shared.azure.arm import OperationUrlRejected, operation_url
from shared.azure.queues import MAX_QUEUE_MESSAGE_BYTES, message_size, message_text
from shared.core.outcome import State
from tests.helpers import dead_letters, deliver, next_retry, queue, status

SUB = layout.SUB_A
ARM = layout.ARM_ENDPOINT
GOOD_OP = (f"{ARM}/subscriptions/{SUB}/providers/Microsoft.ContainerRegistry/locations/westeurope/"
           "operationResults/registries-5d2d5617-5a29-11ed-b8cf-93ba82b19c39?api-version=2025-04-01")


def run_id() -> str:
    return uuid.uuid4().hex[:8]


def import_posts(control) -> list[dict]:
    return [r for r in control.requests() if r["method"] == "POST" and r["path"].endswith("/importImage")]


def arm_gets(control) -> list[dict]:
    return [r for r in control.requests() if r["method"] == "GET"]


def request_doc(request_id: str | None = None, **fields) -> dict:
    doc = {"id": request_id or f"st-{run_id()}", "source": "nginx:1.27", "targetTags": [f"st:{run_id()}"]}
    doc.update(fields)
    return doc


def letters_for(app_env, request_id: str) -> list[dict]:
    """Dead letters of one id (none yet when the dead-letter queue was never written)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return [letter for letter in dead_letters(app_env) if letter["id"] == request_id]
    except ResourceNotFoundError:
        return []


def row_snapshot(record) -> tuple:
    return (record.state, record.fingerprint, record.source, tuple(record.target_tags), record.mode,
            record.attempts, record.operation, len(record.transitions), record.reason)


class Listener:
    """A TCP listener that accepts and records every connection: a URL the app must never call points here."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener():
    found = Listener()
    yield found
    found.close()


# --- operation URLs: only ARM's own importImage shape, normalised ------------------------------------------

def forged_operation_urls(port: int) -> list[tuple[str, str]]:
    """(class, URL) an attacker would try; every one must be refused before a token goes anywhere."""
    base = f"{ARM}/subscriptions/{SUB}/providers/Microsoft.ContainerRegistry/locations/westeurope"
    ops = f"{base}/operationResults/registries-1"
    return [
        ("dot-dot escape to another subscription", f"{ARM}/subscriptions/{SUB}/../{layout.SUB_B}/providers/"
                                                   "Microsoft.ContainerRegistry/locations/x/operationResults/1"
                                                   "?api-version=2025-04-01"),
        ("dot-dot escape to the control API", f"{ARM}/subscriptions/{SUB}/../../_control/reset?api-version=1"),
        ("dot-dot to a GET that answers 200",
         f"{base}/operationResults/../../../resourceGroups?api-version=2025-04-01"),
        ("dot segment", f"{base}/./operationResults/registries-1?api-version=2025-04-01"),
        ("encoded slash", f"{base}/operationResults%2F..%2F..%2Fx?api-version=2025-04-01"),
        ("encoded dot-dot", f"{base}/operationResults/%2e%2e/%2e%2e/x?api-version=2025-04-01"),
        ("backslash", f"{base}/operationResults\\..\\x?api-version=2025-04-01"),
        ("userinfo on the ARM host", ops.replace("https://", "https://user:pass@") + "?api-version=2025-04-01"),
        ("userinfo hiding another host", f"https://{layout.HOST}:{layout.AZURE_STANDIN_PORT}@127.0.0.1:{port}"
                                         f"/subscriptions/{SUB}/providers/Microsoft.ContainerRegistry/locations/x/"
                                         "operationResults/1?api-version=2025-04-01"),
        ("other host", f"https://127.0.0.1:{port}/subscriptions/{SUB}/providers/Microsoft.ContainerRegistry/"
                       "locations/x/operationResults/1?api-version=2025-04-01"),
        ("other port of the ARM host", f"https://{layout.HOST}:{port}/subscriptions/{SUB}/providers/"
                                       "Microsoft.ContainerRegistry/locations/x/operationResults/1"
                                       "?api-version=2025-04-01"),
        ("http", ops.replace("https://", "http://") + "?api-version=2025-04-01"),
        ("other subscription", ops.replace(SUB, layout.SUB_B) + "?api-version=2025-04-01"),
        ("another provider", ops.replace("Microsoft.ContainerRegistry", "Microsoft.Storage")
         + "?api-version=2025-04-01"),
        ("not an operation", f"{ARM}/subscriptions/{SUB}/resourceGroups?api-version=2025-04-01"),
        ("subscription root", f"{ARM}/subscriptions/{SUB}?api-version=2025-04-01"),
        ("extra query parameter", ops + "?api-version=2025-04-01&$expand=x"),
        ("no api-version", ops),
        ("fragment", ops + "?api-version=2025-04-01#x"),
        ("trailing slash", ops + "/?api-version=2025-04-01"),
        ("double slash", ops.replace("/locations/", "//locations/") + "?api-version=2025-04-01"),
        ("trailing dot on the host", ops.replace(layout.HOST, layout.HOST + ".", 1) + "?api-version=2025-04-01"),
        ("non-ASCII", ops.replace("registries-1", "registries-\u0131") + "?api-version=2025-04-01"),
        ("control character", ops + "?api-version=2025-04-01\r\nX-Evil: 1"),
        ("javascript scheme", "javascript:alert(1)"),
        ("empty", ""),
        ("very long", ops + "?api-version=2025-04-01" + "a" * 3000),
    ]


def test_arms_own_operation_urls_are_accepted_in_one_normal_form():
    variants = [GOOD_OP, GOOD_OP.replace("operationResults", "operationstatuses"),
                GOOD_OP.replace(SUB, SUB.upper()),
                GOOD_OP.replace("https://", "HTTPS://").replace("westeurope", "EASTUS2")]
    for url in variants:
        normal = operation_url(url, ARM, SUB)
        assert normal.startswith(f"{ARM}/subscriptions/{SUB}/providers/Microsoft.ContainerRegistry/locations/")
        assert normal == operation_url(normal, ARM, SUB), "normalising twice changes nothing"


@pytest.mark.parametrize(("name", "index"), [(n, i) for i, (n, _) in enumerate(forged_operation_urls(1))],
                         ids=[n for n, _ in forged_operation_urls(1)])
def test_every_class_of_forged_operation_url_is_refused(name, index):
    url = forged_operation_urls(1)[index][1]
    with pytest.raises(OperationUrlRejected, match="only ARM's own importImage operation URLs"):
        operation_url(url, ARM, SUB)


def test_a_forged_operation_on_the_queue_never_reaches_anything(app_env, control, listener):
    """Whatever `operation` says, a message carrying it is refused naming the field; nothing is fetched."""
    for name, url in [*forged_operation_urls(listener.port), ("ARM's own shape", GOOD_OP)]:
        doc = request_doc(operation={"url": url, "startedAt": "2026-11-28T00:00:00+00:00", "checks": 1})
        deliver(doc)
        record = status(doc["id"])
        assert record.state is State.REJECTED and record.reason.startswith("operation"), (name, record.reason)
    assert control.requests() == [] and listener.connections == 0


def test_a_forged_operation_for_a_request_in_flight_changes_nothing(app_env, control, listener, monkeypatch):
    """The attacker copies a running request and points its operation elsewhere: refused, naming `id` and
    `operation`; the row goes on watching ARM's real operation, which completes once."""
    from shared import app_context

    control.add_faults("operation", {"delay": 2})
    monkeypatch.setenv("IMPORT_WAIT_SECONDS", "0.3")
    app_context.reset()
    doc = request_doc()
    deliver(doc)
    before = status(doc["id"])
    assert before.state is State.RUNNING and before.operation
    for name, url in forged_operation_urls(listener.port)[:12]:
        outcome = deliver({**doc, "operation": {"url": url, "startedAt": "2026-01-01T00:00:00+00:00",
                                                "checks": 99}})
        assert row_snapshot(status(doc["id"])) == row_snapshot(before), name
        assert outcome
    letters = [letter for letter in dead_letters(app_env) if letter["id"] == doc["id"]]
    assert len(letters) == 12 and all("id: " in letter["reason"] and "operation: " in letter["reason"]
                                      for letter in letters)
    monkeypatch.setenv("IMPORT_WAIT_SECONDS", "10")
    app_context.reset()
    deliver(next_retry(app_env))
    assert status(doc["id"]).state is State.SUCCEEDED
    assert len(import_posts(control)) == 1 and listener.connections == 0
    assert all("/operationResults/" in r["path"] for r in arm_gets(control))


@pytest.mark.parametrize("kind", ["other host", "dot-dot to a GET that answers 200", "other subscription",
                                  "encoded slash", "userinfo hiding another host", "http"])
def test_a_tampered_operation_on_an_older_row_is_checked_before_any_token_goes(app_env, control, listener, kind):
    """A run of an older version in flight (its row has no fingerprint) goes on from its row: a bad URL
    there fails the request, and is never fetched, never taken as success."""
    url = dict(forged_operation_urls(listener.port))[kind]
    doc = request_doc()
    status(doc["id"])  # the worker exists
    from shared import app_context

    app_context.worker().status.transition(doc["id"], State.RUNNING, attempts=1, operation=url, checks=1,
                                           operation_started_at=datetime.now(UTC).isoformat())
    deliver({**doc, "operation": {"url": GOOD_OP, "startedAt": "2026-01-01T00:00:00+00:00", "checks": 1}})
    record = status(doc["id"])
    assert record.state is State.FAILED and record.code == "OperationUrlRejected", record.reason
    assert control.requests() == [] and listener.connections == 0


# --- forged retry counters: attempts live on the row ----------------------------------------------------------

FORGED_RETRIES = [
    ("exhaust", {"attempt": 1000, "firstAttemptAt": "2026-01-01T00:00:00+00:00"}),
    ("one before the last", {"attempt": 4, "firstAttemptAt": "2026-01-01T00:00:00+00:00"}),
    ("reset", {"attempt": 1, "firstAttemptAt": "2099-01-01T00:00:00+00:00"}),
    ("grace window from the past", {"attempt": 1, "firstAttemptAt": "1970-01-01T00:00:00+00:00",
                                    "lastReason": "AuthorizationFailed"}),
]


@pytest.mark.parametrize(("name", "retry"), FORGED_RETRIES, ids=[n for n, _ in FORGED_RETRIES])
def test_a_forged_retry_can_neither_exhaust_nor_reset_attempts(app_env, control, name, retry):
    control.add_faults("import", {"status": 500})
    doc = request_doc()
    deliver(doc)
    before = status(doc["id"])
    assert before.state is State.RETRYING and before.attempts == 1
    deliver({**doc, "retry": retry})
    assert row_snapshot(status(doc["id"])) == row_snapshot(before)
    fresh = request_doc(retry=retry)
    deliver(fresh)
    assert status(fresh["id"]).state is State.REJECTED and status(fresh["id"]).reason.startswith("retry: ")
    deliver(next_retry(app_env))
    record = status(doc["id"])
    assert record.state is State.SUCCEEDED and record.attempts == 2
    assert len(import_posts(control)) == 2


# --- the same id, a different request: a conflict, never "done" -----------------------------------------------

def other_requests(doc: dict) -> list[tuple[str, dict]]:
    return [("other tag", {**doc, "targetTags": [f"evil:{run_id()}"]}),
            ("other source", {**doc, "source": "docker.io/library/hello-world:latest"}),
            ("other mode", {**doc, "mode": "Force"}),
            ("an extra untagged repository", {**doc, "untaggedTargetRepositories": ["evil"]}),
            ("a credential set", {**doc, "credential": "dockerhub"})]


ORIGINAL_STATES = ["succeeded", "running", "retrying", "failed"]


@pytest.mark.parametrize("original", ORIGINAL_STATES)
def test_the_same_id_with_a_different_request_is_a_conflict_and_the_original_row_is_untouched(
        app_env, control, monkeypatch, original):
    from shared import app_context

    doc = request_doc()
    if original == "running":
        control.add_faults("operation", {"delay": 3})
        monkeypatch.setenv("IMPORT_WAIT_SECONDS", "0.3")
        app_context.reset()
    elif original == "retrying":
        control.add_faults("import", {"status": 503})
    elif original == "failed":
        doc["source"] = "docker.io/library/does-not-exist:1"
    deliver(doc)
    before = status(doc["id"])
    assert str(before.state) == original, before.reason
    posts = len(import_posts(control))
    for name, other in other_requests(doc):
        deliver(other)
        assert row_snapshot(status(doc["id"])) == row_snapshot(before), name
    assert len(import_posts(control)) == posts, "a conflicting request reached ARM"
    letters = [letter for letter in dead_letters(app_env) if letter["id"] == doc["id"] and
               letter["state"] == "rejected"]
    assert len(letters) == len(other_requests(doc))
    assert all(letter["reason"].startswith("id: is taken by a different request") for letter in letters)


@pytest.mark.parametrize("spelling", [{"source": "docker.io/library/nginx:1.27"}, {"mode": "NoForce"},
                                      {"version": 1}])
def test_the_same_request_spelled_differently_is_already_done(app_env, control, spelling):
    doc = request_doc()
    deliver(doc)
    assert status(doc["id"]).state is State.SUCCEEDED
    deliver({**doc, **spelling})
    assert status(doc["id"]).state is State.SUCCEEDED and len(import_posts(control)) == 1
    assert letters_for(app_env, doc["id"]) == []


INVALID = [("forbidden source", {"source": "ghcr.io/evil/miner:latest"}), ("unknown field", {"colour": "red"}),
           ("bad tag", {"targetTags": ["Bad Tag"]}), ("forbidden target", {"target": layout.SOURCE_ACR.resource_id})]


@pytest.mark.parametrize(("name", "change"), INVALID, ids=[n for n, _ in INVALID])
def test_an_invalid_message_with_a_taken_id_cannot_overwrite_its_row(app_env, control, name, change):
    doc = request_doc()
    deliver(doc)
    before = status(doc["id"])
    deliver({**doc, **change})
    assert row_snapshot(status(doc["id"])) == row_snapshot(before)
    [letter] = [letter for letter in dead_letters(app_env) if letter["id"] == doc["id"]]
    assert letter["state"] == "rejected" and letter["reason"].startswith("id: names a request that is already")


def test_a_failed_request_may_run_again_as_asked_but_not_as_something_else(app_env, control):
    control.add_faults("import", {"status": 400, "code": "InvalidParameters", "message": "no"})
    doc = request_doc()
    deliver(doc)
    assert status(doc["id"]).state is State.FAILED
    deliver({**doc, "mode": "Force"})
    assert status(doc["id"]).state is State.FAILED and len(import_posts(control)) == 1
    deliver(doc)
    record = status(doc["id"])
    assert record.state is State.SUCCEEDED and record.attempts == 1 and len(import_posts(control)) == 2


# --- reserved ids: the app's own prefixes cannot be taken in advance ------------------------------------------

RESERVED = ["refresh-", "evt-", "event-", "Refresh-", "EVT-"]


@pytest.mark.parametrize("prefix", RESERVED)
def test_a_squatted_reserved_id_is_rejected_without_a_row_and_the_app_can_still_use_it(app_env, control, prefix):
    from shared import app_context
    from shared.core.request import validate_document
    from shared.imports.claims import queue_once

    request_id = f"{prefix}{uuid.uuid4().hex[:24]}"
    wanted = request_doc(request_id)
    for squat in (request_doc(request_id, targetTags=["evil:latest"]), wanted):
        deliver(squat)
        assert status(request_id) is None, "a squatter wrote the row"
    letters = [letter for letter in dead_letters(app_env) if letter["id"] == request_id]
    assert len(letters) == 2 and all(letter["reason"].startswith("id: starts with") for letter in letters)
    assert import_posts(control) == []

    worker = app_context.worker()
    request = validate_document(wanted, worker.settings)
    sent = []
    for _ in range(2):  # a refresh re-run before the worker got to it sends nothing more
        sent.append(queue_once(worker.status, request, worker.queues.enqueue, "queued by a test").sent)
    assert sent == [True, False]
    deliver(request_doc(request_id, targetTags=["evil:latest"]))  # after the app opened it: a conflict
    deliver(next_retry(app_env))
    assert status(request_id).state is State.SUCCEEDED and len(import_posts(control)) == 1


def test_reserved_ids_are_refused_by_the_http_api_and_poison_handler(app_env, control):
    request_id = f"refresh-{uuid.uuid4().hex[:24]}"
    deliver(request_doc(request_id), function="import_image_poison")
    assert status(request_id) is None
    from shared import app_context
    from shared.imports import http_api

    worker = app_context.worker()
    answer = http_api.submit_import(json.dumps(request_doc(request_id)).encode(), "https://x/api/imports",
                                    worker.settings, worker.status, worker.queues.enqueue)
    assert answer.status == 400 and answer.body["errors"][0]["field"] == "id"


# --- concurrent duplicates: one id, one import ----------------------------------------------------------------

@pytest.mark.parametrize(("copies", "spelled"), [(2, False), (6, False), (6, True)])
def test_concurrent_deliveries_of_one_id_run_one_import(app_env, control, copies, spelled):
    """Threads hand the function distinct messages of one request at the same moment (as several host
    instances would): one claims the row, the others find it taken."""
    from shared import app_context
    from shared.dispatch import handle_import_message

    control.add_faults("operation", {"delay": 1})
    doc = request_doc()
    worker = app_context.worker()
    worker.status.get("warm-up")
    bodies = [json.dumps({**doc, "source": "docker.io/library/nginx:1.27"} if spelled and i % 2 else doc)
              for i in range(copies)]
    start = threading.Barrier(copies)
    outcomes, errors = [], []

    def one(body: str) -> None:
        start.wait()
        try:
            outcomes.append(handle_import_message(worker, body, message_id=uuid.uuid4().hex))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(b,)) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(import_posts(control)) == 1
    assert status(doc["id"]).state is State.SUCCEEDED
    assert sum(o.state is State.SUCCEEDED and o.reason.startswith("imported") for o in outcomes) == 1
    assert letters_for(app_env, doc["id"]) == []


def test_copies_of_one_message_through_the_queue_and_the_runner_run_one_import(app_env, control, runner_factory):
    control.add_faults("operation", {"delay": 1})
    runner = runner_factory(http_port=None, PYTHON_THREADPOOL_THREAD_COUNT="5")
    docs = [request_doc() for _ in range(3)]
    client = queue(app_env, app_env["IMPORT_QUEUE"])
    for doc in docs:
        for _ in range(5):
            client.send_message(json.dumps(doc))
    assert runner.wait_idle(timeout=120)
    assert [i.error for i in runner.invocations if i.outcome != "ok"] == []
    assert {status(d["id"]).state for d in docs} == {State.SUCCEEDED}
    assert len(import_posts(control)) == len(docs)


def test_concurrent_http_submissions_of_one_id_accept_one(app_env, control):
    from shared import app_context
    from shared.imports import http_api

    worker = app_context.worker()
    body = json.dumps(request_doc()).encode()
    start = threading.Barrier(6)
    answers = []

    def submit() -> None:
        start.wait()
        answers.append(http_api.submit_import(body, "https://x/api/imports", worker.settings, worker.status,
                                              worker.queues.enqueue).status)

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(answers) == [202] + [409] * 5


# --- retry copies: the queue's 64 KiB, whatever the content -----------------------------------------------------

TARGET_SIZE = 60 * 1024  # a ~60 KiB request, as the producer put it on the queue


def big_request(fill: str, request_id: str, encoding: str) -> dict:
    """A valid request of about TARGET_SIZE bytes in `encoding`: 50 long target tags, 50 untagged
    repositories, and inline credentials made of `fill` (the only fields that take any text)."""
    tags = [f"big/{'r' * 240}{i:02d}:{'t' * 120}" for i in range(50)]
    untagged = [f"u{i:02d}/{'u' * 200}" for i in range(50)]

    def doc(count: int) -> dict:
        text = (fill * 9216)[:count]
        return {"id": request_id, "source": "docker.io/myrepo/image:tag", "targetTags": tags,
                "untaggedTargetRepositories": untagged, "username": text[8192:] or "dockeruser",
                "password": text[:8192]}

    low, high = 0, 9216
    while low < high:  # the most fill that keeps the producer's message within TARGET_SIZE
        middle = (low + high + 1) // 2
        if len(encoded(doc(middle), encoding).encode("utf-8", "surrogatepass")) <= TARGET_SIZE:
            low = middle
        else:
            high = middle - 1
    return doc(low)


FILLS = [("ascii", "x"), ("two-byte", "\u00e9"), ("three-byte", "\u20ac"), ("four-byte", "\U0001f600"),
         ("lone surrogate", "\ud800"), ("not XML", "\uffff"), ("quotes and backslashes", '"\\'),
         ("markup", "<&>"), ("controls", "\x01\x7f")]
ENCODINGS = ["utf-8", "ascii escapes", "base64"]
CARRIABLE = [(f, e) for f in FILLS for e in ENCODINGS if not (f[0] == "lone surrogate" and e != "ascii escapes")]


def encoded(doc: dict, encoding: str) -> str:
    if encoding == "utf-8":
        return json.dumps(doc, ensure_ascii=False)
    text = json.dumps(doc)
    return text if encoding == "ascii escapes" else base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(("fill", "encoding"), CARRIABLE, ids=[f"{f[0]}-{e}" for f, e in CARRIABLE])
def test_a_copy_is_never_larger_than_the_message_it_copies(fill, encoding):
    """Measured, not assumed: the copy's UTF-8 bytes against the producer's (U+FFFF aside: XML cannot
    carry it raw, so the copy escapes it; enqueue measures and refuses what would not fit)."""
    doc = big_request(fill[1], "big-1", encoding)
    original = encoded(doc, encoding)
    copy = message_text(doc)
    assert json.loads(copy) == doc
    assert message_size(original) <= TARGET_SIZE
    if fill[0] != "not XML":
        assert message_size(copy) <= message_size(original) <= MAX_QUEUE_MESSAGE_BYTES


@pytest.mark.parametrize("fill", FILLS, ids=[f[0] for f in FILLS])
def test_retry_copies_of_a_60_kib_request_fit_the_queue(app_env, control, monkeypatch, fill):
    from shared import app_context

    monkeypatch.setenv("ALLOW_INLINE_CREDENTIALS", "true")
    app_context.reset()
    control.add_faults("import", {"status": 500}, {"status": 500})
    encoding = "ascii escapes" if fill[0] == "lone surrogate" else "utf-8"
    doc = big_request(fill[1], f"big-{run_id()}", encoding)
    body = encoded(doc, encoding)
    assert 32 * 1024 < message_size(body) <= TARGET_SIZE  # ASCII-only requests top out near 38 KiB
    message_id = deliver(body)
    if fill[0] in ("lone surrogate", "not XML"):  # not I-JSON: refused as it came, so there is nothing to copy
        record = status(message_id)
        assert record.state is State.REJECTED and ("password" in record.reason or "username" in record.reason)
        assert "not Unicode text" in record.reason and status(doc["id"]) is None
        return
    record = status(doc["id"])
    assert record.state is State.RETRYING, record.reason
    copy = next_retry(app_env)
    assert message_size(copy) <= MAX_QUEUE_MESSAGE_BYTES
    assert json.loads(copy) == doc
    deliver(copy)
    assert status(doc["id"]).attempts == 2


@pytest.fixture(scope="module")
def settings():
    from dev.app_settings import local_app_settings
    from shared.core.settings import load_settings

    return load_settings(local_app_settings())


# --- the decision table, without storage: every row state x who delivers ----------------------------------------

def _decision_cases():
    from shared.core.outcome import State as S

    cases = []
    for state in S:
        for carrier in ("", "m1", "m2"):
            for same in (True, False):
                cases.append((state, carrier, same))
    return cases


@pytest.mark.parametrize(("state", "carrier", "same"), _decision_cases(),
                         ids=[f"{s}-{c or 'open'}-{'same' if m else 'other'}" for s, c, m in _decision_cases()])
@pytest.mark.parametrize("request_id", ["plain-1", "refresh-0123456789abcdef01234567"])
def test_every_row_state_decides_one_safe_step(settings, state, carrier, same, request_id):
    """Delivered by message m1: nothing but the carrier or a same-request message on an open or ended row may
    act; a different request never gets past CONFLICT; DONE only for a request that ended as asked."""
    from shared.azure.status import StatusRecord
    from shared.core.request import fingerprint, validate_document
    from shared.imports.claims import Step, decide

    request = validate_document({"id": request_id, "source": "nginx:1.27"}, settings)
    other = validate_document({"id": request_id, "source": "nginx:1.28"}, settings)
    row = StatusRecord(id=request_id, state=state, carrier=carrier,
                       fingerprint=fingerprint(request if same else other))
    step = decide(row, request, "m1").step
    if carrier == "m1":
        assert step is (Step.DONE if state.terminal else Step.CONTINUE if state is State.RUNNING else Step.TAKE)
    elif not same:
        assert step is Step.CONFLICT
    elif state in (State.SUCCEEDED, State.SKIPPED):
        assert step is Step.DONE
    elif state.terminal:
        assert step is Step.START
    else:
        assert step is (Step.TAKE if carrier == "" else Step.DUPLICATE)
    assert decide(None, request, "m1").step is (Step.SQUAT if request_id.startswith("refresh-") else Step.START)


# --- all of it through the queue and the runner, as a hostile producer would send it ---------------------------

def test_hostile_state_messages_through_the_queue_and_the_runner(app_env, control, runner_factory, listener):
    """Forged operations and retries, squatted reserved ids and conflicting requests, sent to the queue while a
    real request runs and after it ended: no invocation fails, nothing reaches the poison queue, ARM sees
    exactly the one real import, the real request's row ends succeeded with its own content."""
    control.add_faults("operation", {"delay": 1.5})
    runner = runner_factory(http_port=None, IMPORT_WAIT_SECONDS="0.3", PYTHON_THREADPOOL_THREAD_COUNT="4")
    client = queue(app_env, app_env["IMPORT_QUEUE"])
    real = request_doc()
    client.send_message(json.dumps(real))
    forged_ops = [{"url": url, "startedAt": "2026-01-01T00:00:00+00:00", "checks": 1}
                  for _, url in forged_operation_urls(listener.port)[:20]]
    hostile = [
        *({**real, "operation": op} for op in forged_ops),
        *({**real, "retry": retry} for _, retry in FORGED_RETRIES),
        *(other for _, other in other_requests(real)),
        *(request_doc(f"{prefix}{uuid.uuid4().hex[:24]}") for prefix in RESERVED),
        *(request_doc(operation=op) for op in forged_ops[:5]),
    ]
    for doc in hostile:
        client.send_message(json.dumps(doc))
    assert runner.wait_idle(timeout=180)
    for doc in hostile[: len(hostile) // 2]:  # and again, after the real request ended
        client.send_message(json.dumps(doc))
    deliver(other_requests(real)[0][1], function="import_image_poison")
    assert runner.wait_idle(timeout=180)
    assert [(i.function, i.error) for i in runner.invocations if i.outcome != "ok"] == []
    record = status(real["id"])
    assert record.state is State.SUCCEEDED and record.target_tags == real["targetTags"], record.reason
    assert len(import_posts(control)) == 1 and listener.connections == 0
    assert all("/operationResults/" in r["path"] for r in arm_gets(control))
    for doc in hostile:
        if doc["id"].lower().startswith(("refresh-", "evt-", "event-")):
            assert status(doc["id"]) is None
        elif doc["id"] != real["id"]:
            assert status(doc["id"]).state is State.REJECTED
    poison = queue(app_env, f"{app_env['IMPORT_QUEUE']}-poison")
    from azure.core.exceptions import ResourceNotFoundError

    with contextlib.suppress(ResourceNotFoundError):
        assert poison.get_queue_properties().approximate_message_count == 0


def test_redrive_keeps_conflict_and_squat_letters_and_restarts_a_failure(app_env, control):
    """A dead letter can be a message refused because its id was another request's: `redrive` must not
    restart it over that request, nor open a reserved id the app never opened; a real failure goes again."""
    from tests.cli.test_cli import cli

    done = request_doc()
    deliver(done)
    conflict = {**done, "targetTags": ["evil:latest"]}
    deliver(conflict)
    squat = request_doc(f"evt-{uuid.uuid4().hex[:24]}")
    deliver(squat)
    control.add_faults("import", {"status": 400, "code": "InvalidParameters", "message": "no"})
    failed = request_doc()
    deliver(failed)
    before = status(done["id"])
    with contextlib.suppress(Exception):
        queue(app_env, app_env["IMPORT_QUEUE"]).create_queue()
    moved = cli("redrive", "--from", "rejected")
    assert moved.returncode == 1, moved.stdout + moved.stderr
    assert f"kept      {done['id']}" in moved.stdout and "taken by a request that is succeeded" in moved.stdout
    assert f"kept      {squat['id']}" in moved.stdout and status(squat["id"]) is None
    assert f"redriven  {failed['id']}" in moved.stdout, moved.stdout + moved.stderr
    assert row_snapshot(status(done["id"])) == row_snapshot(before)
    row = status(failed["id"])
    assert row.state is State.RECEIVED and row.attempts == 0 and row.fingerprint
    deliver(next_retry(app_env))
    assert status(failed["id"]).state is State.SUCCEEDED
    assert len(import_posts(control)) == 3


def test_a_refresh_id_taken_in_advance_does_not_stop_the_refresh_and_a_rerun_sends_nothing(app_env, control):
    """The squatter predicts the refresh's id (the digests are public) and sends the same or another request
    first: both are refused without a row; the refresh then queues its request, a re-run before the worker
    got to it sends nothing more, and one import runs."""
    from shared import app_context
    from shared.refresh import run as refresh

    worker = app_context.worker()
    config = json.dumps({"version": 1, "images": [{"source": "docker.io/library/nginx", "tags": ["1.27"],
                                                   "targetPrefix": f"rq{run_id()}/"}]})

    def run(dry_run: bool = False):
        return refresh.run_refresh(worker.settings, worker.registries, worker.identity, queues=worker.queues,
                                   status=worker.status, config_text=config, dry_run=dry_run)

    [planned] = run(dry_run=True).plan.imports
    predicted = planned.request
    assert predicted["id"].startswith("refresh-")
    deliver(predicted)
    deliver({**predicted, "mode": "Force", "targetTags": ["evil:latest"]})
    assert status(predicted["id"]) is None
    assert [run().summary.enqueued, run().summary.enqueued] == [1, 0]
    deliver(next_retry(app_env))
    assert status(predicted["id"]).state is State.SUCCEEDED
    assert len(import_posts(control)) == 1
    assert client_is_empty(app_env)


def client_is_empty(app_env) -> bool:
    return queue(app_env, app_env["IMPORT_QUEUE"]).get_queue_properties().approximate_message_count == 0


text_any = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=60)
documents = st.dictionaries(st.text(max_size=10), text_any | st.lists(text_any, max_size=5) | st.integers(),
                            max_size=8)


@hypothesis_settings(max_examples=500)
@given(documents)
def test_any_document_copies_exactly_and_never_larger_than_its_escaped_form(document):
    """Whatever a request holds: the copy reads back as the same document, is text the queue can carry (no
    surrogate, no U+FFFE/U+FFFF), and is never larger than the same JSON with every non-ASCII escaped."""
    copy = message_text(document)
    assert json.loads(copy) == document
    assert not any(0xD800 <= ord(c) <= 0xDFFF or c in "\ufffe\uffff" for c in copy)
    assert message_size(copy) <= message_size(json.dumps(document, separators=(",", ":")))


@pytest.mark.parametrize("async_header", [False, True], ids=["Location", "Azure-AsyncOperation"])
def test_arms_own_operation_urls_pass_the_check_in_both_headers(app_env, control, monkeypatch, async_header):
    """The shape check must not refuse what ARM really sends: a long import watched across a hand-over."""
    from shared import app_context

    control.update_settings(azure_async_operation=async_header)
    control.add_faults("operation", {"delay": 1.5})
    monkeypatch.setenv("IMPORT_WAIT_SECONDS", "0.3")
    app_context.reset()
    doc = request_doc()
    deliver(doc)
    assert status(doc["id"]).state is State.RUNNING
    kind = "operationStatuses" if async_header else "operationResults"
    assert f"/{kind}/" in status(doc["id"]).operation
    monkeypatch.setenv("IMPORT_WAIT_SECONDS", "10")
    app_context.reset()
    deliver(next_retry(app_env))
    assert status(doc["id"]).state is State.SUCCEEDED and len(import_posts(control)) == 1
