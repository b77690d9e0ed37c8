"""The producer side's rules, each over its class of hostile values: decoding never raises, request ids are
safe wherever they go, userinfo and unparsed fields are never recorded as sent, and the CLI prints stored
fields escaped. The corpus in tests/hostile/ runs the same classes end to end (tests/imports/test_hostile_input.py)."""

from __future__ import annotations

import json
import math
import os
import unicodedata
import uuid

import pytest

from cli.terminal import printable
from shared.core.outcome import State
from shared.core.redact import describe_unparsed, redact_document, redact_text, strip_userinfo
from shared.core.request import MESSAGE, ImportRequest, Rejected, decode_body, parse_request, validate_document
from shared.core.request_ids import fallback_request_id, is_safe_request_id
from shared.core.settings import load_settings
from tests.cli.test_cli import cli
from tests.helpers import dead_letters, deliver, status
from tests.hostile.generate import CONTROL, UNSAFE_IDS, USERINFO_FORMS

PASSWORD = "Pl4nted-pw-7f3e1c"
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def settings():
    from dev.app_settings import local_app_settings

    return load_settings(local_app_settings())


# --- decoding: every failure is a Problem --------------------------------------------------------------

def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


PYTHON_VALUES = {  # what no JSON parser returns, but events and callers can hand to validate_document
    "int past the str limit": 10 ** 5000, "int past 2^53": 2 ** 53 + 1, "NaN": math.nan, "infinity": math.inf,
    "minus infinity": -math.inf, "lone surrogate": "ngin\ud800x", "noncharacter": "\uffff", "bytes": b"nginx",
    "set": {"nginx"}, "object": object(), "tuple": ("nginx",), "nested 10,000 deep": _nested(10_000),
}


@pytest.mark.parametrize("label", PYTHON_VALUES)
@pytest.mark.parametrize("field", ["source", "version", "retry", "targetTags", "x"])
def test_validate_document_rejects_any_python_value_naming_its_field(label, field, settings):
    result = validate_document({"source": "nginx:1.27", field: PYTHON_VALUES[label]}, settings, fallback_id="m1")
    assert isinstance(result, Rejected)
    assert any(p.field == field or p.field.startswith((f"{field}.", f"{field}[")) for p in result.problems), \
        result.reason


ENCODINGS = {
    "plain": lambda text: text,
    "bytes": lambda text: text.encode(),
    "base64": lambda text: __import__("base64").b64encode(text.encode()).decode(),
    "padded with whitespace": lambda text: f" \n{text}\t ",
}
BAD_JSON = {
    "4,301-digit integer": '{"source": "nginx", "version": ' + "1" * 4301 + "}",
    "NaN": '{"source": "nginx", "version": NaN}', "-Infinity": '{"source": "nginx", "version": -Infinity}',
    "1e400": '{"source": "nginx", "version": 1e400}', "duplicate source": '{"source": "a", "source": "b"}',
    "escaped duplicate": '{"source": "a", "\\u0073ource": "b"}', "lone surrogate": '{"source": "\\udc00"}',
    "noncharacter key": '{"\\ufdd0": 1}', "40 levels": '{"source": ' + "[" * 40 + "]" * 40 + "}",
    "40,000 levels": "[" * 40_000, "1e-400 (underflows to 0)": '{"source": "nginx", "version": 1e-400}',
}


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("label", BAD_JSON)
def test_json_the_app_does_not_read_is_a_problem_in_any_encoding(label, encoding, settings):
    body = ENCODINGS[encoding](BAD_JSON[label])
    result = parse_request(body, settings, fallback_id="m1")
    assert isinstance(result, Rejected) and result.problems[0].field and result.problems[0].rule
    assert result.id == "m1"


def test_integers_the_decoder_keeps_are_exact():
    document, problem = decode_body('{"a": 9007199254740992, "b": -9007199254740992, "c": 1.5, "d": 0}')
    assert problem is None and document == {"a": 2 ** 53, "b": -(2 ** 53), "c": 1.5, "d": 0}
    _, problem = decode_body('{"a": 9007199254740993}')
    assert problem is not None and problem.field == "a"


def test_a_duplicate_id_names_the_id_field(settings):
    result = parse_request('{"source": "nginx:1.27", "id": "a", "id": "b"}', settings, fallback_id="msg-1")
    assert isinstance(result, Rejected) and result.id == "msg-1"
    assert [p.field for p in result.problems] == ["id"]


# --- request ids ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("label", UNSAFE_IDS)
def test_unsafe_ids_are_refused_naming_id_and_recorded_under_the_message_id(label, settings):
    text = UNSAFE_IDS[label]
    assert not is_safe_request_id(text)
    result = parse_request(json.dumps({"source": "nginx:1.27", "id": text}), settings, fallback_id="msg-7")
    assert isinstance(result, Rejected) and result.id == "msg-7"
    assert "id" in [p.field for p in result.problems], result.reason


@pytest.mark.parametrize("message_id", ["", None, "a/b", "x\n", "\u202eabc", "m" * 2000, "../..", "a#b?c"])
def test_an_unusable_message_id_gives_a_safe_stable_fallback(message_id, settings):
    fallback = fallback_request_id(message_id)
    assert is_safe_request_id(fallback)
    if message_id:
        assert fallback == fallback_request_id(message_id)
    assert is_safe_request_id(parse_request(b"\xff", settings, fallback_id=message_id).id)


@pytest.mark.parametrize("text", ["a", "A-1", "cli-0123", "x" * 128, "evt-" + "f" * 32, "a.b_c-d", "1"])
def test_ids_the_rule_allows(text):
    assert is_safe_request_id(text)


# --- userinfo and unparsed values -----------------------------------------------------------------------

CONTEXTS = {
    "as is": "{}", "quoted in a reason": 'source: reference has more than one \'@\': "{}"',
    "in a JSON log line": '{{"event": "import", "source": "{}"}}', "in prose": "could not reach {} (timeout)",
    "in a list": '["{}", "x:1"]',
}


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("form", USERINFO_FORMS)
def test_userinfo_is_stripped_wherever_it_appears(form, context):
    text = CONTEXTS[context].format(USERINFO_FORMS[form].format(pw=PASSWORD))
    assert PASSWORD not in redact_text(text)
    assert PASSWORD not in json.dumps(redact_document({"source": text, "targetTags": [text], text: 1}))
    assert PASSWORD not in describe_unparsed(text)


@pytest.mark.parametrize("reference", [f"nginx@{DIGEST}", f"nginx:1.27@{DIGEST}", f"docker.io/library/nginx@{DIGEST}",
                                       "nginx:1.27", "registry.contoso.com:5000/team/app:1"])
def test_references_without_userinfo_are_kept(reference):
    assert strip_userinfo(reference) == reference
    assert redact_document({"source": reference}) == {"source": reference}


def test_userinfo_goes_and_the_host_stays():
    assert strip_userinfo(f"user:{PASSWORD}@registry.contoso.com/a:1") == "registry.contoso.com/a:1"
    assert strip_userinfo(f"https://u:{PASSWORD}@h.example/x") == "https://h.example/x"
    assert strip_userinfo(f"u:p@ss@h.example/x@{DIGEST}") == f"h.example/x@{DIGEST}"


@pytest.mark.parametrize("value", [PASSWORD, f"u:{PASSWORD}@host/x", "\u001b]0;x\u0007" + PASSWORD, ["a", PASSWORD],
                                   {"password": PASSWORD}, b"\xff\xfe" + PASSWORD.encode(), 42, None])
def test_an_unparsed_value_is_described_by_size_hash_and_a_short_prefix(value):
    described = describe_unparsed(value, (PASSWORD,))
    assert described.startswith("<unparsed: ") and " bytes, sha256 " in described
    assert PASSWORD not in described and PASSWORD[:5] not in described
    assert described.replace("…", "").isascii() and described.isprintable()
    prefix = described.split('begins "', 1)[1]
    assert len(json.loads('"' + prefix.rsplit("…", 1)[0] + '"')) <= 4


def test_the_same_value_is_described_the_same_way():
    assert describe_unparsed("ngin x:1") == describe_unparsed("ngin x:1") != describe_unparsed("ngin y:1")
    assert describe_unparsed("ngin x:1").startswith('<unparsed: 8 bytes, sha256 ')


def test_a_rejected_row_keeps_what_parsed_and_describes_what_did_not(app_env):
    request_id = f"row-{uuid.uuid4().hex[:8]}"
    deliver({"id": request_id, "source": "docker.io/library/nginx:1.27", "mode": "Sometimes",
             "target": f"https://u:{PASSWORD}@management.azure.com/x",
             "targetTags": ["web:1", f"u:{PASSWORD}@h/x:1", 7]})
    row = status(request_id)
    assert row.state is State.REJECTED
    assert row.source == "docker.io/library/nginx:1.27"
    assert row.mode.startswith("<unparsed: 9 bytes") and row.target.startswith("<unparsed: ")
    assert row.target_tags[0] == "web:1" and all(t.startswith("<unparsed: ") for t in row.target_tags[1:])
    assert PASSWORD not in json.dumps(row.__dict__, default=str)
    [letter] = [letter for letter in dead_letters(app_env) if letter["id"] == request_id]
    assert letter["body"]["source"] == "docker.io/library/nginx:1.27"  # kept for redrive
    assert letter["body"]["target"] == "https://management.azure.com/x"
    assert PASSWORD not in json.dumps(letter)


def test_a_source_equal_to_its_own_password_is_recorded_without_it(app_env, monkeypatch):
    """Inline credentials allowed: the request is valid and runs; its row, letter and log hold no password."""
    from shared import app_context

    monkeypatch.setenv("ALLOW_INLINE_CREDENTIALS", "true")
    monkeypatch.setenv("IMPORT_MAX_ATTEMPTS", "1")
    app_context.reset()
    secret = "planted" + uuid.uuid4().hex[:8]
    request_id = deliver({"source": f"docker.io/library/{secret}:1", "targetTags": [f"{secret}:1"],
                          "username": "dockeruser", "password": secret})
    row = status(request_id)
    assert row.state.terminal
    assert secret not in json.dumps(row.__dict__, default=str)
    assert row.source == "docker.io/library/[removed]:1" and row.target_tags == ["[removed]:1"]


# --- terminal output ------------------------------------------------------------------------------------

UNSAFE = {**{f"control {k}": v for k, v in CONTROL.items()}, "NUL": "\x00", "newline": "\n", "tab": "\t",
          "C1 OSC": "\x9d", "zero-width space": "\u200b", "BOM": "\ufeff", "line separator": "\u2028",
          "paragraph separator": "\u2029", "private use": "\ue000", "right-to-left isolate": "\u2067",
          "pop directional": "\u202c", "Arabic letter mark": "\u061c", "lone surrogate": "\ud800",
          "unassigned": "\U000e0fff", "interlinear annotation": "\ufff9"}
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def _raw_unsafe(text: str) -> list[str]:
    return [hex(ord(c)) for c in text if unicodedata.category(c) in _UNSAFE_CATEGORIES and c != "\n"]


@pytest.mark.parametrize("label", UNSAFE)
def test_printable_escapes_what_could_act_on_a_terminal(label):
    shown = printable(f"before{UNSAFE[label]}after")
    assert shown.startswith("before") and shown.endswith("after")
    assert _raw_unsafe(shown) == [] and "\n" not in shown and "\\" in shown


@pytest.mark.parametrize("text", ["nginx:1.27", "café", "日本語", "\U0001f433 whale", "a\\x1b is text"])
def test_printable_leaves_ordinary_text_alone(text):
    assert printable(text) == text


def test_status_and_list_print_hostile_fields_escaped_and_json_stays_json(app_env):
    """Rows hold what producers wrote (a reason quotes their fields); printed raw, an escape could rewrite
    the operator's terminal or make one id read as another."""
    from shared import app_context

    request_id = f"tty-{uuid.uuid4().hex[:8]}"
    hostile = "".join(UNSAFE.values()).replace("\ud800", "")
    store = app_context.worker().status
    store.transition(request_id, State.REJECTED, reason=f"source: bad {hostile} end", source=f"s{hostile}",
                     target=f"t{hostile}", target_tags=[f"r{hostile}:1"], mode=f"m{hostile}")
    wide = {**os.environ, "COLUMNS": "2000"}  # `list` cuts cells to the terminal's width; here nothing is cut
    for args in (("status", request_id), ("list",), ("list", "--state", "rejected")):
        done = cli(*args, env=wide)
        assert done.returncode in (0, 1), done.stderr
        assert request_id in done.stdout
        assert _raw_unsafe(done.stdout) == [] and "\r" not in done.stdout
        assert "\\x1b" in done.stdout and "\\u202e" in done.stdout
    shown = json.loads(cli("status", request_id, "--json").stdout)
    assert shown["reason"] == f"source: bad {hostile} end" and shown["targetTags"] == [f"r{hostile}:1"]
    listed = json.loads(cli("list", "--json").stdout)
    assert [r["source"] for r in listed if r["id"] == request_id] == [f"s{hostile}"]


def test_status_takes_a_pasted_status_url_and_refuses_ids_no_request_can_have(app_env):
    from shared import app_context

    request_id = f"url-{uuid.uuid4().hex[:8]}"
    app_context.worker().status.transition(request_id, State.SUCCEEDED, reason="imported")
    pasted = cli("status", f"https://app.azurewebsites.net/api/imports/{request_id}?code=secret-key")
    assert pasted.returncode == 0 and f"id:         {request_id}" in pasted.stdout
    for bad in ("a/b", "x\ny", "\u001b[2Jx", "a#b", "i" * 129, "https://app/api/imports/", "a?b"):
        done = cli("status", bad)
        assert done.returncode == 2, (bad, done.stdout, done.stderr)
        assert "is not a request id" in done.stderr and "Traceback" not in done.stderr
        assert _raw_unsafe(done.stderr) == []


def test_an_accepted_request_is_unaffected(settings):
    result = parse_request(json.dumps({"source": "nginx:1.27", "id": "fine-1", "version": 1}), settings)
    assert isinstance(result, ImportRequest) and result.id == "fine-1"
    assert decode_body("{}") == ({}, None) and MESSAGE == "(message)"


@pytest.mark.parametrize("where", ["id", "topic", "subject", "repository"])
def test_an_event_holding_a_lone_surrogate_is_recorded_not_raised(app_env, where):
    """Event Grid's trigger hands over what its JSON parser made, lone surrogates included (`"\\ud800"` is
    valid JSON); the event key hashed them as UTF-8 and raised, so the delivery was retried and lost."""
    from dev import layout
    from shared import app_context
    from shared.replication.replicate import replicate

    event = {"id": f"evt-{uuid.uuid4().hex[:6]}", "topic": layout.SOURCE_ACR.resource_id, "subject": "app:1",
             "eventType": "Microsoft.ContainerRegistry.ImagePushed", "eventTime": "2026-01-01T00:00:00Z",
             "data": {"target": {"repository": "app", "tag": "1", "digest": DIGEST}}}
    if where == "repository":
        event["data"]["target"]["repository"] = "app\ud800"
    else:
        event[where] = event[where] + "\ud800"
    results = replicate(app_context.worker(), event)
    assert [r.state for r in results] in ([State.REJECTED], [State.SKIPPED], [State.RECEIVED])


@pytest.mark.parametrize("character", ["x", "\u202e", "\\", '"', "\ud800"])
def test_a_dead_letter_fits_the_queue_whatever_its_reason_and_body(app_env, character):
    """A reason or a body of any size and content: the letter stays under the queue's 64 KiB (Azurite refuses
    more, as Azure does), keeping the id and the start of the reason."""
    from shared import app_context

    request_id = f"big-{uuid.uuid4().hex[:8]}"
    app_context.worker().queues.dead_letter({"id": request_id, "reason": character * 200_000,
                                             "body": {"x": [character * 1000] * 100}})
    [letter] = [letter for letter in dead_letters(app_env) if letter["id"] == request_id]
    assert letter["reason"] == character * 4000 and letter["reasonTruncated"] and letter["bodyTruncated"]
