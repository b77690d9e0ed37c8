"""The short profile of dev/soak.py in the suite: requests through the queue and the runner with every scripted
fault; nothing lost, every success in the target, importImage called no more often than retries explain."""

from __future__ import annotations

from dev.soak import run_load

COUNT = 60


def test_load_with_faults_loses_nothing(app_env, control):
    report = run_load(app_env, control, COUNT, timeout=240)
    assert report.lost == [], report.markdown()
    assert report.missing_in_target == []
    assert sum(report.states.values()) == COUNT
    assert set(report.states) <= {"succeeded", "failed"}
    assert set(report.codes) <= {"failed: ImportTimedOut", "failed: InvalidParameters"}, report.codes
    refused = report.faults["ARM 429 with Retry-After on importImage"] + report.faults["ARM 500 on importImage"]
    assert report.import_posts <= COUNT + refused + 3 * COUNT // 20 * 8 + 50
