"""Hostile upstream registries (dev/hostile_registry.py): every kind of malformed or malicious answer, through
the scheduled refresh, the IfChanged / NoForce digest comparison and the runner.

Cases come from `dev.hostile_registry.KINDS`, so a new kind is a new case everywhere. For every kind: nothing
raises, the call ends (a generous bound, never a tight timing), the healthy image of the same run is
enqueued, the hostile image gets exactly one problem (or a bounded backoff for 429s, or none for lies the
client must tolerate), the stored summary parses, and no credential reaches another host.
"""

from __future__ import annotations

import json
import time
import types
import uuid

import pytest

from dev import hostile_registry as hostile
from dev import layout

PASSWORD = "hostile-credential-set-password-5f1c"
SECRETS = (PASSWORD, hostile.REGISTRY_TOKEN, hostile.REFRESH_TOKEN)
CALL_SECONDS = 6.0      # the test client's deadline per call (the app's default is 20 s): the healthy reads must fit
LISTING_SECONDS = 8.0
BUDGET_SECONDS = 120.0  # the refresh's budget in these tests: generous, the healthy image must not be skipped
HEALTHY = "docker.io/library/hello-world:latest"


@pytest.fixture(scope="module")
def registry():
    with hostile.HostileRegistry() as served:
        yield served


@pytest.fixture
def recorder(registry):
    registry.reset()
    yield registry
    assert registry.credentials_received(SECRETS) == [], "a credential reached another host"


def hostile_env(registry: hostile.HostileRegistry, base: dict[str, str]) -> dict[str, str]:
    """Settings that make every hostile kind a registry the app may read, with a credential set of its own."""
    return {
        "ALLOWED_SOURCE_REGISTRIES": base["ALLOWED_SOURCE_REGISTRIES"] + f",*.{hostile.DOMAIN}",
        "REGISTRY_ENDPOINTS": base["REGISTRY_ENDPOINTS"] + "," + registry.endpoints_setting(),
        "SOURCE_CREDENTIALS__HOSTILE__USERNAME": "hostile",
        "SOURCE_CREDENTIALS__HOSTILE__PASSWORD": PASSWORD,
        "SOURCE_CREDENTIALS__HOSTILE__REGISTRIES": f"*.{hostile.DOMAIN}",
        "REFRESH_TIME_BUDGET_SECONDS": str(BUDGET_SECONDS),
    }


def hostile_entry(kind: hostile.Kind, prefix: str) -> dict:
    entry = {"source": f"{kind.host}/{hostile.REPOSITORY}", "targetPrefix": prefix}
    entry.update({"include": [".*"]} if kind.needs_listing else {"tags": [hostile.TAG]})
    if not kind.identity:
        entry["credential"] = "hostile"
    return entry


class Enqueued(list):
    """The refresh's queue side, recorded (the runner test below goes through the real queue)."""

    def enqueue(self, document: dict, *, delay_seconds: float = 0) -> str:
        self.append(document)
        return str(len(self))


@pytest.fixture
def world(app_env, registry, monkeypatch):
    from shared.azure.arm import make_credential
    from shared.core.settings import load_settings
    from shared.registry.client import IdentityAuth, LazyCredential, RegistryClient

    for name, value in hostile_env(registry, app_env).items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    client = RegistryClient(endpoints=settings.registry_endpoints, timeout=CALL_SECONDS,
                            listing_timeout=LISTING_SECONDS)
    identity = IdentityAuth(LazyCredential(lambda: make_credential(settings)))
    return types.SimpleNamespace(settings=settings, registries=client, identity=identity, env=app_env)


def printable(text: str) -> bool:
    return all(c.isprintable() for c in text)


@pytest.mark.parametrize("kind", hostile.KINDS, ids=lambda k: k.name)
def test_a_hostile_registry_costs_its_own_image_only(kind, world, recorder):
    from shared.refresh.run import RefreshLog, run_refresh

    prefix = f"hw{uuid.uuid4().hex[:8]}/"
    config = json.dumps({"images": [hostile_entry(kind, prefix),
                                    {"source": HEALTHY.rsplit(":", 1)[0], "tags": ["latest"], "targetPrefix": prefix}]})
    queues, log = Enqueued(), RefreshLog(world.env["IMPORT_STATUS_TABLE"])
    began = time.monotonic()
    result = run_refresh(world.settings, world.registries, world.identity, queues=queues, refresh_log=log,
                         config_text=config)
    assert time.monotonic() - began < BUDGET_SECONDS + 30
    summary = result.summary
    assert HEALTHY in [d["source"] for d in queues], summary.problems
    mine = [p for p in summary.problems if p.startswith("images[0]")]
    assert len(summary.problems) == len(mine), summary.problems  # the healthy image has none
    if kind.expect == "problem":
        assert len(mine) == 1, summary.problems
        assert kind.host in mine[0] or hostile.REPOSITORY in mine[0], mine
    elif kind.expect == "backoff":
        assert mine == [] and kind.host in summary.backoff_until, summary
        assert result.plan.backoff_until[kind.host] <= time.time() + 6 * 3600 + 60
    else:  # a lie the client tolerates: the image refreshes like any other
        assert mine == [] and f"{kind.host}/{hostile.REPOSITORY}:{hostile.TAG}" in [d["source"] for d in queues]
    assert all(printable(p) and len(p) < 1000 for p in summary.problems)
    stored = log.latest()
    assert stored["problems"] == summary.problems and stored["enqueued"] == len(queues)


@pytest.mark.parametrize("kind", [k for k in hostile.KINDS if not k.needs_listing], ids=lambda k: k.name)
def test_if_changed_and_no_force_comparisons_end_and_say_why(kind, world, recorder):
    """`unchanged_digest` (IfChanged before an import, NoForce after a tag conflict) reads the hostile
    source: it returns "not the same" with a note, so the import goes ahead and the ACR import decides."""
    from shared.core.request import parse_request
    from shared.imports.worker import unchanged_digest

    request = parse_request(json.dumps({
        "source": f"{kind.host}/{hostile.REPOSITORY}:{hostile.TAG}", "mode": "IfChanged",
        "targetTags": [f"hw-{uuid.uuid4().hex[:8]}:{hostile.TAG}"],
        **({} if kind.identity else {"credential": "hostile"})}), world.settings)
    assert not hasattr(request, "problems"), request
    began = time.monotonic()
    same, note = unchanged_digest(world, request)
    assert time.monotonic() - began < 3 * CALL_SECONDS + 30
    assert same is None
    if kind.expect == "problem":
        assert note.startswith(" (digests not compared: ") and printable(note) and len(note) < 600, note


def test_a_refresh_where_every_registry_stalls_ends_inside_its_budget(registry, recorder, app_env):
    """The budget is a promise about the whole run: with calls allowed longer than the budget itself and every
    upstream stalling on every read, the refresh returns soon after its budget, naming what it could not read."""
    from shared.core.settings import load_settings
    from shared.refresh.run import run_refresh
    from shared.registry.client import IdentityAuth, RegistryClient

    stalling = [hostile.KINDS_BY_NAME[n] for n in ("tags-stall", "tags-drip-headers", "tags-drip-body",
                                                     "head-stall", "head-drip-headers", "base-stall",
                                                     "token-stall", "token-drip", "tls-handshake-stall")]
    env = {**app_env, **hostile_env(registry, app_env), "REFRESH_TIME_BUDGET_SECONDS": "3",
           "REFRESH_CONCURRENCY": "4"}
    settings = load_settings(env)
    client = RegistryClient(endpoints=settings.registry_endpoints, timeout=60, listing_timeout=60)
    images = []
    for kind in stalling:
        entry = hostile_entry(kind, "stall/")
        if not kind.needs_listing:
            entry["tags"] = [f"t{i}" for i in range(20)]
        images.append(entry)
    began = time.monotonic()
    result = run_refresh(settings, client, IdentityAuth(None), config_text=json.dumps({"images": images}),
                         dry_run=True)
    assert time.monotonic() - began < 3 + 20  # generous: the point is that it ends, not how fast
    for index in range(len(stalling)):  # each image is named: an error, or its tags left for the next run
        label = f"images[{index}] "
        assert any(p.startswith(label) for p in result.summary.problems) or any(
            c.image.startswith(label) and c.status == "skipped" for c in result.plan.checks), (index, result)
    assert result.summary.enqueued == 0


def test_through_the_runner_several_hostile_registries_and_a_healthy_one_in_one_timer_run(
        registry, recorder, runner_factory, app_env, tmp_path):
    """The timer as the host runs it: the app's own client (default deadlines), the real queue and worker.
    The healthy image is imported; each hostile image leaves exactly one problem in the summary row."""
    from shared.azure.status import StatusStore
    from shared.refresh.run import RefreshLog

    kinds = [hostile.KINDS_BY_NAME[n] for n in ("tags-string", "tags-link-other-host", "head-digest-garbage",
                                                "head-redirect-other-host", "realm-other-host",
                                                "acr-realm-other-host", "token-header-injection",
                                                "tags-endless-pages", "tls-untrusted")]
    prefix = f"hr{uuid.uuid4().hex[:8]}/"
    path = tmp_path / "tracked.json"
    path.write_text(json.dumps({"images": [
        *[hostile_entry(k, prefix) for k in kinds],
        {"source": HEALTHY.rsplit(":", 1)[0], "tags": ["latest"], "targetPrefix": prefix}]}))
    runner = runner_factory(TRACKED_IMAGES=str(path), **hostile_env(registry, app_env))
    invocation = runner.trigger_timer("refresh_tracked_images")
    assert invocation.outcome == "ok", invocation.error
    assert runner.wait_idle(timeout=120)
    latest = RefreshLog(app_env["IMPORT_STATUS_TABLE"]).latest()
    for index, kind in enumerate(kinds):
        assert len([p for p in latest["problems"] if p.startswith(f"images[{index}] ")]) == 1, (kind.name, latest)
    assert latest["enqueued"] == 1 and latest["errors"] == len(kinds)
    records = StatusStore(app_env["IMPORT_STATUS_TABLE"]).list()
    assert [r.source for r in records] == [HEALTHY] and records[0].state == "succeeded"


@pytest.mark.parametrize("name", ["head-stall", "head-redirect-other-host", "acr-realm-other-host",
                                  "head-digest-garbage", "token-redirect"])
def test_if_changed_requests_through_the_runner_end_in_one_recorded_state(name, registry, recorder, runner_factory,
                                                                          app_env):
    from azure.storage.queue import QueueClient

    from shared.azure.status import StatusStore

    kind = hostile.KINDS_BY_NAME[name]
    runner = runner_factory(**hostile_env(registry, app_env))
    request_id = f"hostile-{uuid.uuid4().hex[:8]}"
    queue = QueueClient.from_connection_string(layout.AZURITE_CONNECTION_STRING, app_env["IMPORT_QUEUE"])
    queue.send_message(json.dumps({"id": request_id, "source": f"{kind.host}/{hostile.REPOSITORY}:{hostile.TAG}",
                                   "targetTags": [f"hw-{request_id}:{hostile.TAG}"], "mode": "IfChanged",
                                   **({} if kind.identity else {"credential": "hostile"})}))
    assert runner.wait_idle(timeout=180)
    record = StatusStore(app_env["IMPORT_STATUS_TABLE"]).get(request_id)
    assert record is not None and record.state.terminal, record
    assert printable(record.reason)


# --- the pieces, without a stack ---------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "expected"), [
    ("5", 5.0), (" 7 ", 7.0), ("1.5", 1.5), ("0", 0.0), ("-1", None), ("1e30", None), ("nan", None),
    ("inf", None), ("soon", None), ("", None), (None, None), ("9" * 5000, None), ("99999999999", 6 * 3600.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("Fri, 31 Dec 9999 23:59:59 GMT", 6 * 3600.0),
    ("Mon, 99 Foo 2020 99:99:99 GMT", None),
])
def test_retry_after_is_parsed_once_for_arm_and_registries_alike_and_bounded(value, expected):
    from azure.core.exceptions import HttpResponseError

    from shared.core.failures import parse_retry_after, retry_after_of

    assert parse_retry_after(value) == expected
    response = types.SimpleNamespace(headers={} if value is None else {"Retry-After": value})
    error = HttpResponseError(message="x")
    error.response = response
    assert retry_after_of(error) == expected


def test_an_http_date_retry_after_counts_from_now():
    from shared.core.failures import parse_retry_after

    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0


UNSAFE = [r"(a+)+$", r"(a*)*b", r"(a|a)*", r"(a|aa)+$", r"(.*a){12}", r"v(\d+\.)+\d+", r"((ab)*)+", r"(a)\1",
          r"(?=(a+)+b)", r"^(\w+\s?)*$", r"(x+x+)+y", r"(?:[a-z]+-?)*\d"]
SAFE = [r".*", r"1\.2[0-9]", r"(alpine|slim)?", r"\d+\.\d+\.\d+-.*", r"v(?:\d+\.)++\d+", r"(?>a+)b", r".*-alpine.*",
        r"x{1,5}(y+)?", r"((a|b)c)+", r"latest|stable", r"[0-9]+(\.[0-9]+){0,2}"]


@pytest.mark.parametrize("pattern", UNSAFE)
def test_patterns_that_backtrack_exponentially_are_refused_at_config_load(pattern):
    from shared.core.patterns import UnsafePattern, compile_pattern
    from shared.core.settings import load_settings
    from shared.refresh.tracked import parse_config
    from shared.replication.replicate import ReplicationConfigError, parse_rules

    with pytest.raises(UnsafePattern):
        compile_pattern(pattern)
    settings = load_settings({"TARGET_REGISTRY": layout.TARGET_ACR.resource_id,
                              "ALLOWED_TARGET_REGISTRIES": f"{layout.TARGET_ACR.resource_id},"
                                                           f"{layout.SOURCE_ACR.resource_id}"})
    config = parse_config(json.dumps({"images": [{"source": "nginx", "include": [pattern]}]}), settings)
    assert config.images == () and [p.field for p in config.problems] == ["images[0].include[0]"]
    assert "exponential" in config.problems[0].rule
    rules = {"rules": [{"source": layout.SOURCE_ACR.resource_id, "targets": [layout.TARGET_ACR.resource_id],
                        "tags": {"include": [pattern]}}]}
    with pytest.raises(ReplicationConfigError, match=r"rules\[0\]\.tags\.include\[0\].*exponential"):
        parse_rules(json.dumps(rules), settings)


@pytest.mark.parametrize("pattern", SAFE)
def test_ordinary_patterns_still_load(pattern):
    from shared.core.patterns import compile_pattern

    assert compile_pattern(pattern).pattern == pattern


def test_only_valid_tag_names_reach_the_patterns_and_the_rest_are_counted():
    from shared.core.patterns import valid_tags

    kept, dropped = valid_tags(["1.0", "a" * 128, "a" * 129, "bad tag", "", "-x", ".x", "_ok", "\u202e1", 7, None])
    assert kept == ["1.0", "a" * 128, "_ok"] and dropped == 8


def test_the_summary_row_stays_json_however_many_and_long_the_problems():
    from shared.refresh.run import MAX_SUMMARY_CHARS, RefreshSummary

    for problems in ([], ["x" * 100_000], [f"images[{i}]: " + "\u00e9" * 500 for i in range(5000)],
                     ['"}\\' * 20_000]):
        summary = RefreshSummary("2026-01-01T00:00:00.000000Z", 1, False, 0, 0, 0, 0, 0, len(problems), 0,
                                 {f"h{i}.example": i for i in range(50)}, {"docker.io": "2026-01-01T00:05:00Z"},
                                 problems)
        text = summary.as_text()
        document = json.loads(text)
        assert len(text) <= MAX_SUMMARY_CHARS and document["errors"] == len(problems)
        assert document["backoffUntil"] == {"docker.io": "2026-01-01T00:05:00Z"}
        assert len(document["problems"]) + document.get("problemsOmitted", 0) == len(problems)


@pytest.mark.parametrize("summary", ['{"problems": [', "[]", "null", '"x"', "[" * 30_000, None, 7])
def test_a_latest_row_that_does_not_parse_is_ignored(summary, app_env, caplog):
    from shared.refresh.run import RefreshLog

    log = RefreshLog(app_env["IMPORT_STATUS_TABLE"])
    entity = {"PartitionKey": "refresh", "RowKey": "latest"}
    if summary is not None:
        entity["Summary"] = summary
    log._client().upsert_entity(entity)
    assert log.latest() is None and log.backoff_until() == {}
    assert "does not parse" in caplog.text


@pytest.mark.parametrize("backoff", [[], "x", {"a.example": 5}, {"a.example": "tomorrow"}, {"a.example": None},
                                     {"a.example": "9999-12-31T23:59:59Z"}])
def test_backoff_entries_of_the_wrong_type_are_ignored_and_none_lasts_beyond_the_bound(backoff, app_env):
    from shared.core.failures import MAX_RETRY_AFTER_SECONDS
    from shared.refresh.run import RefreshLog

    log = RefreshLog(app_env["IMPORT_STATUS_TABLE"])
    log._client().upsert_entity({"PartitionKey": "refresh", "RowKey": "latest",
                                 "Summary": json.dumps({"backoffUntil": backoff})})
    found = log.backoff_until(now=1000.0)
    assert all(until <= 1000.0 + MAX_RETRY_AFTER_SECONDS for until in found.values())
    if not (isinstance(backoff, dict) and str(backoff.get("a.example", "")).startswith("9999")):
        assert found == {}


def test_an_image_with_thousands_of_tags_does_not_starve_the_others():
    """Tags are read round robin over the images (so a registry listing 50,000 tags uses up at most its share
    of the time budget before the other images are read), and reported in configuration order."""
    from shared.core.settings import load_settings
    from shared.refresh.run import plan_refresh
    from shared.refresh.tracked import parse_config
    from shared.registry.client import IdentityAuth, ManifestHead

    class Reader:
        def __init__(self) -> None:
            self.read: list[str] = []

        def head_manifest(self, host, repository, reference, auth=None):
            if host != layout.TARGET_ACR.login_server:
                self.read.append(f"{repository}:{reference}")
            return ManifestHead("sha256:" + "a" * 64, "application/vnd.oci.image.index.v1+json", 1)

        def list_tags(self, host, repository, auth=None):
            return [f"t{i}" for i in range(2000)] if repository == "big/app" else []

        def rate_limit(self, host):
            return None

    settings = load_settings({"TARGET_REGISTRY": layout.TARGET_ACR.resource_id, "REFRESH_CONCURRENCY": "1",
                              "ALLOWED_SOURCE_REGISTRIES": "registry.contoso.com,mcr.microsoft.com",
                              "REFERRERS": "none"})  # the order of the tag reads only
    config = parse_config(json.dumps({"images": [{"source": "registry.contoso.com/big/app", "include": [".*"]},
                                                 {"source": "mcr.microsoft.com/small/app", "tags": ["1"]}]}),
                          settings)
    reader = Reader()
    plan = plan_refresh(list(config.images), reader, settings, IdentityAuth(None))
    assert "small/app:1" in reader.read[:2]
    assert [c.source.rsplit(":", 1)[1] for c in plan.checks][:3] == ["t0", "t1", "t2"]
    assert plan.checks[-1].source == "mcr.microsoft.com/small/app:1"


@pytest.mark.parametrize(("registry", "realm", "allowed"), [
    ("registry-1.docker.io", "auth.docker.io", True), ("ghcr.io", "ghcr.io", True),
    ("registry.gitlab.com", "gitlab.com", True), ("127.0.0.1", "127.0.0.1", True),
    ("127.0.0.1", "localhost", False), ("registry.contoso.com", "evil.example", False),
    ("cafe", "cafe", True), ("registry.contoso.com", "contoso.com.evil.example", False),
    ("[::1]", "::1", False), ("10.0.0.5", "10.0.0.6", False),
])
def test_a_credential_set_goes_only_to_a_realm_on_the_registrys_site(registry, realm, allowed):
    from shared.registry.client import same_site

    assert same_site(registry, realm) is allowed


@pytest.mark.parametrize(("text", "count"), [("12", True), ("0", True), ("²", False), ("٣", False), ("５", False),
                                             ("", False), ("1 2", False), ("-1", False)])
def test_only_ascii_digits_are_a_count_in_a_header(text, count):
    from shared.core.failures import ascii_count

    assert ascii_count(text) is count
