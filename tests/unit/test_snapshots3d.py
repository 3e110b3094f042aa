"""3D-Mem (snapshots3d): invariants of the paper's rules, and the system end to end."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from embodied_mem.sim.embedded.env import EmbeddedEnv, EnvConfig
from embodied_mem.sim.embedded.oracle import HistoryConfig, OracleRobot
from embodied_mem.sim.embedded.perception import PerceptionConfig
from embodied_mem.sim.embedded.world import WorldConfig, generate_world
from embodied_mem.sim.tasks.success import entity_satisfied
from scipy.spatial import cKDTree

from embodied_mem.memory.base import visible_instances
from embodied_mem.memory.snapshots3d import Snapshots3D, Snapshots3DConfig, clustering
from embodied_mem.memory.snapshots3d import frontiers as frontiers_module
from embodied_mem.memory.snapshots3d import objects as objects_module
from embodied_mem.memory.snapshots3d import system as system_module
from embodied_mem.memory.snapshots3d.clustering import (
    Snapshot,
    SnapshotMemory,
    pose_bin,
)
from embodied_mem.memory.snapshots3d.frontiers import (
    FrontierMap,
    OccupancyMap,
    _frontier_position,
    angle_span,
    frontier_regions,
    unwrap_angles,
)
from embodied_mem.memory.snapshots3d.goals import observe_point_group, standable
from embodied_mem.memory.snapshots3d.objects import (
    Detection,
    ObjectMap,
    ProcessedDetection,
    boxes_overlap,
    merge_voxels,
    voxelize,
)
from embodied_mem.registry import build
from embodied_mem.types import (
    CameraInfo,
    Event,
    FloorPlan,
    Observation,
    Pose,
    Query,
    Region,
)
from embodied_mem.types import Detection as Seen

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
    """A memory of the whole history (with the floor plan, frontiers on); tests must not change it."""
    env, _, observations = history
    return fresh(observations, plan=env.floor_plan(), track_frontiers=True)


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
    # a snapshot is kept iff its classes meet the selected ones, its class list cut to them
    target = min(seen)
    text = f"go to the {target.replace('_', ' ')}"
    selected = set(memory.prefilter(text, seen))
    assert target in selected and len(selected) < len(seen)
    expected = {}
    for frame_id, snapshot in memory.memory.snapshots.items():
        classes = {memory.map.objects[o].class_name for o in snapshot.cluster}
        if classes & selected:
            expected[frame_id] = sorted(classes & selected)
    assert 0 < len(expected) < len(memory.memory.snapshots)
    hits = memory.recall(Query(text, k=1000)).hits
    assert {h.frame_id: h.evidence["classes"] for h in hits} == expected
    assert memory.map.objects[hits[0].object_id].class_name == target
    assert memory.map.objects[hits[0].object_id].class_name in hits[0].evidence["classes"]


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
def test_bad_input_leaves_the_memory_unchanged(history, tmp_path, monkeypatch):
    _, _, observations = history
    mem = fresh(observations[:70], track_frontiers=True)  # past the first grasp: an object is held
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
    # damaged files (whatever the checkpoint layout: every manifest / arrays file in it)
    damaged = []
    for name, pattern, damage in (("broken", "*.json", lambda b: b[:-50]), ("truncated", "*.npz", lambda b: b[:1000])):
        shutil.copytree(tmp_path / "good", tmp_path / name)
        files = sorted((tmp_path / name).rglob(pattern))
        assert files
        for path in files:
            path.write_bytes(damage(path.read_bytes()))
        damaged.append(tmp_path / name)
    other = build("memory", {"name": "frame_bank", "encoder": "gt_hash"})
    other.save(tmp_path / "other")
    for bad in (*damaged, tmp_path / "other", tmp_path / "missing"):
        with pytest.raises(ValueError):
            mem.load(bad)
        assert fingerprint(mem) == state
    # well-formed files holding bad state: each component refuses its own fields
    good_state, good_arrays = system_module.load_manifest(tmp_path / "good", "snapshots3d")
    changes = {
        "snapshot_without_frame": lambda st, ar: st["snapshots"]["snapshots"].append({"frame_id": 123456789, "cluster": [0]}),
        "object_in_two_snapshots": lambda st, ar: st["snapshots"]["snapshots"][1]["cluster"].append(st["snapshots"]["snapshots"][0]["cluster"][0]),
        "held": lambda st, ar: st["object_map"]["objects"][0].update(held="yes"),
        "two_held": lambda st, ar: [o.update(held=True) for o in st["object_map"]["objects"][:2]],
        "grasp": lambda st, ar: st["object_map"]["objects"][0].update(grasp_point=[1.0, "x"]),
        "votes": lambda st, ar: st["object_map"]["objects"][0].pop("attribute_votes"),
        "unsorted_voxels": lambda st, ar: ar["object_map.keys"].__setitem__(slice(0, 2), ar["object_map.keys"][1::-1].copy()),
        "nan_point": lambda st, ar: ar["object_map.points"].__setitem__((0, 0), np.nan),
        "feature_size": lambda st, ar: ar.__setitem__("object_map.embeddings", ar["object_map.embeddings"][:, :5]),
        "grid_shape": lambda st, ar: ar.__setitem__("grid.known", ar["grid.known"][1:]),
        "grid_resolution": lambda st, ar: st["grid"].update(resolution=0.05),
        "frontier_cells": lambda st, ar: ar.__setitem__("frontiers.cells", ar["frontiers.cells"][1:]),
        "pending": lambda st, ar: st.update(pending=[10**9]),
        "missing_component": lambda st, ar: st.pop("grid"),
        # the snapshot memory's own refusals, one condition at a time
        "frame_bad_bin": lambda st, ar: st["snapshots"]["frames"][0].update(bin=[0, 0]),
        "frame_repeated": lambda st, ar: st["snapshots"]["frames"].append(dict(st["snapshots"]["frames"][0])),
        "frame_empty": lambda st, ar: st["snapshots"]["frames"][0].update(objects={}),
        "frame_unknown_object": lambda st, ar: st["snapshots"]["frames"][0]["objects"].update({"987654321": 1.0}),
        "snapshot_repeated": lambda st, ar: st["snapshots"]["snapshots"].append(dict(st["snapshots"]["snapshots"][0])),
        "snapshot_empty": lambda st, ar: st["snapshots"]["snapshots"][0].update(cluster=[]),
        "snapshot_object_twice": lambda st, ar: st["snapshots"]["snapshots"][0]["cluster"].append(st["snapshots"]["snapshots"][0]["cluster"][0]),
        "bin_without_frame": lambda st, ar: st["snapshots"]["bins"].append([[9999, 9999, 0], 123456789]),
        "order_at_the_last_frame": lambda st, ar: st["snapshots"].update(order=max(f["order"] for f in st["snapshots"]["frames"])),
        "next_id_at_the_last_object": lambda st, ar: st["object_map"].update(next_id=int(ar["object_map.ids"].max())),
        "no_detections": lambda st, ar: st["object_map"]["objects"][0].update(num_detections=0),
        "dirty_unknown_object": lambda st, ar: st["object_map"].update(dirty_merge=[987654321]),
    }
    for name, change in changes.items():
        bad_state, bad_arrays = json.loads(json.dumps(good_state)), {k: v.copy() for k, v in good_arrays.items()}
        change(bad_state, bad_arrays)
        monkeypatch.setattr(system_module, "load_manifest", lambda directory, system, config=None, found=(bad_state, bad_arrays): found)
        with pytest.raises(ValueError, match="corrupt snapshots3d checkpoint"):
            mem.load(tmp_path / "good")
        assert fingerprint(mem) == state, name
    assert [(h.frame_id, h.target_xyz.tolist()) for h in mem.recall(recall_query).hits] == before


def test_save_load_round_trip_gives_identical_recall(history, memory, tmp_path):
    env, _, _ = history
    memory.save(tmp_path / "ckpt")
    # a checkpoint made with another configuration (or encoder) is refused, and changes nothing
    for other in ({"encoder": "gt_hash"}, {"encoder": "gt_hash", "track_frontiers": True, "cleanup_interval": 6}, {"encoder": "minilm", "track_frontiers": True}):
        refusing = build("memory", {"name": "snapshots3d", **other})
        with pytest.raises(ValueError, match="another configuration"):
            refusing.load(tmp_path / "ckpt")
        assert refusing.stats().frames_seen == 0 and not refusing.map.objects
    loaded = build("memory", {"name": "snapshots3d", "encoder": "gt_hash", "track_frontiers": True})
    loaded.load(tmp_path / "ckpt")
    assert fingerprint(loaded) == fingerprint(memory)
    assert loaded.diary.to_dict() == memory.diary.to_dict() and loaded.diary.floor_plan == env.floor_plan()
    for query in (Query("", near=env.pose, constraints=FIRST_PICKED), Query("the sofa", k=3), Query("a ball", k=3)):
        a, b = memory.recall(query).hits, loaded.recall(query).hits
        assert [(h.frame_id, h.object_id, h.score) for h in a] == [(h.frame_id, h.object_id, h.score) for h in b]
        for x, y in zip(a, b):
            assert np.allclose(x.target_xyz, y.target_xyz) and x.agent_pose == y.agent_pose
    assert loaded.stats() == memory.stats()


def test_goal_points_and_routes_kept_per_grid_are_what_computing_them_again_gives(history, monkeypatch):
    """Goal points and the route field are kept per grid (``_stand_cache``): the answers with
    them kept equal those computed afresh, a new frame's grid starts an empty store, and a
    frame that fails puts back the store of the grid from before it."""
    env, _, observations = history
    mem = fresh(observations[:-1], plan=env.floor_plan())
    asked = [Query("", k=20, near=env.pose, constraints={"goals": [{"target": kind}], "ordered": False}) for kind in ("object", "receptacle")]
    farthest = Query("", k=3, near=env.pose, constraints={"goals": [{"target": "object", "select": {"by": "farthest"}}], "ordered": False})

    def answers():
        return [[(h.frame_id, h.object_id, None if h.agent_pose is None else h.agent_pose.position.round(9).tolist()) for h in mem.recall(q).hits] for q in asked + [farthest]]

    first = answers()
    kept = mem._stand_cache()[3]
    assert any(key[0] == "group" for key in kept if isinstance(key, tuple)) and any(key[0] == "single" for key in kept if isinstance(key, tuple))
    assert "graph" in kept and any(key[0] == "route" for key in kept if isinstance(key, tuple))
    assert answers() == first  # from the store
    kept.clear()
    assert answers() == first  # computed again
    route = mem.distance_from(env.pose)
    xy = mem.catalog()[0].position[:2]
    assert route(xy) == mem.distance_from(env.pose)(xy) and np.isfinite(route(xy))
    # a failing frame: the store of the grid before it is back, with what it held
    version, before = mem.grid.version, mem._stand_cache()[3]

    def fail_after_the_grid_changed(*args, **kwargs):
        assert mem.grid.version != version and mem._stand_cache()[3] is not before  # a store for the frame's grid
        raise ValueError("the diary failed")

    monkeypatch.setattr(mem._diary, "record", fail_after_the_grid_changed)
    with pytest.raises(ValueError, match="the diary failed"):
        mem.observe(observations[-1])
    monkeypatch.undo()
    assert mem.grid.version == version and mem._stand_cache()[3] is before
    mem.observe(observations[-1])
    assert mem.grid.version != version and mem._stand_cache()[3] is not before and not mem._stand_cache()[3]


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


def entity_tuple(entity) -> tuple:
    return (entity.entity_id, entity.kind, entity.category, sorted(entity.attributes.items()), entity.position.tolist(), entity.last_seen, entity.extent[0].tolist(), entity.extent[1].tolist())


def test_catalog_kept_per_object_equals_one_built_from_scratch_after_every_frame(history):
    """The catalog is cached per state and its entries per object state: after every frame
    (merges, denoising, moves, a grasp and a release among them) it equals a fresh build, and
    what a caller does to its copy changes nothing kept."""
    env, _, observations = history
    mem = fresh([], plan=env.floor_plan())
    checked = 0
    for n, obs in enumerate(observations):
        mem.observe(obs)
        if n % 7 and not obs.events:
            continue
        kept = [entity_tuple(e) for e in mem.catalog()]
        mem._entries = {}
        assert [entity_tuple(e) for e in mem._build_catalog()] == kept
        checked += 1
    assert checked > 20 and mem._entries
    entity = mem.catalog()[0]
    entity.attributes["colour"], entity.position[:] = "plaid", 99.0
    assert mem.catalog()[0].attributes.get("colour") != "plaid" and mem.catalog()[0].position[0] != 99.0
    # a frame changes the catalog: nothing from before it is handed out
    before = mem.catalog()
    mem._catalog = [before[0]]
    mem.observe(replayed(observations[0], len(observations) + 10, 86400.0))
    assert len(mem.catalog()) == len(mem._build_catalog()) > 1


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
    # one frame that sees every object, and is every pose bin's frame: a checkpoint of that loads
    first = fresh(frames[:1], plan=plan)
    assert set(first.memory.frames[0].objects) == set(first.map.objects) and set(first.memory.bins.values()) == set(first.memory.frames)
    first.save(tmp_path / "first")
    reloaded = build("memory", {"name": "snapshots3d", "encoder": "gt_hash"})
    reloaded.load(tmp_path / "first")
    assert fingerprint(reloaded) == fingerprint(first)
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


# ----------------------------------------------------------------------------------------
# the paper's rules, one at a time (issue 14: each test fails when its rule is changed)
# ----------------------------------------------------------------------------------------
MUG = ("mug", "object", "red", MUG_PIXELS, 1.2)
TABLE = ("table", "receptacle", "brown", SURFACE_PIXELS, 1.3)
SHELF = ("shelf", "receptacle", "white", SURFACE_PIXELS, 1.3)


def ids_of(mem: Snapshots3D, label: str) -> list[int]:
    return sorted(i for i, o in mem.map.objects.items() if o.class_name == label)


def test_objects_within_4_m_of_the_agent_are_reclustered_and_far_snapshots_kept():
    mem = fresh([hand_made(0, 0.0, 10.0, [SHELF]), hand_made(1, 0.0, 0.0, [MUG]), hand_made(2, 0.0, 0.0, [TABLE])])
    (shelf,), (mug,), (table,) = ids_of(mem, "shelf"), ids_of(mem, "mug"), ids_of(mem, "table")
    assert {k: s.cluster for k, s in mem.memory.snapshots.items()} == {0: [shelf], 1: [mug], 2: [table]}
    far = mem.memory.snapshots[0]
    # a view of both: neither is new, but both are within 3.5 + 0.5 m, so both are re-clustered
    # and the frame that sees them together takes them; the shelf 10 m away keeps its snapshot
    mem.observe(hand_made(3, 0.0, 0.0, [MUG, TABLE]))
    assert ids_of(mem, "mug") == [mug] and ids_of(mem, "table") == [table]
    assert {k: sorted(s.cluster) for k, s in mem.memory.snapshots.items()} == {0: [shelf], 3: sorted([mug, table])}
    assert mem.memory.snapshots[0] is far and far.cluster == [shelf]


def test_periodic_cleanup_drops_far_objects_with_one_detection_only():
    frames = [hand_made(0, 0.0, 0.0, [MUG, TABLE]), hand_made(1, 0.0, 0.0, [TABLE]), hand_made(2, 0.0, 10.0, [SHELF])]
    mem = fresh(frames[:2], cleanup_interval=3)
    (mug,), (table,) = ids_of(mem, "mug"), ids_of(mem, "table")
    assert mem.map.objects[mug].num_detections == 1 and mem.map.objects[table].num_detections == 2
    mem.observe(frames[2])  # the third processed frame: cleanup, with the agent 10 m away
    (shelf,) = ids_of(mem, "shelf")
    assert mug not in mem.map.objects  # far, one detection: filtered
    assert table in mem.map.objects  # far, two detections: kept
    assert mem.map.objects[shelf].num_detections == 1  # one detection, but near: kept
    assert mug not in mem.memory.object_frames and all(mug not in f.objects for f in mem.memory.frames.values())
    assert sorted(o for s in mem.memory.snapshots.values() for o in s.cluster) == sorted([table, shelf])


def test_periodic_cleanup_denoises_the_objects_changed_since_the_last_pass():
    mem = fresh([], cleanup_interval=1)
    body = box_surface([1.0, 1.0, 0.5], [1.3, 1.2, 0.8])
    blob = box_surface([2.5, 1.0, 0.5], [2.55, 1.05, 0.55])  # a separate cluster 1.2 m away
    noisy = mem.map.add(detection(body, np.eye(mem.encoder.dim)[0]), 1.0)
    mem.map.merge_detection(noisy, detection(np.concatenate([body, blob]), np.eye(mem.encoder.dim)[0]), 2.0)
    assert mem.map.objects[noisy].bbox_max[0] > 2.5
    mem.observe(hand_made(0, 0.0, 0.0, [MUG]))  # one processed frame: a cleanup pass
    obj = mem.map.objects[noisy]
    assert obj.points[:, 0].max() < 1.31 and obj.bbox_max[0] < 1.32  # the largest cluster only
    assert len(obj.points) == len(voxelize(body, 0.01)[0])
    assert not mem.map.dirty_denoise


def free_grid(half: int = 40) -> OccupancyMap:
    grid = OccupancyMap(0.1)
    grid.ensure(np.array([-half, -half]), np.array([half, half]), pad=0)
    grid.known[:] = True
    grid.evidence[:] = -1
    return grid


def test_group_goal_on_the_snapshot_side_at_the_distance_plus_minus_one_cell():
    grid = free_grid()
    stand = standable(grid, 0.3)
    centres = np.array([[-0.45, 0.05], [0.55, 0.05]])  # centre (0.05, 0.05), long axis x
    for obs_xy, side in (((0.05, -2.0), -1.0), ((0.4, 2.5), 1.0)):
        goal = observe_point_group(grid, stand, centres, np.array(obs_xy), 1.0)
        offset = goal - np.array([0.05, 0.05])
        assert np.sign(offset[1]) == side  # on the side the snapshot was taken from
        assert 0.9 < np.linalg.norm(offset) < 1.1  # final_observe_distance +- one cell
        assert np.allclose(goal, [0.05, 0.05 + side * 1.0])  # straight along the short axis
    # three centres: the short axis of their spread (PCA), towards the observation point
    goal = observe_point_group(grid, stand, np.array([[-0.55, 0.05], [0.05, 0.15], [0.65, 0.05]]), np.array([-1.0, 2.0]), 1.0)
    assert goal[1] > 0.9 and 0.9 < np.linalg.norm(goal - [0.05, 0.0833]) < 1.1


def test_frontier_position_is_the_nearest_of_the_five_best_aligned_edge_cells():
    column = np.stack([np.full(21, 10), np.arange(-10, 11)], axis=1)
    segment = np.stack([np.arange(2, 7), np.full(5, 5)], axis=1)
    cells = np.concatenate([column, segment])
    # (2, 4) is nearest but poorly aligned; (30, 0) is aligned but touches no region cell
    edges = np.array([[9, 8], [11, -3], [9, 3], [11, 0], [9, 0], [2, 4], [30, 0]])
    position = _frontier_position(cells, edges, np.zeros(2), np.array([1.0, 0.0]))
    assert position.tolist() == [9, 0]


def test_merge_boundary_is_exactly_1_2_with_several_candidates():
    objects = ObjectMap(Snapshots3DConfig(encoder="gt_hash"))
    row = lambda ks: np.array([[0.005 + 0.05 * k, 0.005, 0.005] for k in ks])
    a = objects.add(detection(row(range(7)), np.eye(4)[0]), 1.0)
    b = objects.add(detection(row([10, 11, 12]), np.eye(4)[0]), 1.0)
    det = detection(row([*range(7), 10, 11, 12]), np.eye(4)[0])  # 7 / 10 points on a, 3 / 10 on b
    assert objects.objects[a].overlap_fraction(det.points, 0.025) == 0.7
    assert objects.objects[b].overlap_fraction(det.points, 0.025) == 0.3

    def feature(cosine):  # exact in float32: the cosine with det's feature is exactly ``cosine``
        return np.array([cosine, math.sqrt(1 - cosine**2), 0.0, 0.0], np.float32)

    for cos_a, cos_b, expected in (
        (0.5, 0.875, None),  # a: 0.7 + 0.5 = 1.2 exactly (not above), b: 1.175
        (0.5 + 2**-10, 0.875, a),  # a: just above
        (0.5, 0.9375, b),  # b: 1.2375, a stays at the boundary
        (0.875, 0.9375, a),  # both above: the larger sum (a 1.575), not the larger cosine (b)
        (0.25, 0.875, None),  # a 0.95, b 1.175: the best is below
    ):
        objects.objects[a].embedding, objects.objects[b].embedding = feature(cos_a), feature(cos_b)
        assert objects.match([det]) == [expected], (cos_a, cos_b)


def test_detections_farther_than_3_5_m_from_the_agent_are_dropped():
    objects = ObjectMap(Snapshots3DConfig(encoder="gt_hash"))
    agent = np.array([1.0, 2.0])
    for distance, kept in ((3.45, True), (3.55, False)):
        centre = np.array([agent[0] + distance * 0.6, agent[1] + distance * 0.8, 0.5])
        cloud = objects.cloud_of(box_surface(centre - 0.05, centre + 0.05), agent)
        assert (cloud is not None) == kept, distance
        if kept:
            low, high = cloud[1].min(0), cloud[1].max(0)
            assert abs(np.linalg.norm((low + high)[:2] / 2 - agent) - distance) < 0.01
    assert objects.cloud_of(box_surface([0, 0, 0], [0.01, 0.01, 0.01]), agent) is None  # < 16 points


def masks_of(*regions, shape=(120, 160)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for rows, cols in regions:
        mask[rows, cols] = True
    return mask


def test_detection_filters_confidence_mask_size_iou_and_box_area():
    objects = ObjectMap(Snapshots3DConfig(encoder="gt_hash", det_proximity_px=0.0))  # the proximity rule is tested below
    square = masks_of((slice(10, 30), slice(10, 30)))
    found = objects.filter_detections(
        [
            Detection(masks_of((slice(10, 30), slice(10, 31))), "wider", 0.8),  # IoU 400 / 420 > 0.9 with "square": dropped
            Detection(square, "square", 0.9),  # most confident first, wherever it is listed
            Detection(masks_of((slice(13, 33), slice(10, 30))), "shifted", 0.7),  # IoU 340 / 460: kept
            Detection(masks_of((slice(0, 5), slice(40, 45)), (slice(115, 120), slice(155, 160))), "corners", 0.9),  # box = whole image
            Detection(masks_of((slice(0, 1), slice(0, 160)), (slice(0, 60), slice(0, 1))), "half", 0.9),  # box exactly half: kept
            Detection(masks_of((slice(60, 64), slice(60, 66))), "tiny", 0.9),  # 24 px < 25
            Detection(masks_of((slice(60, 65), slice(100, 105))), "small", 0.9),  # 25 px: kept
            Detection(masks_of((slice(80, 100), slice(10, 30))), "unsure", 0.39),
            Detection(masks_of((slice(80, 100), slice(40, 60))), "sure", 0.4),
            Detection(np.ones((3, 3), bool), "wrong shape", 0.9),
        ],
        (120, 160),
    )
    assert sorted(d.class_name for d in found) == ["half", "shifted", "small", "square", "sure"]
    assert [d.confidence for d in found] == sorted((d.confidence for d in found), reverse=True)


@pytest.mark.parametrize("width", [160, 1280])
def test_close_box_centres_keep_the_larger_box_scaled_to_the_image_width(width):
    objects = ObjectMap(Snapshots3DConfig(encoder="gt_hash"))
    scale = width // 160  # 20 px at 1280 px wide is 2.5 px at 160
    shape = (120 * scale, width)

    def box(row, col, size):  # a square mask whose box centre is (row, col), in 160-px units
        r0, c0 = int((row - size / 2) * scale), int((col - size / 2) * scale)
        return masks_of((slice(r0, r0 + size * scale), slice(c0, c0 + size * scale)), shape=shape)

    found = objects.filter_detections(
        [
            Detection(box(20, 20, 10), "small first", 0.9),
            Detection(box(22, 20, 20), "large close", 0.8),  # centres 2 px apart (< 2.5): the larger box wins
            Detection(box(60, 20, 20), "large first", 0.9),
            Detection(box(62, 20, 10), "small close", 0.8),  # 2 px: the smaller is dropped
            Detection(box(60, 100, 20), "far a", 0.9),
            Detection(box(63, 100, 20), "far b", 0.8),  # 3 px apart: both kept
            Detection(box(100, 60, 12), "tie a", 0.9),
            Detection(box(101, 60, 12), "tie b", 0.8),  # same box area: the kept one stays
        ],
        shape,
    )
    assert sorted(d.class_name for d in found) == ["far a", "far b", "large close", "large first", "tie a"]


def test_a_larger_close_box_replaces_a_kept_one_that_is_not_the_first_kept():
    """The replaced candidate sits after others in the kept list (found by a 2-day run: removing
    it by equality compared mask arrays and raised)."""
    objects = ObjectMap(Snapshots3DConfig(encoder="gt_hash"))
    found = objects.filter_detections(
        [
            Detection(masks_of((slice(80, 100), slice(100, 120))), "elsewhere", 0.95),
            Detection(masks_of((slice(15, 25), slice(15, 25))), "small", 0.9),
            Detection(masks_of((slice(11, 31), slice(10, 30))), "large close", 0.8),  # centre 1 px from "small"
        ],
        (120, 160),
    )
    assert sorted(d.class_name for d in found) == ["elsewhere", "large close"]


def test_frontiers_only_when_asked_for(monkeypatch):
    calls = []
    original = FrontierMap.update
    monkeypatch.setattr(FrontierMap, "update", lambda self, *a: calls.append(a[2]) or original(self, *a))
    frames = [hand_made(n, 0.0, 0.0, [MUG, TABLE]) for n in range(7)]
    fresh(frames)
    assert calls == []  # off by default: no recall reads them
    fresh(frames, track_frontiers=True)
    assert calls == [0, 3, 6]  # every frontier_interval-th processed frame, from the first
    assert Snapshots3DConfig().track_frontiers is False
    with pytest.raises(ValueError):
        Snapshots3DConfig(track_frontiers=1)


def test_appended_voxels_compact_to_the_sequential_sorted_merge(monkeypatch):
    monkeypatch.setattr(objects_module, "COMPACT_MIN", 10**9)  # compact only when read
    rng = np.random.default_rng(3)
    config = Snapshots3DConfig(encoder="gt_hash")
    objects = ObjectMap(config)
    clouds = [box_surface([0, 0, 0], [0.2, 0.15, 0.1], 0.004) + rng.normal(0, 0.004, 3) for _ in range(12)]
    clouds += [box_surface([0.15, 0, 0], [0.35, 0.15, 0.1], 0.004) + rng.normal(0, 0.004, 3) for _ in range(6)]
    dets = [detection(c, np.eye(4)[0]) for c in clouds]
    assert all(d.counts.max() > 1 for d in dets)  # voxels average several points: the weights matter
    object_id = objects.add(dets[0], 1.0)
    obj = objects.objects[object_id]
    keys, points, counts = dets[0].keys, dets[0].points, dets[0].counts
    assert not obj.near(dets[-1].points, config.overlap_radius).all()  # (the second box is not there yet)
    for n, det in enumerate(dets[1:]):
        objects.merge_detection(object_id, det, 2.0 + n)
        keys, points, counts, _ = merge_voxels(keys, points, counts, det.keys, det.points, det.counts)
    assert len(obj._chunks) == len(dets) - 1  # appended: nothing read the cloud yet
    assert obj.near(dets[-1].points, config.overlap_radius).all()  # the neighbour index has the appended voxels
    assert np.array_equal(obj.keys, keys) and np.array_equal(obj.counts, counts)
    assert np.allclose(obj.points, points, atol=1e-6) and not obj._chunks
    assert np.all(np.diff(obj.keys) > 0) and int(obj.counts.sum()) == sum(len(c) for c in clouds)
    assert np.all(obj.bbox_min <= obj.points.min(0)) and np.all(obj.bbox_max >= obj.points.max(0))
    # a cloud appended past half its size compacts by itself
    monkeypatch.undo()
    big = ObjectMap(config)
    small = big.add(detection(box_surface([0, 0, 0], [0.05, 0.05, 0.05]), np.eye(4)[0]), 1.0)
    big.merge_detection(small, detection(box_surface([0, 0, 0], [1.0, 1.0, 0.5]), np.eye(4)[0]), 2.0)
    assert not big.objects[small]._chunks


# ----------------------------------------------------------------------------------------
# each component saves and restores its own state
# ----------------------------------------------------------------------------------------
def through_json(state: dict) -> dict:
    return json.loads(json.dumps(state))


def same_arrays(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def test_object_map_round_trip(memory):
    state, arrays = memory.map.to_state()
    restored = ObjectMap.from_state(memory.config, through_json(state), arrays, dim=memory.encoder.dim)
    again_state, again_arrays = restored.to_state()
    assert again_state == through_json(state) and same_arrays(again_arrays, arrays)
    assert (restored.next_id, restored.dirty_denoise, restored.dirty_merge) == (memory.map.next_id, memory.map.dirty_denoise, memory.map.dirty_merge)
    for object_id, obj in memory.map.objects.items():
        copy = restored.objects[object_id]
        assert (copy.class_name, copy.kind, copy.attributes, copy.held, copy.moved_at) == (obj.class_name, obj.kind, obj.attributes, obj.held, obj.moved_at)
    probes = [detection(o.points + 0.003, o.embedding) for o in list(memory.map.objects.values())[:8]]
    assert restored.match(probes) == memory.map.match(probes)
    with pytest.raises(ValueError, match="object"):
        ObjectMap.from_state(memory.config, dict(through_json(state), next_id=0), arrays)
    with pytest.raises(ValueError):
        ObjectMap.from_state(memory.config, through_json(state), dict(arrays, sizes=arrays["sizes"] + 1))
    with pytest.raises(ValueError):
        ObjectMap.from_state(memory.config, through_json(state), arrays, dim=memory.encoder.dim + 1)


def test_snapshot_memory_round_trip(memory):
    state, arrays = memory.memory.to_state()
    restored = SnapshotMemory.from_state(through_json(state), arrays, memory.config.min_detection, set(memory.map.objects))
    assert restored.to_state()[0] == through_json(state)
    assert restored.owner() == memory.memory.owner() and restored.object_frames == memory.memory.object_frames
    assert (restored.bins, restored.superseded, restored._order) == (memory.memory.bins, memory.memory.superseded, memory.memory._order)
    objects = memory.map.objects
    centres, detections = {i: o.center for i, o in objects.items()}, {i: o.num_detections for i, o in objects.items()}
    some = sorted(objects)[::3]
    original = SnapshotMemory.from_state(through_json(state), arrays, memory.config.min_detection)  # (never change the fixture)
    restored.update(some, centres, detections)
    original.update(some, centres, detections)
    assert {k: s.cluster for k, s in restored.snapshots.items()} == {k: s.cluster for k, s in original.snapshots.items()}
    with pytest.raises(ValueError, match="unknown object"):
        SnapshotMemory.from_state(through_json(state), arrays, 1, set(list(objects)[1:]))
    broken = through_json(state)
    broken["frames"].append(dict(broken["frames"][0]))
    with pytest.raises(ValueError, match="repeated"):
        SnapshotMemory.from_state(broken, arrays)


def test_occupancy_map_round_trip(memory):
    state, arrays = memory.grid.to_state()
    restored = OccupancyMap.from_state(through_json(state), {k: v.copy() for k, v in arrays.items()}, memory.config.grid_resolution)
    assert restored.to_state()[0] == through_json(state) and same_arrays(restored.to_state()[1], arrays)
    assert np.array_equal(restored.free, memory.grid.free) and np.array_equal(restored.origin, memory.grid.origin)
    with pytest.raises(ValueError, match="resolution"):
        OccupancyMap.from_state(through_json(state), arrays, 0.05)
    with pytest.raises(ValueError, match="range"):
        OccupancyMap.from_state(through_json(state), dict(arrays, evidence=np.full_like(arrays["evidence"], 100)), 0.1)
    with pytest.raises(ValueError):
        OccupancyMap.from_state(through_json(state), dict(arrays, explored=arrays["explored"].astype(np.float32)), 0.1)


def test_frontier_map_round_trip(history, memory):
    env, _, _ = history
    state, arrays = memory.frontiers.to_state()
    assert memory.frontiers.frontiers
    restored = FrontierMap.from_state(through_json(state), arrays)
    assert restored.to_state()[0] == through_json(state) and same_arrays(restored.to_state()[1], arrays)
    original = FrontierMap.from_state(through_json(state), arrays)
    for frontiers in (restored, original):  # the same map again: every frontier is kept, ids and all
        frontiers.update(memory.grid, env.pose.position[:2], 10**6, 1e9, memory.config)
    assert [f.frontier_id for f in restored.frontiers] == [f.frontier_id for f in original.frontiers]
    assert restored.next_id == original.next_id
    broken = through_json(state)
    broken["frontiers"][0]["orientation"] = [1.0, 1.0]
    with pytest.raises(ValueError, match="unit"):
        FrontierMap.from_state(broken, arrays)
    with pytest.raises(ValueError, match="next id"):
        FrontierMap.from_state(dict(through_json(state), next_id=0), arrays)


def test_overlap_shortcuts_give_the_exact_fraction_or_a_bound_that_settles_the_test():
    rng = np.random.default_rng(5)
    objects = ObjectMap(Snapshots3DConfig(encoder="gt_hash"))
    base = box_surface([0, 0, 0], [0.5, 0.4, 0.3], 0.005)
    a = objects.objects[objects.add(detection(base + rng.normal(0, 0.003, base.shape), np.eye(4)[0]), 1.0)]
    for shift in (0.0, 0.01, 0.02, 0.04, 0.08, 0.3):
        other = detection(base + [shift, shift / 2, 0.0] + rng.normal(0, 0.003, base.shape), np.eye(4)[0])
        exact = float(np.count_nonzero(cKDTree(a.points).query(other.points, distance_upper_bound=0.025)[0] < 0.025)) / len(other.points)
        assert a.overlap_fraction(other.points, 0.025) == pytest.approx(exact)
        assert a.overlap_fraction(other.points, 0.025, keys=other.keys) == pytest.approx(exact)
        assert a.overlap_fraction(other.points, 0.025, coarse=True, keys=other.keys) == pytest.approx(exact)
        for needed in (0.3, 0.7, 0.95):
            value = a.overlap_fraction(other.points, 0.025, needed, coarse=True, keys=other.keys)
            assert (value > needed) == (exact > needed) and value >= exact - 1e-12
            if value > needed:
                assert value == pytest.approx(exact)


def test_two_means_matches_sklearn_and_splits_ties_in_halves():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(11)
    for n, spread in ((5, 0.3), (9, 1.0), (20, 2.0), (40, 3.0)):
        xy = np.concatenate([rng.normal(0, spread, (n, 2)), rng.normal([4.0, 1.0], spread, (n + 3, 2))])
        ours = clustering.kmeans(xy, 2)
        theirs = KMeans(n_clusters=2, n_init=10, random_state=0).fit(xy).labels_
        assert set(ours) == {0, 1}
        assert np.array_equal(ours, theirs) or np.array_equal(ours, 1 - theirs), n
    assert [part.tolist() for part in clustering.split_in_two(np.ones((5, 2)))] == [[0, 1], [2, 3, 4]]
    assert [part.tolist() for part in clustering.split_in_two(np.array([[0.0, 0.0], [5.0, 5.0]]))] == [[0], [1]]


def test_the_largest_leaf_goes_first_and_a_frame_chosen_in_the_pass_is_preferred():
    mem = SnapshotMemory()
    mem.add_frame(1, 1.0, Pose.from_xy_yaw(0, 0, 0), {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}, (0, 0, 0))  # P: sees the big leaf and 3
    mem.add_frame(2, 2.0, Pose.from_xy_yaw(5, 0, 0), {3: 1.0, 10: 1.0, 11: 1.0, 12: 1.0, 13: 1.0}, (10, 0, 0))  # Q: more objects
    mem.add_frame(3, 3.0, Pose.from_xy_yaw(6, 0, 0), {4: 1.0}, (12, 0, 0))  # R: the only one seeing 4
    centres = {0: np.array([0.0, 0.0]), 1: np.array([0.5, 0.0]), 2: np.array([1.0, 0.0]), 3: np.array([5.0, 0.0]), 4: np.array([6.0, 0.0])}
    mem.update(set(centres), centres, dict.fromkeys(centres, 1))
    # {0, 1, 2} (largest) takes P first; then 3 alone prefers P (already chosen) over the higher-ranked Q
    assert {k: sorted(s.cluster) for k, s in mem.snapshots.items()} == {1: [0, 1, 2, 3], 3: [4]}


def test_pose_bins_and_pruning_keep_the_last_frame_of_every_object():
    assert pose_bin(Pose.from_xy_yaw(0.99, -0.01, 0.0), 0.5, 30.0) == (1, -1, 6)
    assert [pose_bin(Pose.from_xy_yaw(0, 0, math.radians(d)), 0.5, 30.0)[2] for d in (-180, -151, -149, 29, 31, 179)] == [0, 0, 1, 6, 7, 11]
    mem = SnapshotMemory()
    mem.add_frame(1, 1.0, Pose.from_xy_yaw(0, 0, 0), {0: 1.0, 1: 1.0}, (0, 0, 0))
    mem.add_frame(2, 2.0, Pose.from_xy_yaw(0, 0, 0), {0: 1.0}, (0, 0, 0))  # same bin: frame 1 is superseded
    assert mem.superseded == {1} and mem.bins[(0, 0, 0)] == 2
    assert mem.prune() == 0 and 1 in mem.frames  # the last frame that saw object 1
    mem.add_frame(3, 3.0, Pose.from_xy_yaw(0, 0, 0), {1: 1.0}, (0, 0, 0))  # now 1 is seen elsewhere; frame 2 superseded too
    mem.snapshots[2] = Snapshot(2, [0])
    assert mem.prune() == 1 and set(mem.frames) == {2, 3}  # frame 2 is a snapshot: kept
    assert mem.object_frames == {0: {2}, 1: {3}} and mem.superseded == {2}
    # a merged object's views: the keeper takes the larger confidence of the two
    mem.add_frame(4, 4.0, Pose.from_xy_yaw(9, 9, 0), {0: 0.3, 1: 0.8}, (18, 18, 0))
    mem.remap_object(1, 0)
    assert mem.frames[4].objects == {0: 0.8} and mem.object_frames[0] == {2, 3, 4} and 1 not in mem.object_frames


def test_angle_span_unwrapping_island_and_the_minimum_frontier_area():
    angles = np.radians([350.0, 10.0, 20.0])
    assert math.degrees(angle_span(angles)) == pytest.approx(30.0)
    unwrapped = unwrap_angles(angles)
    assert math.degrees(np.ptp(unwrapped)) == pytest.approx(30.0) and math.degrees(unwrapped.min() % (2 * math.pi)) == pytest.approx(350.0)
    assert math.degrees(angle_span(np.radians([0.0, 90.0, 180.0, 270.0]))) == pytest.approx(270.0)
    config = Snapshots3DConfig(encoder="gt_hash")
    for length, expected in ((20, 1), (19, 0)):
        grid = free_grid()
        grid.explored[:] = True
        centre = grid.local(np.array([0, 0]))
        row, start = centre[0] + 15, centre[1] - length // 2 - 1
        grid.explored[row - 1 : row + 2, start : start + length + 2] = False  # N frontier cells in its middle row
        regions = check_regions(grid, np.array([0.05, 0.05]), config)
        assert len(regions) == expected and all(len(cells) == length for _, cells in regions)
    # off the free space (e.g. the agent's own cell looks occupied): the nearest free component
    grid = free_grid()
    wall = grid.local(np.array([3, 0]))[0]
    grid.evidence[wall : wall + 2, :] = 5  # an occupied wall at x = 0.3..0.5 splits the free space
    near_left = grid.island(np.array([0.35, 0.05]))  # in the wall's left cell
    assert near_left[: wall].all() and not near_left[wall:].any()
    near_right = grid.island(np.array([0.45, 0.05]))  # in its right cell
    assert near_right[wall + 2 :].all() and not near_right[: wall + 2].any()


def test_single_object_goal_open_side_clearance_and_line_of_sight():
    from embodied_mem.memory.snapshots3d.goals import (
        first_k,
        line_of_sight,
        observe_point_single,
    )

    rng = np.random.default_rng(2)
    values = rng.integers(0, 20, 500).astype(float)
    for k in (1, 7, 60, 500, 900):
        assert np.array_equal(first_k(values, k), np.argsort(values, kind="stable")[:k])
    grid = free_grid()
    local = lambda xy: grid.local(grid.cell_of(np.array(xy)))
    wall = local([0.0, 0.0])[1] + 10  # an occupied wall along y = 1.0 .. 1.1 m
    grid.evidence[:, wall] = 5
    stand = standable(grid, 0.3)
    distance_to_wall = np.abs(np.arange(grid.shape[1]) - wall) * 0.1
    assert np.array_equal(stand[0], distance_to_wall >= 0.3)  # clearance 0.3 m from occupied cells
    coarse = OccupancyMap(0.25)  # (exact binary distances: a cell exactly at the clearance is standable)
    coarse.ensure(np.array([0, 0]), np.array([8, 8]), pad=0)
    coarse.known[:], coarse.evidence[:] = True, -1
    coarse.evidence[4, 4] = 5
    assert standable(coarse, 0.5)[4, 2] and standable(coarse, 0.5)[2, 4] and not standable(coarse, 0.5)[4, 3]
    # an object against the wall (on the +y side of the room): the goal is 1 m out, away from it
    goal = observe_point_single(grid, stand, np.array([0.05, 0.85]), np.array([3.0, -3.0]), 1.0)
    assert abs(goal[0] - 0.05) < 0.15 and -0.3 < goal[1] < 0.0 and 0.9 < np.linalg.norm(goal - [0.05, 0.85]) < 1.1
    # in the open, the goal is on the side of the agent
    open_goal = observe_point_single(free_grid(), standable(free_grid(), 0.3), np.array([0.05, 0.05]), np.array([-3.0, 0.05]), 1.0)
    assert np.allclose(open_goal, [-0.95, 0.05])
    # line of sight: through free cells only, after stepping off the (occupied) target
    here = local([0.05, 0.05]) + 0.5
    assert line_of_sight(grid, here, here + [0.0, -5.0], 20)
    assert not line_of_sight(grid, here, here + [0.0, 15.0], 20)  # the wall is in between
    assert line_of_sight(grid, here, here, 20)
    # a group behind the wall is looked at from a free cell on this side with a clear view
    centres = np.array([[-0.45, 0.95], [0.55, 0.95]])  # on the wall: occupied
    goal = observe_point_group(grid, stand, centres, np.array([0.05, -2.0]), 1.0)
    assert goal[1] < 0.75 and line_of_sight(grid, grid.local(grid.cell_of(goal)) + 0.5, local([0.05, 0.95]) + 0.5, 20)
    # nowhere free within reach: the snapshot's own observation point
    blocked = free_grid()
    blocked.evidence[:] = 5
    blocked.evidence[0, 0] = -1
    assert np.allclose(observe_point_group(blocked, blocked.free, centres, np.array([0.05, -2.0]), 1.0), [0.05, -2.0])


def test_matching_uses_exact_overlap_not_the_box_bound_and_the_physical_bias():
    objects = ObjectMap(Snapshots3DConfig(encoder="gt_hash"))
    hollow = objects.add(detection(box_surface([0, 0, 0], [0.4, 0.4, 0.4]), np.eye(4)[0]), 1.0)
    inside = detection(box_surface([0.15, 0.15, 0.15], [0.25, 0.25, 0.25]), np.eye(4)[0])  # in its box, 15 cm from its points
    assert objects.objects[hollow].overlap_fraction(inside.points, 0.025) == 0.0
    assert objects.match([inside]) == [None]  # sim = 0 + 1.0: the box bound (1.0) must not count
    low, high = np.zeros((1, 3)), np.full((1, 3), 0.5)
    assert boxes_overlap(np.array([0.25, 0.0, 0.0]), np.array([1.0, 0.5, 0.5]), low, high).tolist() == [True]
    assert boxes_overlap(np.array([0.5, 0.0, 0.0]), np.array([1.0, 0.5, 0.5]), low, high).tolist() == [False]  # a shared face: IoU 0
    # sim = (1 + b) spatial + (1 - b) visual
    biased = ObjectMap(Snapshots3DConfig(encoder="gt_hash", phys_bias=0.5))
    target = biased.add(detection(box_surface([0, 0, 0], [0.2, 0.2, 0.2]), np.eye(4)[0]), 1.0)
    same_place = detection(box_surface([0, 0, 0], [0.2, 0.2, 0.2]) + 0.002, np.eye(4)[1])  # spatial 1, visual 0: 1.5 > 1.2
    assert biased.match([same_place]) == [target] and objects.match([detection(box_surface([0, 0, 0], [0.4, 0.4, 0.4]) + 0.002, np.eye(4)[1])]) == [None]


def test_periodic_merge_sums_the_bookkeeping():
    objects = ObjectMap(Snapshots3DConfig(encoder="gt_hash"))
    points = box_surface([0.0, 0.0, 0.0], [0.3, 0.3, 0.3])
    a = objects.add(detection(points, np.eye(4)[0], "mug", conf=0.6, attributes={"color": "red"}), 5.0)
    objects.merge_detection(a, detection(points, np.eye(4)[0], "cup", conf=0.5, attributes={"color": "red"}), 6.0)
    b = objects.add(detection(points + 0.002, np.eye(4)[0], "cup", conf=0.9, attributes={"color": "blue"}), 2.0)
    objects.objects[b].moved_at = 3.0
    assert objects.merge_overlapping() == {a: b}  # the more confident one keeps its id
    keeper = objects.objects[b]
    assert keeper.num_detections == 3 and keeper.conf == 0.9 and (keeper.first_seen, keeper.last_seen) == (2.0, 6.0)
    assert keeper.class_votes == {"mug": 1, "cup": 2} and keeper.attribute_votes == {"color": {"red": 2, "blue": 1}} and keeper.moved_at == 3.0
    assert keeper.instance_votes == {7: 3} and keeper.kind_votes == {"object": 3}


def test_detection_filter_boundaries():
    config = Snapshots3DConfig(encoder="gt_hash", det_proximity_px=0.0)
    big = (960, 1280)  # 0.001 H W = 1228.8 px: larger than the 25-px floor here
    found = ObjectMap(config).filter_detections(
        [Detection(masks_of((slice(0, 30), slice(0, 40)), shape=big), "1200 px", 0.9), Detection(masks_of((slice(100, 131), slice(0, 40)), shape=big), "1240 px", 0.9)], big
    )
    assert [d.class_name for d in found] == ["1240 px"]
    square = masks_of((slice(10, 20), slice(10, 20)))
    found = ObjectMap(config).filter_detections([Detection(square, "a", 0.9), Detection(masks_of((slice(10, 19), slice(10, 20))), "b", 0.8)], (120, 160))
    assert [d.class_name for d in found] == ["a", "b"]  # IoU exactly 0.9: not above
    # centres exactly 2.5 px apart at 160 px wide: not closer than 20 px at 1280
    found = ObjectMap(Snapshots3DConfig(encoder="gt_hash")).filter_detections(
        [Detection(masks_of((slice(0, 10), slice(50, 60))), "c", 0.9), Detection(masks_of((slice(2, 13), slice(50, 60))), "d", 0.8)], (120, 160)
    )
    assert [d.class_name for d in found] == ["c", "d"]
    assert ObjectMap(config).cloud_of(box_surface([1, 0, 0], [1.1, 0.1, 0.1])[:16], np.zeros(2)) is not None  # 16 points: enough


def test_density_clusters_and_new_voxels_in_the_neighbour_index():
    from embodied_mem.memory.snapshots3d.objects import largest_cluster

    rng = np.random.default_rng(4)
    dense = rng.uniform(0, 0.04, (40, 3))
    smaller = rng.uniform(0, 0.04, (25, 3)) + [0.3, 0, 0]  # 0.26 m apart (> eps): another cluster
    outliers = rng.uniform(2, 3, (6, 3))  # scattered: noise
    keep = largest_cluster(np.concatenate([dense, smaller, outliers]), 0.1, 10)
    assert keep[:40].all() and not keep[40:].any()
    sparse = np.stack([np.arange(0.08, 1.0, 0.04), np.full(23, 0.02), np.full(23, 0.02)], axis=1)  # a trail, 4 cm steps
    keep = largest_cluster(np.concatenate([dense, sparse]), 0.1, 10)
    assert keep[:40].all() and not keep[40 + 5 :].any()  # too sparse to be core: only its start borders the blob
    assert largest_cluster(rng.uniform(0, 5, (9, 3)), 0.1, 10).all()  # fewer points than min_points: all kept
    assert largest_cluster(rng.uniform(0, 50, (30, 3)), 0.1, 10).all()  # no dense cell: all kept
    chain = np.stack([np.arange(0, 1.0, 0.01), np.zeros(100), np.zeros(100)], axis=1)
    assert largest_cluster(np.concatenate([chain, chain[:30] + [3, 0, 0]]), 0.1, 10)[:100].all()  # connected along the chain
    # voxels a detection adds are found by the object's neighbour index before any rebuild
    objects = ObjectMap(Snapshots3DConfig(encoder="gt_hash"))
    obj = objects.objects[objects.add(detection(box_surface([0, 0, 0], [0.5, 0.5, 0.5]), np.eye(4)[0]), 1.0)]
    assert not obj.near(np.array([[0.0, 0.0, 0.7]]), 0.025)[0]  # builds the tree
    objects.merge_detection(obj.object_id, detection(box_surface([0, 0, 0.6], [0.05, 0.05, 0.75]), np.eye(4)[0]), 2.0)
    assert obj._tree is not None and obj.near(np.array([[0.0, 0.0, 0.7]]), 0.025)[0]


def test_merge_order_thresholds_feature_weights_and_mask_iou():
    from embodied_mem.memory.snapshots3d.objects import _mask_iou, _weighted_unit

    a, b = unit([1, 0, 0, 0]), unit([0, 1, 0, 0])
    assert np.allclose(_weighted_unit(a, 3, b, 1), unit([3, 1, 0, 0]))  # detection-count-weighted mean
    rng = np.random.default_rng(8)
    for _ in range(20):
        masks = [masks_of((slice(r, r + h), slice(c, c + w))) for r, c, h, w in rng.integers(1, 40, (2, 4))]
        boxes = [(int(np.nonzero(m.any(1))[0][0]), int(np.nonzero(m.any(1))[0][-1]) + 1, int(np.nonzero(m.any(0))[0][0]), int(np.nonzero(m.any(0))[0][-1]) + 1) for m in masks]
        union = np.count_nonzero(masks[0] | masks[1])
        brute = np.count_nonzero(masks[0] & masks[1]) / union
        assert _mask_iou(masks[0], boxes[0], masks[0].sum(), masks[1], boxes[1], masks[1].sum()) == pytest.approx(brute)
    # pairs go by decreasing overlap, and a merge changes the keeper's feature for the later pairs
    objects = ObjectMap(Snapshots3DConfig(encoder="gt_hash"))
    cube = box_surface([0, 0, 0], [0.3, 0.3, 0.3])
    first = objects.add(detection(cube, [1, 0, 0, 0], conf=0.9), 1.0)
    middle = objects.add(detection(cube + 0.002, [0.72, -0.694, 0, 0], conf=0.5), 1.0)
    patch = box_surface([1.0, 0.0, 0.0], [1.1, 0.1, 0.1])  # part of `last` lies away from `first`
    last = objects.add(detection(np.concatenate([cube + [0.004, 0.0, 0.0], patch]), [0.72, 0.694, 0, 0], conf=0.7), 1.0)
    on_first = lambda other: objects.objects[first].overlap_fraction(objects.objects[other].points, 0.025)
    assert on_first(middle) == 1.0 and 0.7 < on_first(last) < 1.0
    # middle (overlap 1.0) joins first, whose feature then differs from last's (cosine 0.41 < 0.7)
    assert objects.merge_overlapping() == {middle: first} and set(objects.objects) == {first, last}
    exact = ObjectMap(Snapshots3DConfig(encoder="gt_hash", merge_visual_sim_thresh=0.75))
    x = exact.add(detection(cube, np.eye(4)[0], conf=0.9), 1.0)
    y = exact.add(detection(cube + 0.002, np.eye(4)[0], conf=0.5), 1.0)
    exact.objects[y].embedding = np.array([0.75, math.sqrt(1 - 0.5625), 0.0, 0.0], np.float32)  # cosine exactly 0.75
    assert exact.merge_overlapping() == {} and set(exact.objects) == {x, y}  # not above the threshold


def test_a_new_duplicate_merges_into_an_unchanged_object_and_chains_resolve():
    objects = ObjectMap(Snapshots3DConfig(encoder="gt_hash"))
    cube = box_surface([0, 0, 0], [0.3, 0.3, 0.3])
    old = objects.add(detection(cube, np.eye(4)[0], conf=0.9), 1.0)
    assert objects.merge_overlapping() == {} and not objects.dirty_merge  # a pass: `old` is unchanged since
    new = objects.add(detection(cube + 0.002, np.eye(4)[0], conf=0.5), 2.0)
    assert objects.merge_overlapping() == {new: old}  # one changed object is enough to test the pair
    # a chain in one pass: a -> b, then b -> c: every absorbed id names the final keeper
    chain = ObjectMap(Snapshots3DConfig(encoder="gt_hash"))
    a = chain.add(detection(cube, np.eye(4)[0], conf=0.5), 1.0)
    b = chain.add(detection(cube + 0.002, np.eye(4)[0], conf=0.6), 1.0)
    c = chain.add(detection(np.concatenate([cube + 0.001, box_surface([1, 0, 0], [1.1, 0.1, 0.1])]), np.eye(4)[0], conf=0.9), 1.0)
    merged = chain.merge_overlapping()
    assert merged == {a: c, b: c} and set(chain.objects) == {c}
    # frames and snapshots follow a merge: the absorbed id becomes the keeper's
    mem = SnapshotMemory()
    mem.add_frame(5, 1.0, Pose.from_xy_yaw(0, 0, 0), {a: 0.5, b: 0.6}, (0, 0, 0))
    mem.snapshots[5] = Snapshot(5, [a, b])
    mem.remap_object(a, b)
    assert mem.snapshots[5].cluster == [b] and mem.frames[5].objects == {b: 0.6}


def test_a_leaf_splits_by_two_means_on_the_centres_not_by_order():
    xy = np.array([[0.0, 0.0], [5.0, 0.0], [0.2, 0.1], [5.1, 0.2], [0.1, 0.3]])
    parts = sorted(part.tolist() for part in clustering.split_in_two(xy))
    assert parts == [[0, 2, 4], [1, 3]]


# ----------------------------------------------------------------------------------------
# all or nothing: a frame that fails at its last step leaves the memory exactly as it was
# ----------------------------------------------------------------------------------------
# a stricter match and a cleanup every 8 processed frames: on this stream the periodic merge joins duplicates
ATOMIC = {"name": "snapshots3d", "encoder": "gt_hash", "track_frontiers": True, "sim_threshold": 1.5, "cleanup_interval": 8}


def checkpoint(mem: Snapshots3D, directory: Path) -> tuple:
    """The full saved checkpoint: its state JSON and every array's dtype, shape and bytes."""
    mem.save(directory)
    state, arrays = system_module.load_manifest(directory, "snapshots3d", config=mem.config)
    return json.dumps(state, sort_keys=True), {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in arrays.items()}


def said(mem: Snapshots3D, near: Pose) -> list:
    """Recall answers, every field (oracle and language track)."""
    out = []
    for query in (Query("", near=near, constraints=FIRST_PICKED), Query("the sofa", k=3), Query("a red mug", k=3, near=near)):
        for h in mem.recall(query).hits:
            pose = None if h.agent_pose is None else h.agent_pose.to_dict()
            target = None if h.target_xyz is None else h.target_xyz.tolist()
            out.append((h.frame_id, h.stamp, pose, target, h.object_id, h.score, json.dumps(h.evidence, sort_keys=True, default=str)))
    return out


def fails_at_last_step(mem: Snapshots3D, obs: Observation, step: str) -> None:
    """Observe ``obs`` with its last step broken: the gate's commit or the diary's record raises
    (``commit_done``: the commit does its work, then raises)."""
    owner, name = (mem._diary, "record") if step == "record" else (mem.gate, "commit")
    real = getattr(owner, name)

    def broken(*args, **kwargs):
        if step == "commit_done":
            real(*args, **kwargs)
        raise RuntimeError("injected failure")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(owner, name, broken)
        with pytest.raises(RuntimeError, match="injected failure"):
            mem.observe(obs)


def test_a_frame_that_fails_at_its_last_step_changes_nothing(one_day, tmp_path):
    stream = one_day.observations[:120]
    # 71: a cleanup that merges and drops objects; 72: a release; 111: new frontiers; 119: a cleanup that merges, and a grasp
    failing = {71: "commit", 72: "commit_done", 111: "commit", 119: "record"}
    assert [e.kind for e in stream[72].events] == ["release"] and [e.kind for e in stream[119].events] == ["grasp"]
    mem, twin = build("memory", ATOMIC), build("memory", ATOMIC)
    for n, obs in enumerate(stream):
        if n in failing:
            before = checkpoint(mem, tmp_path / f"before{n}")
            checkpoint(twin, tmp_path / f"twin{n}")  # (a save compacts the clouds: the twin saves too)
            stats, answers, objects, snapshots = mem.stats(), said(mem, obs.pose), set(mem.map.objects), {k: list(s.cluster) for k, s in mem.memory.snapshots.items()}
            fails_at_last_step(mem, obs, failing[n])
            assert checkpoint(mem, tmp_path / f"after{n}") == before, n
            assert mem.stats() == stats and said(mem, obs.pose) == answers, n
            assert fingerprint(mem) == fingerprint(twin), n
        mem.observe(obs)
        twin.observe(obs)
        if n in failing:  # the frame taken for real: exactly what the twin that never failed holds
            assert fingerprint(mem) == fingerprint(twin), n
            assert checkpoint(mem, tmp_path / f"again{n}") == checkpoint(twin, tmp_path / f"twin_again{n}"), n
            assert mem.stats() == twin.stats() and said(mem, obs.pose) == said(twin, obs.pose), n
            # what the frame did (so the rollback had something to undo)
            assert {k: list(s.cluster) for k, s in mem.memory.snapshots.items()} != snapshots, n
            if n in (71, 119):
                assert mem.processed % ATOMIC["cleanup_interval"] == 0 and objects - set(mem.map.objects), n
            if n == 72:
                assert any(o.moved_at == obs.events[0].stamp for o in mem.map.objects.values())
            if n == 111:
                assert json.loads(before[0])["frontiers"] != mem.frontiers.to_state()[0], n
    assert [(e.kind, e.frame_id) for e in mem.diary.entries] == [("pick", 30), ("place", 72), ("pick", 119)]


def test_a_failed_cleanup_frame_puts_back_the_diary_entries_a_merge_renamed(tmp_path):
    config = {"name": "snapshots3d", "encoder": "gt_hash", "cleanup_interval": 3}
    base = Pose.from_xy_yaw(0.0, 0.0, 0.0)
    mug_xyz = visible_instances(hand_made(0, 0.0, 0.0, [MUG]), 20)[0].centroid
    frames = [hand_made(0, 0.0, 0.0, [MUG, TABLE]), hand_made(1, 0.0, 0.0, [MUG, TABLE], [Event("grasp", 2.0, base, Pose(mug_xyz, base.orientation))]), hand_made(2, 0.0, 0.0, [TABLE])]
    mem, twin = (build("memory", config) for _ in range(2))
    for m in (mem, twin):
        for obs in frames[:2]:
            m.observe(obs)
        (table,) = ids_of(m, "table")
        original = m.map.objects[table]  # a more confident duplicate: the periodic merge keeps it, the table is absorbed
        duplicate = m.map.add(detection(original.points + 0.002, original.embedding, "table", conf=0.95, kind="receptacle"), 1.5)
    (pick,) = mem.diary.entries
    assert pick.receptacle_id == table and mem.map.held_id() is not None
    before = checkpoint(mem, tmp_path / "before")
    checkpoint(twin, tmp_path / "twin")
    fails_at_last_step(mem, frames[2], "commit")
    assert checkpoint(mem, tmp_path / "after") == before and mem.diary.entries[0].receptacle_id == table
    mem.observe(frames[2])
    twin.observe(frames[2])
    assert mem.diary.entries[0].receptacle_id == duplicate and table not in mem.map.objects  # renamed by the merge
    assert fingerprint(mem) == fingerprint(twin) and checkpoint(mem, tmp_path / "again") == checkpoint(twin, tmp_path / "twin_again")


# ----------------------------------------------------------------------------------------
# absurd cameras and images
# ----------------------------------------------------------------------------------------
def test_absurd_intrinsics_or_positions_are_refused_at_the_door_and_change_nothing(tmp_path):
    mem = fresh([hand_made(0, 0.0, 0.0, [MUG, TABLE]), hand_made(1, 0.0, 0.0, [MUG, TABLE])], track_frontiers=True)
    state, stats, answers = fingerprint(mem), mem.stats(), said(mem, Pose.from_xy_yaw(0.0, 0.0, 0.0))
    good = hand_made(2, 0.5, 0.0, [MUG, TABLE])
    far_mount = Pose(np.array([0.0, 2e4, 1.0]), CAMERA.body_T_camera.orientation)
    for change, message in (
        ({"fx": 1e-9}, r"Observation\.camera\.fx 1e-09 with cx 80.0 .* 90\.00 degrees"),  # back-projected to 1e10 m: indexed the grid at -9.2e18
        ({"fx": 1e-3}, r"Observation\.camera\.fx"),
        ({"fx": 80 / 100.5}, r"Observation\.camera\.fx"),  # the edge 100.5 focal lengths off the axis: just past the limit
        ({"cx": 1e6}, r"Observation\.camera\.fx .* with cx 1000000\.0"),
        ({"fy": 0.5}, r"Observation\.camera\.fy 0\.5 with cy 60\.0"),
        ({"cy": -1e5}, r"Observation\.camera\.fy .* with cy -100000\.0"),
        ({"body_T_camera": far_mount}, r"Observation\.camera\.body_T_camera\.position"),
    ):
        with pytest.raises(ValueError, match=message):
            mem.observe(dataclasses.replace(good, camera=dataclasses.replace(CAMERA, **change)))
        assert fingerprint(mem) == state and mem.stats() == stats, change
    for x in (1e4 + 1.0, -2e5):
        with pytest.raises(ValueError, match=r"Observation\.pose\.position"):
            mem.observe(dataclasses.replace(good, pose=Pose.from_xy_yaw(x, 0.0, 0.0)))
    assert fingerprint(mem) == state and mem.stats() == stats and said(mem, Pose.from_xy_yaw(0.0, 0.0, 0.0)) == answers
    # at the limit (99 focal lengths), and a depth return far beyond the map's range: taken, without a warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mem.observe(dataclasses.replace(good, camera=dataclasses.replace(CAMERA, fx=80 / 99, fy=60 / 99)))
        mugs = ids_of(mem, "mug")
        huge = hand_made(3, 0.5, 0.0, [MUG, TABLE])
        huge.depth[MUG_PIXELS] = 3e38
        mem.observe(huge)
    assert mem.stats().frames_seen == 4 and ids_of(mem, "mug") == mugs  # the "mug" 3e38 m away made no object
    assert np.all(np.abs(mem.grid.origin) < 1000) and max(mem.grid.shape) < 400


def test_points_beyond_the_grid_grow_it_instead_of_wrapping_into_other_cells():
    config = Snapshots3DConfig(encoder="gt_hash")
    grid = OccupancyMap(0.1)

    def view(camera_xy, points):
        points = np.asarray(points, float)
        return frontiers_module.ViewPoints(points, np.full(len(points), 2.0), np.zeros(len(points), int), np.arange(len(points)), np.array([*camera_xy, 1.0]), 120, 160)

    grid.integrate(view((0.0, 0.0), [[1.0, 0.0, 0.5]]), np.zeros(2), config)
    top = (grid.origin + np.array(grid.shape) - 1) * 0.1
    assert top[0] < 6.5  # the arrays end 6 m from the camera
    # from (1.5, 0): an obstacle 5.5 m away, beyond the arrays' end (it used to land in a cell of another row)
    before = grid.occupied.copy()
    grid.integrate(view((1.5, 0.0), [[7.0, 0.05, 0.5], [1.5, 6.0, 0.5]]), np.array([1.5, 0.0]), config)
    occupied = {tuple(c) for c in (np.argwhere(grid.occupied) + grid.origin).tolist()}
    assert (70, 0) in occupied and (15, 60) in occupied  # each in its own cell
    assert np.count_nonzero(grid.occupied) == np.count_nonzero(before) + 2
    # farther than twice max_integrate_depth from the camera in plan: not integrated (outside the volume)
    shape = grid.shape
    grid.integrate(view((0.0, 0.0), [[0.0, 6.5, 0.5]]), np.zeros(2), config)
    assert grid.shape == shape and (0, 65) not in {tuple(c) for c in (np.argwhere(grid.occupied) + grid.origin).tolist()}


# ----------------------------------------------------------------------------------------
# exact boundaries (mutation survivors of the last review)
# ----------------------------------------------------------------------------------------
def test_density_core_needs_exactly_min_points_in_the_block_and_borders_touch_a_core_cell():
    from embodied_mem.memory.snapshots3d.objects import largest_cluster

    far = np.array([[5.0, 5.0, 5.0], [9.0, 1.0, 1.0], [1.0, 9.0, 1.0]])
    tight = lambda n: np.stack([np.linspace(0.001, 0.004, n), np.full(n, 0.001), np.full(n, 0.001)], axis=1)  # one 5 cm cell
    keep = largest_cluster(np.concatenate([tight(10), far]), 0.1, 10)  # 10 points in the block: core
    assert keep.tolist() == [True] * 10 + [False] * 3
    assert largest_cluster(np.concatenate([tight(9), far]), 0.1, 10).all()  # 9: no core, no cluster, all kept
    # a cluster of exactly 5 points is kept alone; of 4, everything is kept
    assert largest_cluster(np.concatenate([tight(5), far, far + 0.5]), 0.1, 3).tolist() == [True] * 5 + [False] * 6
    assert largest_cluster(np.concatenate([tight(4), far, far + 0.5]), 0.1, 3).all()
    # cells of 5 cm along x: B (9 points) and A (1) are core (their blocks hold 10 and 11); C (1
    # point, block A + C + D = 3) is a border cell next to core A; D (1), next to C only, is noise
    b = np.stack([np.linspace(0.0, 0.045, 9), np.zeros(9), np.zeros(9)], axis=1)
    chain = np.concatenate([b, [[0.075, 0.0, 0.0], [0.125, 0.0, 0.0], [0.175, 0.0, 0.0]]])
    assert largest_cluster(chain, 0.1, 10).tolist() == [True] * 11 + [False]
    # an empty cell is never core: 6 + 6 points two cells apart (0.14 m, beyond eps) make no cluster
    # though the empty cell between them has 12 points in its block
    apart = np.concatenate([tight(6), tight(6) + [0.144, 0.0, 0.0], far])
    assert largest_cluster(apart, 0.1, 10).all()


def test_periodic_merge_keeper_on_equal_confidence_and_moved_at_carried_over():
    cube = box_surface([0.0, 0.0, 0.0], [0.3, 0.3, 0.3])
    # equal confidence, the same overlap both ways: the pair (lower id, higher id) comes first, the higher id keeps
    objects = ObjectMap(Snapshots3DConfig(encoder="gt_hash"))
    low = objects.add(detection(cube, np.eye(4)[0], conf=0.8), 1.0)
    high = objects.add(detection(cube + 0.002, np.eye(4)[0], conf=0.8), 2.0)
    assert objects.merge_overlapping() == {low: high} and set(objects.objects) == {high}
    # the absorbed object's release stamp goes to the keeper; of two, the later
    for absorbed_at, keeper_at, expected in ((3.0, None, 3.0), (3.0, 5.0, 5.0), (7.0, 5.0, 7.0), (None, 5.0, 5.0), (None, None, None)):
        objects = ObjectMap(Snapshots3DConfig(encoder="gt_hash"))
        absorbed = objects.add(detection(cube, np.eye(4)[0], conf=0.5), 1.0)
        keeper = objects.add(detection(cube + 0.002, np.eye(4)[0], conf=0.9), 2.0)
        objects.objects[absorbed].moved_at, objects.objects[keeper].moved_at = absorbed_at, keeper_at
        assert objects.merge_overlapping() == {absorbed: keeper}
        assert objects.objects[keeper].moved_at == expected, (absorbed_at, keeper_at)


def test_detection_exactly_at_3_5_m_is_kept_and_overlap_exactly_0_7_does_not_merge():
    objects = ObjectMap(Snapshots3DConfig(encoder="gt_hash"))
    steps = np.arange(5) / 32.0  # exact in float32: the box centre is exactly (3.5, 0)
    xx, yy = np.meshgrid(3.4375 + steps, -0.0625 + steps, indexing="ij")
    cloud = np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, 0.5)], axis=1)
    kept = objects.cloud_of(cloud, np.zeros(2))
    assert kept is not None and len(kept[1]) == 25 and np.all((kept[1].min(0) + kept[1].max(0))[:2] / 2 == [3.5, 0.0])
    assert objects.cloud_of(cloud, np.array([-1e-9, 0.0])) is None  # 3.5 m + 1 nm: dropped
    # periodic merge: overlap above 0.7 both ways merges, exactly 0.7 does not
    row = lambda ks: np.array([[0.005 + 0.05 * k, 0.005, 0.005] for k in ks])
    for shared, merges in ((7, False), (8, True)):
        pair = ObjectMap(Snapshots3DConfig(encoder="gt_hash"))
        a = pair.add(detection(row([*range(shared), *range(20, 30 - shared)]), np.eye(4)[0], conf=0.9), 1.0)
        b = pair.add(detection(row([*range(shared), *range(10, 20 - shared)]), np.eye(4)[0], conf=0.5), 1.0)
        assert pair.objects[a].overlap_fraction(pair.objects[b].points, 0.025) == shared / 10 == pair.objects[b].overlap_fraction(pair.objects[a].points, 0.025)
        assert pair.merge_overlapping() == ({b: a} if merges else {}), shared


def test_single_goal_open_side_is_the_largest_4_connected_cluster():
    """The open side is the largest cluster of free cells near the object, clusters joined by
    edges only (the paper's 4-connectivity): two clusters that touch at a corner stay apart.
    Here the east cluster (5 cells) is the largest; joined at the corner, the north-west pair
    (4 + 2 cells) would be."""
    from embodied_mem.memory.snapshots3d.goals import observe_point_single

    grid = free_grid()  # all free: every line of sight is clear
    stand = np.zeros(grid.shape, dtype=bool)
    east = [(44, y) for y in range(38, 43)]
    north_west = [(37, 43), (37, 42), (36, 42), (36, 41)]
    corner = [(38, 44), (39, 44)]  # touches (37, 43) at a corner only
    for cell in east + north_west + corner:
        stand[cell] = True
    target = (np.array([40.5, 40.5]) + grid.origin) * grid.resolution  # local cell (40.5, 40.5)
    goal = observe_point_single(grid, stand, target, np.array([-3.0, 3.0]), 0.5)
    assert np.allclose(goal, (np.array([44.5, 40.5]) + grid.origin) * grid.resolution)  # east, 5 cells out


def test_goal_geometry_rules_the_mutation_pass_left_untested():
    """Cell centres, the k smallest without ties, grid bounds, the step back off furniture and
    its limit, and a three-object group looked at along its PCA short axis."""
    from embodied_mem.memory.snapshots3d.goals import _inside, first_k, line_of_sight, stand_cells

    stand = np.zeros((6, 7), dtype=bool)
    stand[3, 4] = True
    assert stand_cells(stand).tolist() == [[3.5, 4.5]]  # cell i spans [i, i + 1)
    distinct = np.random.default_rng(4).permutation(300).astype(float)
    for k in (1, 2, 7, 60, 299, 300):
        assert np.array_equal(first_k(distinct, k), np.argsort(distinct)[:k])
    for point, inside in (((0.0, 0.0), True), ((5.99, 6.99), True), ((6.0, 0.0), False), ((0.0, 7.0), False), ((-0.01, 0.0), False), ((0.0, -0.01), False)):
        assert bool(_inside((6, 7), np.array(point))) is inside, point

    # A target on furniture 4 cells deep (along -y from the start): the step back crosses it
    # when 2 * max_steps >= 4, not when it is 3.
    grid = free_grid()
    target = np.array([40.5, 40.5])
    grid.evidence[40, 37:41] = 5  # cells y = 37..40 occupied, the target in the last
    start = np.array([40.5, 30.5])
    assert line_of_sight(grid, start, target, 2.0)  # 4 steps back reach free y = 36
    assert not line_of_sight(grid, start, target, 1.5)  # 3 steps allowed: still on the furniture
    assert not line_of_sight(grid, np.array([40.5, 45.5]), np.array([40.5, 34.5]), 20)  # the furniture is in between

    # Three objects, not on a line: the goal is along the PCA short axis, on the observer's side
    # (the first two centres alone would give a different axis).
    grid = free_grid()
    stand = standable(grid, 0.3)
    centres = np.array([[0.0, 0.0], [0.2, 1.0], [3.0, 0.2]])
    local = centres / grid.resolution - grid.origin
    local = np.unique(np.floor(local), axis=0) + 0.5
    mean = local.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov((local - mean).T))
    short = vectors[:, int(np.argmin(values))]
    observer = np.array([1.0, -3.0])
    if np.dot(mean - (observer / grid.resolution - grid.origin), short) <= 0:
        short = -short
    goal = observe_point_group(grid, stand, centres, observer, 1.0)
    offset = goal / grid.resolution - grid.origin - mean
    assert np.dot(offset, -short) / np.linalg.norm(offset) > np.cos(np.radians(10)), (goal, short)


def test_group_goal_is_the_ring_cell_straight_across_from_the_centre_of_the_centres():
    """Two objects 1 m apart in the open, seen from below: the goal is the cell exactly one
    distance below the middle of their (cell-centred) positions."""
    grid = free_grid()
    centres = np.array([[-0.45, 0.95], [0.55, 0.95]])
    goal = observe_point_group(grid, standable(grid, 0.3), centres, np.array([0.05, -2.0]), 1.0)
    assert np.allclose(goal, [0.05, -0.05])
    above = observe_point_group(grid, standable(grid, 0.3), centres, np.array([0.05, 3.0]), 1.0)
    assert np.allclose(above, [0.05, 1.95])  # seen from above: the other side


def test_voxel_helpers_on_one_point_one_voxel_and_two_chunks():
    """The voxel cloud helpers' empty-input shortcuts apply to empty inputs only: one point is a
    voxel, a one-voxel cloud keeps its voxel in a merge, and two chunks combine into both."""
    v = 0.01
    keys, points, counts = objects_module.voxelize(np.array([[0.004, 0.005, 0.006]]), v)
    assert len(keys) == 1 and counts.tolist() == [1] and np.allclose(points, [[0.004, 0.005, 0.006]])
    other = objects_module.voxelize(np.array([[0.5, 0.5, 0.5], [0.503, 0.5, 0.5]]), v)
    merged_keys, merged_points, merged_counts, new = objects_module.merge_voxels(keys, points, counts, *other)
    assert sorted(merged_keys.tolist()) == sorted([*keys.tolist(), *other[0].tolist()]) and merged_counts.sum() == 3 and len(new) == 1
    combined = objects_module.combine_voxels([(keys, points, counts), other])
    assert np.array_equal(combined[0], merged_keys) and np.allclose(combined[1], merged_points) and np.array_equal(combined[2], merged_counts)
    shifted = objects_module.shift_voxels(keys, points, counts, np.array([1.0, 0.0, 0.0]), v)
    assert len(shifted[0]) == 1 and np.allclose(shifted[1], [[1.004, 0.005, 0.006]], atol=1e-6)


def test_largest_cluster_never_picks_the_unclustered_points():
    """The noise (points in no density cluster) can outnumber the cluster: the cluster is kept."""
    rng = np.random.default_rng(3)
    dense = rng.normal(0.0, 0.005, size=(30, 3))
    noise = np.array([[x, y, z] for x in range(4) for y in range(4) for z in range(3)], dtype=float)[:40] + 1.0  # 1 m apart
    points = np.concatenate([dense, noise])
    keep = objects_module.largest_cluster(points, eps=0.05, min_points=10)
    assert keep[:30].all() and not keep[30:].any()


def test_a_split_keeps_a_lone_outlier_apart_and_halves_only_equal_centres():
    """2-means may leave one centre alone on its side: that is a split ({outlier}, rest), not the
    degenerate case (all centres equal), which alone is cut into halves."""
    group = np.array([[0.0, 0.0], [0.2, 0.1], [0.1, 0.3], [0.3, 0.2]])
    for at in (0, 4):
        xy = np.insert(group, at, [[8.0, 8.0]], axis=0)
        parts = sorted((sorted(part.tolist()) for part in clustering.split_in_two(xy)), key=len)
        assert parts == [[at], sorted(set(range(5)) - {at})], at
    same = np.zeros((5, 2))
    assert [part.tolist() for part in clustering.split_in_two(same)] == [[0, 1], [2, 3, 4]]


def test_kmeans_finds_three_separated_blobs_and_gives_each_point_its_own_cluster_when_k_is_n():
    """Two-means alone cannot tell a swapped update from the right one; three blobs can."""
    rng = np.random.default_rng(9)
    blobs = [np.array([0.0, 0.0]), np.array([5.0, 0.0]), np.array([0.0, 5.0])]
    points = np.concatenate([centre + 0.2 * rng.standard_normal((12, 2)) for centre in blobs])
    labels = clustering.kmeans(points, 3)
    groups = {tuple(sorted(np.flatnonzero(labels == label))) for label in set(labels.tolist())}
    assert groups == {tuple(range(0, 12)), tuple(range(12, 24)), tuple(range(24, 36))}
    assert np.array_equal(clustering.kmeans(points, 3), labels)  # seeded: deterministic
    assert clustering.kmeans(points[:4], 4).tolist() == [0, 1, 2, 3]  # k = n: one point each
    assert len(set(clustering.kmeans(points[:5], 4).tolist())) == 4  # k < n: still k clusters
