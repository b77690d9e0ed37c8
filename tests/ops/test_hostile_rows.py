"""Rows the operator endpoints read but did not write: status, dead-letter, refresh and replication rows with
columns of the wrong type, garbage JSON, unknown states, odd keys, written straight into Azurite with
azure-data-tables as an older version, another producer or a hand edit could leave them.

One bad row never turns an endpoint into a 500: the answer holds what reads and names what it left out
(`skipped`, or a row's `unreadable` columns). The functions are called as the host calls them (`call`), the
list also through GET /api/imports, which answers the same.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import EdmType, EntityProperty, TableServiceClient

from shared.azure.status import DEAD_LETTER_PARTITION, REPLICATION_PARTITION
from shared.core.outcome import State
from shared.replication.journal import row_key
from tests.ops.test_ops_api import XSS, body_of, call, row, store

NOW = datetime.now(UTC)
DEEP = "[" * 5000  # JSON nested deeper than Python's json reads (RecursionError, not ValueError)


def table(app_env):
    service = TableServiceClient.from_connection_string(app_env["AzureWebJobsStorage"])
    return service.create_table_if_not_exists(app_env["IMPORT_STATUS_TABLE"])


def int64(value: int) -> EntityProperty:
    """A number as another writer may store it: Edm.Int64, which the SDK hands back as an EntityProperty."""
    return EntityProperty(value, EdmType.INT64)


def status_row(request_id: str, **columns) -> dict:
    """A status entity as the app writes it, with `columns` replaced (None: the column left out)."""
    entity = {**row(request_id, State.FAILED, NOW).to_entity(), **columns}
    return {k: v for k, v in entity.items() if v is not None}


# (column, stored value): each a row that still reads, the column named in `unreadable` and shown empty
BAD_COLUMNS = [
    ("Transitions", "not json"), ("Transitions", "{}"), ("Transitions", '[1, null, "x", {"state": 5}]'),
    ("Transitions", DEEP), ("Transitions", 5), ("TargetTags", '"a:1"'), ("TargetTags", '{"a": 1}'),
    ("TargetTags", "[1, 2]"), ("TargetTags", 7), ("UntaggedTargetRepositories", "nope"), ("BackupTags", DEEP),
    ("Platforms", "three"), ("Platforms", 2.5), ("Platforms", True), ("Attempts", "x"), ("Checks", 1.5),
    ("Reason", 123), ("Source", 4.5), ("UpdatedAt", 17), ("Mode", False),
]


def test_a_column_of_the_wrong_type_is_shown_empty_and_named_never_a_500(app_env):
    rows = table(app_env)
    for i, (column, value) in enumerate(BAD_COLUMNS):
        rows.upsert_entity(status_row(f"bad-{i:02}", **{column: value}))
    rows.upsert_entity(status_row("huge-attempts", Attempts=int64(2**62), Platforms=int64(2**40),
                                  Checks=int64(2**33)))
    rows.upsert_entity(status_row("missing-columns", Source=None, Transitions=None, Attempts=None, Platforms=None))
    items = {item["id"]: item for item in body_of(call("ops_list_imports", "limit=100"))["items"]}
    assert body_of(call("list_imports", "limit=100"))["items"] == list(items.values())
    for i, (column, _) in enumerate(BAD_COLUMNS):
        item = items[f"bad-{i:02}"]
        assert item["unreadable"] == [column], (column, item)
        detail = body_of(call("ops_import_detail", route_params={"id": f"bad-{i:02}"}))
        assert detail["unreadable"] == [column] and detail["deadLetter"] is None
    assert items["bad-04"]["transitions"] == [] and items["bad-02"]["transitions"] == []
    assert items["bad-12"]["platforms"] is None and items["bad-14"]["attempts"] == 0
    huge = items["huge-attempts"]
    assert (huge["attempts"], huge["platforms"], huge["checks"], huge["unreadable"]) == (2**62, 2**40, 2**33, [])
    assert items["missing-columns"]["unreadable"] == [] and items["missing-columns"]["source"] == ""
    assert body_of(call("ops_health"))["scanned"] >= len(BAD_COLUMNS)


@pytest.mark.parametrize("state", ["bogus", "", "Failed", 5, None])
def test_a_row_in_a_state_the_app_does_not_know_is_skipped_and_said(app_env, state):
    rows = table(app_env)
    rows.upsert_entity(status_row("a-good-one"))
    rows.upsert_entity(status_row("b-unknown", State=state))
    rows.upsert_entity(status_row("c-good-too"))
    answer = body_of(call("ops_list_imports"))
    assert [i["id"] for i in answer["items"]] == ["a-good-one", "c-good-too"]
    [skipped] = answer["skipped"]
    assert skipped["id"] == "b-unknown" and "State" in skipped["reason"]
    assert body_of(call("list_imports")) == answer
    detail = call("ops_import_detail", route_params={"id": "b-unknown"})
    assert detail.status_code == 409, detail.get_body()
    assert [e["field"] for e in json.loads(detail.get_body())["errors"]] == ["State"]
    assert call("import_status", route_params={"id": "b-unknown"}).status_code == 409
    health = body_of(call("ops_health"))
    assert (health["scanned"], health["skipped"]) == (3, 1)


def test_odd_row_keys_are_listed_and_the_text_filter_still_reads_them(app_env):
    rows = table(app_env)
    keys = ["quote's \"double\"", "<img src=x onerror=markup(1)>", "\u202eright-to-left\u202c", "ünï 字", "x" * 500]
    for key in keys:
        rows.upsert_entity(status_row(key, Reason=XSS))
    answer = body_of(call("ops_list_imports", "limit=200"))
    assert sorted(i["id"] for i in answer["items"]) == sorted(keys) and answer["skipped"] == []
    assert len(body_of(call("ops_list_imports", "q=markup"))["items"]) == 1
    not_an_id = call("ops_import_detail", route_params={"id": "<img src=x onerror=markup(1)>"})
    assert not_an_id.status_code == 400


@pytest.mark.parametrize(("letter", "shown", "unreadable"), [
    (5, None, ["Letter"]), ("not json", None, ["Letter"]), ("[]", None, ["Letter"]), (DEEP, None, ["Letter"]),
    (json.dumps({"id": 5, "attempts": "x", "reason": {"a": 1}, "body": 5, "bodyTruncated": "yes"}), 5,
     ["id", "reason", "attempts", "bodyTruncated"]),
    (json.dumps({"attempts": True, "state": XSS, "body": [XSS]}), [XSS], ["attempts"]),
])
def test_a_dead_letter_copy_that_does_not_read_is_named_not_a_500(app_env, letter, shown, unreadable):
    store().create(row("lettered", State.FAILED, NOW))
    table(app_env).upsert_entity({"PartitionKey": DEAD_LETTER_PARTITION, "RowKey": "lettered", "Letter": letter})
    detail = body_of(call("ops_import_detail", route_params={"id": "lettered"}))
    assert detail["deadLetter"]["unreadable"] == unreadable
    assert detail["deadLetter"]["body"] == shown


def test_refresh_rows_of_the_wrong_shape_are_skipped_or_read_as_null(app_env):
    rows = table(app_env)
    stamp = [(NOW - timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%S.%fZ") for m in range(6)]
    bad = {stamp[0]: 5, stamp[1]: "not json", stamp[2]: "[1, 2]", stamp[3]: DEEP}
    for at, summary in bad.items():
        rows.upsert_entity({"PartitionKey": "refresh", "RowKey": f"run-{at}", "Summary": summary})
    wrong = {"startedAt": {"a": 1}, "durationMs": "long", "dryRun": "yes", "checked": [1], "changed": None,
             "errors": 1.5, "problems": "one problem", "problemsOmitted": "many"}
    rows.upsert_entity({"PartitionKey": "refresh", "RowKey": f"run-{stamp[4]}", "Summary": json.dumps(wrong)})
    rows.upsert_entity({"PartitionKey": "refresh", "RowKey": f"run-{stamp[5]}",
                        "Summary": json.dumps({"problems": [{"x": XSS}, None, 5], "checked": 2})})
    latest = {"startedAt": 5, "rateLimitRemaining": [1, 2], "backoffUntil": {"quay.io": 5, "ghcr.io": None,
                                                                              "x": "9999-99-99"}}
    rows.upsert_entity({"PartitionKey": "refresh", "RowKey": "latest", "Summary": json.dumps(latest)})
    answer = body_of(call("ops_refresh"))
    assert [s["row"] for s in answer["skipped"]] == [f"run-{at}" for at in bad]
    first, second = answer["runs"]
    assert first["startedAt"] is None and first["durationMs"] is None and first["dryRun"] is None
    assert first["checked"] is None and first["errors"] is None and first["problems"] == []
    assert second["problems"] == [str({"x": XSS}), "None", "5"] and second["checked"] == 2
    assert (answer["lastRunAt"], answer["rateLimits"], answer["backoff"]) == (None, [], [])
    rows.upsert_entity({"PartitionKey": "refresh", "RowKey": "latest", "Summary": 7})
    assert body_of(call("ops_refresh"))["lastRunAt"] is None


def test_replication_rows_of_the_wrong_shape_are_shown_with_what_reads(app_env):
    rows = table(app_env)
    garbage = [{"Outcome": 5, "Imports": "{}", "ImportsOmitted": "x", "Reason": None, "Id": 7},
               {"Outcome": "exploded", "Imports": DEEP, "Repository": XSS, "Tag": "\u202e" + "t" * 600},
               {"Outcome": "planned", "Imports": '["evt-1", 5, null]', "ImportsOmitted": int64(2**40)}]
    for i, columns in enumerate(garbage):
        rows.upsert_entity({"PartitionKey": REPLICATION_PARTITION, "RowKey": row_key(NOW - timedelta(seconds=i),
                                                                                      str(i)), **columns})
    rows.upsert_entity({"PartitionKey": REPLICATION_PARTITION, "RowKey": "odd key ' <x>", "Outcome": "ignored"})
    answer = body_of(call("ops_replication"))
    assert answer["counts"]["received"] == 3 and answer["counts"]["planned"] == 1
    events = answer["events"]
    assert [sorted(e["unreadable"]) for e in events[:3]] == [["Id", "Imports", "ImportsOmitted", "Outcome"],
                                                              ["Imports", "Outcome"], ["Imports"]]
    assert events[1]["repository"] == XSS and events[2]["imports"] == ["evt-1"]
    assert events[2]["importsOmitted"] == 2**40 and events[3]["outcome"] == "ignored"


def test_the_cli_names_an_unreadable_row_and_lists_the_rest(app_env):
    from tests.cli.test_cli_mistakes import cli, one_line_error

    rows = table(app_env)
    rows.upsert_entity(status_row("cli-good", Transitions="not json"))
    rows.upsert_entity(status_row("cli-unknown", State="bogus"))
    shown = cli("status", "cli-unknown")
    assert shown.returncode == 2 and "State 'bogus' is not a state the app knows" in one_line_error(shown)
    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == ["cli-good"]
    assert json.loads(cli("status", "cli-good", "--json").stdout)["unreadable"] == ["Transitions"]
