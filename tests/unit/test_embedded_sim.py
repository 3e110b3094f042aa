"""The embedded simulator: world generation, rendering, navigation, the oracle's days."""

import math

import numpy as np
import pytest

from embodied_mem.sim.embedded.env import Action, EmbeddedEnv, EnvConfig
from embodied_mem.sim.embedded.navigator import Navigator
from embodied_mem.sim.embedded.oracle import HistoryConfig, OracleRobot
from embodied_mem.sim.embedded.world import WALL_THICKNESS, WorldConfig, generate_world
from embodied_mem.sim.embedded.catalog import OBJECTS
from embodied_mem.types import Pose


@pytest.fixture(scope="module")
def env():
    return EmbeddedEnv(generate_world(WorldConfig(seed=11)), EnvConfig(width=160, height=120, camera_pitch_deg=0.0))


def test_world_is_deterministic_and_varied():
    a, b = generate_world(WorldConfig(seed=4)), generate_world(WorldConfig(seed=4))
    assert [r.name for r in a.rooms] == [r.name for r in b.rooms]
    assert all(np.allclose(a.placements[i].position, b.placements[i].position) for i in a.placements)
    assert {"kitchen", "living_room", "bedroom", "bathroom"} <= {r.kind for r in a.rooms}
    assert len(OBJECTS) >= 30
    assert len({r.kind for r in a.receptacles.values()}) >= 6
    for obj in a.objects.values():
        assert {"color", "material", "size", "shape", "function"} <= set(obj.attributes)


def test_depth_exact_on_an_empty_wall(env):
    """Search for a pose whose centre pixel hits bare wall, then check the depth to the metre-centimetre."""
    for room in env.world.rooms:
        for fraction in np.linspace(0.2, 0.8, 7):
            y = room.y0 + fraction * (room.y1 - room.y0)
            x = room.x0 + 1.2
            frame = env.render(Pose.from_xy_yaw(x, y, math.pi))
            h, w = frame.depth.shape
            if frame.instances[h // 2, w // 2] == 0 and frame.depth[h // 2, w // 2] > 0:
                assert frame.depth[h // 2, w // 2] == pytest.approx(x - room.x0 - WALL_THICKNESS / 2, abs=0.01)
                return
    pytest.fail("no bare wall found to measure")


def test_instance_id_of_a_known_object(env):
    object_id = sorted(env.state.placements)[0]
    target = env.entity_position(object_id)
    pose = Navigator(env).approach_pose(target, standoff=0.9)
    assert pose is not None
    # look straight at the object: centre ray through its centre at its height
    camera_height = env.config.camera_height
    pitch = math.atan2(camera_height - target[2], float(np.linalg.norm(target[:2] - pose.position[:2])))
    tilted = EmbeddedEnv(env.world, EnvConfig(width=160, height=120, camera_pitch_deg=math.degrees(pitch)))
    frame = tilted.render(pose)
    h, w = frame.instances.shape
    window = frame.instances[h // 2 - 2 : h // 2 + 3, w // 2 - 2 : w // 2 + 3]
    assert object_id in window
    tilted.teleport(pose)
    obs = tilted.observe()  # the default detector perception: a labelled mask, no identity
    centre = [d for d in obs.detections if d.mask[h // 2, w // 2] or d.mask[h // 2 - 2 : h // 2 + 3, w // 2 - 2 : w // 2 + 3].any()]
    assert centre and all(d.instance_id is None for d in obs.detections)
    from embodied_mem.sim.embedded.perception import CONFUSABLE

    category = env.world.objects[object_id].category
    similar = {c for group in CONFUSABLE if category in group for c in group} | {category}
    assert any(d.label in similar for d in centre)


def test_navigator_reaches_every_sampled_reachable_goal(env):
    rng = np.random.default_rng(0)
    grid = env.grid
    start = Pose.from_xy_yaw(*grid.nearest_navigable(env.world.rooms[0].center), 0.0)
    reachable = grid.distance_field(np.array([grid.spec.cell(start.position)]))
    cells = np.argwhere(np.isfinite(reachable) & grid.navigable)
    navigator = Navigator(env)
    for cell in cells[rng.choice(len(cells), size=15, replace=False)]:
        goal_xy = grid.spec.center(int(cell[0]), int(cell[1]))
        goal = Pose.from_xy_yaw(goal_xy[0], goal_xy[1], float(rng.uniform(-3, 3)))
        env.teleport(start)
        travelled = navigator.drive_blind(goal)
        assert math.isfinite(travelled)
        assert np.linalg.norm(env.pose.position[:2] - goal.position[:2]) < 1e-6
        assert abs(math.remainder(env.pose.yaw - goal.yaw, 2 * math.pi)) < 1e-6
        assert travelled >= np.linalg.norm(goal.position[:2] - start.position[:2]) - 1e-6


def test_actions_respect_habitat_step_sizes(env):
    with pytest.raises(ValueError, match="forward amount"):
        Action("forward", 0.3)
    with pytest.raises(ValueError, match="30 degrees"):
        Action("turn", math.radians(31))
    plan = Navigator(env).plan_actions(Pose.from_xy_yaw(*env.grid.nearest_navigable(env.world.rooms[0].center), 0.0),
                                       Pose.from_xy_yaw(*env.grid.nearest_navigable(env.world.rooms[-1].center), 1.0))
    assert all(a.amount <= 0.25 + 1e-9 for a in plan if a.kind == "forward")
    assert all(abs(a.amount) <= math.radians(30) + 1e-9 for a in plan if a.kind == "turn")


def test_blocked_forward_does_not_move(env):
    room = env.world.rooms[0]
    pose = Pose.from_xy_yaw(room.x0 + 0.22, (room.y0 + room.y1) / 2, math.pi)  # facing the wall, almost touching
    env.teleport(pose)
    assert env.move(Action("forward", 0.25)) is False
    assert np.allclose(env.pose.position, pose.position)


def test_oracle_days_are_deterministic_and_events_consistent():
    def run():
        env = EmbeddedEnv(generate_world(WorldConfig(seed=2, rooms=4)), EnvConfig(width=96, height=72))
        robot = OracleRobot(env, HistoryConfig(days=2, rearrangements_per_day=2, seed=1))
        return [
            (o.frame_id, o.stamp, o.day, tuple(o.pose.position), [(e.kind, None if e.gripper_pose is None else tuple(e.gripper_pose.position)) for e in o.events])
            for o in robot.live()
        ], robot.history

    first, history = run()
    second, _ = run()
    assert first == second
    stamps = [f[1] for f in first]
    assert stamps == sorted(stamps) and len(set(f[0] for f in first)) == len(first)
    assert {f[2] for f in first} == {0, 1}
    picks = [(f[1], e) for f in first for e in f[4] if e[0] == "grasp"]
    places = [(f[1], e) for f in first for e in f[4] if e[0] == "release"]
    assert [p[0] for p in picks] == [i.pick_stamp for i in history.interactions]
    assert [p[0] for p in places] == [i.place_stamp for i in history.interactions]
    # the gripper is where the object was (grasp) and where it was put (release), up to the drift
    for (_, grasp), (_, release), interaction in zip(picks, places, history.interactions):
        assert np.linalg.norm(np.array(grasp[1]) - interaction.start_position) < 0.5
        assert np.linalg.norm(np.array(release[1]) - interaction.goal_position) < 0.5
    for interaction in history.interactions:
        assert interaction.pick_stamp < interaction.place_stamp
