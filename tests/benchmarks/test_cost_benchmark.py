"""The cost benchmark (benchmarks/cost.py) on a handful of requests: it runs through the queue and the runner,
and what it counts is what one import does (no timing claims: counts only)."""

from __future__ import annotations

from benchmarks import cost


def test_cost_benchmark_counts_the_round_trips_of_each_import(app_env, control):
    counted, profiled, sequence = cost.run_cost(app_env, control, 5, profile_count=3)

    assert counted.succeeded == 5, counted.states
    # every import reads or creates its status row and writes its end; ARM: the POST and at least one look
    assert counted.per_import("table") >= 2
    posts = [r for r in counted.arm_recorded if r["method"] == "POST"]
    assert len(posts) == 5
    assert counted.count("arm") == len(counted.arm_recorded)  # counted in the worker = recorded by ARM
    assert counted.cpu_seconds > 0 and counted.seconds > 0
    kinds = [c.kind for c in sequence]
    assert kinds[0] == "queue" and kinds[-1] == "queue"  # received, then deleted
    assert kinds.index("table") < kinds.index("arm")     # the row is claimed before ARM is asked
    assert profiled is not None and profiled.succeeded == 3 and profiled.stats is not None
    # CPU by thread: the Python worker's invocation threads apart from the runner's queue work
    assert counted.threads.get("worker", 0) > 0 and counted.runner_ms_per_request > 0, counted.threads
    assert counted.worker_ms_per_request < 1000 * counted.cpu_seconds / counted.requests
    text = " ".join(cost.markdown(counted, profiled, sequence).split())  # prose is wrapped
    assert "status-table calls" in text and "the Python worker's own: its invocation threads" in text
    assert "the runner's queue work" in text
