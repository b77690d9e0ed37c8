"""BACKUP_TAG_TEMPLATE: every placeholder renders as documented, every broken form is refused naming its rule
(as a setting problem too), and no rendering of an accepted template is ever an invalid tag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.backup import PLACEHOLDERS, BackupTemplateError, parse_backup_template
from shared.core.reference import is_tag
from shared.core.settings import BACKUP, IMPORTS, load_settings, read_settings

OLD = "sha256:" + "0123456789abcdef" * 4
NOW = datetime(2026, 12, 2, 13, 4, 5, tzinfo=UTC)
TARGET = ("/subscriptions/11111111-1111-4111-8111-111111111111/resourceGroups/rg/providers/"
          "Microsoft.ContainerRegistry/registries/myregistry")


def render(template: str, tag: str = "1.0", old: str = OLD, now: datetime = NOW) -> str:
    return parse_backup_template(template).render(tag, old, now)


@pytest.mark.parametrize(("template", "expected"), [
    ("{tag}-backup-{date}", "1.0-backup-20261202"),
    ("{tag}-{time}", "1.0-130405"),
    ("{tag}.{digest}", "1.0.0123456789ab"),
    ("bak_{date}{time}_{tag}", "bak_20261202130405_1.0"),
    ("{digest}", "0123456789ab"),
    ("{tag}{tag}", "1.01.0"),
    ("old", "old"),
])
def test_every_placeholder_renders_as_documented(template, expected):
    assert render(template) == expected


def test_date_and_time_are_utc():
    assert render("{tag}-{date}-{time}", now=datetime(2026, 12, 3, 1, 2, 3, tzinfo=timezone(timedelta(hours=5)))) \
        == "1.0-20261202-200203"


def test_the_same_old_image_gets_the_same_name_within_a_day():
    later = NOW + timedelta(hours=10)
    assert render("{tag}-{date}-{digest}") == render("{tag}-{date}-{digest}", now=later)
    assert render("{tag}-{date}-{digest}") != render("{tag}-{date}-{digest}", old="sha256:" + "f" * 64)


@pytest.mark.parametrize(("template", "rule"), [
    ("{tag", "unbalanced brace"),
    ("tag}", "unbalanced brace"),
    ("{tag}-}", "unbalanced brace"),
    ("{nope}-x", "unknown placeholder {nope}"),
    ("{}-x", "unknown placeholder {}"),
    ("{0}-x", "unknown placeholder {0}"),
    ("{tag.real}-x", "unknown placeholder"),
    ("{Tag}-x", "unknown placeholder {Tag}"),
    ("{tag:>5}-x", "format spec or conversion"),
    ("{tag!r}-x", "format spec or conversion"),
    ("{{tag}}", "'{' outside a placeholder"),
    ("{tag}/backup", "'/' outside a placeholder"),
    ("{tag}:backup", "':' outside a placeholder"),
    ("{tag} backup", "' ' outside a placeholder"),
    ("{tag}-bäckup", "'ä' outside a placeholder"),
    ("-{tag}", "starts with '.' or '-'"),
    (".{date}", "starts with '.' or '-'"),
    ("{tag}", "is {tag} alone"),
    ("x" * 129, "renders too long"),
    ("x" * 119 + "{tag}", "renders too long"),
    ("{digest}" * 11, "renders too long"),
])
def test_every_broken_form_is_refused_naming_its_rule(template, rule):
    with pytest.raises(BackupTemplateError) as raised:
        parse_backup_template(template)
    assert rule in str(raised.value)


@pytest.mark.parametrize("template", ["{tag", "{nope}", "-{tag}", "{tag}"])
def test_a_broken_template_is_a_settings_problem_naming_the_setting_and_rule(template):
    settings = read_settings({"TARGET_REGISTRY": TARGET, "BACKUP_TAG_TEMPLATE": template})
    [problem] = settings.problems
    assert problem.setting == "BACKUP_TAG_TEMPLATE" and problem.needed_by == BACKUP
    assert problem.message.startswith("BACKUP_TAG_TEMPLATE ") and repr(template) in problem.message
    assert settings.backup_tag_template is None
    assert not settings.problems_for(IMPORTS), "NoForce imports go on; Force and IfChanged ones fail (worker)"


@pytest.mark.parametrize("value", [None, "", "   "])
def test_unset_or_empty_is_off(value):
    env = {"TARGET_REGISTRY": TARGET} | ({} if value is None else {"BACKUP_TAG_TEMPLATE": value})
    assert load_settings(env).backup_tag_template is None


def test_a_good_template_is_read():
    template = load_settings({"TARGET_REGISTRY": TARGET, "BACKUP_TAG_TEMPLATE": " {tag}-backup-{date} "})
    assert template.backup_tag_template is not None
    assert template.backup_tag_template.render("7", OLD, NOW) == "7-backup-20261202"


def test_a_long_tag_is_shortened_and_two_long_tags_keep_different_backups():
    first, second = "a" * 127 + "1", "a" * 127 + "2"
    one, two = render("{tag}-backup-{date}", first), render("{tag}-backup-{date}", second)
    assert len(one) == len(two) == 128 and is_tag(one) and is_tag(two) and one != two
    assert one.endswith("-backup-20261202") and one.startswith("a" * 100)


# --- properties: any accepted template, any tag, any digest, any time --------------------------------------

TAG_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
TAG_REST = TAG_FIRST + ".-"
tags = st.builds(lambda first, rest: first + rest, st.sampled_from(TAG_FIRST),
                 st.text(alphabet=TAG_REST, max_size=127))
digests = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"sha256:{h}")
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC))
pieces = st.one_of(st.sampled_from([f"{{{name}}}" for name in PLACEHOLDERS]),
                   st.text(alphabet=TAG_REST, min_size=1, max_size=40))
templates = st.lists(pieces, min_size=1, max_size=6).map("".join)
anything = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("{}:!.-_"), max_size=60)


@given(templates, tags, digests, moments)
def test_an_accepted_template_always_renders_a_valid_tag_other_than_the_moved_one(template, tag, old, now):
    try:
        parsed = parse_backup_template(template)
    except BackupTemplateError:
        return
    rendered = parsed.render(tag, old, now)
    assert is_tag(rendered), (template, tag, rendered)
    assert rendered != tag or parsed.tag_count == 0
    assert rendered == parsed.render(tag, old, now + timedelta(seconds=0)), "deterministic"


@given(anything)
def test_any_text_is_accepted_or_refused_with_a_rule_never_a_crash(text):
    try:
        parsed = parse_backup_template(text)
    except BackupTemplateError as err:
        assert str(err)
        return
    assert is_tag(parsed.render("latest", OLD, NOW))


@given(tags, digests, moments)
def test_the_documented_template_keeps_the_tag_whole_when_it_fits(tag, old, now):
    rendered = parse_backup_template("{tag}-backup-{date}").render(tag, old, now)
    if len(tag) + len("-backup-YYYYMMDD") <= 128:
        assert rendered == f"{tag}-backup-{now:%Y%m%d}"
    else:
        assert len(rendered) == 128 and rendered.endswith(f"-backup-{now:%Y%m%d}")
