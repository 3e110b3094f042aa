"""The benchmark's replayed stream: later days of the same observations, valid for every memory."""

import numpy as np

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
