"""`eval.workers=2` (episodes on a local Ray) gives the serial run's figures, timings aside."""

from __future__ import annotations

import pytest

from embodied_mem.eval.runner import RunSpec, run, summarize, task_rows

from conftest import small_sim

TIMING = {"ingest_fps", "recall_ms_p50", "recall_ms_p95", "config"}


def test_two_ray_workers_equal_one():
    pytest.importorskip("ray")
    base = dict(memories=[{"name": "frame_bank", "encoder": "gt_hash"}], tracks=["oracle"], episodes=2, seed=11,
                sim=small_sim(days=1, rearrangements=2, rooms=4), progress=False)
    serial, parallel = RunSpec(**base, workers=1), RunSpec(**base, workers=2)
    one, two = run(serial)[("frame_bank", "oracle")], run(parallel)[("frame_bank", "oracle")]
    a = {k: v for k, v in summarize(one, serial, {}).items() if k not in TIMING}
    b = {k: v for k, v in summarize(two, parallel, {}).items() if k not in TIMING}
    assert a == b
    strip = lambda rows: [{k: v for k, v in r.items() if k != "recall_ms"} for r in rows]  # noqa: E731
    assert strip(task_rows(one)) == strip(task_rows(two))
    assert {r["episode"] for r in task_rows(two)} == {0, 1}


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="eval.workers"):
        run(RunSpec(memories=[{"name": "stay"}], tracks=["oracle"], workers=0, sim=small_sim(), progress=False))
