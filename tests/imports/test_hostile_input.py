"""Hostile input: the corpus in tests/hostile/ (bad requests and Event Grid events), each ending `rejected` with
a reason naming the field, through the validator and through the queue and the runner; the worker never crashes.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections import Counter

import pytest
import requests
from azure.storage.queue import QueueClient

from dev import layout
from shared.azure.status import StatusStore
from shared.core.outcome import Problem, State
from shared.core.request import Rejected, parse_request
from shared.core.request_ids import is_safe_request_id
from shared.core.resource_ids import parse_registry_id
from shared.core.settings import load_settings
from tests.azure.test_telemetry import values_of
from tests.conftest import FUNCTION_KEY
from tests.helpers import dead_letters, deliver, drain, status
from tests.hostile import generate
from tests.hostile.generate import PLANTED_PASSWORD

MESSAGES = [json.loads(line) for line in generate.MESSAGES.read_text().splitlines()]
EVENTS = [json.loads(line) for line in generate.EVENTS.read_text().splitlines()]
CORPUS = MESSAGES + EVENTS


def body_of(case: dict) -> str | bytes:
    return base64.b64decode(case["bytes"]) if "bytes" in case else case["text"]


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def queue_can_carry(body: str | bytes) -> bool:
    """Azure Storage refuses a message that is not valid XML text or is over 64 KiB (Azurite stores the first
    kind, and then fails every receive of a batch holding it: a stand-in artefact, so such bodies go direct)."""
    return isinstance(body, str) and not _NOT_XML.search(body) and len(body.encode("utf-8", "surrogatepass")) < 60_000


def names_field(rejected: Rejected, field: str | None) -> bool:
    named = [name for problem in rejected.problems for name in problem.field.split(", ")]
    if field is None:
        return bool(named) and all(named)
    return any(name == field or name.startswith((f"{field}.", f"{field}[")) for name in named)


@pytest.fixture(scope="module")
def settings():
    from dev.app_settings import local_app_settings

    return load_settings(local_app_settings())


def test_the_corpus_is_what_the_generator_writes_and_large_enough():
    assert generate.MESSAGES.read_text() == generate.render(generate.message_cases())
    assert generate.EVENTS.read_text() == generate.render(generate.event_cases())
    assert len(CORPUS) >= 300
    assert len({case["name"] for case in CORPUS}) == len(CORPUS), "case names must be unique"


@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
def test_every_case_is_rejected_naming_its_field(case, settings):
    parsed = parse_request(body_of(case), settings, fallback_id="m1")
    assert isinstance(parsed, Rejected), f"accepted: {parsed}"
    assert names_field(parsed, case["field"]), parsed.reason


def test_subscription_and_group_ids_are_refused_not_a_crash():
    """parse_resource_id returns no `namespace` for them; that raised KeyError out of the validator."""
    for text in ("/subscriptions/x", f"/subscriptions/{layout.SUB_A}/resourceGroups/rg"):
        with pytest.raises(ValueError, match="container registry resource id"):
            parse_registry_id(text)


def test_forged_retry_and_operation_times_are_refused(settings):
    """jsonschema skips `date-time` without an optional package; a naive or bad time crashed the worker."""
    for field, value in (("retry", {"attempt": 1, "firstAttemptAt": "2026-01-01T00:00:00"}),
                         ("operation", {"url": "https://x/y", "startedAt": "soon", "checks": 1})):
        parsed = parse_request(json.dumps({"source": "nginx", field: value}), settings)
        assert isinstance(parsed, Rejected) and "must be an RFC 3339 date-time" in parsed.reason


def test_lone_surrogates_and_noncharacters_are_dead_lettered_and_the_queue_stays_readable(app_env):
    """A dead letter holding U+D800 could not be encoded (the worker crashed on every delivery); one holding
    U+FFFF was stored by Azurite, after which every peek of the dead-letter queue failed with 500. Such a body
    is not I-JSON: it is refused when decoded, and its letter keeps a description of it, not the text."""
    ids = [deliver('{"source": "\\ud800"}'), deliver('{"source": "ngin\\uffffx"}'),
           deliver('{"source": "nginx", "targetTags": ["\\udfff:x"]}')]
    assert [status(i).state for i in ids] == [State.REJECTED] * 3
    letters = {letter["id"]: letter for letter in dead_letters(app_env)}
    assert set(ids) <= set(letters)
    assert letters[ids[1]]["body"].startswith("<unparsed: 25 bytes, sha256 ")


def _queued(app_env) -> QueueClient:
    return QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"])


SECRETS = (PLANTED_PASSWORD, layout.DOCKERHUB.users["dockeruser"], layout.PRIVATE.users["contoso"])




def leaks(texts: list[str]) -> list[str]:
    return [text[:160] for text in texts for secret in SECRETS if secret in text]


def test_the_whole_corpus_through_the_queue_and_the_runner_ends_rejected(app_env, control, every_log_line, otel):
    """What a queue writer can send arrives as text; bodies the queue cannot carry (raw bytes, not XML text,
    over 64 KiB) are handed to the function directly, as the host would if they got there. For every case:
    exactly one status row, rejected, and one dead letter; no planted secret in any row, letter, log line or
    span; and no request at all to ARM, the identity endpoint or a registry."""
    from dev.runner import Runner
    from shared import app_context

    settings = load_settings()
    expected: dict[str, dict] = {}
    queue = _queued(app_env)  # app_env created it, as the deployment does
    direct = []
    for case in MESSAGES:
        body = body_of(case)
        if not queue_can_carry(body):
            direct.append(case)
            continue
        sent = queue.send_message(body)
        expected[parse_request(body, settings, fallback_id=sent.id).id] = case
    for case in EVENTS:  # the event code names their rows after topic and event id
        assert queue_can_carry(body_of(case))
        queue.send_message(body_of(case))
    for case in direct:
        message_id = uuid.uuid4().hex
        expected[parse_request(body_of(case), settings, fallback_id=message_id).id] = case
        deliver(body_of(case), message_id=message_id)
    assert len(expected) == len(MESSAGES), "two cases share a request id"
    assert all(is_safe_request_id(i) for i in expected)
    app_context.reset()
    with Runner("function_app", env=app_env, http_port=None) as runner:
        drained = runner.wait_idle(timeout=180)
        crashed = [(i.function, i.error) for i in runner.invocations if i.outcome != "ok"]
    assert crashed == []
    assert drained, "the runner did not drain the queue"
    store = StatusStore(app_env["IMPORT_STATUS_TABLE"])
    records = {r.id: r for r in store.list()}
    missing = [case["name"] for i, case in expected.items() if i not in records]
    assert missing == []
    assert [(r.id, r.state, r.reason[:120]) for r in records.values() if r.state is not State.REJECTED] == []
    assert len(records) >= len(expected) + len(EVENTS)  # a batch of two events is two rows
    assert drain(app_env, f"{app_env['IMPORT_QUEUE']}-poison") == []
    letters = Counter(json.loads(text)["id"] for text in drain(app_env, f"{app_env['IMPORT_QUEUE']}-rejected"))
    assert [(i, n) for i, n in letters.items() if n != 1] == []
    assert set(letters) == set(records)
    rows = [json.dumps(r.__dict__, default=str) for r in records.values()]
    assert leaks([*rows, *every_log_line, *(values_of(s) for s in otel.import_spans())]) == []
    assert control.requests(None) == []


def test_the_corpus_through_the_http_api_is_400_naming_the_field(app_env, api, control, every_log_line):
    """POST /api/imports with every corpus body (events too), as sent: each answers 400 with the field named (never 500,
    never accepted), nothing is recorded or enqueued, no secret is echoed, and nothing reaches ARM."""
    answers = {}
    with requests.Session() as session:
        for case in CORPUS:
            body = body_of(case)
            data = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
            answer = session.post(f"{api}/imports", data=data, headers={"x-functions-key": FUNCTION_KEY}, timeout=30)
            answers[case["name"]] = (case, answer.status_code, answer.text)
    assert [(n, status) for n, (_, status, _) in answers.items() if status != 400] == []
    unnamed = []
    for name, (case, _, text) in answers.items():
        fields = [e["field"] for e in json.loads(text)["errors"]]
        rejected = Rejected("x", tuple(Problem(f, "") for f in fields))
        if not names_field(rejected, case["field"]):
            unnamed.append((name, fields))
    assert unnamed == []
    assert leaks([text for _, _, text in answers.values()] + every_log_line) == []
    assert StatusStore(app_env["IMPORT_STATUS_TABLE"]).list() == []
    assert drain(app_env, app_env["IMPORT_QUEUE"]) == []
    assert control.requests(None) == []


def test_a_look_up_of_an_unusable_id_is_a_400_naming_the_id(app_env, api):
    """GET /api/imports/{id} with an id no request can have: a 400 that names `id` (the table would refuse
    the key), or a 404 when the id is not one path segment; never a 500."""
    from urllib.parse import quote

    seen = {}
    key = {"x-functions-key": FUNCTION_KEY}
    for label, text in generate.UNSAFE_IDS.items():
        if not text:
            continue
        answer = requests.get(f"{api}/imports/{quote(text, safe='')}", headers=key, timeout=30)
        seen[label] = (answer.status_code, answer.text)
    ok = requests.get(f"{api}/imports/no-such-request", headers=key, timeout=30)
    assert ok.status_code == 404
    assert [(label, status) for label, (status, _) in seen.items() if status not in (400, 404)] == []
    named = [label for label, (status, text) in seen.items() if status == 400
             and [e["field"] for e in json.loads(text)["errors"]] == ["id"]]
    assert len(named) == len([s for s, _ in seen.values() if s == 400]) >= len(seen) - 4


BOM = "\ufeff".encode()  # EF BB BF


@pytest.mark.parametrize("body", [
    BOM + b'{"source": "nginx:1.27"}',                                     # Set-Content -Encoding UTF8, sent as is
    base64.b64encode(BOM + b'{"source": "nginx:1.27"}'),                   # that file, base64-encoded
    BOM + base64.b64encode(b'{"source": "nginx:1.27"}'),                   # base64 text saved with a BOM
    BOM + b'\r\n  {"source": "nginx:1.27"}\r\n',
], ids=["plain", "base64 of a BOM file", "BOM then base64", "BOM then CRLF"])
def test_a_leading_utf8_bom_is_ignored_as_rfc_8259_allows(body, settings):
    """What the function gets: the storage extension keeps the BOM in the message text (U+FEFF) and the
    worker's QueueMessageInConverter hands it on, so the app sees EF BB BF first (shared/core/request.py
    `_without_bom`). One leading BOM is ignored; the request is read as without it."""
    from dev.runner.inputs import queue_input

    message = queue_input(body, id="m1", dequeue_count=1, pop_receipt="pr", insertion_time=None,
                          expiration_time=None, next_visible_time=None)
    assert message.get_body().startswith(BOM) or not body.startswith(BOM)
    parsed = parse_request(message.get_body(), settings, fallback_id="m1")
    assert not isinstance(parsed, Rejected), parsed.reason
    assert str(parsed.source) == "docker.io/library/nginx:1.27"


def test_a_bom_anywhere_but_first_is_still_refused_naming_the_message(settings):
    for body in (BOM + BOM + b'{"source": "nginx"}', b' ' + BOM + b'{"source": "nginx"}'):
        parsed = parse_request(body, settings, fallback_id="m1")
        assert isinstance(parsed, Rejected) and names_field(parsed, "(message)"), body
