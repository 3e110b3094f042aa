import json

import numpy as np
import pytest

from embodied_mem.memory.frame_bank import FrameBank, FrameBankConfig, SubsampledFramesConfig
from embodied_mem.registry import build
from embodied_mem.types import Detection, Observation, Query


def first_object_query(near):
    return Query("", near=near, constraints={"goals": [{"target": "object", "day": 0, "interacted": True, "select": {"by": "order", "index": 0}}], "ordered": False})


def copy_of(obs: Observation, **changes) -> Observation:
    values = {k: getattr(obs, k) for k in ("stamp", "frame_id", "rgb", "depth", "pose", "camera", "detections", "events", "day")}
    values.update(changes)
    return Observation(**values)


@pytest.fixture(scope="module")
def bank(one_day):
    memory = build("memory", {"name": "frame_bank", "encoder": "gt_hash"})
    memory.set_floor_plan(one_day.episode.floor_plan())
    for obs in one_day.observations:
        memory.observe(obs)
    return memory


def test_oracle_recall_finds_the_first_picked_object_where_it_is_now(bank, one_day):
    """Detector perception: the memory's own association and grasp inference find it."""
    first = sorted(one_day.history.interactions, key=lambda i: i.pick_stamp)[0]
    hits = bank.recall(first_object_query(one_day.episode.final_pose)).hits
    assert hits
    truth = one_day.env.entity_position(first.object_id)
    assert np.linalg.norm(hits[0].target_xyz - truth) < 0.5
    # the named frame is a real history frame, and from its true pose the object is in view
    pose = one_day.episode.frame_pose(hits[0].frame_id)
    assert pose is not None and one_day.env.visible_fraction(pose, first.object_id) > 0
    # what the diary says it moved is what was moved (its own inference, right here)
    entry = bank.diary.interactions()[0].pick
    assert entry.object_category == one_day.env.label(first.object_id)


def test_language_recall_returns_a_frame_that_shows_the_named_thing(bank, one_day):
    first = one_day.history.interactions[0]
    track = bank.diary.interactions()[0].pick.object_id
    from embodied_mem.memory.base import describe

    hits = bank.recall(Query(f"Navigate to the {describe(*bank._label_of(track))}.", k=3)).hits
    assert hits and any(h.object_id == track for h in hits)
    assert any(one_day.env.visible_fraction(one_day.episode.frame_pose(h.frame_id), first.object_id) > 0 for h in hits)


def test_tracker_keeps_about_one_track_per_entity_and_drops_one_off_false_positives(bank, one_day):
    seen = len(one_day.history.seen)
    confirmed = bank.tracker.confirmed()
    assert 0.7 * seen <= len(confirmed) <= 1.5 * seen
    assert len(bank.tracker.tracks) > len(confirmed)  # false positives and glimpses stay unconfirmed
    # every confirmed object track sits near a real object of its majority label, or was moved by the robot
    objects = [i for i in one_day.env.world.objects]
    near = 0
    for track in (t for t in confirmed if t.kind == "object"):
        distances = [np.linalg.norm(one_day.env.entity_position(i) - track.position) for i in objects]
        near += min(distances) < 0.5
    assert near >= 0.8 * sum(t.kind == "object" for t in confirmed)


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
    empty = copy_of(last, frame_id=10**6 + 2, stamp=last.stamp + 2, detections=[], events=[])
    bank.observe(empty)
    assert bank.frames[-1].instance_ids.size == 0
    before = bank.stats()
    mutated = copy_of(last, frame_id=10**6 + 3, stamp=last.stamp + 3)
    mutated.stamp = float("inf")  # changed after construction: caught at the door
    with pytest.raises(ValueError, match="Observation.stamp"):
        bank.observe(mutated)
    mutated = copy_of(last, frame_id=10**6 + 4, stamp=last.stamp + 4)
    mutated.detections = [Detection("mug", np.ones((3, 3), bool))]
    with pytest.raises(ValueError, match="mask shape"):
        bank.observe(mutated)
    assert bank.stats() == before


def current(checkpoint):
    """The complete version folder a checkpoint directory's CURRENT names."""
    return checkpoint / (checkpoint / "CURRENT").read_text().strip()


def test_save_load_round_trip_and_corrupt_checkpoints(bank, one_day, tmp_path):
    query = first_object_query(one_day.episode.final_pose)
    bank.save(tmp_path / "ckpt")
    again = FrameBank(FrameBankConfig(encoder="gt_hash"))
    again.load(tmp_path / "ckpt")
    a, b = bank.recall(query).hits[0], again.recall(query).hits[0]
    assert (a.object_id, a.frame_id) == (b.object_id, b.frame_id) and np.allclose(a.target_xyz, b.target_xyz)
    assert again.stats() == bank.stats()

    folder = current(tmp_path / "ckpt")
    original = (folder / "arrays.npz").read_bytes()
    (folder / "arrays.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        again.load(tmp_path / "ckpt")
    assert again.stats() == bank.stats()  # the failed load lost nothing
    (folder / "arrays.npz").write_bytes(original)
    text = (folder / "manifest.json").read_text()
    (folder / "manifest.json").write_text(text.replace('"stride": 1', '"stride": 2'))  # one digit
    with pytest.raises(ValueError, match="checksum does not match its content"):
        again.load(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="not a checkpoint"):
        again.load(tmp_path / "missing")
    bank.save(tmp_path / "other")
    manifest = json.loads((current(tmp_path / "other") / "manifest.json").read_text())
    manifest["system"] = "mem4nav"
    (current(tmp_path / "other") / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="holds a 'mem4nav' memory"):
        again.load(tmp_path / "other")
    assert again.stats() == bank.stats()


def test_a_checkpoint_made_with_another_configuration_is_refused(bank, tmp_path):
    bank.save(tmp_path / "ckpt")
    other = FrameBank(FrameBankConfig(encoder="gt_hash", min_pixels=5))
    with pytest.raises(ValueError, match="another configuration: min_pixels"):
        other.load(tmp_path / "ckpt")
    assert other.stats().frames_seen == 0


def test_nan_or_shifted_arrays_are_refused_even_with_a_matching_checksum(bank, tmp_path):
    """Data that parses but is wrong: re-signed after tampering, so only the checks catch it."""
    import hashlib

    from embodied_mem.memory import base

    bank.save(tmp_path / "ckpt")
    folder = current(tmp_path / "ckpt")
    for name, spoil in (("centroids", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, np.nan, a)), ("instance_frame", lambda a: a[::-1].copy())):
        with np.load(folder / "arrays.npz") as archive:
            arrays = {k: archive[k] for k in archive.files}
        arrays[name] = spoil(arrays[name]).astype(arrays[name].dtype)
        np.savez(folder / "arrays.npz", **arrays)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["arrays_sha256"] = base._sha256(folder / "arrays.npz")
        body = {k: v for k, v in manifest.items() if k != "sha256"}
        manifest["sha256"] = hashlib.sha256(base._canonical(body)).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest))
        fresh = FrameBank(FrameBankConfig(encoder="gt_hash"))
        with pytest.raises(ValueError, match=name):
            fresh.load(tmp_path / "ckpt")
        assert fresh.stats().frames_seen == 0
        bank.save(tmp_path / "ckpt")
        folder = current(tmp_path / "ckpt")


def test_text_recall_while_frames_arrive_never_fails(one_day):
    """Recall finishes deferred embeddings inside its read lock: no frame without one."""
    import threading

    memory = FrameBank(FrameBankConfig(encoder="gt_hash"))
    errors = []
    done = threading.Event()

    def ask():
        while not done.is_set():
            try:
                memory.recall(Query("a mug on the table"))
            except Exception as error:  # noqa: BLE001 - any failure is the bug
                errors.append(error)
                return

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for obs in one_day.observations[:150]:
        memory.observe(obs)
    done.set()
    for thread in threads:
        thread.join()
    assert not errors and memory.stats().frames_seen == 150


def test_subsampled_frames_keeps_a_bounded_uniform_sample(one_day):
    memory = FrameBank(SubsampledFramesConfig(encoder="gt_hash", max_frames=16), "subsampled_frames")
    memory.set_floor_plan(one_day.episode.floor_plan())
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


@pytest.mark.parametrize("name", ["frame_bank", "subsampled_frames"])
def test_a_failure_inside_observe_leaves_no_partial_write(one_day, name, monkeypatch):
    """All or nothing: a frame whose write fails at its last step (the gate's commit raises,
    after the frame list, the tracker and the diary changed) leaves the memory as it was."""
    config = FrameBankConfig(encoder="gt_hash") if name == "frame_bank" else SubsampledFramesConfig(encoder="gt_hash", max_frames=16)
    memory = FrameBank(config, name)
    memory.set_floor_plan(one_day.episode.floor_plan())
    grasp = next(n for n, o in enumerate(one_day.observations) if any(e.kind == "grasp" for e in o.events))
    for obs in one_day.observations[:grasp]:
        memory.observe(obs)
    memory.flush()
    query = first_object_query(one_day.episode.final_pose)
    before = (memory.stats(), json.dumps(memory.tracker.to_dict(), sort_keys=True), [h.frame_id for h in memory.recall(query).hits])

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(memory.gate, "commit", broken)
    with pytest.raises(RuntimeError):
        memory.observe(one_day.observations[grasp])  # a grasp: the tracker marks a track held
    monkeypatch.undo()
    after = (memory.stats(), json.dumps(memory.tracker.to_dict(), sort_keys=True), [h.frame_id for h in memory.recall(query).hits])
    assert after == before
    memory.observe(one_day.observations[grasp])  # and the same frame is taken afterwards
    assert memory.stats().frames_seen == before[0].frames_seen + 1


def test_the_index_grown_frame_by_frame_answers_as_one_built_from_every_frame(one_day):
    """Recall between frames grows the sightings index and the catalog entries; the answers,
    catalog and route distances equal those of an index built from scratch."""
    from embodied_mem.memory.frame_bank import Sightings

    memory = build("memory", {"name": "frame_bank", "encoder": "gt_hash"})
    memory.set_floor_plan(one_day.episode.floor_plan())
    query = first_object_query(one_day.episode.final_pose)
    for n, obs in enumerate(one_day.observations):
        memory.observe(obs)
        if n % 40 == 39:
            memory.recall(query)  # builds the index once, then it grows
            memory.recall(Query("a mug", k=3))
    grown_index = memory._index
    assert grown_index is not None and grown_index.frames == len(memory.frames)
    grown = {e.entity_id: e for e in memory.catalog()}
    answer = memory.recall(query).hits
    text = memory.recall(Query("a mug", k=3)).hits
    far = memory.distance_from(one_day.episode.final_pose)

    rebuilt = Sightings.build(memory.frames)
    for name in ("frame_rows", "centroids", "extents", "fractions", "positions", "yaws", "stamps"):
        np.testing.assert_array_equal(getattr(grown_index, name), getattr(rebuilt, name), err_msg=name)
    assert grown_index.groups.keys() == rebuilt.groups.keys()
    memory._index, memory._entities, memory._matrix = None, {}, None  # the next recall rebuilds all
    fresh = {e.entity_id: e for e in memory.catalog()}
    assert grown.keys() == fresh.keys() and len(fresh) > 5
    for entity_id, entity in fresh.items():
        assert (grown[entity_id].category, grown[entity_id].attributes) == (entity.category, entity.attributes)
        np.testing.assert_array_equal(grown[entity_id].position, entity.position)
        np.testing.assert_array_equal(grown[entity_id].extent[0], entity.extent[0])
    assert [(h.frame_id, h.object_id) for h in memory.recall(query).hits] == [(h.frame_id, h.object_id) for h in answer] != []
    assert [h.frame_id for h in memory.recall(Query("a mug", k=3)).hits] == [h.frame_id for h in text]
    again = memory.distance_from(one_day.episode.final_pose)
    for entity in list(fresh.values())[:10]:
        assert again(entity.position) == pytest.approx(far(entity.position))


def test_a_route_walked_many_times_is_no_longer_than_one_walked_once():
    from embodied_mem.memory.base import RouteGraph, trajectory_distance

    corridor = np.column_stack([np.linspace(0.0, 10.0, 81), np.zeros(81)])
    once = trajectory_distance(corridor, np.zeros(2))
    many = trajectory_distance(np.concatenate([corridor, corridor[::-1]] * 20), np.zeros(2))
    assert once([10.0, 0.0]) == pytest.approx(10.0, abs=0.3)
    assert many([10.0, 0.0]) == pytest.approx(once([10.0, 0.0]))
    # Grown one position at a time, the graph is the one built at once.
    graph = RouteGraph()
    for xy in corridor:
        graph.extend(xy)
    assert graph.distance_from(np.zeros(2))([10.0, 0.0]) == pytest.approx(once([10.0, 0.0]))


def test_route_distance_goes_around_a_wall_the_robot_walked_around():
    from embodied_mem.memory.base import trajectory_distance

    # Up one side of a wall at x = 0 (from y = -3 to 3), round its end, and down the other side.
    up = np.column_stack([np.full(60, -1.0), np.linspace(-3.0, 4.0, 60)])
    across = np.column_stack([np.linspace(-1.0, 1.0, 17), np.full(17, 4.0)])
    down = np.column_stack([np.full(60, 1.0), np.linspace(4.0, -3.0, 60)])
    distance = trajectory_distance(np.concatenate([up, across, down]), np.array([-1.0, -3.0]))
    assert distance([1.0, -3.0]) == pytest.approx(7.0 + 2.0 + 7.0, abs=0.6)  # not the 2 m straight line


def test_frame_slices_cut_sorted_detection_rows_per_frame_and_refuse_anything_else():
    from embodied_mem.memory.base import frame_slices

    owner = np.array([0, 0, 2, 2, 2, 3])
    assert frame_slices(owner, 5, "owner") == [slice(0, 2), slice(2, 2), slice(2, 5), slice(5, 6), slice(6, 6)]
    assert frame_slices(np.zeros(0, np.int64), 2, "owner") == [slice(0, 0), slice(0, 0)]
    for bad in ([0, 2, 1], [0, 5], [-1, 0]):
        with pytest.raises(ValueError, match="owner is not a sorted index"):
            frame_slices(np.array(bad), 5, "owner")
