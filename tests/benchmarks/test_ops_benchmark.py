"""The operator's view benchmark (benchmarks/ops.py) on its smallest profile: the table seeded to two small
sizes, every call asked through the runner's HTTP server and answered 200, and what it counts is what the
endpoints read (counts only, no timing claims)."""

from __future__ import annotations

from benchmarks import ops


def test_every_call_is_measured_at_each_size_and_counts_what_it_read(app_env):
    result = ops.run_ops(app_env, sizes=(60, 240), rounds=1)

    assert result.sizes == [60, 240]
    assert len(result.names) == 8
    for name in result.names:
        for size in result.sizes:
            samples = result.of(name, size)
            assert len(samples) == 1 and samples[0].status == 200, (name, size)
            assert samples[0].pages >= 1, (name, size)  # every call reads the table at least once
    first_page = "`/api/ops/imports` first page"
    assert result.rows(first_page, 240) == ops.PAGE_LIMIT  # one page of the default limit, however many rows
    # health reads the rows of the last day only: about a thirtieth of the table, never all of it
    health = result.found["health 240"]
    assert 0 < health["scanned"] < 240 and health["truncated"] is False
    assert result.rows("`/api/ops/health`", 240) == health["scanned"]

    text = " ".join(ops.markdown(result).split())
    for name in result.names:
        assert name in text
    assert "240/60" in text
