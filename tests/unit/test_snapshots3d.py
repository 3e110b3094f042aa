"""3D-Mem (snapshots3d): invariants of the paper's rules, and the system end to end."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from embodied_mem.sim.embedded.env import EmbeddedEnv, EnvConfig
from embodied_mem.sim.embedded.oracle import HistoryConfig, OracleRobot
from embodied_mem.sim.embedded.perception import PerceptionConfig
from embodied_mem.sim.embedded.world import WorldConfig, generate_world
from embodied_mem.sim.tasks.success import entity_satisfied

from embodied_mem.memory.base import visible_instances
from embodied_mem.memory.snapshots3d import Snapshots3D, Snapshots3DConfig, clustering
from embodied_mem.memory.snapshots3d.clustering import SnapshotMemory
from embodied_mem.memory.snapshots3d.frontiers import (
    OccupancyMap,
    angle_span,
    frontier_regions,
)
from embodied_mem.memory.snapshots3d.objects import (
    Detection,
    ObjectMap,
    ProcessedDetection,
    voxelize,
)
from embodied_mem.registry import build
from embodied_mem.types import CameraInfo, Detection as Seen, Event, FloorPlan, Observation, Pose, Query, Region

CONFIG_FILE = Path(__file__).resolve().parents[2] / "configs" / "memory" / "snapshots3d.yaml"
FIRST_PICKED = {"goals": [{"target": "object", "day": 0, "interacted": True, "select": {"by": "order", "index": 0}}], "ordered": False}


# ----------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------
def record(mode: str = "detector"):
    """One day of the embedded robot in world 1, perceived by the simulated detector (default:
    misses, false positives, label confusion, eroded masks, depth noise, pose drift) or by the
    ``gt`` upper bound."""
    env = EmbeddedEnv(generate_world(WorldConfig(seed=1)), EnvConfig(width=160, height=120), PerceptionConfig(mode=mode))
    robot = OracleRobot(env, HistoryConfig(days=1, rearrangements_per_day=2, seed=0))
    observations = list(robot.live())
    return env, robot, observations


@pytest.fixture(scope="module")
def history():
    return record("detector")


@pytest.fixture(scope="module")
def memory(history):
    """A memory of the whole history (with the floor plan); tests must not change it."""
    env, _, observations = history
    return fresh(observations, plan=env.floor_plan())


def fresh(observations, plan: FloorPlan | None = None, **overrides) -> Snapshots3D:
    mem = build("memory", {"name": "snapshots3d", "encoder": "gt_hash", **overrides})
    mem.set_floor_plan(plan)
    for obs in observations:
        mem.observe(obs)
    return mem


def fingerprint(mem: Snapshots3D) -> str:
    """A hash of every native structure (objects, frames, snapshots, grids, frontiers) and the diary."""
    digest = hashlib.sha256()
    for object_id in sorted(mem.map.objects):
        obj = mem.map.objects[object_id]
        grasp = None if obj.grasp_point is None else obj.grasp_point.tolist()
        digest.update(json.dumps([object_id, obj.num_detections, obj.last_seen, sorted(obj.class_votes.items())]).encode())
        digest.update(json.dumps([obj.kind_votes, obj.attribute_votes, obj.held, grasp, obj.moved_at], sort_keys=True).encode())
        digest.update(obj.points.tobytes() + obj.counts.tobytes() + obj.embedding.tobytes() + obj.bbox_min.tobytes() + obj.bbox_max.tobytes())
    digest.update(json.dumps({str(k): sorted(f.objects.items()) for k, f in mem.memory.frames.items()}).encode())
    digest.update(json.dumps({str(k): s.cluster for k, s in mem.memory.snapshots.items()}).encode())
    for grid in (mem.grid.evidence, mem.grid.known, mem.grid.explored, mem.grid.origin):
        digest.update(grid.tobytes())
    digest.update(json.dumps([f.frontier_id for f in mem.frontiers.frontiers] + [mem.processed]).encode())
    digest.update(json.dumps(mem.diary.to_dict(), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def replayed(obs: Observation, frame_offset: int, time_offset: float, **changes) -> Observation:
    fields = {f.name: getattr(obs, f.name) for f in dataclasses.fields(Observation)}
    fields.update(frame_id=obs.frame_id + frame_offset, stamp=obs.stamp + time_offset, **changes)
    return Observation(**fields)


def unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def box_surface(low, high, step=0.01) -> np.ndarray:
    """Points on the faces of an axis-aligned box."""
    low, high = np.asarray(low, float), np.asarray(high, float)
    axes = [np.arange(low[i], high[i] + 1e-9, step) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    on_face = np.any(np.isclose(grid, low) | np.isclose(grid, high), axis=1)
    return grid[on_face]


def detection(points, embedding, class_name="mug", conf=1.0, instance_id=7, kind="object", attributes=None) -> ProcessedDetection:
    keys, means, counts = voxelize(points, 0.01)
    return ProcessedDetection(
        keys, means, counts, means.min(0) - 0.005, means.max(0) + 0.005, unit(embedding), class_name, conf, instance_id, kind, dict(attributes or {})
    )


def true_view(robot, frame_id) -> Pose:
    """The TRUE pose of a history frame (what FindingDory's high-level check teleports to)."""
    step = robot.history.steps[frame_id]
    assert step.frame_id == frame_id
    return step.pose


# ----------------------------------------------------------------------------------------
# registration and configuration
# ----------------------------------------------------------------------------------------
def test_registered_with_a_config_file_that_matches_the_dataclass():
    mem = build("memory", {"name": "snapshots3d", "encoder": "gt_hash"})
    assert isinstance(mem, Snapshots3D) and mem.name == "snapshots3d"
    with pytest.raises(ValueError, match="unknown config key"):
        build("memory", {"name": "snapshots3d", "encoder": "gt_hash", "no_such_key": 1})
    values = yaml.safe_load(CONFIG_FILE.read_text())
    assert values.pop("name") == "snapshots3d"
    defaults = {f.name: f.default for f in dataclasses.fields(Snapshots3DConfig)}
    assert values == defaults
    with pytest.raises(ValueError):
        Snapshots3DConfig(voxel_size=0.0)


# ----------------------------------------------------------------------------------------
# snapshots: the co-visibility clustering
# ----------------------------------------------------------------------------------------
def test_every_object_is_in_exactly_one_snapshot_of_a_frame_that_saw_it(memory):
    counts = {}
    for frame_id, snapshot in memory.memory.snapshots.items():
        frame = memory.memory.frames[frame_id]
        assert snapshot.cluster and set(snapshot.cluster) <= set(frame.objects)
        for object_id in snapshot.cluster:
            counts[object_id] = counts.get(object_id, 0) + 1
    eligible = {i for i, o in memory.map.objects.items() if o.num_detections >= memory.config.min_detection}
    assert len(memory.map.objects) > 10 and len(memory.memory.snapshots) > 3
    assert set(counts) == eligible
    assert all(count == 1 for count in counts.values())
    assert memory.memory.orphans == []


def test_two_means_split_when_no_frame_sees_the_whole_cluster(monkeypatch):
    splits = []
    original = clustering.split_in_two
    monkeypatch.setattr(clustering, "split_in_two", lambda xy: splits.append(len(xy)) or original(xy))
    mem = SnapshotMemory(min_detection=1)
    mem.add_frame(10, 1.0, Pose.from_xy_yaw(0, 0, 0), {0: 1.0, 1: 1.0}, (0, 0, 0))
    mem.add_frame(11, 2.0, Pose.from_xy_yaw(10, 0, 0), {2: 1.0, 3: 1.0}, (20, 0, 0))
    centres = {0: np.array([0.0, 1.0]), 1: np.array([0.5, 1.2]), 2: np.array([10.0, 1.0]), 3: np.array([10.4, 0.8])}
    assert mem.select_frame([0, 1, 2, 3], {}) is None
    mem.update({0, 1, 2, 3}, centres, dict.fromkeys(centres, 1))
    assert splits == [4]  # the root was split once, by 2-means, into the two co-visible groups
    assert {k: sorted(s.cluster) for k, s in mem.snapshots.items()} == {10: [0, 1], 11: [2, 3]}
    # a cluster of two that no frame covers is split 1 / 1
    pair = SnapshotMemory()
    pair.add_frame(1, 1.0, Pose.from_xy_yaw(0, 0, 0), {0: 1.0}, (0, 0, 0))
    pair.add_frame(2, 2.0, Pose.from_xy_yaw(0, 0, 1), {1: 1.0}, (0, 0, 1))
    pair.update({0, 1}, {0: np.zeros(2), 1: np.ones(2)}, {0: 1, 1: 1})
    assert {k: s.cluster for k, s in pair.snapshots.items()} == {1: [0], 2: [1]}


def test_frame_ranking_and_min_detection():
    mem = SnapshotMemory(min_detection=2)
    mem.add_frame(1, 1.0, Pose.from_xy_yaw(0, 0, 0), {0: 0.5, 1: 0.5}, (0, 0, 0))
    mem.add_frame(2, 2.0, Pose.from_xy_yaw(1, 0, 0), {0: 0.9, 1: 0.9}, (2, 0, 0))
    mem.add_frame(3, 3.0, Pose.from_xy_yaw(2, 0, 0), {0: 0.4, 1: 0.4, 2: 0.4}, (4, 0, 0))
    assert mem.select_frame([0, 1], {}) == 3  # more objects in the frame first
    assert mem.select_frame([0], {2: [1]}) == 2  # a frame already chosen in this pass is preferred
    mem._drop_frame(3)
    assert mem.select_frame([0, 1], {}) == 2  # then the higher confidence sum
    mem.update({0, 1}, {i: np.zeros(2) for i in range(2)}, {0: 2, 1: 1})
    owner = mem.owner()
    assert 0 in owner and 1 not in owner  # one detection < min_detection: no snapshot


def test_incremental_update_leaves_snapshots_outside_the_update_set_alone(history, monkeypatch):
    _, _, observations = history
    mem = fresh(observations[:140], cleanup_interval=10_000)  # no periodic cleanup: clusters change only by updates
    captured = []
    original = mem.memory.update
    monkeypatch.setattr(mem.memory, "update", lambda ids, *a: captured.append(set(ids)) or original(ids, *a))
    checked = 0
    for obs in observations[140:200]:
        before = {k: (s, list(s.cluster)) for k, s in mem.memory.snapshots.items()}
        mem.observe(obs)
        update = captured[-1]
        for frame_id, (snapshot, cluster) in before.items():
            if not update.intersection(cluster):
                # kept as it was; as in the paper, a re-clustered group may join an existing
                # snapshot whose frame it picked, so only members from the update set can be added
                assert mem.memory.snapshots.get(frame_id) is snapshot and snapshot.cluster[: len(cluster)] == cluster
                assert set(snapshot.cluster[len(cluster) :]) <= update
                checked += 1
    assert checked > 20


# ----------------------------------------------------------------------------------------
# the object map
# ----------------------------------------------------------------------------------------
def test_matching_merges_iff_similarity_exceeds_the_threshold():
    config = Snapshots3DConfig(encoder="gt_hash")
    objects = ObjectMap(config)
    points = box_surface([1.0, 1.0, 0.5], [1.2, 1.15, 0.7])
    e1 = np.eye(8)[0]
    cosine = lambda c: unit(c * e1 + math.sqrt(1 - c * c) * np.eye(8)[1])
    object_id = objects.add(detection(points, e1), stamp=1.0)
    shifted = points + 0.003
    spatial = objects.objects[object_id].overlap_fraction(detection(shifted, e1).points, config.overlap_radius)
    assert spatial == pytest.approx(1.0)
    cases = [
        (detection(shifted, e1), True),  # sim 2.0
        (detection(shifted, cosine(0.25)), True),  # sim 1.25
        (detection(shifted, cosine(0.15)), False),  # sim 1.15
        (detection(shifted, np.eye(8)[1]), False),  # sim 1.0
        (detection(points + [5.0, 0.0, 0.0], e1), False),  # no overlap: sim = visual = 1.0
    ]
    matches = objects.match([d for d, _ in cases])
    assert [m is not None for m in matches] == [merges for _, merges in cases]
    assert all(m == object_id for m in matches if m is not None)

    det = detection(shifted, cosine(0.25), class_name="cup", conf=0.6, instance_id=9, attributes={"color": "red"})
    objects.merge_detection(object_id, det, stamp=2.0)
    obj = objects.objects[object_id]
    expected = unit(e1 + cosine(0.25))  # detection-count-weighted mean (1 and 1), re-normalised
    assert np.linalg.norm(obj.embedding) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(obj.embedding, expected, atol=1e-6)
    assert obj.num_detections == 2 and obj.conf == 1.0 and obj.last_seen == 2.0
    assert obj.class_votes == {"mug": 1, "cup": 1} and obj.instance_votes == {7: 1, 9: 1}
    objects.merge_detection(object_id, detection(shifted, e1, class_name="cup", attributes={"color": "blue"}), stamp=3.0)
    objects.merge_detection(object_id, detection(shifted, e1, class_name="mug", attributes={"color": "red", "kind": "ignored"}), stamp=3.0)
    assert obj.num_detections == 4 and obj.last_seen == 3.0 and np.linalg.norm(obj.embedding) == pytest.approx(1.0, abs=1e-6)
    assert obj.class_votes == {"mug": 2, "cup": 2} and obj.instance_votes == {7: 3, 9: 1}
    assert obj.class_name == "cup"  # the paper's majority class (ties: alphabetical)
    assert obj.attribute_votes == {"color": {"red": 2, "blue": 1}} and obj.attributes == {"color": "red", "kind": "object"}
    assert np.all(np.diff(obj.keys) > 0) and len(obj.keys) == len(obj.points) == len(obj.counts)
    assert np.all(obj.bbox_min <= obj.points.min(0)) and np.all(obj.bbox_max >= obj.points.max(0))


def test_periodic_merge_joins_duplicates_and_frames_follow():
    config = Snapshots3DConfig(encoder="gt_hash")
    objects = ObjectMap(config)
    points = box_surface([0.0, 0.0, 0.0], [0.3, 0.3, 0.3])
    a = objects.add(detection(points, np.eye(4)[0], conf=0.9), 1.0)
    b = objects.add(detection(points + 0.002, np.eye(4)[0], conf=0.5), 2.0)
    c = objects.add(detection(points + 0.002, np.eye(4)[1], conf=0.5), 3.0)  # same place, unlike feature
    merged = objects.merge_overlapping()
    assert merged == {b: a} and set(objects.objects) == {a, c}
    assert objects.objects[a].num_detections == 2 and np.linalg.norm(objects.objects[a].embedding) == pytest.approx(1.0)
    mem = SnapshotMemory()
    mem.add_frame(5, 1.0, Pose.from_xy_yaw(0, 0, 0), {b: 0.5, c: 0.5}, (0, 0, 0))
    mem.remap_object(b, a)
    assert mem.frames[5].objects == {a: 0.5, c: 0.5} and mem.object_frames[a] == {5}


def test_a_held_object_takes_no_detections_and_its_cloud_moves_with_the_gripper():
    config = Snapshots3DConfig(encoder="gt_hash")
    objects = ObjectMap(config)
    points = box_surface([1.0, 1.0, 0.5], [1.2, 1.15, 0.7])
    e1 = np.eye(8)[0]
    mug = objects.add(detection(points, e1, attributes={"color": "red"}), 1.0)
    table = objects.add(detection(box_surface([0.8, 0.8, 0.0], [1.6, 1.4, 0.49], 0.02), np.eye(8)[1], "table", kind="receptacle"), 1.0)
    objects.merge_detection(table, detection(box_surface([0.8, 0.8, 0.0], [1.6, 1.4, 0.49], 0.02), np.eye(8)[1], "table", kind="receptacle"), 2.0)
    ghost = objects.add(detection(points + [50.0, 0.0, 0.0], e1), 1.0)  # one detection, far away
    gripper = np.array([1.1, 1.07, 0.6])
    assert objects.nearest_object(gripper, config.grasp_radius) == mug  # the table is a receptacle
    assert objects.surface_under(gripper, config.surface_margin, config.surface_min_detections) == table
    assert objects.surface_under(gripper, config.surface_margin, 3) is None  # seen too rarely to trust
    objects.grasp(mug, gripper)
    assert objects.held_id() == mug and objects.nearest_object(gripper, config.grasp_radius) is None
    assert objects.match([detection(points + 0.003, e1)]) == [None]  # carried: it is not where its points are
    assert set(objects.merge_overlapping()) == set()
    obj = objects.objects[mug]
    total, centre = int(obj.counts.sum()), obj.center.copy()
    delta = np.array([2.0, -1.0, 0.1234])
    objects.release(mug, gripper + delta, 5.0)
    assert not obj.held and obj.moved_at == 5.0 and obj.grasp_point is None and objects.held_id() is None
    assert np.allclose(obj.center, centre + delta, atol=0.011)
    assert int(obj.counts.sum()) == total and np.all(np.diff(obj.keys) > 0) and len(obj.keys) == len(obj.points) == len(obj.counts)
    assert np.all(obj.bbox_min <= obj.points.min(0)) and np.all(obj.bbox_max >= obj.points.max(0))
    assert objects.match([detection(points + delta + 0.003, e1), detection(points + 0.003, e1)]) == [mug, None]  # it is here now, not there
    removed = objects.filter_far(np.array([-100.0, -100.0]))
    assert ghost in removed and mug in objects.objects  # the robot carried it: never filtered as noise


def test_detector_hook_masks_classes_and_confidences(history):
    _, _, observations = history

    def detector(obs: Observation) -> list[Detection]:
        out = []
        for seen in obs.detections:
            furniture = seen.kind == "receptacle"
            confidence = 0.9 if furniture else 0.3  # "small objects" below the 0.4 threshold
            out.append(Detection(seen.mask, "thing" if furniture else "gadget", confidence))
        return out

    mem = Snapshots3D(Snapshots3DConfig(encoder="gt_hash"), detector=detector)
    for obs in observations[:60]:
        mem.observe(obs)
    assert mem.map.objects
    assert all(o.class_name == "thing" and o.instance_id is None and o.kind == "object" for o in mem.map.objects.values())
    entities = mem.catalog()
    assert entities and all(e.entity_id in mem.map.objects and e.category == "thing" for e in entities)


def test_default_detections_are_the_frames_perception_output(history):
    _, _, observations = history
    obs = next(o for o in observations if len(o.detections) >= 3)
    mem = build("memory", {"name": "snapshots3d", "encoder": "gt_hash"})
    taken = mem.detector(obs)
    assert [(d.class_name, d.confidence, d.kind, d.attributes, d.instance_id) for d in taken] == [
        (s.label, s.score, s.kind, s.attributes, None) for s in obs.detections
    ]
    assert all(d.mask is s.mask for d, s in zip(taken, obs.detections))


# ----------------------------------------------------------------------------------------
# frontiers
# ----------------------------------------------------------------------------------------
def unexplored_neighbours(grid: OccupancyMap) -> np.ndarray:
    padded = np.pad(~grid.explored, 1, constant_values=False).astype(int)
    h, w = grid.shape
    return sum(padded[1 + di : 1 + di + h, 1 + dj : 1 + dj + w] for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0))


def check_regions(grid: OccupancyMap, agent_xy, config) -> list:
    regions, _, _ = frontier_regions(grid, agent_xy, config)
    island, count = grid.island(agent_xy), unexplored_neighbours(grid)
    here = grid.local(grid.cell_of(agent_xy))
    for _, cells in regions:
        assert len(cells) >= config.min_frontier_area
        assert np.all(island[cells[:, 0], cells[:, 1]])
        values = count[cells[:, 0], cells[:, 1]]
        assert np.all((values >= config.frontier_area_min) & (values <= config.frontier_area_max))
        angles = np.arctan2(cells[:, 1] - here[1], cells[:, 0] - here[0])
        assert angle_span(angles) <= math.radians(config.max_frontier_angle_deg) + 1e-9
    return regions


def test_frontier_rules_on_a_ring_around_the_agent():
    config = Snapshots3DConfig(encoder="gt_hash")
    grid = OccupancyMap(0.1)
    grid.ensure(np.array([-40, -40]), np.array([40, 40]), pad=0)
    grid.known[:] = True
    grid.evidence[:] = -1
    ii, jj = np.mgrid[: grid.shape[0], : grid.shape[1]]
    centre = grid.local(np.array([0, 0]))
    grid.explored[(ii - centre[0]) ** 2 + (jj - centre[1]) ** 2 <= 15**2] = True
    pocket = centre + [8, 0]  # a 3x3 unexplored pocket inside: a one-cell cluster, dropped
    grid.explored[pocket[0] - 1 : pocket[0] + 2, pocket[1] - 1 : pocket[1] + 2] = False
    regions = check_regions(grid, np.array([0.05, 0.05]), config)
    assert len(regions) == 3  # one ring, 360 degrees: split into int(360 / 150) + 1 parts
    assert not any(np.any(np.all(cells == pocket, axis=1)) for _, cells in regions)


def test_frontier_rules_on_the_history(history, memory):
    env, _, _ = history
    config = memory.config
    check_regions(memory.grid, env.pose.position[:2], config)
    assert memory.frontiers.frontiers
    for frontier in memory.frontiers.frontiers:  # each kept one satisfied the limits when it was made
        cells = memory.grid.local(frontier.cells)
        here = memory.grid.local(memory.grid.cell_of(frontier.pose.position[:2]))
        assert len(cells) >= config.min_frontier_area
        assert angle_span(np.arctan2(cells[:, 1] - here[1], cells[:, 0] - here[0])) <= math.radians(config.max_frontier_angle_deg) + 1e-9
        assert frontier.frame_id in {o.frame_id for o in history[2]}
        assert np.linalg.norm(frontier.orientation) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------
# retrieval
# ----------------------------------------------------------------------------------------
def test_prefilter_keeps_at_most_k_seen_classes(memory):
    seen = {o.class_name for o in memory.map.objects.values()}
    assert len(seen) > 10
    everything = " ".join(c.replace("_", " ") for c in sorted(seen))
    loose = Snapshots3D(dataclasses.replace(memory.config, prefilter_threshold=0.0))
    for text in (everything, "the red mug", "zebra"):
        selected = loose.prefilter(text, seen)
        assert set(selected) <= seen and len(selected) <= memory.config.top_k_categories
    assert len(loose.prefilter(everything, seen)) == memory.config.top_k_categories
    hits = memory.recall(Query(f"go to the {min(seen).replace('_', ' ')}", k=3)).hits
    assert hits and all(set(h.evidence["classes"]) <= seen for h in hits)


def test_language_recall_with_minilm(history):
    _, _, observations = history
    mem = fresh(observations[:150], encoder="minilm")
    seen = {o.class_name for o in mem.map.objects.values()}
    target = next(c for c in ("sofa", "bed", "table", "shelf", "counter", "cabinet") if c in seen)
    assert mem.prefilter(f"navigate to the {target}", seen)[0] == target
    hits = mem.recall(Query(f"navigate to the {target}", k=2)).hits
    assert hits and target.replace("_", " ") in hits[0].evidence["description"]
    assert hits[0].agent_pose is not None and hits[0].target_xyz is not None


def check_first_picked_found_where_it_is_now(env, robot, mem: Snapshots3D) -> None:
    first = robot.history.interactions[0]
    truth = env.entity_position(first.object_id)
    assert np.allclose(truth, first.goal_position)  # it is still where the robot put it
    recall = mem.recall(Query("", near=env.pose, constraints=FIRST_PICKED))
    assert recall.hits
    hit = recall.hits[0]
    assert hit.object_id in mem.map.objects  # the map's own id, not the simulator's
    assert mem.map.objects[hit.object_id].moved_at is not None  # the object the robot itself moved
    assert mem.map.objects[hit.object_id].class_name == env.label(first.object_id)
    assert np.linalg.norm(hit.target_xyz[:2] - truth[:2]) < 0.3
    assert abs(hit.target_xyz[2] - truth[2]) < 0.3
    assert env.grid.is_navigable(hit.agent_pose.position[:2])
    assert np.linalg.norm(hit.agent_pose.position[:2] - truth[:2]) < 1.6
    assert hit.frame_id in mem.memory.snapshots and hit.frame_id >= first.place_frame
    # FindingDory's high-level check: the named frame, at its true pose, shows the object now
    assert entity_satisfied(env, "object", first.object_id, true_view(robot, hit.frame_id))
    assert recall.latency_s < 1.0


def test_detector_mode_first_rearranged_object_is_located_where_it_is_now(history, memory):
    env, robot, _ = history
    assert env.perception.config.mode == "detector" and not env.perception.exact
    check_first_picked_found_where_it_is_now(env, robot, memory)


def test_gt_mode_upper_bound_keeps_map_ids_and_finds_the_object():
    env, robot, observations = record("gt")
    mem = fresh(observations, plan=env.floor_plan())
    check_first_picked_found_where_it_is_now(env, robot, mem)
    # the simulator's ids stay a diagnostic vote: entity ids are map ids, and the picked map
    # object's detections were the picked instance's
    first = robot.history.interactions[0]
    picked = mem.diary.interactions()[0].object_id
    assert mem.map.objects[picked].instance_id == first.object_id
    assert {e.entity_id for e in mem.catalog()} <= set(mem.map.objects)


def test_diary_infers_picks_and_places_from_the_map(history, memory):
    env, robot, _ = history
    got, want = memory.diary.interactions(), robot.history.interactions
    assert len(got) == len(want) == 2
    assert len({g.object_id for g in got}) == len(got)
    for mine, truth in zip(got, want):
        assert (mine.pick.frame_id, mine.place.frame_id) == (truth.pick_frame, truth.place_frame)
        assert mine.pick.object_id == mine.place.object_id == mine.object_id
        assert mine.pick.object_category == env.label(truth.object_id)
        assert mine.pick.object_attributes["color"] == env.attributes(truth.object_id)["color"]
        for entry, receptacle in ((mine.pick, truth.start_receptacle), (mine.place, truth.goal_receptacle)):
            assert entry.room == robot.history.steps[entry.frame_id].room  # from the floor plan at the robot's pose
            assert entry.receptacle_category == env.label(receptacle)
            box = env.world.receptacles[receptacle].box
            centre = memory.map.objects[entry.receptacle_id].center[:2]
            assert np.all(centre >= box.min_corner[:2] - 0.3) and np.all(centre <= box.max_corner[:2] + 0.3)


# ----------------------------------------------------------------------------------------
# robustness, checkpoints, size
# ----------------------------------------------------------------------------------------
def test_bad_input_leaves_the_memory_unchanged(history, tmp_path):
    _, _, observations = history
    mem = fresh(observations[:70])  # past the first grasp: an object is held
    assert mem.map.held_id() is not None
    recall_query = Query("", constraints=FIRST_PICKED)
    last = observations[69]
    state = fingerprint(mem)

    # no usable depth: skipped for geometry, counted as seen
    mem.observe(replayed(last, 50_000, 1.0, depth=np.zeros_like(last.depth)))
    assert mem.stats().frames_seen == 71
    mem.observe(replayed(last, 50_001, 2.0, depth=np.full_like(last.depth, np.nan)))
    assert mem.stats().frames_seen == 72
    state = fingerprint(mem)  # (the diary notes where the robot was)
    mem.observe(last)  # the same frame again: idempotent
    assert fingerprint(mem) == state and mem.stats().frames_seen == 72

    with pytest.raises(ValueError, match="out of order"):
        mem.observe(replayed(last, 50_002, -100.0))
    assert fingerprint(mem) == state and mem.stats().frames_seen == 72
    # changed after construction into bad frames: refused at the door, nothing stored
    wrong_mask = replayed(last, 50_003, 3.0)
    wrong_mask.detections = wrong_mask.detections + [Seen("mug", np.ones((3, 3), bool))]
    not_an_event = replayed(last, 50_004, 3.0)
    not_an_event.events = [("release", None)]
    negative = replayed(last, 50_005, 3.0)
    negative.depth = -np.ones_like(last.depth)
    for bad, message in ((wrong_mask, "mask shape"), (not_an_event, "must be an Event"), (negative, "negative")):
        with pytest.raises(ValueError, match=message):
            mem.observe(bad)
        assert fingerprint(mem) == state and mem.stats().frames_seen == 72

    mem.save(tmp_path / "good")
    before = [(h.frame_id, h.target_xyz.tolist()) for h in mem.recall(recall_query).hits]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text((tmp_path / "good" / "manifest.json").read_text()[:-50])
    (broken / "arrays.npz").write_bytes((tmp_path / "good" / "arrays.npz").read_bytes())
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "manifest.json").write_text((tmp_path / "good" / "manifest.json").read_text())
    (truncated / "arrays.npz").write_bytes((tmp_path / "good" / "arrays.npz").read_bytes()[:1000])
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    manifest = json.loads((tmp_path / "good" / "manifest.json").read_text())
    manifest["state"]["snapshots"].append({"frame_id": 123456789, "cluster": [0]})
    (tampered / "manifest.json").write_text(json.dumps(manifest))
    (tampered / "arrays.npz").write_bytes((tmp_path / "good" / "arrays.npz").read_bytes())
    corrupt = []
    for name, change in (
        ("held", lambda objects: objects[0].update(held="yes")),
        ("two_held", lambda objects: [o.update(held=True) for o in objects[:2]]),
        ("grasp", lambda objects: objects[0].update(grasp_point=[1.0, "x"])),
        ("votes", lambda objects: objects[0].pop("attribute_votes")),
    ):
        manifest = json.loads((tmp_path / "good" / "manifest.json").read_text())
        change(manifest["state"]["objects"])
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps(manifest))
        (tmp_path / name / "arrays.npz").write_bytes((tmp_path / "good" / "arrays.npz").read_bytes())
        corrupt.append(tmp_path / name)
    other = build("memory", {"name": "frame_bank", "encoder": "gt_hash"})
    other.save(tmp_path / "other")
    for bad in (broken, truncated, tampered, *corrupt, tmp_path / "other", tmp_path / "missing"):
        with pytest.raises(ValueError):
            mem.load(bad)
        assert fingerprint(mem) == state
    assert [(h.frame_id, h.target_xyz.tolist()) for h in mem.recall(recall_query).hits] == before


def test_save_load_round_trip_gives_identical_recall(history, memory, tmp_path):
    env, _, _ = history
    memory.save(tmp_path / "ckpt")
    loaded = build("memory", {"name": "snapshots3d", "encoder": "gt_hash"})
    loaded.load(tmp_path / "ckpt")
    assert fingerprint(loaded) == fingerprint(memory)
    assert loaded.diary.to_dict() == memory.diary.to_dict() and loaded.diary.floor_plan == env.floor_plan()
    for query in (Query("", near=env.pose, constraints=FIRST_PICKED), Query("the sofa", k=3), Query("a ball", k=3)):
        a, b = memory.recall(query).hits, loaded.recall(query).hits
        assert [(h.frame_id, h.object_id, h.score) for h in a] == [(h.frame_id, h.object_id, h.score) for h in b]
        for x, y in zip(a, b):
            assert np.allclose(x.target_xyz, y.target_xyz) and x.agent_pose == y.agent_pose
    assert loaded.stats() == memory.stats()


def test_replaying_the_same_observations_keeps_memory_flat(history):
    _, _, observations = history
    stream = observations[:160]
    mem = fresh(stream)
    first = mem.stats().bytes
    offset = stream[-1].stamp - stream[0].stamp + 5.0
    for obs in stream:
        mem.observe(replayed(obs, 100_000, offset))
    assert mem.stats().frames_seen == 2 * len(stream)
    assert mem.stats().bytes <= first * 1.03


def test_catalog_reset_and_plot(memory):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entities = memory.catalog()
    assert len({e.entity_id for e in entities}) == len(entities)
    assert {e.kind for e in entities} == {"object", "receptacle"}
    figure, ax = plt.subplots()
    memory.plot(ax)
    assert len(ax.collections) > len(memory.memory.snapshots) and ax.patches
    plt.close(figure)
    empty = build("memory", {"name": "snapshots3d", "encoder": "gt_hash"})
    plan = FloorPlan((Region("kitchen", ((0, 0), (1, 0), (1, 1))),))
    empty.set_floor_plan(plan)
    empty.reset()
    assert empty.stats().items == 0 and empty.recall(Query("anything")).hits == []
    assert empty.diary.floor_plan == plan  # the map the robot was deployed with outlives a reset


# ----------------------------------------------------------------------------------------
# the robot's own actions, on hand-made frames
# ----------------------------------------------------------------------------------------
CAMERA = CameraInfo(160, 120, 100.0, 100.0, 80.0, 60.0, Pose.from_matrix(np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 1.0], [0, 0, 0, 1]], float)))
MUG_PIXELS = (slice(45, 65), slice(70, 90))  # a 20 x 20 patch 1.2 m ahead: the mug
SURFACE_PIXELS = (slice(72, 100), slice(40, 120))  # a wider patch 1.3 m ahead, below it: the furniture


def hand_made(frame_id: int, x: float, y: float, things, events=()) -> Observation:
    """A frame at (x, y) facing +x: ``things`` are (label, kind, colour, pixels, depth) patches
    on a background with no depth return."""
    depth = np.zeros((120, 160), np.float32)
    detections = []
    for label, kind, colour, pixels, distance in things:
        mask = np.zeros((120, 160), bool)
        mask[pixels] = True
        depth[mask] = distance
        detections.append(Seen(label, mask, 0.9, kind, {"color": colour}))
    return Observation(
        float(frame_id + 1), frame_id, np.zeros((120, 160, 3), np.uint8), depth, Pose.from_xy_yaw(x, y, 0.0), CAMERA,
        detections=detections, events=list(events), day=0,
    )


def test_a_release_moves_the_map_object_and_recall_answers_at_the_new_place(tmp_path):
    mug, table, shelf = ("mug", "object", "red", MUG_PIXELS, 1.2), ("table", "receptacle", "brown", SURFACE_PIXELS, 1.3), ("shelf", "receptacle", "white", SURFACE_PIXELS, 1.3)
    at_table = hand_made(0, 0.0, 0.0, [mug, table])
    at_shelf = hand_made(0, 0.0, 5.0, [mug, shelf])
    old_xyz, new_xyz = (visible_instances(o, 20)[0].centroid for o in (at_table, at_shelf))
    base = Pose.from_xy_yaw(0.0, 0.0, 0.0)
    grasp = Event("grasp", 3.0, base, Pose(old_xyz, base.orientation))
    release = Event("release", 6.0, Pose.from_xy_yaw(0.0, 5.0, 0.0), Pose(new_xyz, base.orientation))
    frames = [
        hand_made(0, 0.0, 0.0, [mug, table]),
        hand_made(1, 0.0, 0.0, [mug, table]),
        hand_made(2, 0.0, 0.0, [mug, table], [grasp]),  # the gripper closes on it: it still stands there
        hand_made(3, 0.0, 5.0, [shelf]),
        hand_made(4, 0.0, 5.0, [shelf]),
        hand_made(5, 0.0, 5.0, [mug, shelf], [release]),  # put down: now it stands here
        hand_made(6, 0.0, 5.0, [mug, shelf]),
    ]
    plan = FloorPlan((Region("kitchen", ((-2, -2), (3, -2), (3, 2), (-2, 2))), Region("office", ((-2, 3), (3, 3), (3, 7), (-2, 7)))))
    mem = fresh(frames[:4], plan=plan)
    held = mem.map.held_id()
    assert held is not None and mem.map.objects[held].class_name == "mug"
    mem.save(tmp_path / "carrying")  # mid-carry: the held object and its grasp point are saved
    resumed = build("memory", {"name": "snapshots3d", "encoder": "gt_hash"})
    resumed.load(tmp_path / "carrying")
    for obs in frames[4:]:
        mem.observe(obs)
        resumed.observe(obs)
    assert fingerprint(resumed) == fingerprint(mem)

    mugs = [i for i, o in mem.map.objects.items() if o.class_name == "mug"]
    assert mugs == [held]  # the detections at the new place merged into the moved object: no copy left behind
    obj = mem.map.objects[held]
    assert not obj.held and obj.moved_at == 6.0 and obj.num_detections == 5
    assert np.linalg.norm(obj.center - new_xyz) < 0.03 and np.linalg.norm(obj.center - old_xyz) > 4.5
    assert mem.memory.object_frames[held] == {5, 6}  # its views at the old place are stale

    (interaction,) = mem.diary.interactions()
    pick, place = interaction.pick, interaction.place
    assert interaction.object_id == held and (pick.frame_id, place.frame_id) == (2, 5)
    assert (pick.object_category, pick.object_attributes["color"]) == ("mug", "red")
    assert (pick.receptacle_category, place.receptacle_category) == ("table", "shelf")
    assert (pick.room, place.room) == ("kitchen", "office")

    structured = mem.recall(Query("", constraints=FIRST_PICKED)).hits
    assert structured and structured[0].object_id == held and structured[0].frame_id in {5, 6}
    assert np.linalg.norm(structured[0].target_xyz - new_xyz) < 0.03
    goal = {"goals": [{"target": "receptacle", "day": 0, "role": "goal", "select": {"by": "order", "index": 0}}], "ordered": False}
    (on,) = mem.recall(Query("", constraints=goal)).hits
    assert mem.map.objects[on.object_id].class_name == "shelf" and (on.frame_id, on.agent_pose) == (5, frames[5].pose)
    language = mem.recall(Query("the red mug", k=1)).hits
    assert language[0].object_id == held and language[0].frame_id in {5, 6}
    assert np.linalg.norm(language[0].target_xyz - new_xyz) < 0.03
