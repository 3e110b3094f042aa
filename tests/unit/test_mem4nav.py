"""Mem4Nav: the invariants of reference/mem4nav.md section 7, and the system end to end."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import yaml

from conftest import small_sim
from embodied_mem.memory.association import TrackerConfig
from embodied_mem.memory.base import describe, visible_instances
from embodied_mem.memory.mem4nav import Mem4Nav, Mem4NavConfig
from embodied_mem.memory.mem4nav.graph import SemanticGraph
from embodied_mem.memory.mem4nav.ltm import LongTermMemory, ReversibleTransformer, TokenIndex, TransformerSpec
from embodied_mem.memory.mem4nav.octree import SparseOctree, morton_decode, morton_encode
from embodied_mem.memory.mem4nav.stm import ShortTermMemory
from embodied_mem.memory.mem4nav.system import Retrieved
from embodied_mem.memory.resolve import ResolvedGoal
from embodied_mem.registry import make_config
from embodied_mem.sim.embedded.episode import EmbeddedEpisode
from embodied_mem.sim.tasks.success import entity_satisfied
from embodied_mem.types import Detection, Event, Observation, Pose, Query

CONFIG_PATH = Path(__file__).resolve().parents[2] / "configs" / "memory" / "mem4nav.yaml"


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---------------------------------------------------------------------------------- octree
def test_morton_decode_inverts_encode_for_random_16_bit_coordinates():
    rng = np.random.default_rng(0)
    for i, j, k in rng.integers(0, 1 << 16, size=(5000, 3)).tolist():
        assert morton_decode(morton_encode(i, j, k)) == (i, j, k)
    # bit layout: x in bit 0, y in bit 1, z in bit 2 of each group
    assert morton_encode(1, 0, 0) == 1 and morton_encode(0, 1, 0) == 2 and morton_encode(0, 0, 1) == 4
    assert morton_encode(2, 0, 0) == 8


def test_distinct_voxels_have_distinct_keys():
    codes = {morton_encode(i, j, k) for i, j, k in itertools.product(range(16), repeat=3)}
    assert len(codes) == 16**3
    rng = np.random.default_rng(1)
    voxels = {tuple(v) for v in rng.integers(0, 1 << 21, size=(20000, 3)).tolist()}
    assert len({morton_encode(*v) for v in voxels}) == len(voxels)


def test_parent_is_code_shifted_by_three_and_points_in_one_leaf_share_a_key():
    fine = SparseOctree(8, 51.2, (-25.6, -25.6, -25.6))
    coarse = SparseOctree(7, 51.2, (-25.6, -25.6, -25.6))
    rng = np.random.default_rng(2)
    for point in rng.uniform(-25, 25, size=(500, 3)):
        code = fine.key(point)
        assert coarse.key(point) == code >> 3
        corner, size = fine.node_box(code, fine.depth)
        assert np.all(point >= corner - 1e-9) and np.all(point < corner + size + 1e-9)
        inside = corner + rng.uniform(0.01, 0.99, size=(5, 3)) * size
        assert all(fine.key(p) == code for p in inside)
        assert fine.key(corner + np.array([1.5 * size, 0.5 * size, 0.5 * size])) != code


def test_negative_coordinates_are_shifted_not_clipped():
    tree = SparseOctree(8, 51.2, (-25.6, -25.6, -25.6))
    points = np.array([[-3.1, -0.05, 0.0], [-3.3, -0.05, 0.0], [3.1, 0.05, 0.0], [-25.5, -25.5, -25.5]])
    codes = [tree.key(p) for p in points]
    assert len(set(codes)) == len(codes)
    for point, code in zip(points, codes):
        assert np.all(np.abs(tree.center_of(code) - point) <= tree.leaf_size / 2 + 1e-9)
    assert tree.key(np.array([-26.0, 0.0, 0.0])) is None and tree.key(np.array([0.0, 25.6, 0.0])) is None


def test_radius_query_equals_brute_force_and_prunes():
    tree = SparseOctree(8, 51.2, (-25.6, -25.6, -25.6))
    rng = np.random.default_rng(3)
    for point in rng.uniform(-10, 10, size=(3000, 3)):
        tree.insert_or_get(tree.key(point))
    assert all(tree.leaves[c].code >> 3 in tree.levels[tree.depth - 1] for c in tree.leaves)
    for center, radius in [(np.zeros(3), 1.0), (np.array([5.0, -3.0, 2.0]), 2.5), (np.array([-9.0, 9.0, 0.0]), 0.3), (np.zeros(3), 40.0)]:
        found, tested = tree.radius_query(center, radius)
        brute = {c for c, leaf in tree.leaves.items() if np.linalg.norm(leaf.center - center) <= radius}
        assert {leaf.code for leaf in found} == brute
        if radius < 10:
            assert tested < len(tree.leaves) / 4


# ---------------------------------------------------------------------------------- LTM
def test_reversible_round_trip_depth_6():
    spec = TransformerSpec(dim=64, depth=6, heads=8, chunks=4, seed=3)
    x = np.random.default_rng(4).standard_normal((10, 128)) * 3
    r64 = ReversibleTransformer(spec).double()
    y = r64.encode(x)
    assert np.abs(y - x).max() > 0.1  # R is not the identity
    assert np.abs(r64.decode(y) - x).max() < 1e-5
    r32 = ReversibleTransformer(TransformerSpec(dim=384))
    x32 = x[:, :64].repeat(12, axis=1).astype(np.float32)
    assert np.abs(r32.decode(r32.encode(x32)) - x32).max() < 1e-4


def test_transformer_init_is_fixed_by_the_seed():
    a, b, c = (ReversibleTransformer(TransformerSpec(dim=64, chunks=4, seed=s)) for s in (0, 0, 1))
    assert a.checksum() == b.checksum() != c.checksum()
    x = np.ones((1, 128), dtype=np.float32)
    assert np.array_equal(a.encode(x), b.encode(x))


@pytest.mark.parametrize("theta_norm", [1.0, 0.0])
def test_ltm_second_write_carries_the_first_token_and_keeps_one_entry(theta_norm):
    ltm = LongTermMemory(ReversibleTransformer(TransformerSpec(dim=64, chunks=4)), theta_norm=theta_norm)
    v1, v2 = unit(np.random.default_rng(5), 2, 64)
    key = ("leaf", 42)
    (first,) = ltm.write([key], v1[None])
    assert np.allclose(ltm.transformer.decode(first[None])[0], np.concatenate([np.zeros(64), v1]), atol=1e-5)
    (second,) = ltm.write([key], v2[None])
    assert len(ltm.index) == 1 and np.array_equal(ltm.index.get(key), second)
    decoded = ltm.transformer.decode(second[None])[0]
    theta = first[:64] if theta_norm == 0 else first[:64] / np.linalg.norm(first[:64]) * theta_norm
    assert np.allclose(decoded[:64], theta, atol=1e-4) and np.linalg.norm(theta) > 0.5
    assert np.allclose(decoded[64:], v2, atol=1e-5)
    # The same key twice in one batch: the second write carries the first one's token.
    other = LongTermMemory(ltm.transformer, theta_norm=theta_norm)
    tokens = other.write([key, ("leaf", 7), key], np.stack([v1, v2, v2]))
    assert np.allclose(tokens[2], second, atol=1e-5) and len(other.index) == 2


def test_index_top_m_equals_brute_force_and_reuses_slots():
    rng = np.random.default_rng(6)
    index = TokenIndex(32, capacity=4)
    tokens = {("leaf", n): rng.standard_normal(32).astype(np.float32) for n in range(60)}
    for key, token in tokens.items():
        index.put(key, token)
    for n in range(0, 60, 3):
        index.remove(("leaf", n))
        del tokens[("leaf", n)]
    keys = list(tokens)
    matrix = np.stack([tokens[k] for k in keys])
    queries = rng.standard_normal((5, 32)).astype(np.float32)
    for query, found in zip(queries, index.search(queries, 7)):
        brute = np.argsort(np.sum((matrix - query) ** 2, axis=1))[:7]
        assert [k for k, _ in found] == [keys[i] for i in brute]
    used = index.used
    for n in range(100, 120):  # new keys fill the freed rows before the index grows
        index.put(("node", n), rng.standard_normal(32).astype(np.float32))
    assert index.used == used and len(index) == 60
    for _ in range(25000):  # the public code's labels ran out after 20,000 writes
        index.put(("node", 100), rng.standard_normal(32).astype(np.float32))
    assert len(index) == 60 and index.used == used


def test_ltm_retrieve_reranks_decoded_candidates_by_cosine():
    ltm = LongTermMemory(ReversibleTransformer(TransformerSpec(dim=64, chunks=4)))
    vectors = unit(np.random.default_rng(7), 40, 64)
    for _ in range(3):
        ltm.write([("leaf", n) for n in range(40)], vectors)
    for row in (0, 17, 39):
        matches = ltm.retrieve(vectors[row][None], candidates=40, m=3)[0]
        assert matches[0].key == ("leaf", row) and matches[0].cosine == pytest.approx(1.0, abs=1e-4)
        assert [m.cosine for m in matches] == sorted((m.cosine for m in matches), reverse=True) and len(matches) == 3


# ---------------------------------------------------------------------------------- STM
def test_stm_capacity_eviction_and_reinsert():
    rng = np.random.default_rng(8)
    stm = ShortTermMemory(capacity=8, dim=16, lam=0.5)
    vectors = unit(rng, 30, 16)
    for step in range(8):
        stm.write(("leaf", step), vectors[step], np.zeros(3), now=step)
    stm.write(("leaf", 0), vectors[0], np.zeros(3), now=9)
    slot = stm.slot_of[("leaf", 0)]
    assert stm.frequency[slot] == 2 and stm.step[slot] == 9 and len(stm) == 8
    now = 10
    expected = stm.keys[int(np.argmin(0.5 * stm.frequency - 0.5 * (now - stm.step)))]
    assert expected == ("leaf", 1)
    assert stm.write(("leaf", 100), vectors[10], np.zeros(3), now=now) == expected
    assert expected not in stm.slot_of and len(stm) == 8
    for step in range(11, 40):
        stm.write(("leaf", 200 + step), vectors[step % 30], np.zeros(3), now=step)
        assert len(stm) <= 8


def test_stm_retrieval_filters_by_epsilon_and_sorts_by_cosine():
    rng = np.random.default_rng(9)
    stm = ShortTermMemory(capacity=32, dim=16, lam=0.5)
    vectors = unit(rng, 20, 16)
    # even entries within 2.3 m of q_rel, odd ones at least 3.4 m away
    offsets = rng.uniform(-1, 1, size=(20, 3)) + np.array([[5.0 * (n % 2), 0.0, 0.0] for n in range(20)])
    for n in range(20):
        stm.write(("leaf", n), vectors[n], offsets[n], now=n, object_id=n)
    query, q_rel = vectors[3], np.array([0.5, 0.5, 0.0])
    matches = stm.retrieve(query, q_rel, epsilon=3.0, k=3)
    inside = [n for n in range(20) if np.linalg.norm(offsets[n] - q_rel) <= 3.0]
    cosines = sorted((float(vectors[n] @ query) for n in inside), reverse=True)
    assert len(inside) == 10 and 3 not in inside  # the filter drops the exact match (entry 3)
    assert len(matches) == 3
    assert all(np.linalg.norm(m.p_rel - q_rel) <= 3.0 for m in matches)
    assert [m.cosine for m in matches] == pytest.approx(cosines[:3], abs=1e-5)


# ---------------------------------------------------------------------------------- graph
def test_graph_node_creation_running_mean_and_edges():
    graph = SemanticGraph(dim=4, delta=0.7, alpha=1.0, beta=0.5)
    a, b = np.array([1.0, 0, 0, 0]), np.array([0, 1.0, 0, 0])
    t0 = graph.update(a, np.zeros(3), 0.0, 0.1)
    near = np.array([0.8, 0.3, 0, 0])  # ||near - a|| = 0.36 <= delta
    t1 = graph.update(near, np.array([2.0, 0, 0]), 1.0, 0.1)
    assert t0.created and not t1.created and len(graph) == 1 and graph.graph.number_of_edges() == 0
    assert np.allclose(graph.descriptors[0], (a + near) / 2) and np.allclose(graph.position(0), [1.0, 0, 0])
    t2 = graph.update(b, np.array([1.0, 4.0, 0]), 2.0, 0.1)  # min L2 = 1.27 > delta
    assert t2.created and t2.previous == 0 and graph.graph.number_of_edges() == 1
    assert graph.graph.edges[0, 1]["weight"] == pytest.approx(1.0 * 4.0 + 0.5 * 0.1)
    graph.update(a, np.array([1.0, 0, 0]), 3.0, 0.1)  # back to node 0: edge 1 -> 0
    assert graph.graph.has_edge(1, 0) and graph.graph.number_of_edges() == 2
    before = graph.graph.edges[0, 1]["weight"]
    graph.update(b, np.array([1.0, 4.0, 0]), 4.0, 0.1)  # 0 -> 1 again: 2-way mean with the old weight
    new = np.linalg.norm(graph.position(0) - graph.position(1)) + 0.05
    assert graph.graph.edges[0, 1]["weight"] == pytest.approx((before + new) / 2)
    graph.update(b, np.array([1.0, 4.0, 0]), 5.0, 0.1)
    assert graph.graph.number_of_edges() == 2 and not any(s == t for s, t in graph.graph.edges)


def test_graph_node_created_only_when_min_distance_exceeds_delta():
    rng = np.random.default_rng(10)
    graph = SemanticGraph(dim=8, delta=0.7, alpha=1.0, beta=0.5)
    for v in unit(rng, 200, 8):
        before = graph.descriptors.copy()
        transition = graph.update(v, rng.uniform(-5, 5, 3), 0.0, 0.1)
        distances = np.linalg.norm(before - v, axis=1) if len(before) else np.array([np.inf])
        assert transition.created == bool(distances.min() > 0.7)


def test_dijkstra_equals_brute_force_on_a_small_graph():
    rng = np.random.default_rng(11)
    graph = SemanticGraph(dim=2, delta=0.7, alpha=1.0, beta=0.5)
    for n in range(7):
        graph._add_node(np.array([n, 0.0], dtype=np.float32), rng.uniform(0, 10, 3), 0.0)
    for s, t in rng.integers(0, 7, size=(16, 2)).tolist():
        graph.add_edge(s, t, 0.1)
    for source, target in itertools.permutations(range(7), 2):
        path, length = graph.shortest_path(source, target)
        paths = list(nx.all_simple_paths(graph.graph, source, target))
        lengths = [sum(graph.graph.edges[u, v]["weight"] for u, v in itertools.pairwise(p)) for p in paths]
        if not paths:
            assert path == [] and length == float("inf")
        else:
            assert length == pytest.approx(min(lengths))


# ---------------------------------------------------------------------------------- system
def small_system(**overrides) -> Mem4Nav:
    # make_config, as build("memory", ...) does, without importing every other memory system
    return Mem4Nav(make_config(Mem4NavConfig, {"encoder": "gt_hash", **overrides}, "memory 'mem4nav'"))


def test_distance_from_routes_over_the_graph_not_through_walls():
    memory = small_system(route_ends=1)
    near = Pose.from_xy_yaw(0.0, 0.0, 0.0)
    assert memory.distance_from(near)((3.0, 0.0)) == pytest.approx(3.0)  # empty graph: straight line
    # A U-shaped corridor walked once: (0,0) -> (0,5) -> (3,5) -> (3,0), a wall between the legs.
    for n, xy in enumerate([(0, 0), (0, 5), (3, 5), (3, 0)]):
        memory.graph.update(np.eye(memory.dim, dtype=np.float32)[n], np.array([*xy, 0.0]), float(n), 0.0)
    distance = memory.distance_from(near)
    assert distance((3.0, 0.0)) == pytest.approx(13.0)  # 5 + 3 + 5 along the edges, not 3
    assert distance((3.0, 0.5)) == pytest.approx(13.5)  # plus the last leg from the nearest node
    assert distance((0.0, 1.0)) == pytest.approx(1.0)
    backwards = memory.distance_from(Pose.from_xy_yaw(3.0, 0.0, 0.0))
    assert backwards((0.0, 0.0)) == pytest.approx(3.0)  # edges are directed: never walked back


def test_multi_level_uses_stm_iff_a_filtered_entry_reaches_tau():
    memory = small_system()
    vectors = unit(np.random.default_rng(12), 6, memory.dim)
    memory.graph.update(vectors[0], np.zeros(3), 0.0, 0.1)
    memory.octree.insert_or_get(memory.octree.key(np.array([1.0, 0.0, 0.0])))
    far_code = memory.octree.key(np.array([9.0, 0.0, 0.0]))
    memory.octree.insert_or_get(far_code)
    near_code = memory.octree.key(np.array([1.0, 0.0, 0.0]))
    memory.stm.write(("leaf", near_code), vectors[1], np.array([1.0, 0, 0]), now=1)
    memory.stm.write(("leaf", far_code), vectors[2], np.array([9.0, 0, 0]), now=1)
    memory.ltm.write([("leaf", near_code), ("leaf", far_code)], vectors[1:3])
    tilted = 0.8 * vectors[1] + 0.6 * vectors[3]  # cos with vectors[1] ~ 0.8 >= tau
    cases = [(vectors[1], np.zeros(3), "stm"), (tilted, np.zeros(3), "stm"), (vectors[2], np.zeros(3), "ltm"), (vectors[1], np.array([20.0, 0, 0]), "ltm"), (vectors[4], np.zeros(3), "ltm")]
    for vector, position, expected in cases:
        q_rel = position - memory.graph.position(memory.graph.current)
        filtered = [m for m in memory.stm.retrieve(vector, q_rel, 3.0, 128)]
        assert (expected == "stm") == any(m.cosine >= 0.7 for m in filtered)
        source, matches = memory.retrieve(vector[None], position)[0]
        assert source == expected and matches
    source, matches = memory.retrieve(vectors[2][None], np.zeros(3))[0]
    assert matches[0].key == ("leaf", far_code) and matches[0].source == "ltm"


def test_config_yaml_lists_every_field_with_its_default():
    values = yaml.safe_load(CONFIG_PATH.read_text())
    assert values.pop("name") == "mem4nav"
    assert values == dataclasses.asdict(Mem4NavConfig())  # the tracker's fields included
    config = make_config(Mem4NavConfig, values, "memory 'mem4nav'")
    assert isinstance(config.tracker, TrackerConfig) and config == Mem4NavConfig()
    with pytest.raises(ValueError):
        make_config(Mem4NavConfig, {"octree_dept": 8}, "memory 'mem4nav'")
    with pytest.raises(ValueError):
        make_config(Mem4NavConfig, {"tracker": {"object_radiuss": 0.3}}, "memory 'mem4nav'")


# Episodes: detector perception (misses, false positives, label confusion, drift) unless named gt.
def record(seed: int, mode: str = "detector", days: int = 1, rearrangements: int = 3) -> tuple[EmbeddedEpisode, list[Observation]]:
    """Stream an episode's history (no tasks: only what the robot saw and the simulator's truth)."""
    config = small_sim(days=days, rearrangements=rearrangements)
    config.perception.mode = mode
    episode = EmbeddedEpisode(config, seed)
    return episode, list(episode.history())


def observe_all(episode: EmbeddedEpisode, frames: list[Observation], **overrides) -> Mem4Nav:
    memory = small_system(**overrides)
    memory.set_floor_plan(episode.floor_plan())
    for obs in frames:
        memory.observe(obs)
    return memory


@pytest.fixture(scope="module")
def history():
    return record(seed=3)


@pytest.fixture(scope="module")
def observed(history):
    return observe_all(*history)


def first_picked(near: Pose, target: str = "object", role: str | None = None) -> Query:
    goal = {"target": target, "day": 0, "interacted": True, "select": {"by": "order", "index": 0}}
    if role is not None:
        goal["role"] = role
    return Query("", near=near, constraints={"goals": [goal], "ordered": False})


def shows(episode: EmbeddedEpisode, hit, kind: str, true_id: int) -> bool:
    """FindingDory's high-level check: does the TRUE pose of the hit's frame satisfy the goal?"""
    pose = episode.frame_pose(hit.frame_id)
    return pose is not None and entity_satisfied(episode.oracle, kind, true_id, pose)


def fingerprint(memory: Mem4Nav, with_stream: bool = False) -> str:
    state, arrays = memory._state()
    if not with_stream:
        state = {k: v for k, v in state.items() if k not in ("gate", "diary")}
    digest = hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode())
    for name in sorted(arrays):
        digest.update(name.encode() + np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


def summary(recall) -> list:
    return [(h.object_id, h.frame_id, None if h.target_xyz is None else np.round(h.target_xyz, 6).tolist(), round(h.score, 6), h.evidence.get("source")) for h in recall.hits]


def test_detector_mode_finds_the_first_rearranged_object_where_it_is_now(history, observed):
    episode, _ = history
    env, first = episode.env, episode.robot.history.interactions[0]
    truth = env.entity_position(first.object_id)
    hits = observed.recall(first_picked(episode.final_pose)).hits
    assert hits and hits[0].agent_pose is not None
    hit = hits[0]
    assert np.linalg.norm(hit.target_xyz - truth) < 0.5
    assert shows(episode, hit, "object", first.object_id)  # a real frame that shows it there
    # The hit names the memory's own entity: the one its diary says was picked first, whose
    # track (majority vote over noisy detections) carries the true label.
    track_id = observed.diary.interactions()[0].object_id
    assert hit.object_id == track_id and observed.label_of(track_id)[0] == env.label(first.object_id)
    entities = {e.entity_id: e for e in observed.catalog()}
    assert np.linalg.norm(entities[track_id].position - truth) < 0.5
    # Its sightings before the move are still in the octree, far away, and are not the answer.
    stale = [observed.octree.leaves[c] for c in observed.track_leaves[track_id] if not observed._current(track_id, observed.octree.leaves[c])]
    assert stale and all(np.linalg.norm(leaf.center[:2] - first.start_position[:2]) < 0.5 for leaf in stale)
    assert np.linalg.norm(first.start_position[:2] - truth[:2]) > 1.0
    assert len(observed.graph) > 1 and observed.graph.graph.number_of_edges() > 0
    assert len(observed.stm) <= 128 and len(observed.ltm.index) == len(observed.octree.leaves) + len(observed.graph)
    # Where it was put: the place pose and frame (the diary's interaction pose) show the receptacle.
    receptacle_hits = observed.recall(first_picked(episode.final_pose, "receptacle", "goal")).hits
    assert receptacle_hits and shows(episode, receptacle_hits[0], "receptacle", first.goal_receptacle)
    assert receptacle_hits[0].frame_id == observed.diary.interactions()[0].place.frame_id == first.place_frame
    # Only trusted tracks are entities; the diary's rooms come from the floor plan.
    assert {e.entity_id for e in observed.catalog()} <= {t.track_id for t in observed.tracker.confirmed()}
    assert observed.diary.interactions()[0].place.room == first.goal_room


def test_gt_perception_uses_the_simulator_ids():
    episode, frames = record(seed=3, mode="gt")
    memory = observe_all(episode, frames)
    first = episode.robot.history.interactions[0]
    hits = memory.recall(first_picked(episode.final_pose)).hits
    assert hits and hits[0].object_id == first.object_id  # the upper bound: track id = instance id
    assert np.linalg.norm(hits[0].target_xyz - episode.env.entity_position(first.object_id)) < 0.5
    assert shows(episode, hits[0], "object", first.object_id)
    assert [(i.object_id, i.pick.receptacle_id, i.place.receptacle_id) for i in memory.diary.interactions()] == [
        (i.object_id, i.start_receptacle, i.goal_receptacle) for i in episode.robot.history.interactions
    ]


def test_an_object_moved_and_not_seen_since_is_where_the_robot_put_it(history):
    """Hand-made frames: a mug seen twice at A, grasped, released at B in a frame that shows nothing."""
    episode, frames = history
    camera = frames[0].camera
    height, width = camera.height, camera.width
    rgb, depth = np.zeros((height, width, 3), np.uint8), np.full((height, width), 2.0, np.float32)
    mask = np.zeros((height, width), bool)
    mask[height // 2 - 6 : height // 2 + 6, width // 2 - 6 : width // 2 + 6] = True
    mug = Detection("mug", mask, 0.9, "object", {"color": "red"})
    pose = Pose.from_xy_yaw(1.0, 1.0, 0.0)

    def frame(n: int, detections, events=(), at: Pose = pose) -> Observation:
        return Observation(float(n), n, rgb, depth, at, camera, detections=list(detections), events=list(events), day=0)

    memory = small_system()
    memory.observe(frame(0, [mug]))
    memory.observe(frame(1, [mug]))
    where = memory.catalog()[0].position
    gripper = Pose(memory.tracker.tracks[1].position, pose.orientation)
    memory.observe(frame(2, [mug], [Event("grasp", 2.0, pose, gripper)]))
    away = Pose.from_xy_yaw(4.0, 1.0, math.pi)
    put = Pose(np.array([1.0, 4.0, 0.5]), away.orientation)
    memory.observe(frame(3, [], [Event("release", 3.0, away, put)], at=away))
    memory.observe(frame(4, [], at=Pose.from_xy_yaw(0.0, 0.0, 0.0)))
    (entity,) = memory.catalog()
    assert entity.category == "mug" and np.allclose(entity.position, put.position) and entity.last_seen == 3.0
    assert np.linalg.norm(where - put.position) > 2.0  # its octree sightings are all at A, now stale
    (interaction,) = memory.diary.interactions()
    assert interaction.object_id == entity.entity_id and interaction.place.frame_id == 3
    hits = memory.recall(Query("", near=away, constraints={"goals": [{"target": "object", "category": "mug"}], "ordered": False})).hits
    assert len(hits) == 1 and hits[0].frame_id == 3 and hits[0].agent_pose == away
    assert np.allclose(hits[0].target_xyz, put.position) and hits[0].evidence["source"] == "diary"
    # A text query never answers with the stale leaves at A.
    assert all(h.target_xyz is None or np.linalg.norm(h.target_xyz - where) > 1.0 for h in memory.recall(Query("red mug", near=pose)).hits)
    # An interaction whose object the memory could not tell (None) is no entity to locate.
    assert memory.locate(ResolvedGoal(0, "object", entity_ids=[None]), Query("")) == []

    # A release whose own frame shows the object put down: that sighting joins the moved track.
    memory = small_system()
    for n in range(2):
        memory.observe(frame(n, [mug]))
    memory.observe(frame(2, [mug], [Event("grasp", 2.0, pose, gripper)]))
    there = visible_instances(frame(3, [mug], at=away), 1)[0].centroid
    memory.observe(frame(3, [mug], [Event("release", 3.0, away, Pose(there, away.orientation))], at=away))
    assert list(memory.tracker.tracks) == [1] and memory.tracker.tracks[1].moved_at == 3.0
    (entity,) = memory.catalog()
    assert np.linalg.norm(entity.position - there) < 0.2
    hits = memory.recall(Query("", near=away, constraints={"goals": [{"target": "object", "category": "mug"}], "ordered": False})).hits
    assert hits[0].frame_id == 3 and hits[0].evidence["source"] != "diary"


def test_every_hit_names_a_real_history_frame(history, observed):
    episode, _ = history
    for text in ("where is the mug", "the bed", "kitchen", "a red book on the table"):
        hits = observed.recall(Query(text, k=5, near=episode.final_pose)).hits
        assert hits and all(episode.frame_pose(h.frame_id) is not None for h in hits)
    # A graph node answers with the frame that last updated it, not a made-up pose.
    node = observed.graph.current
    match = Retrieved(("node", node), 1.0, "ltm", observed.graph.position(node))
    hit = observed._text_hit(match, np.zeros(observed.dim, np.float32), Query("x"))
    frame = history[1][hit.frame_id]
    assert hit.frame_id is not None and hit.agent_pose == frame.pose and hit.stamp <= frame.stamp
    room = {"target": "room", "day": 0, "select": {"by": "room", "property": "final"}}
    hits = observed.recall(Query("", near=episode.final_pose, constraints={"goals": [room], "ordered": False})).hits
    assert hits and episode.env.room_of(episode.frame_pose(hits[0].frame_id).position[:2]) == hits[0].evidence["room"]


def test_bad_input_leaves_the_memory_unchanged(history, observed, tmp_path):
    _, frames = history
    source = frames[-1]
    before, seen = fingerprint(observed), observed.stats().frames_seen
    zero_depth = dataclasses.replace(source, frame_id=900001, stamp=source.stamp + 1, depth=np.zeros_like(source.depth), events=[])
    no_detections = dataclasses.replace(source, frame_id=900002, stamp=source.stamp + 2, detections=[], events=[])
    assert zero_depth.detections  # detections, but no depth to place them
    observed.observe(zero_depth)
    observed.observe(no_detections)
    assert fingerprint(observed) == before and observed.stats().frames_seen == seen + 2
    full = fingerprint(observed, with_stream=True)
    with pytest.raises(ValueError):
        observed.observe(dataclasses.replace(source, frame_id=900003, stamp=source.stamp - 100.0))
    assert fingerprint(observed, with_stream=True) == full
    # corrupt, missing and foreign checkpoints
    observed.save(tmp_path / "good")
    good = (tmp_path / "good" / "manifest.json").read_text()
    arrays = (tmp_path / "good" / "arrays.npz").read_bytes()

    def checkpoint(name: str, manifest: str, npz: bytes = arrays) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(manifest)
        (tmp_path / name / "arrays.npz").write_bytes(npz)

    def edited(change) -> str:
        manifest = json.loads(good)
        change(manifest["state"])
        return json.dumps(manifest)

    checkpoint("bad", good[:-40])
    checkpoint("foreign", edited(lambda s: s["transformer"].update(checksum="0" * 64)))
    checkpoint("truncated", good, arrays[:500])
    checkpoint("no_tracker", edited(lambda s: s.pop("tracker")))
    checkpoint("bad_track", edited(lambda s: s["tracker"]["tracks"][0].update(position=[1.0, 2.0])))
    checkpoint("lost_tracks", edited(lambda s: s["tracker"].update(tracks=s["tracker"]["tracks"][:1])))
    for name in ("bad", "foreign", "truncated", "no_tracker", "bad_track", "lost_tracks", "missing"):
        with pytest.raises(ValueError):
            observed.load(tmp_path / name)
        assert fingerprint(observed, with_stream=True) == full
    with pytest.raises(ValueError):
        small_system(rt_seed=1).load(tmp_path / "good")


def test_observe_refuses_fields_changed_after_construction(history, observed):
    _, frames = history
    source = frames[-1]
    full, seen = fingerprint(observed, with_stream=True), observed.stats().frames_seen
    infinite = dataclasses.replace(source, frame_id=900004, stamp=source.stamp + 3)
    infinite.stamp = math.inf  # valid when built, broken before it reached the memory
    with pytest.raises(ValueError, match="stamp"):
        observed.observe(infinite)
    broken = dataclasses.replace(source, frame_id=900005, stamp=source.stamp + 4)
    broken.detections = [object()]
    with pytest.raises(ValueError):
        observed.observe(broken)
    assert fingerprint(observed, with_stream=True) == full and observed.stats().frames_seen == seen
    assert 900004 not in observed.gate.seen and 900005 not in observed.gate.seen


def test_save_load_round_trip_gives_identical_recall(history, observed, tmp_path):
    episode, _ = history
    near = episode.final_pose
    room = {"target": "room", "day": 0, "select": {"by": "room", "property": "longest_time"}}
    queries = [
        first_picked(near),
        first_picked(near, "receptacle", "start"),
        Query("", near=near, constraints={"goals": [room], "ordered": False}),
        Query("where is the mug", near=near),
        Query("the bed", near=Pose.from_xy_yaw(2.0, 2.0, 0.0)),
    ]
    expected = [summary(observed.recall(q)) for q in queries]
    observed.save(tmp_path / "ckpt")
    restored = small_system()  # no floor plan given: it comes back inside the diary
    restored.load(tmp_path / "ckpt")
    assert [summary(restored.recall(q)) for q in queries] == expected
    assert restored.stats() == observed.stats()
    assert restored.tracker.to_dict() == observed.tracker.to_dict()
    assert restored.diary.floor_plan is not None and restored.diary.floor_plan.names() == episode.floor_plan().names()
    assert fingerprint(restored, with_stream=True) == fingerprint(observed, with_stream=True)


def test_replaying_the_same_observations_keeps_size_flat(history):
    episode, frames = history
    memory = observe_all(episode, frames)
    first = memory.stats()
    offset = frames[-1].stamp - frames[0].stamp + 60.0
    for obs in frames:
        memory.observe(dataclasses.replace(obs, frame_id=obs.frame_id + 100000, stamp=obs.stamp + offset))
    second = memory.stats()
    assert second.frames_seen == 2 * first.frames_seen
    assert second.bytes <= 1.05 * first.bytes
    memory.observe(frames[0])  # an already seen frame id is ignored
    assert memory.stats() == second


def test_language_track_with_minilm_and_plot(history):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episode, frames = history
    memory = small_system(encoder="minilm")  # the real MiniLM encoder (the default)
    memory.set_floor_plan(episode.floor_plan())
    for obs in frames[:150]:
        memory.observe(obs)
    trusted = {t.track_id for t in memory.tracker.confirmed()}
    entity_id = max(trusted & set(memory.track_leaves), key=lambda i: len(memory.track_leaves[i]))
    category, attributes = memory.label_of(entity_id)
    hits = memory.recall(Query(f"where did you see the {describe(category, attributes)}?", near=episode.env.pose)).hits
    assert hits and memory.label_of(hits[0].object_id)[0] == category
    assert all(episode.frame_pose(h.frame_id) is not None for h in hits)
    figure, ax = plt.subplots()
    memory.plot(ax)
    assert len(ax.collections) >= 2
    plt.close(figure)
    memory.reset()
    assert memory.stats().items == 0 and memory.recall(Query("mug")).hits == [] and not memory.tracker.tracks
    assert memory.diary.floor_plan is not None  # the map outlives a reset
