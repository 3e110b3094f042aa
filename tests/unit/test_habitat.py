"""The Habitat adapter without Habitat: frames, FindingDory's episode files, goal_expr, success.

Everything here runs on the CPU with a kinematic fake of the backend (an open floor, straight-line
geodesics, a panoptic image drawn from the entities' projections). The ``gpu`` tests at the end
run the real habitat-sim where it imports and FINDINGDORY_EPISODES names an episodes file.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import sys

import numpy as np
import pytest

from embodied_mem.geometry import back_project, bearing_in_body, camera_mount, observation_points_world, project, quaternion_to_matrix, transform_points
from embodied_mem.sim.embedded.perception import PerceptionConfig
from embodied_mem.sim.habitat import frames
from embodied_mem.sim.habitat.backend import Rendered
from embodied_mem.sim.habitat.dataset import load_episodes, parse_episode
from embodied_mem.sim.habitat.entities import HistoryFacts, ObjectTimes, build_table
from embodied_mem.sim.habitat.episode import HabitatEpisode, HabitatSimConfig
from embodied_mem.sim.habitat.goal_expr import Atom, Entity, Evaluation, Prop, ground, parse, sub_expr_sequence, type_closure
from embodied_mem.sim.habitat.oracle import HabitatOracle
from embodied_mem.sim.habitat.perception import HeadCamera
from embodied_mem.sim.habitat.tasks import evaluate_goal_expr, ground_instruction
from embodied_mem.sim.tasks.success import DEFAULT, entity_satisfied, evaluate_stops, goal_satisfied
from embodied_mem.types import CameraInfo, FloorPlan, Observation, Pose, Region

RNG = np.random.default_rng(0)


def random_pose(rng) -> Pose:
    q = rng.normal(size=4)
    q = q if q[3] >= 0 else -q  # Pose compares quaternions, and q and -q are one rotation
    return Pose(rng.uniform(-5, 5, 3), q / np.linalg.norm(q))


def rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


# ---------------------------------------------------------------------- frames
def test_body_pose_round_trips_both_ways():
    rng = np.random.default_rng(1)
    for _ in range(50):
        pose = random_pose(rng)
        position, coeffs = frames.body_pose_to_habitat(pose)
        assert frames.body_pose_to_rep(position, coeffs) == pose
        back_position, back_coeffs = frames.body_pose_to_habitat(frames.body_pose_to_rep(position, coeffs))
        assert np.allclose(back_position, position)
        assert np.allclose(quaternion_to_matrix(back_coeffs), quaternion_to_matrix(coeffs))
        point = rng.uniform(-3, 3, 3)
        assert np.allclose(frames.point_to_habitat(frames.point_to_rep(point)), point)


def test_a_known_habitat_pose_is_the_known_rep_pose():
    # Habitat: at x=1, y (up)=0.1, z=-2, turned 90 degrees left about +y: it faces Habitat -x.
    coeffs = [0.0, math.sin(math.pi / 4), 0.0, math.cos(math.pi / 4)]
    pose = frames.body_pose_to_rep([1.0, 0.1, -2.0], coeffs)
    assert np.allclose(pose.position, [2.0, -1.0, 0.1])  # REP x = -hab z, y = -hab x, z = hab y
    assert math.isclose(pose.yaw, math.pi / 2, abs_tol=1e-9)  # facing Habitat -x is facing REP +y
    forward = pose.matrix()[:3, 0]
    assert np.allclose(forward, frames.point_to_rep(rot_y(math.pi / 2) @ [0, 0, -1]))
    assert math.isclose(frames.heading_to_yaw(coeffs), math.pi / 2, abs_tol=1e-9)
    assert np.allclose(frames.yaw_to_coeffs(math.pi / 2), coeffs)
    # Up stays up; Habitat's -z forward is REP +x.
    assert np.allclose(frames.point_to_rep([0, 1, 0]), [0, 0, 1])
    assert np.allclose(frames.point_to_rep([0, 0, -1]), [1, 0, 0])
    assert np.allclose(frames.point_to_rep([-1, 0, 0]), [0, 1, 0])


def habitat_camera_world(position_hab, yaw, head: HeadCamera) -> np.ndarray:
    """The head sensor's world transform as habitat-sim composes it (agent node @ sensor spec)."""
    agent = np.eye(4)
    agent[:3, :3], agent[:3, 3] = rot_y(yaw), position_hab
    sensor = np.eye(4)
    sensor[:3, :3], sensor[:3, 3] = rot_x(head.tilt_rad), [0.0, head.height_m, 0.0]
    return agent @ sensor


def test_the_head_camera_mount_is_the_same_through_both_conventions():
    head = HeadCamera()
    yaw = 0.7
    body = frames.body_pose_to_rep([0.5, 0.0, 1.5], frames.yaw_to_coeffs(yaw))
    optical = frames.camera_pose_to_rep(habitat_camera_world([0.5, 0.0, 1.5], yaw, head))
    mount = frames.body_T_camera(body, optical)
    assert mount == camera_mount(1.31, math.radians(30.0))  # 1.31 m up, 30 degrees down
    z_axis = mount.matrix()[:3, 2]  # the optical axis points forward and down
    assert z_axis[0] > 0.8 and math.isclose(z_axis[2], -0.5, abs_tol=1e-3)
    info = head.info(mount)
    assert (info.width, info.height) == (480, 640)
    assert math.isclose(2 * math.degrees(math.atan(240 / info.fx)), 43.0)


def test_a_known_pixel_back_projects_to_the_known_world_point_in_both_conventions():
    head = HeadCamera(width=60, height=80)
    yaw, position_hab = -1.1, np.array([2.0, 0.05, -3.0])
    world_T_habcam = habitat_camera_world(position_hab, yaw, head)
    body = frames.body_pose_to_rep(position_hab, frames.yaw_to_coeffs(yaw))
    camera = head.info(frames.body_T_camera(body, frames.camera_pose_to_rep(world_T_habcam)))
    u, v, depth = 17, 52, 2.5
    # Habitat's way: unproject in its camera frame, then its world frame, then REP.
    point_hab = transform_points(world_T_habcam, frames.habitat_unproject(u, v, depth, camera)[None])[0]
    expected = frames.point_to_rep(point_hab)
    # The project's way: the depth image and the Observation's camera and pose.
    image = np.zeros((head.height, head.width), np.float32)
    image[v, u] = depth
    obs = Observation(0.0, 0, np.zeros((head.height, head.width, 3), np.uint8), image, body, camera)
    assert np.allclose(observation_points_world(obs), expected[None], atol=1e-9)
    # And back: the world point projects onto that pixel's centre at that depth.
    local = transform_points(np.linalg.inv(obs.world_T_camera.matrix()), expected[None])
    pixel, in_front = project(local, camera)
    assert in_front[0] and np.allclose(pixel[0], [u + 0.5, v + 0.5]) and math.isclose(local[0, 2], depth)
    assert np.allclose(back_project(image, camera), local)


def test_depth_conversion_metres_and_no_return():
    raw = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    metres = frames.depth_to_metres(raw[..., None], normalized=True, min_depth=0.0, max_depth=10.0)
    assert metres.dtype == np.float32 and metres.shape == (2, 2)
    assert np.allclose(metres, [[0.0, 2.5], [5.0, 0.0]])  # 0 and the far clip are no return
    assert np.allclose(frames.depth_to_metres(np.array([[3.0, np.nan]]), False, 0.0, 10.0), [[3.0, 0.0]])


# ---------------------------------------------------------------------- a FindingDory episode, written by us
def hab(p):
    return frames.point_to_habitat(np.asarray(p, float)).tolist()


def view_row(position_rep, target_rep, iou=0.5):
    """A viewpoints.npy row: a Habitat position / rotation facing the target, and an IoU."""
    yaw = math.atan2(target_rep[1] - position_rep[1], target_rep[0] - position_rep[0])
    return hab(position_rep) + frames.yaw_to_coeffs(yaw).tolist() + [iou]


# REP layout on an open floor; kitchen x < 5, bedroom x >= 5.
ENTITIES = {
    "cup": ("cup.object_config.json", [1.0, 1.0, 0.8], "cup"),
    "bowl": ("bowl.object_config.json", [8.0, 1.0, 0.8], "bowl"),
    "pan": ("pan.object_config.json", [2.0, -2.0, 0.8], "pan"),  # never moved
}
RECEPTACLES = {
    "table_0|top": ([1.0, 1.5, 0.75], "table"),
    "shelf_0|top": ([8.0, 1.5, 0.75], "shelf"),
    "counter_0|top": ([2.0, 3.0, 0.9], "counter"),
    "bed_0|top": ([7.0, 3.0, 0.5], "bed"),
    "sofa_0|top": ([7.0, -3.0, 0.5], "sofa"),  # never used
}


def goal_expr(quantifier, expr_type, properties, predicate="robot_at_object", op="AND"):
    return {
        "expr_type": op,
        "quantifier": quantifier,
        "inputs": [{"name": "x", "expr_type": expr_type, "properties": [{"_target_": t, "name": n, "value": v} for t, n, v in properties]}],
        "sub_exprs": [f"{predicate}(x, robot_0)"],
    }


INSTRUCTIONS = {
    "task_1": {"task_id": "task_1", "lang": "Navigate to the object you rearranged first.", "task_type": "interaction_order",
               "goal_expr": goal_expr("EXISTS", "movable_entity_type", [("DiscPddlEntityProperty", "interaction_order", "first")])},
    "task_2": {"task_id": "task_2", "lang": "Navigate to a receptacle you placed an object on.", "task_type": "goal_receptacle",
               "goal_expr": goal_expr("EXISTS", "static_receptacle_entity_type", [("DiscPddlEntityProperty", "interacted", True), ("DiscPddlEntityProperty", "goal_receptacle", True)], "robot_at_receptacle")},
    "task_3": {"task_id": "task_3", "lang": "Revisit all the objects you rearranged, in any order.", "task_type": "revisit",
               "goal_expr": goal_expr("FORALL_SEQUENTIAL_UNORDERED", "movable_entity_type", [("DiscPddlEntityProperty", "interacted", True)]),
               "sequential_goals": {"ordered": False}},
    "task_4": {"task_id": "task_4", "lang": "Revisit the objects. The order to revisit them is: second, first", "task_type": "revisit_ordered",
               "goal_expr": goal_expr("FORALL_SEQUENTIAL_ORDERED", "movable_entity_type", [("DiscPddlEntityProperty", "interacted", True)]),
               "sequential_goals": {"ordered": True, "sequence": [1, 0]}},
    "task_5": {"task_id": "task_5", "lang": "Navigate to the room where you started.", "task_type": "room_initial",
               "goal_expr": goal_expr("EXISTS", "room_region_entity", [("DiscPddlEntityProperty", "initial_room", True)], "robot_in_room")},
    "task_6": {"task_id": "task_6", "lang": "Navigate to the object you were rearranging at XX:XX.", "task_type": "object_timestep",
               "goal_expr": goal_expr("EXISTS", "movable_entity_type", [("DiscPddlEntityProperty", "interaction_order", "second")])},
    "task_7": {"task_id": "task_7", "lang": "Navigate to a cup you rearranged.", "task_type": "category",
               "goal_expr": goal_expr("EXISTS", "cup", [("DiscPddlEntityProperty", "interacted", True)])},
}


def write_split(folder, instructions=INSTRUCTIONS):
    """episodes.json.gz + viewpoints.npy + transformations.npy in FindingDory's format."""
    views, transforms = [], []

    def add_view(position, target):
        views.append(view_row(position, target))
        return len(views) - 1

    def obj_goal(name, position, category, views_of):
        return {"object_name": name, "object_category": category, "position": hab(position), "object_id": str(len(views)), "view_points": views_of}

    rigid = []
    for key, (template, position, _) in ENTITIES.items():
        matrix = np.eye(4)
        matrix[:3, 3] = hab(position)
        transforms.append(matrix[:3].reshape(-1))
        rigid.append([template, len(transforms) - 1])
    candidates = {}
    for key in ("cup", "bowl"):
        template, position, category = ENTITIES[key]
        vp = [add_view([position[0] - 0.9, position[1], 0.0], position), add_view([position[0], position[1] - 1.0, 0.0], position)]
        candidates.setdefault("candidate_objects", []).append(obj_goal(template, position, category, vp))
    template, position, category = ENTITIES["pan"]
    candidates["candidate_objects_noninteracted"] = [obj_goal(template, position, category, [add_view([position[0] - 1.0, position[1], 0.0], position)])]
    for key, list_name in (("table_0|top", "candidate_start_receps"), ("shelf_0|top", "candidate_start_receps"), ("counter_0|top", "candidate_goal_receps"), ("bed_0|top", "candidate_goal_receps"), ("sofa_0|top", "candidate_goal_receps_noninteracted")):
        position, category = RECEPTACLES[key]
        front = [position[0], position[1] - 0.8, 0.0]
        candidates.setdefault(list_name, []).append(obj_goal(key, position, category, [add_view(front, position)]))
    candidates.setdefault("candidate_start_receps_noninteracted", [])
    episode = {
        "episode_id": "7",
        "scene_id": "data/hssd-hab/scenes/102344022.scene_instance.json",
        "scene_dataset_config": "data/hssd-hab/hssd-hab.scene_dataset_config.json",
        "start_position": hab([4.0, -1.0, 0.0]),
        "start_rotation": frames.yaw_to_coeffs(0.0).tolist(),
        "rigid_objs": rigid,
        "target_receptacles": [["table_0|top", 0], ["shelf_0|top", 1]],
        "goal_receptacles": [["counter_0|top", 2], ["bed_0|top", 3]],
        "name_to_receptacle": {"cup_:0000": "table_0|top", "bowl_:0000": "shelf_0|top"},
        "place_valid_receps": {"0": 0, "1": 0},
        "nav_goal_pos": hab([4.0, 0.0, 0.0]),
        "nav_goal_rot": frames.yaw_to_coeffs(math.pi).tolist(),
        "instructions": instructions,
        **candidates,
    }
    path = folder / "episodes.json.gz"
    with gzip.open(path, "wt") as handle:
        json.dump({"episodes": [episode], "obj_category_to_obj_category_id": {"cup": 0, "bowl": 1, "pan": 2}}, handle)
    np.save(folder / "viewpoints.npy", np.array(views))
    np.save(folder / "transformations.npy", np.array(transforms))
    return path


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return write_split(tmp_path_factory.mktemp("findingdory"))


def test_the_parser_reads_findingdorys_format(split):
    episodes = load_episodes(split).episodes  # viewpoints / transformations found beside it
    assert len(episodes) == 1
    episode = episodes[0]
    assert episode.candidate_handles == {0: "cup_:0000", 1: "bowl_:0000"}
    assert episode.noninteracted_handles == {0: "pan_:0000"}
    assert [o.handle for o in episode.rigid_objects] == ["cup_:0000", "bowl_:0000", "pan_:0000"]
    cup = episode.candidates["candidate_objects"][0]
    assert np.allclose(cup.position, ENTITIES["cup"][1])  # Habitat coordinates read back as REP
    first = cup.view_points[0].pose
    assert np.allclose(first.position, [0.1, 1.0, 0.0]) and math.isclose(first.yaw, 0.0, abs_tol=1e-9)
    assert math.isclose(cup.view_points[1].pose.yaw, math.pi / 2, abs_tol=1e-9)  # faces +y, the cup
    assert episode.goal_receptacles == ["counter_0|top", "bed_0|top"]
    assert episode.goal_receptacle_of(1).object_name == "bed_0|top"
    assert episode.start_receptacle_of(1).object_name == "shelf_0|top"
    assert [i.task_id for i in episode.instructions] == list(INSTRUCTIONS)
    assert episode.instructions[3].sequential_goals == {"ordered": True, "sequence": [1, 0]}
    assert np.allclose(episode.start_pose.position, [4.0, -1.0, 0.0])
    assert np.allclose(episode.nav_goal_pose.position, [4.0, 0.0, 0.0]) and math.isclose(abs(episode.nav_goal_pose.yaw), math.pi)
    assert load_episodes(split, episode_ids=["7"]).episodes[0].episode_id == "7"
    with pytest.raises(ValueError, match="episode id"):
        load_episodes(split, episode_ids=["8"])


def test_the_parser_refuses_bad_files(split, tmp_path):
    data = json.loads(gzip.open(split, "rt").read())["episodes"][0]
    views = np.load(split.parent / "viewpoints.npy")
    with pytest.raises(ValueError, match="viewpoint index 999"):
        bad = json.loads(json.dumps(data))
        bad["candidate_objects"][0]["view_points"] = [999]
        parse_episode(bad, views)
    with pytest.raises(ValueError, match="no viewpoints.npy"):
        parse_episode(data, None)
    with pytest.raises(ValueError, match="goal_receptacles"):
        bad = json.loads(json.dumps(data))
        bad["goal_receptacles"] = bad["goal_receptacles"][:1]
        parse_episode(bad, views, np.load(split.parent / "transformations.npy"))
    with pytest.raises(ValueError, match="does not exist"):
        load_episodes(tmp_path / "nothing.json.gz")
    (tmp_path / "broken.json.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="cannot read"):
        load_episodes(tmp_path / "broken.json.gz")


# ---------------------------------------------------------------------- goal_expr
def entity(name, base, category=None, **props):
    out = []
    for key, value in props.items():
        kind = "multi_disc" if isinstance(value, tuple) else "disc"
        out.append(Prop(kind, key, value))
    return Entity(name, type_closure(base, category), frozenset(out))


def test_goal_expr_parses_and_grounds_as_findingdory_expands_quantifiers():
    entities = {
        e.name: e
        for e in [
            entity("cup_:0000", "movable_entity_type", "cup", interacted=True, interaction_order="first"),
            entity("cup_:0001", "movable_entity_type", "cup", interacted=True, interaction_order="second"),
            entity("bowl_:0000", "movable_entity_type", "bowl", interacted=False),
            entity("shelf|a", "static_receptacle_entity_type", "shelf", interacted=True, interaction_order=("first", "second"), goal_receptacle=True),
        ]
    }
    ast = parse(goal_expr("EXISTS", "movable_entity_type", [("DiscPddlEntityProperty", "interacted", True)]))
    assert ast.op == "AND" and ast.quantifier == "EXISTS" and ast.children == [Atom("robot_at_object", ("x", "robot_0"))]
    grounded = ground(ast, entities)
    assert grounded.op == "OR"  # EXISTS -> an OR of one clone per assignment
    assert [c.children[0].args[0] for c in grounded.children] == ["cup_:0000", "cup_:0001"]
    # A category type, a single value against a multi-valued property, and bool vs "True".
    by_type = ground(parse(goal_expr("EXISTS", "cup", [])), entities)
    assert len(by_type.children) == 2
    multi = ground(parse(goal_expr("EXISTS", "static_receptacle_entity_type", [("DiscPddlEntityProperty", "interaction_order", "second")], "robot_at_receptacle")), entities)
    assert [c.children[0].args[0] for c in multi.children] == ["shelf|a"]
    as_text = ground(parse(goal_expr("EXISTS", "movable_entity_type", [("DiscPddlEntityProperty", "interacted", "True")])), entities)
    assert as_text.children == []
    whole = ground(parse(goal_expr("EXISTS", "static_receptacle_entity_type", [("MultiDiscPddlEntityProperty", "interaction_order", ["first", "second"])], "robot_at_receptacle")), entities)
    assert len(whole.children) == 1
    partial = ground(parse(goal_expr("EXISTS", "static_receptacle_entity_type", [("MultiDiscPddlEntityProperty", "interaction_order", ["first"])], "robot_at_receptacle")), entities)
    assert partial.children == []  # a list equals only the same list
    for bad in ({"expr_type": "XOR", "sub_exprs": []}, {"expr_type": "AND", "quantifier": "SOME", "sub_exprs": []}, "robot_at", {"expr_type": "AND", "sub_exprs": "x"}):
        with pytest.raises(ValueError, match="goal_expr"):
            parse(bad)


def test_property_types_and_operators_as_findingdory():
    # Types: an input of a parent type takes every subtype (obj_type covers movable objects).
    cup = entity("cup_:0000", "movable_entity_type", "cup", interacted=True)
    shelf = entity("shelf|a", "static_receptacle_entity_type", "shelf", interacted=True)
    entities = {e.name: e for e in (cup, shelf)}
    assert [c.children[0].args[0] for c in ground(parse(goal_expr("EXISTS", "obj_type", [])), entities).children] == ["cup_:0000"]
    assert len(ground(parse(goal_expr("EXISTS", "static_obj_type", [])), entities).children) == 2
    # Values: numbers equal numerically, never a bool; a list never equals a list of another kind.
    assert Prop("cont", "t", 2.0).holds(Prop("cont", "t", 2))
    assert not Prop("cont", "t", 1.0).holds(Prop("cont", "t", True))
    assert not Prop("cont", "t", 1.0).holds(Prop("cont", "t", 2.0))
    assert Prop("multi_cont", "t", (3.0, 4.0)).holds(Prop("cont", "t", 4.0))
    assert not Prop("multi_cont", "t", (3.0,)).holds(Prop("multi_disc", "t", (3.0,)))
    assert not Prop("disc", "a", "x").holds(Prop("disc", "b", "x"))
    # NAND / NOR invert; the subgoal's target is its first location predicate.
    nand = parse({"expr_type": "NAND", "sub_exprs": ["robot_at_object(cup_:0000, robot_0)"]})
    assert Evaluation(nand).stop(truth_of(set())) and not Evaluation(nand).stop(truth_of({"cup_:0000"}))
    nor = parse({"expr_type": "NOR", "sub_exprs": ["robot_at_object(a, robot_0)", "robot_at_object(b, robot_0)"]})
    assert not Evaluation(nor).stop(truth_of({"b"}))
    from embodied_mem.sim.habitat.goal_expr import count_goals, subgoal_entity

    mixed = parse({"expr_type": "AND", "sub_exprs": ["holding(cup_:0000, robot_0)", "robot_at_receptacle(shelf|a, robot_0)"]})
    assert subgoal_entity(mixed) == ("receptacle", "shelf|a")
    with pytest.raises(ValueError, match="names no"):
        subgoal_entity(parse({"expr_type": "AND", "sub_exprs": ["holding(cup_:0000, robot_0)"]}))
    # FindingDory's SubGoalCount: 1 single; every subgoal unordered; the sequence's, ordered.
    many = {e.name: e for e in [entity(f"o{i}", "movable_entity_type") for i in range(3)]}
    assert count_goals(ground(parse(goal_expr("EXISTS", "movable_entity_type", [])), many), None) == 1
    assert count_goals(ground(parse(goal_expr("FORALL_SEQUENTIAL_UNORDERED", "movable_entity_type", [])), many), None) == 3
    assert count_goals(ground(parse(goal_expr("FORALL_SEQUENTIAL_ORDERED", "movable_entity_type", [])), many), [2, 0]) == 2
    for bad in ({"expr_type": "AND", "inputs": [{"name": "x"}], "sub_exprs": []}, {"expr_type": "AND", "inputs": [{"expr_type": "cup"}], "sub_exprs": []},
                {"expr_type": "AND", "inputs": [{"name": "x", "expr_type": "cup", "properties": [{"name": "color"}]}], "sub_exprs": []}):
        with pytest.raises(ValueError, match="goal_expr"):
            parse(bad)


def test_sequence_becomes_sub_expr_sequence():
    entities = {e.name: e for e in [entity(f"o{i}", "movable_entity_type", interacted=True) for i in range(3)]}
    grounded = ground(parse(goal_expr("FORALL_SEQUENTIAL_ORDERED", "movable_entity_type", [])), entities)
    assert grounded.op == "AND_SEQUENTIAL_ORDERED" and len(grounded.children) == 3
    targets = {"o0": [0], "o1": [1], "o2": [2]}
    assert sub_expr_sequence(grounded, {"ordered": True, "sequence": [2, 0, 1]}, targets.get) == [2, 0, 1]
    assert sub_expr_sequence(grounded, {"ordered": True, "sub_expr_sequence": [1, 2]}, targets.get) == [1, 2]
    with pytest.raises(ValueError, match="sequence"):
        sub_expr_sequence(grounded, {"ordered": True, "sequence": [5]}, targets.get)


def truth_of(true_names):
    return lambda atom: atom.args[0] in true_names


def test_evaluation_follows_findingdorys_sequential_rules():
    entities = {e.name: e for e in [entity(f"o{i}", "movable_entity_type", interacted=True) for i in range(3)]}
    unordered = ground(parse(goal_expr("FORALL_SEQUENTIAL_UNORDERED", "movable_entity_type", [])), entities)
    run = Evaluation(unordered)
    assert not run.stop(truth_of({"o0", "o1"}))  # two at once: only one is locked
    assert run.locked == [True, False, False]
    assert not run.stop(truth_of({"o0", "o1"}))  # the next one now
    assert run.stop(truth_of({"o2"}))
    run = Evaluation(unordered)
    run.stop(truth_of({"o1"}))
    assert not run.stop(truth_of({"o1"})) and run.permanently_false  # a stop with nothing new
    assert not run.stop(truth_of({"o0", "o2"}))

    ordered = ground(parse(goal_expr("FORALL_SEQUENTIAL_ORDERED", "movable_entity_type", [])), entities)
    run = Evaluation(ordered, [2, 0])
    assert not run.stop(truth_of({"o0"})) and run.permanently_false  # before its predecessor
    run = Evaluation(ordered, [2, 0])
    assert not run.stop(truth_of({"o2", "o0"})) and not run.permanently_false  # one per stop
    assert run.stop(truth_of({"o0"}))
    assert run.locked[1] is None  # a subgoal outside the sequence is never evaluated

    single = ground(parse(goal_expr("EXISTS", "movable_entity_type", [])), entities)
    run = Evaluation(single)
    assert run.stop(truth_of({"o1"}))
    run = Evaluation(single)
    assert not run.stop(truth_of(set())) and not run.stop(truth_of({"o1"}))  # a wrong stop ends it
    with pytest.raises(ValueError, match="sub_expr_sequence"):
        Evaluation(ordered)


# ---------------------------------------------------------------------- a kinematic backend
class FakeBackend:
    """An open floor: straight-line geodesics, no obstacles; the panoptic image draws a
    9x9-pixel block at each entity's projection within 6 m."""

    def __init__(self, episode, head: HeadCamera) -> None:
        self.head = head
        self.positions = {o.handle: o.position.copy() for o in episode.rigid_objects}
        self.receptacles = {c.object_name: c.position for k, v in episode.candidates.items() if "recep" in k for c in v}
        self.ids = {name: {100 + i} for i, name in enumerate(sorted(self.positions) + sorted(self.receptacles))}
        self.pose = None

    def regions(self):
        return ["kitchen_0", "bedroom_1"]

    def region_of(self, point):
        return "kitchen_0" if point[0] < 5.0 else "bedroom_1"

    def floor_plan(self):
        return FloorPlan((Region("kitchen_0", ((-5, -5), (5, -5), (5, 5), (-5, 5))), Region("bedroom_1", ((5, -5), (12, -5), (12, 5), (5, 5)))))

    def semantic_ids(self, name):
        return self.ids.get(name, set())

    def geodesic(self, start, ends):
        ends = np.asarray(ends, float).reshape(-1, 3)
        return float(np.min(np.linalg.norm(ends[:, :2] - np.asarray(start)[:2], axis=1))) if len(ends) else math.inf

    def snap(self, point):
        return np.array([point[0], point[1], 0.0])

    def is_navigable(self, point):
        return True

    def plan(self, start, goal):
        return [np.asarray(start, float), np.asarray(goal, float)]

    def try_step(self, start, end):
        return np.asarray(end, float)

    def set_agent(self, pose):
        self.pose = pose

    def object_position(self, name):
        return self.positions[name].copy()

    def carry(self, name, pose):
        self.positions[name] = np.asarray(pose.position) + [0, 0, 0.8]

    def place_object(self, name, target):
        self.positions[name] = np.asarray(target, float) + [0, 0, 0.05]
        return self.positions[name].copy()

    def render(self, pose):
        head = self.head
        camera = head.info()
        image = np.zeros((head.height, head.width), np.int64)
        world_T_camera = pose.compose(camera.body_T_camera).matrix()
        everything = {**{k: v for k, v in self.positions.items()}, **self.receptacles}
        for name, position in everything.items():
            local = transform_points(np.linalg.inv(world_T_camera), np.asarray(position)[None])
            pixels, front = project(local, camera)
            u, v = pixels[0]
            if front[0] and local[0, 2] < 6.0 and 0 <= u < head.width and 0 <= v < head.height:
                image[max(0, int(v) - 4) : int(v) + 5, max(0, int(u) - 4) : int(u) + 5] = min(self.ids[name])
        depth = np.full((head.height, head.width), 0.3, np.float32)
        return Rendered(np.zeros((head.height, head.width, 3), np.uint8), depth, image, None)

    def panoptic(self, pose):
        return self.render(pose).panoptic


SMALL = HeadCamera(width=48, height=64, hfov_deg=60.0)


def config_for(mode="detector"):
    perception = PerceptionConfig() if mode == "detector" else PerceptionConfig(mode="gt", miss_rate=0, false_positive_rate=0, confusion_rate=0, attribute_error_rate=0, erosion_px=0, depth_noise=0, drift_xy=0, drift_yaw_deg=0)
    return HabitatSimConfig(episodes="unused", attributes=None, camera=SMALL, perception=perception)


def make(split, mode="detector"):
    episode = load_episodes(split).episodes[0]
    return HabitatEpisode(config_for(mode), seed=0, backend=FakeBackend(episode, SMALL), episode=episode)


@pytest.fixture(scope="module")
def lived(split):
    episode = make(split)
    observations = list(episode.history())
    return episode, observations


def test_history_streams_valid_observations_with_events_and_no_ids(lived):
    episode, observations = lived
    assert len(observations) == len(episode.robot.history.steps) > 20
    assert [o.frame_id for o in observations] == list(range(len(observations)))
    kinds = [e.kind for o in observations for e in o.events]
    assert kinds == ["day_start", "grasp", "release", "grasp", "release", "day_end"]
    assert all(d.instance_id is None for o in observations for d in o.detections)  # detector mode
    labels = {d.label for o in observations for d in o.detections}
    assert {"cup", "table"} <= labels
    assert math.isclose(observations[1].stamp - observations[0].stamp, 14.4)  # 16 h over 4000 steps
    records = episode.robot.history.interactions
    assert [r.order for r in records] == [0, 1]
    assert episode.table.by_name["counter_0|top"].entity_id == records[0].goal_receptacle
    assert episode.frame_pose(records[0].pick_frame) == records[0].pick_pose
    assert episode.frame_pose(10**6) is None and episode.frame_pose("3") is None
    # The cup now stands on the counter (the goal receptacle), where the task predicates look.
    cup = episode.table.id_of("cup_:0000")
    assert np.linalg.norm(episode.oracle.entity_position(cup)[:2] - np.array(RECEPTACLES["counter_0|top"][0][:2])) < 1e-6


def test_gt_mode_keeps_the_ids(split):
    episode = make(split, "gt")
    ids = {d.instance_id for o in list(episode.history())[:30] for d in o.detections}
    assert ids and None not in ids and ids <= set(episode.table.records)


def test_properties_after_the_history_are_findingdorys(lived):
    episode, _ = lived
    facts = episode.robot.facts
    assert set(facts.times) == {0, 1}
    assert facts.times[0].pick_start <= facts.times[0].place_start <= facts.times[0].end <= facts.times[1].pick_start
    table = episode.tables[False]
    cup = {p.name: p.value for p in table.entities["cup_:0000"].properties}
    assert cup["interaction_order"] == "first" and cup["start_receptacle"] == "table" and cup["interacted"] is True
    bed = table.entities["bed_0|top"].properties
    assert Prop("disc", "goal_receptacle", True) in bed and Prop("multi_disc", "interaction_order", ("second",)) in bed
    kitchen = {p.name: p.value for p in table.entities["region_kitchen_0"].properties}
    assert kitchen["initial_room"] is True and kitchen["obj_idx_initial"] == ("first",)
    assert kitchen["obj_idx_final"] == ("first",)  # the cup went to the counter, in the kitchen
    bedroom = {p.name: p.value for p in table.entities["region_bedroom_1"].properties}
    assert bedroom["obj_idx_initial"] == ("second",) and bedroom["final_room"] is False
    # farthest from the final pose (4, 0): of the goal receptacles the bed (7, 2.2) beats the counter (2, 2.2)
    assert Prop("disc", "farthest_goal_rec", True) in table.entities["bed_0|top"].properties
    assert Prop("disc", "farthest_goal_rec", True) not in table.entities["counter_0|top"].properties


def test_instructions_become_tasks_with_the_right_goals(lived):
    episode, _ = lived
    tasks = {t.task_id: t for t in episode.tasks()}
    assert set(tasks) == set(INSTRUCTIONS), episode.skipped
    ids = episode.table.id_of
    assert [g.entity_ids for g in tasks["task_1"].goals] == [[ids("cup_:0000")]]
    assert tasks["task_2"].goals[0].kind == "receptacle" and set(tasks["task_2"].goals[0].entity_ids) == {ids("counter_0|top"), ids("bed_0|top")}
    assert [g.entity_ids for g in tasks["task_3"].goals] == [[ids("cup_:0000")], [ids("bowl_:0000")]] and not tasks["task_3"].ordered
    assert [g.entity_ids for g in tasks["task_4"].goals] == [[ids("bowl_:0000")], [ids("cup_:0000")]] and tasks["task_4"].ordered
    assert tasks["task_5"].goals[0].kind == "room" and tasks["task_5"].goals[0].rooms == ["kitchen_0"]
    assert tasks["task_7"].goals[0].entity_ids == [ids("cup_:0000")]
    # XX:XX is a minute inside the target's (the bowl's) interaction, as FindingDory samples it.
    text = tasks["task_6"].instruction
    assert "XX" not in text
    hour, minute = text.rsplit("at ", 1)[1].rstrip(".").split(":")
    times = episode.robot.facts.times[1]
    assert times.pick_start <= int(hour) * 60 + int(minute) <= times.end
    assert tasks["task_6"].constraints["goals"][0]["select"] == {"by": "time", "minute": int(hour) * 60 + int(minute)}
    assert tasks["task_1"].constraints == {"goals": [{"target": "object", "day": 0, "select": {"by": "order", "index": 0}}], "ordered": False}
    assert tasks["task_2"].constraints["goals"][0]["role"] == "goal"
    assert [g["select"]["index"] for g in tasks["task_4"].constraints["goals"]] == [1, 0]
    assert tasks["task_7"].constraints["goals"][0]["category"] == "cup"
    from embodied_mem.memory.resolve import validate_constraints

    for task in tasks.values():
        assert len(validate_constraints(task.constraints)) == len(task.goals), task.task_id
        assert len(task.keyframes) == len(task.goals) and all(task.keyframes), task.task_id
        assert task.high_level_category and task.category


def test_success_through_the_shared_predicates_with_the_parsed_viewpoints(lived):
    episode, _ = lived
    oracle, ids = episode.oracle, episode.table.id_of
    shelf = ids("shelf_0|top")
    view = episode.table.records[shelf].candidate.view_points[0].pose
    assert np.allclose(view.position, [8.0, 0.7, 0.0])
    assert entity_satisfied(oracle, "receptacle", shelf, view)  # on its viewpoint, facing it
    off = Pose.from_xy_yaw(8.15, 0.7, view.yaw)
    assert oracle.geodesic_to_entity(off.position[:2], shelf) > DEFAULT.receptacle_distance
    assert not entity_satisfied(oracle, "receptacle", shelf, off)  # 0.15 m off: beyond 0.1 m
    away = Pose.from_xy_yaw(8.0, 0.7, view.yaw + math.pi)
    assert not entity_satisfied(oracle, "receptacle", shelf, away)  # behind it: angle and visibility
    cup = ids("cup_:0000")  # now on the counter at (2, 3)
    near = Pose.from_xy_yaw(2.0, 1.6, math.pi / 2)
    assert oracle.geodesic_to_entity(near.position[:2], cup) < 2.0 and oracle.visible_fraction(near, cup) > 0.001
    assert entity_satisfied(oracle, "object", cup, near)
    assert not entity_satisfied(oracle, "object", cup, Pose.from_xy_yaw(2.0, 0.6, math.pi / 2))  # 2.4 m: too far
    assert not entity_satisfied(oracle, "object", cup, Pose.from_xy_yaw(2.0, 1.6, 0.0))  # looking away
    assert bearing_in_body(near, oracle.entity_position(cup)) < 0.1


def test_goal_expr_evaluation_agrees_with_the_shared_multi_goal_rules(lived):
    episode, _ = lived
    tasks = {t.task_id: t for t in episode.tasks()}
    oracle = episode.oracle
    rng = np.random.default_rng(5)
    cup_view, bowl_view = Pose.from_xy_yaw(2.0, 1.6, math.pi / 2), Pose.from_xy_yaw(7.0, 1.6, math.pi / 2)
    nowhere = Pose.from_xy_yaw(4.0, -4.0, 0.0)
    poses = [cup_view, bowl_view, nowhere]
    for key in ("task_3", "task_4", "task_1", "task_2"):
        instruction = next(i for i in episode.episode.instructions if i.task_id == key)
        table = episode.tables[isinstance(instruction.sequential_goals, dict)]
        grounded = ground_instruction(instruction, episode.episode, table)
        assert [g.entity_ids for g in grounded.goals] == [g.entity_ids for g in tasks[key].goals]
        for _ in range(12):
            stops = [poses[int(i)] for i in rng.integers(0, 3, size=int(rng.integers(1, 4)))]
            expected = evaluate_stops(oracle, tasks[key].goals, tasks[key].ordered, stops)
            assert evaluate_goal_expr(grounded, oracle, table, stops) == expected, (key, stops)
    assert evaluate_stops(oracle, tasks["task_4"].goals, True, [bowl_view, cup_view])
    assert not evaluate_stops(oracle, tasks["task_4"].goals, True, [cup_view, bowl_view])  # wrong order
    assert evaluate_stops(oracle, tasks["task_3"].goals, False, [cup_view, bowl_view])
    assert goal_satisfied(oracle, tasks["task_5"].goals[0], nowhere) and not goal_satisfied(oracle, tasks["task_5"].goals[0], bowl_view)


def test_the_runner_runs_a_habitat_task(lived):
    """The runner's per-task path over a HabitatEpisode: high level from history frames, a drive."""
    from embodied_mem.agent import Agent
    from embodied_mem.eval.runner import run_task
    from embodied_mem.types import Hit, Recall

    episode, _ = lived
    task = next(t for t in episode.tasks() if t.task_id == "task_1")
    frame = task.keyframes[0][-1]

    class Answers:
        name = "answers"

        def recall(self, query):
            pose = episode.frame_pose(frame)
            return Recall([Hit(frame, 0.0, pose, None, None, 1.0, "answers", {"goal_index": 0})], "answers", 0.0)

    result = run_task(episode, Answers(), Agent(), task, "oracle", 0, 0, "answers")
    assert result.high_level_success and result.success and result.steps > 0
    assert 0 < result.spl <= 1.0 and math.isfinite(result.shortest_m)


def test_make_episode_embedded_and_a_clear_habitat_error(monkeypatch, split):
    from embodied_mem.sim.embedded.episode import EmbeddedEpisode
    from embodied_mem.sim.episodes import make_episode

    small = {"name": "embedded", "world": {"rooms": 4, "room_size": [3.8, 5.0], "receptacles_per_room": [3, 3], "objects_per_room": 3}, "env": {"width": 64, "height": 48}, "history": {"days": 1}}
    assert isinstance(make_episode(small, 3), EmbeddedEpisode)
    monkeypatch.setitem(sys.modules, "habitat_sim", None)  # as on a machine without habitat-sim
    with pytest.raises(ImportError, match="mamba install -n findingdory habitat-sim=0.3.1 withbullet headless"):
        make_episode({"name": "habitat", "episodes": str(split)}, 0)
    with pytest.raises(ValueError, match="unknown config key"):
        make_episode({"name": "habitat", "episode": str(split)}, 0)  # a typo fails before the import
    with pytest.raises(ValueError, match="sim.name"):
        make_episode({"name": "isaac"}, 0)


def test_the_habitat_config_composes_and_builds():
    from omegaconf import OmegaConf

    from embodied_mem.cli import compose
    from embodied_mem.sim.episodes import habitat_config

    cfg = compose(["sim=habitat", "habitat.episodes=/data/val/episodes.json.gz", "habitat.episode_ids=[3,4]", "perception=gt"])
    values = OmegaConf.to_container(cfg.sim, resolve=True)
    config = habitat_config(values, OmegaConf.to_container(cfg.perception, resolve=True))
    assert config.episodes == "/data/val/episodes.json.gz" and config.episode_ids == [3, 4]
    assert (config.camera.width, config.camera.height, config.camera.hfov_deg) == (480, 640, 43.0)
    assert config.perception.mode == "gt" and config.collection.num_steps_daily == 4000


# ---------------------------------------------------------------------- the real simulator
@pytest.mark.gpu
def test_habitat_end_to_end_on_a_findingdory_episode():
    """On a GPU machine with habitat-sim and FindingDory's data:
    FINDINGDORY_EPISODES=<...>/val/episodes.json.gz FINDINGDORY_DATA=<findingdory/> pytest -m gpu"""
    pytest.importorskip("habitat_sim")
    path = os.environ.get("FINDINGDORY_EPISODES")
    if not path:
        pytest.skip("set FINDINGDORY_EPISODES (and FINDINGDORY_DATA) to FindingDory's val split")
    from embodied_mem.sim.episodes import make_episode

    episode = make_episode({"name": "habitat", "episodes": path, "data_root": os.environ.get("FINDINGDORY_DATA", "."), "count": 1}, 0)
    first = None
    for count, obs in enumerate(episode.history()):
        obs.validate()
        first = first or obs
    assert first.rgb.shape == (640, 480, 3) and np.any(first.valid_depth())
    tasks = episode.tasks()
    assert tasks, episode.skipped
    task = tasks[0]
    frame = task.keyframes[0][0]
    assert goal_satisfied(episode.oracle, task.goals[0], episode.frame_pose(frame))
