import json

import numpy as np
import pytest

from embodied_mem.memory.frame_bank import FrameBank, FrameBankConfig, SubsampledFramesConfig
from embodied_mem.registry import build
from embodied_mem.types import Observation, Query


def first_object_query(near):
    return Query("", near=near, constraints={"goals": [{"target": "object", "day": 0, "interacted": True, "select": {"by": "order", "index": 0}}], "ordered": False})


def copy_of(obs: Observation, **changes) -> Observation:
    values = {k: getattr(obs, k) for k in ("stamp", "frame_id", "rgb", "depth", "pose", "camera", "instances", "labels", "events", "day", "attributes", "room")}
    values.update(changes)
    return Observation(**values)


@pytest.fixture(scope="module")
def bank(one_day):
    memory = build("memory", {"name": "frame_bank", "encoder": "gt_hash"})
    for obs in one_day.observations:
        memory.observe(obs)
    return memory


def test_oracle_recall_finds_the_first_picked_object_where_it_is_now(bank, one_day):
    first = sorted(one_day.history.interactions, key=lambda i: i.pick_stamp)[0]
    hits = bank.recall(first_object_query(one_day.episode.final_pose)).hits
    assert hits and hits[0].object_id == first.object_id
    truth = one_day.env.entity_position(first.object_id)
    assert np.linalg.norm(hits[0].target_xyz - truth) < 0.5


def test_language_recall_returns_a_frame_that_shows_the_named_thing(bank, one_day):
    object_id = one_day.history.interactions[0].object_id
    description = bank.labels[object_id]
    from embodied_mem.memory.base import describe

    hits = bank.recall(Query(f"Navigate to the {describe(*description)}.", k=3)).hits
    assert hits and any(h.object_id == object_id for h in hits)


def test_observe_is_idempotent_per_frame(bank, one_day):
    before = bank.stats()
    bank.observe(one_day.observations[5])
    assert bank.stats() == before


def test_bad_input_is_rejected_or_skipped_without_losing_anything(bank, one_day):
    before = bank.stats()
    last = one_day.observations[-1]
    with pytest.raises(ValueError, match="out of order"):
        bank.observe(copy_of(last, frame_id=10**6, stamp=last.stamp - 100.0))
    assert bank.stats() == before
    blind = copy_of(last, frame_id=10**6 + 1, stamp=last.stamp + 1, depth=np.zeros_like(last.depth), events=[])
    bank.observe(blind)  # no depth: nothing to place, but the frame is seen
    assert bank.stats().frames_seen == before.frames_seen + 1
    assert bank.frames[-1].instance_ids.size == 0
    empty = copy_of(last, frame_id=10**6 + 2, stamp=last.stamp + 2, instances=np.zeros_like(last.instances), events=[])
    bank.observe(empty)
    assert bank.frames[-1].instance_ids.size == 0


def test_save_load_round_trip_and_corrupt_checkpoints(bank, one_day, tmp_path):
    query = first_object_query(one_day.episode.final_pose)
    bank.save(tmp_path / "ckpt")
    again = FrameBank(FrameBankConfig(encoder="gt_hash"))
    again.load(tmp_path / "ckpt")
    a, b = bank.recall(query).hits[0], again.recall(query).hits[0]
    assert (a.object_id, a.frame_id) == (b.object_id, b.frame_id) and np.allclose(a.target_xyz, b.target_xyz)
    assert again.stats() == bank.stats()

    (tmp_path / "ckpt" / "arrays.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        again.load(tmp_path / "ckpt")
    assert again.stats() == bank.stats()  # the failed load lost nothing
    with pytest.raises(ValueError, match="not a checkpoint"):
        again.load(tmp_path / "missing")
    bank.save(tmp_path / "other")
    manifest = json.loads((tmp_path / "other" / "manifest.json").read_text())
    manifest["system"] = "mem4nav"
    (tmp_path / "other" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="holds a 'mem4nav' memory"):
        again.load(tmp_path / "other")


def test_subsampled_frames_keeps_a_bounded_uniform_sample(one_day):
    memory = FrameBank(SubsampledFramesConfig(encoder="gt_hash", max_frames=16), "subsampled_frames")
    for obs in one_day.observations:
        memory.observe(obs)
    kept = [memory._stream_index[f.frame_id] for f in memory.frames]
    assert 8 < len(kept) <= 16
    gaps = np.diff(kept)
    assert len(set(gaps.tolist())) == 1  # uniformly spaced in the stream
    assert kept[0] == 0 and len(one_day.observations) - 1 - kept[-1] < gaps[0]
    # its diary only knows the events of the frames it kept
    kept_ids = {f.frame_id for f in memory.frames}
    assert all(entry.frame_id in kept_ids for entry in memory.diary.entries)
