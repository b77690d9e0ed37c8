"""The scale-out benchmark (benchmarks/scaleout.py) on a small bulk: 40 requests through two runner processes
against tiny ARM buckets. Nothing is lost, every request ends in exactly one terminal state, and the report
says what the benchmark claims (counts only, no timing)."""

from __future__ import annotations

from benchmarks import scaleout

TERMINAL = {"succeeded", "failed", "rejected", "skipped"}


def test_a_bulk_through_two_instances_ends_every_request_once_and_reports_arms_answers(app_env, control, tmp_path):
    profile = scaleout.Profile(requests=40, runners=2, bucket_scale=0.02, copy_seconds=(0.2, 0.6), timeout=300)
    assert profile.limits == {"reads": (5.0, 25.0), "writes": (4.0, 10.0)}  # tiny buckets, ARM's refills

    result = scaleout.run_scaleout(app_env, control, profile, log_dir=tmp_path)

    # nothing lost: one status row per request, each in a terminal state, and they add up to the bulk
    assert result.not_terminal == [], result.states
    assert set(result.states) <= TERMINAL and sum(result.states.values()) == 40
    # a dead letter is only ever for a request that ended badly, never for one that succeeded
    assert all(str(result.rows[i].state) != "succeeded" for i in result.dead_lettered_ids)
    assert result.poisoned == 0
    # ARM's side: one principal, every request counted as a read or a write, an import per succeeded request
    assert {r["rate_kind"] for r in result.arm} <= {"reads", "writes"}
    assert len({r["principal"] for r in result.arm}) == 1
    started = {result.request_of(r) for r in result.accepted_posts}
    assert {i for i in result.ids if str(result.rows[i].state) == "succeeded"} <= started
    assert result.lowest_remaining("writes") is not None  # the answers carried the budget left

    report = scaleout.markdown(result)
    for field in ("requests failed or dead-lettered because of throttling", "requests lost (no terminal state)",
                  "steady-state throughput against the write refill", "429 answers: reads / writes",
                  "writes answered (importImage POSTs accepted)", "reads answered",
                  "polls of the operation", "time to done", "dead-lettered", "ARM's answers over time"):
        assert field in report, field
