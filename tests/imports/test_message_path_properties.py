"""The whole message path as a property: whatever bytes arrive on the queue, `handle_import_message` (a real
Worker against Azurite and the Azure stand-in) returns normally, and the request ends in one recorded state:
a status row that is terminal, retrying or running, and a dead letter when it was rejected or failed.

The allowlist admits only `registry.contoso.com`, so nearly every generated request is rejected; the few that
are accepted import into the stand-in's registry (harmless), most of them of an image that does not exist."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from shared.core.outcome import State
from tests.helpers import drain

RECORDED = {State.SUCCEEDED, State.SKIPPED, State.REJECTED, State.FAILED, State.RETRYING, State.RUNNING}
LETTERED = {State.REJECTED, State.FAILED}
FIELDS = ["source", "sourceRegistry", "credential", "target", "targetTags", "untaggedTargetRepositories", "mode",
          "id", "version", "username", "password", "retry", "operation", "x", "Source", "source\u0000"]
SOURCES = ["nginx:1.27", "registry.contoso.com/hostile/none:1", "registry.contoso.com/team/app:1",
           "user:pw@registry.contoso.com/team/app:1", "docker.io/library/nginx", "Bad Ref", "", "a" * 2000,
           "registry.contoso.com/x@sha256:" + "a" * 64, "\u001b[31mx", "registry.contoso.com/../x:1"]
IDS = ["prop-1", "prop-2", "x\n", "a/b", "", "i" * 129, "\u202eid", "ok.id_-1"]
NUMBERS = ["1", "0", "-1", "1.0", "1e400", "NaN", "-Infinity", "9" * 17, "9" * 5000, "2.5"]

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 60), max_value=2 ** 60)
           | st.floats(allow_nan=False) | st.text(max_size=40) | st.sampled_from(SOURCES + IDS))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
near_schema = st.fixed_dictionaries(
    {"source": st.sampled_from(SOURCES)},
    optional={"id": st.sampled_from(IDS) | st.text(max_size=12), "mode": st.sampled_from(["NoForce", "Force",
              "IfChanged", "force", ""]), "credential": st.sampled_from(["contoso", "dockerhub", "x\n"]),
              "targetTags": st.lists(st.sampled_from(["prop:1", "Bad:Tag:x", "prop:" + "t" * 200, "a\u0000:1"]),
                                     max_size=3),
              "retry": st.fixed_dictionaries({"attempt": st.integers(-2, 2000), "firstAttemptAt": st.sampled_from(
                  ["2026-01-01T00:00:00+00:00", "soon", "2026-01-01T00:00:00"])}),
              "password": st.just("prop-planted-pw-91c2"), "x": json_values})
documents = near_schema | st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5)


@st.composite
def raw_json(draw) -> str:
    """JSON as text, with what `json.dumps` never writes: duplicate keys, odd numbers, raw escapes."""
    number = draw(st.sampled_from(NUMBERS))
    source = json.dumps(draw(st.sampled_from(SOURCES)))
    template = draw(st.sampled_from([
        '{{"source": {s}, "version": {n}}}', '{{"source": {s}, "source": "nginx:1.27"}}',
        '{{"source": {s}, "retry": {{"attempt": {n}, "firstAttemptAt": "2026-01-01T00:00:00+00:00"}}}}',
        '{{"source": {s}, "id": "a\\ud800"}}', '{{"source": {s}, "x": ' + "[" * 40 + "]" * 40 + "}}",
        '{{"source": {s}, "id": "x", "id": "y"}}', '{{"source": {s}}}']))
    return template.format(s=source, n=number)


@st.composite
def mutated(draw) -> bytes:
    """A near-valid body with a few bytes changed, inserted or cut."""
    data = bytearray(json.dumps(draw(near_schema)).encode())
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "replace", "cut"]))
        byte = draw(st.integers(0, 255))
        if action == "insert":
            data.insert(position, byte)
        elif action == "replace" and position < len(data):
            data[position] = byte
        else:
            del data[position:position + draw(st.integers(1, 8))]
    return bytes(data)


def _b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value).decode()


texts = documents.map(json.dumps) | raw_json()
bodies = (st.binary(max_size=200) | st.text(max_size=200) | texts | texts.map(_b64) | mutated()
          | mutated().map(_b64))


@pytest.fixture(scope="module")
def message_path(stack):
    """A Worker as the app builds it, on its own queue and table, with the narrow allowlist."""
    from dev.app_settings import local_app_settings
    from shared import app_context
    from tests.conftest import TEST_SETTINGS

    suffix = uuid.uuid4().hex[:10]
    values = {**local_app_settings(queue=f"props-{suffix}", table=f"props{suffix}"), **TEST_SETTINGS,
              "ALLOWED_SOURCE_REGISTRIES": "registry.contoso.com", "IMPORT_MAX_ATTEMPTS": "1",
              "IMPORT_WAIT_SECONDS": "5"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            patch.setenv(name, value)
        app_context.reset()
        yield app_context.worker(), values
        app_context.reset()


@settings(max_examples=150)  # timing checks are off for every property test (tests/conftest.py)
@given(body=bodies)
def test_any_body_ends_in_one_recorded_state(message_path, body):
    from shared.core.outcome import Outcome
    from shared.dispatch import handle_import_message

    worker, values = message_path
    result = handle_import_message(worker, body, message_id=uuid.uuid4().hex)
    letters = {json.loads(text)["id"] for text in drain(values, values["IMPORT_QUEUE"] + "-rejected")}
    drain(values, values["IMPORT_QUEUE"])  # retries and follow-ups: not run here
    outcomes = [result] if isinstance(result, Outcome) else []
    if not isinstance(result, Outcome):  # events delivered into the queue
        assert all(event.state in RECORDED | {State.RECEIVED} for event in result)
    for outcome in outcomes:
        event(f"{outcome.state}")  # shown by --hypothesis-show-statistics: how many got how far
        row = worker.status.get(outcome.request_id)
        assert row is not None, outcome
        assert row.state in RECORDED and row.state is outcome.state, (row.state, outcome)
        if outcome.state in LETTERED and not outcome.reason.startswith("already "):
            assert outcome.request_id in letters, outcome
        assert "prop-planted-pw-91c2" not in json.dumps(row.__dict__, default=str)
