"""Property-based tests over the validator and the reference parser: whatever arrives, no exception escapes,
and anything refused is refused with a reason that names a field."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core.reference import ImageReference, InvalidReference, parse_reference
from shared.core.request import ImportRequest, Rejected, parse_request, validate_document
from shared.core.settings import load_settings

FIELDS = ["source", "sourceRegistry", "credential", "target", "targetTags", "untaggedTargetRepositories", "mode",
          "id", "version", "username", "password", "retry", "operation", "x"]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=12)
reference_text = st.text(alphabet=st.sampled_from("abcXYZ019._-/:@ \u0000\u00e9\ud800") | st.characters(),
                         max_size=80)
requests = st.dictionaries(st.sampled_from(FIELDS), json_values | reference_text | st.lists(reference_text,
                                                                                           max_size=3),
                           max_size=6)
quick = settings(max_examples=300)  # timing checks are off for every property test (tests/conftest.py)


@pytest.fixture(scope="module")
def app_settings():
    from dev.app_settings import local_app_settings

    return load_settings(local_app_settings())


@quick
@given(text=reference_text)
def test_parse_reference_returns_a_reference_or_says_why(text):
    try:
        parsed = parse_reference(text)
    except InvalidReference as err:
        assert err.reason
        return
    assert isinstance(parsed, ImageReference)
    assert parse_reference(str(parsed)) == parsed, "a parsed reference must print back to itself"


@quick
@given(doc=requests)
def test_validate_document_never_raises_and_names_a_field(doc, app_settings):
    result = validate_document(doc, app_settings, fallback_id="m1")
    assert isinstance(result, ImportRequest | Rejected)
    if isinstance(result, Rejected):
        assert result.problems and all(p.field and p.rule for p in result.problems)


@quick
@given(body=st.binary(max_size=300) | st.text(max_size=300) | requests.map(json.dumps))
def test_parse_request_never_raises_on_any_body(body, app_settings):
    result = parse_request(body, app_settings, fallback_id="m1")
    assert isinstance(result, ImportRequest | Rejected)
    if isinstance(result, Rejected):
        assert result.reason and result.id


@quick
@given(doc=requests)
def test_an_accepted_request_only_names_allowed_registries(doc, app_settings):
    result = validate_document(doc, app_settings, fallback_id="m1")
    if isinstance(result, ImportRequest):
        assert str(result.target).lower() in {t.lower() for t in app_settings.allowed_target_registries}
        assert "password" not in doc or app_settings.allow_inline_credentials
