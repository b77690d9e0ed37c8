"""Shared fixtures: the local stack (started once per session, in its own state folder) and the app's env.

The stack is real: docker-registry processes over TLS, the Azure stand-in (ARM, managed identity, ACR),
Azurite. Tests that need none of it (pure parsing) never touch these fixtures.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import shlex
import shutil
import socket
import sys
import tempfile
import uuid

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

# Property tests must not depend on how fast the machine is: on a busy CI machine hypothesis' "input
# generation is slow" health check and its per-example deadline failed `make test` by chance. One profile for
# every property test, loaded before any test module builds its own `settings` (they inherit from it):
# no timing checks anywhere; in CI also derandomized and without the example database, so a run is
# reproducible (set HYPOTHESIS_PROFILE=dev to explore with fresh randomness).
TIMING_HEALTH_CHECKS = (HealthCheck.too_slow,)
hypothesis_settings.register_profile("dev", deadline=None, suppress_health_check=TIMING_HEALTH_CHECKS,
                                     print_blob=True)
hypothesis_settings.register_profile("ci", hypothesis_settings.get_profile("dev"), derandomize=True,
                                     database=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


def _free_port_offset() -> int:
    """A port offset (see dev/layout.py) whose ports nobody listens on, so test sessions never collide."""
    candidates = list(range(100, 4100, 100))
    random.shuffle(candidates)
    for offset in candidates:
        try:
            for base in (5001, 5011, 7071, 9080, 9443, 9444, 9445, 10000, 10001, 10002, 10010, 10011, 10012):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return offset
    return 0


# The test session gets its own stack folder and ports, so neither a developer's `make stack-up` nor
# another test session interferes. Set here, before any test module imports dev.layout (read once).
_OWN_STACK_DIR = "ACR_IMPORTER_STACK_DIR" not in os.environ
os.environ.setdefault("ACR_IMPORTER_STACK_DIR", tempfile.mkdtemp(prefix="acr-importer-test-stack-"))
os.environ.setdefault("ACR_IMPORTER_PORT_OFFSET", str(_free_port_offset()))


# --- the two tiers: `make test` runs everything, `make test-fast` (-m "not stack") what needs no stack --------
# A test that needs the local stack (Azurite, the registries, the stand-in, the runner on Azurite, az, skopeo,
# make) is marked `stack`. Tests using one of these fixtures, directly or through other fixtures, are marked
# here, so a new stack test cannot forget it; `stack_part` is for a module's own fixture that starts a part of
# the stack by itself (some registries, Azurite alone). A test that starts the stack some other way is marked
# by hand, and if it is not, the guard below fails it, in either tier.
STACK_FIXTURES = frozenset({"stack", "stack_part", "control", "app_env", "runner_factory", "front", "api"})
# Programs only the stack runs (node: Azurite), and the modules that start it or a service of it.
STACK_PROGRAMS = frozenset({"docker-registry", "node", "skopeo", "az", "make", "func"})
STACK_MODULES = frozenset({"dev.stack", "dev.run", "dev.demo", "dev.seed", "dev.soak", "dev.runner", "dev.azurite",
                           "dev.azure_standin", "dev.hub_front", "dev.dockerhub_token", "benchmarks"})
UNMARKED = "{what} in a test not marked stack: mark it @pytest.mark.stack (make test-fast leaves those out)"
_current: dict[str, pytest.Item | None] = {"item": None}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


def _unmarked_test() -> pytest.Item | None:
    item = _current["item"]
    return item if item is not None and item.get_closest_marker("stack") is None else None


def _stack_command(args) -> str | None:
    """What `args` (a Popen argv) starts when it is part of the stack, else None."""
    argv = shlex.split(args) if isinstance(args, str) else [os.fsdecode(a) for a in args]
    if not argv:
        return None
    if os.path.basename(argv[0]) in STACK_PROGRAMS:
        return os.path.basename(argv[0])
    module = next((b for a, b in itertools.pairwise(argv) if a == "-m"), "")
    return f"python -m {module}" if module in STACK_MODULES else None


def _refuse_stack_processes(event: str, args: tuple) -> None:
    """An audit hook: a test not marked stack may not start a part of the stack (sys.audit "subprocess.Popen"
    fires before the fork, and what it raises reaches the caller)."""
    if event == "subprocess.Popen" and _unmarked_test() is not None:
        what = _stack_command(args[1])
        if what:
            raise RuntimeError(UNMARKED.format(what=f"starting {what!r}"))


sys.addaudithook(_refuse_stack_processes)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _current["item"] = item
    try:
        yield
    finally:
        _current["item"] = None


def pytest_sessionfinish(session, exitstatus):
    if _OWN_STACK_DIR:
        shutil.rmtree(os.environ["ACR_IMPORTER_STACK_DIR"], ignore_errors=True)


class Seeded(list):
    """What the seeding pushed, with a look-up by reference."""

    def find(self, registry: str, repo: str, tag: str):
        return next(s for s in self if (s.registry, s.repo, s.tag) == (registry, repo, tag))

    def digest(self, registry: str, repo: str, tag: str) -> str:
        return self.find(registry, repo, tag).digest


@pytest.fixture(scope="session")
def stack_part():
    """Requested by a module's fixture that starts a part of the stack itself, so its tests are marked stack."""
    _refuse_unmarked("the stack_part fixture")


def _refuse_unmarked(what: str) -> None:
    """Fail a test not marked stack that reaches the stack anyway (request.getfixturevalue is not seen at
    collection)."""
    if _unmarked_test() is not None:
        pytest.fail(UNMARKED.format(what=what), pytrace=False)


@pytest.fixture(scope="session")
def stack():
    """The whole local stack, up and seeded with the seed document's images."""
    _refuse_unmarked("the stack fixture")
    from dev import seed
    from dev import stack as local_stack

    started = local_stack.up()
    try:
        yield Seeded(seed.seed_world())
    finally:
        if started:
            local_stack.down(started)


@pytest.fixture(scope="session")
def az(stack, tmp_path_factory):
    """The real Azure CLI (`.venv-az`, `make az-cli`), logged in with the stack's managed-identity endpoint to a
    custom cloud whose Resource Manager is the stand-in. `proxied=True` sends it through the stack's CONNECT
    proxy, which maps `<acr>.azurecr.io:443` to that ACR's login server (the data-plane commands)."""
    import subprocess

    from dev import layout

    cli = layout.REPO_ROOT / ".venv-az" / "bin" / "az"
    if not cli.exists():
        pytest.fail(f"the Azure CLI is not installed at {cli}: run `make az-cli`")
    config = tmp_path_factory.mktemp("az-config")
    env = {**os.environ, **layout.stack_env(), "AZURE_CONFIG_DIR": str(config), "AZURE_CORE_COLLECT_TELEMETRY": "no",
           "AZURE_CORE_ONLY_SHOW_ERRORS": "true"}
    env.pop("AZURE_CLIENT_ID", None)

    def run(*args: str, check: bool = True, proxied: bool = False) -> subprocess.CompletedProcess:
        extra = {"HTTPS_PROXY": layout.ACR_DNS_PROXY, "NO_PROXY": "127.0.0.1,localhost"} if proxied else {}
        done = subprocess.run([str(cli), *args], env={**env, **extra}, capture_output=True, text=True, timeout=180)
        if check and done.returncode != 0:
            raise AssertionError(f"az {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
        return done

    run("cloud", "register", "-n", "LocalStack", "--endpoint-resource-manager", f"{layout.ARM_ENDPOINT}/",
        "--endpoint-active-directory", layout.AAD_ENDPOINT,
        "--endpoint-active-directory-resource-id", layout.ARM_RESOURCE,
        "--suffix-acr-login-server-endpoint", ".azurecr.io")
    run("cloud", "set", "-n", "LocalStack")
    run("login", "--identity")
    run("account", "set", "-s", layout.SUB_A)
    return run


@pytest.fixture
def control(stack):
    from dev.azure_standin.control import StandinControl

    client = StandinControl()
    client.reset()
    yield client
    client.reset()


TEST_SETTINGS = {  # fast retries, so retry paths run in seconds
    "IMPORT_RETRY_BASE_SECONDS": "0.5",
    "IMPORT_RETRY_MAX_SECONDS": "2",
}


@pytest.fixture
def app_env(stack, monkeypatch):
    """The app's settings pointed at the stack, with a fresh queue and status table per test."""
    from dev.app_settings import create_app_queues, local_app_settings
    from shared import app_context

    suffix = uuid.uuid4().hex[:10]
    values = {**local_app_settings(queue=f"imports-{suffix}", table=f"status{suffix}"), **TEST_SETTINGS}
    create_app_queues(values["IMPORT_QUEUE"])  # as the deployment does: the host waits for a trigger's queue
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    app_context.reset()
    yield values
    app_context.reset()


@pytest.fixture
def runner_factory(app_env, monkeypatch):
    """Start the local runner on the app (as the host would), with extra settings; stopped after the test."""
    from dev.runner import Runner
    from shared import app_context

    running = []

    def start(*, http_port: int | None = 0, **settings: str):
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        app_context.reset()
        runner = Runner("function_app", env={**app_env, **settings}, http_port=http_port).start()
        running.append(runner)
        return runner

    yield start
    for runner in running:
        runner.stop()
    app_context.reset()


@pytest.fixture
def front(stack):
    """The Docker Hub front's control (rate limits, 429s, request counts), reset around the test."""
    from dev import hub_front

    control = hub_front.FrontControl()
    control.reset()
    yield control
    control.reset()


class _LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def every_log_line():
    """Every log line any logger writes during the test, formatted (for scans for secrets)."""
    handler = _LogLines()
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.fixture
def otel():
    """Telemetry on, into memory: tests read the spans and metrics, and the hostile suites scan every span's
    attributes for secrets."""
    from shared.azure import telemetry
    from tests.azure.test_telemetry import Telemetry

    recorded = Telemetry()
    telemetry.enable(tracer_provider=recorded.tracer_provider, meter_provider=recorded.meter_provider)
    yield recorded
    telemetry.disable()


FUNCTION_KEY = "test-function-key-" + uuid.uuid4().hex


@pytest.fixture
def api(app_env, monkeypatch):
    """The HTTP API through the runner's real HTTP server (function key FUNCTION_KEY); yields its base URL."""
    from dev import layout
    from dev.runner import Runner
    from shared import app_context

    monkeypatch.setenv("RUNNER_FUNCTION_KEY", FUNCTION_KEY)
    app_context.reset()
    with Runner("function_app", env={**app_env, "RUNNER_FUNCTION_KEY": FUNCTION_KEY}, http_port=0) as running:
        yield f"http://{layout.HOST}:{running.http_port}/api"
    app_context.reset()
