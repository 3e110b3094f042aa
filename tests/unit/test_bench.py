"""The benchmark's replayed stream: later days of the same observations, valid for every memory."""

import numpy as np
import pytest

from embodied_mem.eval.bench import DAY, replayed


def test_replayed_stream_is_later_days_with_unique_ids_and_moved_events(one_day):
    observations = one_day.observations
    stream = list(replayed(observations, 2 * len(observations) + 7))
    assert [o.frame_id for o in stream] == list(range(len(stream)))
    stamps = np.array([o.stamp for o in stream])
    assert np.all(np.diff(stamps) >= 0)  # a memory's FrameGate accepts it
    again = stream[len(observations)]
    assert again.stamp == observations[0].stamp + DAY and again.day == observations[0].day + 1
    assert np.array_equal(again.depth, observations[0].depth) and again.detections == observations[0].detections
    events = [(o, e) for o in stream for e in o.events]
    assert events and all(e.stamp == o.stamp for o, e in events)


@pytest.mark.timeout(180)
def test_observe_is_not_starved_by_recalling_threads(one_day):
    """Liveness, not speed: with 4 threads recalling back to back every frame still gets in
    (a reader-preferring lock let 0 of 209 in; the suite's timeout would catch a hang)."""
    from embodied_mem.eval.bench import concurrent_ingest

    rows = concurrent_ingest(["frame_bank"], one_day.observations[:120], one_day.tasks[:5], one_day.episode.final_pose, "gt_hash", 4)
    row = rows[0]
    assert row["ingest_fps_4"] > 0 and row["recalls_4"] > 0 and row["ratio"] > 0


def test_memory_scaling_times_recall_on_a_still_memory_and_after_each_new_frame(one_day):
    from embodied_mem.eval.bench import memory_scaling

    tasks = one_day.tasks[:6]
    (row,) = memory_scaling(["frame_bank"], [80], one_day.observations, tasks, one_day.episode.final_pose, "gt_hash", False, one_day.episode.floor_plan())
    assert row["observations"] == 80 and row["items"] == 80  # the live frames come after stats()
    for key in ("recall_ms_p50", "recall_ms_p95", "warm_ms_p95", "live_ms_p50", "live_ms_p95", "text_ms_p95"):
        assert 0.0 < row[key] < 60_000.0, key
    assert row["live_ms_p50"] <= row["live_ms_p95"] and row["recall_ms_p50"] <= row["recall_ms_p95"]
