"""How long any one call the app makes may take, and why an invocation therefore ends inside functionTimeout.

When an invocation outlives host.json's `functionTimeout`, the host fails it and restarts the Python worker
process (azure-functions-host `WebScriptHostExceptionHandler.OnTimeoutExceptionAsync`), which ends every
other invocation in flight on that worker as well. The app must never need that: every call it makes has a
deadline of its own, and the worst case of one invocation (the calls it can make, each at its deadline, plus
its own wait budgets) stays below the function timeout. The SDKs' defaults would not: azure-core waits 300 s
to connect and 300 s for each read, and the storage SDKs retry 3 (queues) to 10 (tables) times.

`tests/runner/test_runner_fidelity.py` sums the worst cases below for the configured values (host.json, the
template's app settings) and checks they stay below `functionTimeout` with room to spare.
"""

from __future__ import annotations

from typing import Any

FUNCTION_TIMEOUT_SECONDS = 600.0  # host.json functionTimeout (a test keeps the two equal)

CONNECT_TIMEOUT_SECONDS = 3.0     # every Azure SDK client: connecting
READ_TIMEOUT_SECONDS = 5.0        # storage: each socket read (Azure Storage answers in milliseconds)
ARM_READ_TIMEOUT_SECONDS = 30.0   # ARM: each socket read (an importImage POST is answered at once with 202)
STORAGE_RETRIES = 1               # one quick retry inside a call; anything longer goes back to the queue
STORAGE_BACKOFF_MAX_SECONDS = 4.0  # the longest sleep before that retry (queues: 1 + 2**1 ± 1; tables: ≤ 4)


def arm_client_options() -> dict[str, Any]:
    """For `ContainerRegistryManagementClient` (which the app also builds with `retry_total=0`)."""
    return {"connection_timeout": CONNECT_TIMEOUT_SECONDS, "read_timeout": ARM_READ_TIMEOUT_SECONDS}


def identity_options() -> dict[str, Any]:
    """For `ManagedIdentityCredential`: the token request of a cold start is a call like any other."""
    return {"connection_timeout": CONNECT_TIMEOUT_SECONDS, "read_timeout": READ_TIMEOUT_SECONDS}


def storage_client_options(kind: str) -> dict[str, Any]:
    """For the queue ("queue", azure-storage-queue's `ExponentialRetry`) or table ("table", azure-data-tables'
    `TablesRetryPolicy`, an azure-core `RetryPolicy`) service clients."""
    common = {"connection_timeout": CONNECT_TIMEOUT_SECONDS, "read_timeout": READ_TIMEOUT_SECONDS,
              "retry_total": STORAGE_RETRIES}
    if kind == "queue":
        return {**common, "initial_backoff": 1, "increment_base": 2, "random_jitter_range": 1}
    return {**common, "retry_backoff_factor": 1.0, "retry_backoff_max": STORAGE_BACKOFF_MAX_SECONDS}


# --- worst cases -----------------------------------------------------------------------------------------

ATTEMPT_SECONDS = CONNECT_TIMEOUT_SECONDS + READ_TIMEOUT_SECONDS
STORAGE_CALL_SECONDS = (1 + STORAGE_RETRIES) * ATTEMPT_SECONDS + STORAGE_BACKOFF_MAX_SECONDS
ARM_CALL_SECONDS = CONNECT_TIMEOUT_SECONDS + ARM_READ_TIMEOUT_SECONDS  # no retries
TOKEN_SECONDS = ATTEMPT_SECONDS  # azure-identity retries token requests on its own; counted as calls below

# The storage calls one import invocation can make, from shared/imports/worker.py: refusing for bad settings (row
# read, row write, dead letter: 3), the claim (MAX_CLAIM_ROUNDS rounds of a read and a conditional write: 10),
# and the end (hand-over or retry: row write, send, pin: 3; or finish: row write and dead letter: 2).
IMPORT_STORAGE_CALLS = 3 + 10 + 3
# ARM: two tokens (management and storage), the registry listing (one page), the importImage POST, and one
# operation GET started just before the wait budget ran out.
IMPORT_ARM_CALLS = 5
# Registry reads: `unchanged_digest` compares the source with each target (one target; two reads), at most
# once per invocation; each read ends by the registry client's per-call `timeout`.
IMPORT_REGISTRY_CALLS = 2


# After the image is in, its referrers (shared/imports/referrers.py) are optional work: their registry reads and
# ARM calls run only while each can still end by `referrers_deadline`, which leaves the invocation's end (its
# row write and a dead letter or a send) and the margin inside the function timeout. In the worst case above
# little or nothing is left, and the referrers not imported are reported missing (a warning, or a retry of a
# request that requires them), never a timeout.
FINISH_STORAGE_CALLS = 2
INVOCATION_MARGIN_SECONDS = 30.0


def referrers_deadline(started: float) -> float:
    """The monotonic time by which an import invocation that began at `started` ends its referrers' work."""
    return (started + FUNCTION_TIMEOUT_SECONDS - INVOCATION_MARGIN_SECONDS
            - FINISH_STORAGE_CALLS * STORAGE_CALL_SECONDS)


def import_invocation_seconds(import_wait_seconds: float, registry_call_seconds: float) -> float:
    """The longest one `import_image` invocation can run: its calls at their deadlines plus its wait."""
    return (IMPORT_STORAGE_CALLS * STORAGE_CALL_SECONDS + IMPORT_ARM_CALLS * ARM_CALL_SECONDS
            + IMPORT_REGISTRY_CALLS * registry_call_seconds + import_wait_seconds)


# The refresh reads the tracked list (config_source: one read with its own total deadline), spends at most
# its time budget on registry reads (every read is cut at the budget's end by `deadline_scope`), then opens a
# status row and sends a message per import it found (`claims.queue_once`: a row write, a send, and a read
# and a write when another run raced it) and records its summary (one write). However many imports it found,
# it sends none once `REFRESH_TAIL_SECONDS` before the function timeout: those are found again next run.
QUEUE_ONCE_STORAGE_CALLS = 4
REFRESH_TAIL_SECONDS = (QUEUE_ONCE_STORAGE_CALLS + 1) * STORAGE_CALL_SECONDS + 30.0  # one send, the summary, slack


def refresh_enqueue_stop_seconds() -> float:
    """Seconds after a refresh started when it stops sending import requests."""
    return FUNCTION_TIMEOUT_SECONDS - REFRESH_TAIL_SECONDS


def refresh_plan_seconds(time_budget_seconds: float, config_read_seconds: float) -> float:
    """The longest a refresh can take before its first send: a token, the tracked list, the planning budget."""
    return TOKEN_SECONDS + config_read_seconds + time_budget_seconds
