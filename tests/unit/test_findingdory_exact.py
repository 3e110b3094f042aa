"""FindingDory's rules, exactly where we claim them: predicates, viewpoints, days, tasks, keyframes.

Everything runs on the small embedded episodes of conftest.py (one rendered history each) or
on a tiny home at 96x72 pixels, so each test takes a second or two.
"""

import dataclasses
import math
import re
from collections import Counter

import numpy as np
import pytest

from embodied_mem.sim.embedded.env import EmbeddedEnv, EnvConfig
from embodied_mem.sim.embedded.oracle import HistoryConfig, OracleRobot
from embodied_mem.sim.embedded.viewpoints import MAX_GAP, MAX_VIEWPOINTS, MIN_GAP, SPACING
from embodied_mem.sim.embedded.world import WorldConfig, generate_world
from embodied_mem.sim.tasks.generator import NO_DAY, TEMPLATES, Context, TaskConfig, generate_tasks
from embodied_mem.sim.tasks.success import DEFAULT, DTG, SEM_COV, TargetGoal, goal_satisfied
from embodied_mem.types import Pose

from conftest import RecordedEpisode, small_sim


def facing(xy, target) -> Pose:
    return Pose.from_xy_yaw(float(xy[0]), float(xy[1]), math.atan2(target[1] - xy[1], target[0] - xy[0]))


# ---------------------------------------------------------------------- robot_at_object
def test_object_predicate_is_2_m_geodesic_to_the_snapped_position(one_day):
    env = one_day.env
    checked = 0
    for object_id in sorted(env.world.objects):
        snap = env.snapped_position(object_id)
        assert env.grid.is_navigable(snap)
        assert env.room_of(snap) == env.room_of(env.entity_position(object_id))
        target = env.entity_position(object_id)
        for direction in np.array([(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)]):
            if not env.grid.line_of_sight(snap, snap + 2.3 * direction):
                continue  # a free straight line: the geodesic is the distance along it
            near, far = facing(snap + 1.9 * direction, target), facing(snap + 2.1 * direction, target)
            pixels = env.camera.width * env.camera.height
            if min(env.visible_fraction(near, object_id), env.visible_fraction(far, object_id)) * pixels < 20:
                continue  # too small to see from there: not what this test is about
            assert env.geodesic_to_entity(near.position[:2], object_id) == pytest.approx(1.9, abs=1e-6)
            assert env.geodesic_to_entity(far.position[:2], object_id) == pytest.approx(2.1, abs=1e-6)
            goal = TargetGoal("object", [object_id])
            assert goal_satisfied(env, goal, near)
            assert not goal_satisfied(env, goal, far)  # seen and faced, but 2.1 m away
            assert goal_satisfied(env, goal, far, SEM_COV)  # distance ablated
            turned = Pose.from_xy_yaw(*near.position[:2], near.yaw + math.pi / 4 + 0.1)
            assert not goal_satisfied(env, goal, turned, SEM_COV)  # the angle still counts
            checked += 1
            break
        if checked >= 2:
            break
    assert checked >= 2


# ---------------------------------------------------------------------- robot_at_receptacle
def test_receptacle_viewpoints_are_sparse_and_valid(one_day):
    env = one_day.env
    for receptacle_id, receptacle in env.world.receptacles.items():
        poses = env.receptacle_viewpoints(receptacle_id)
        assert 1 <= len(poses) <= MAX_VIEWPOINTS
        assert env.receptacle_viewpoints(receptacle_id) == poses  # cached, deterministic
        cells = env.viewpoint_cells(receptacle_id)
        assert np.allclose(env.grid.spec.centers(cells), [p.position[:2] for p in poses])
        xy = np.array([p.position[:2] for p in poses])
        spacing = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy)) * 99
        assert spacing.min() >= SPACING - 1e-9
        lo, hi = receptacle.box.min_corner[:2], receptacle.box.max_corner[:2]
        gaps = np.linalg.norm(np.maximum(0.0, np.maximum(lo - xy, xy - hi)), axis=1)
        assert np.all((gaps >= MIN_GAP - 1e-9) & (gaps <= MAX_GAP + 1e-9))
        for pose in poses:
            assert env.room_of(pose.position) == receptacle.room
            assert env.bearing(pose, receptacle_id) < 0.3  # faces the receptacle
    # at a viewpoint facing it, the predicate holds (checked for a few, each a render)
    for receptacle_id in sorted(env.world.receptacles)[:4]:
        assert goal_satisfied(env, TargetGoal("receptacle", [receptacle_id]), env.receptacle_viewpoints(receptacle_id)[0])


def test_receptacle_predicate_fails_0_15_m_from_every_viewpoint(one_day):
    env, res = one_day.env, one_day.env.grid.spec.resolution
    checked = 0
    for receptacle_id in sorted(env.world.receptacles):
        center = env.world.receptacles[receptacle_id].box.center[:2]
        viewpoints = np.array([p.position[:2] for p in env.receptacle_viewpoints(receptacle_id)])
        goal = TargetGoal("receptacle", [receptacle_id])
        for viewpoint in viewpoints:
            for direction in np.array([(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)]):
                xy = viewpoint + 3 * res * direction  # 0.15 m, on a cell centre
                if not env.grid.is_navigable(xy) or np.min(np.linalg.norm(viewpoints - xy, axis=1)) < 0.15 - 1e-9:
                    continue
                pose = facing(xy, center)
                if env.bearing(pose, receptacle_id) > DEFAULT.receptacle_angle or env.visible_fraction(pose, receptacle_id) < 0.001:
                    continue
                assert env.geodesic_to_entity(xy, receptacle_id) >= 0.15 - 1e-9
                assert goal_satisfied(env, goal, facing(viewpoint, center))
                assert not goal_satisfied(env, goal, pose)  # faced and seen, but off the viewpoints
                assert goal_satisfied(env, goal, pose, SEM_COV)
                checked += 1
                break
            else:
                continue
            break
        if checked >= 3:
            break
    assert checked >= 3


# ---------------------------------------------------------------------- the oracle's days
def test_picks_and_places_stand_on_receptacle_viewpoints(two_days):
    env, history = two_days.env, two_days.history
    ctx = Context(history, env, np.random.default_rng(0), two_days.episode.final_pose, 1)
    for interaction in history.interactions:
        for pose, receptacle_id, frame in (
            (interaction.pick_pose, interaction.start_receptacle, interaction.pick_frame),
            (interaction.place_pose, interaction.goal_receptacle, interaction.place_frame),
        ):
            viewpoints = np.array([p.position[:2] for p in env.receptacle_viewpoints(receptacle_id)])
            assert np.min(np.linalg.norm(viewpoints - pose.position[:2], axis=1)) < 1e-6
            assert frame in ctx.entity_keyframes("receptacle", receptacle_id)  # a valid receptacle answer


def test_a_day_ends_at_its_last_place(two_days):
    history, observations = two_days.history, two_days.observations
    for day in range(history.days):
        steps = history.steps_of(day)
        last_place = max(i.place_frame for i in history.interactions_of(day))
        assert steps[-1].frame_id == last_place + 1  # no wandering after it
        assert [e.kind for e in observations[steps[-1].frame_id].events] == ["day_end"]
    assert not history.capped_days


def test_a_tiny_cap_ends_the_day_and_the_day_is_not_asked_about():
    env = EmbeddedEnv(generate_world(WorldConfig(seed=2, rooms=4, objects_per_room=3, receptacles_per_room=(3, 3))), EnvConfig(width=96, height=72))
    robot = OracleRobot(env, HistoryConfig(days=2, rearrangements_per_day=3, max_steps_per_day=60, seed=1))
    observations = list(robot.live())
    history = robot.history
    assert history.capped_days == {0, 1}
    for day in range(2):
        steps = history.steps_of(day)
        assert len(steps) <= 60
        assert [e.kind for e in observations[steps[-1].frame_id].events] == ["day_end"]
    grasps = [e.stamp for o in observations for e in o.events if e.kind == "grasp"]
    releases = [e.stamp for o in observations for e in o.events if e.kind == "release"]
    assert [i.place_stamp for i in history.interactions] == releases  # the interrupted one is not recorded
    assert 1 <= len(grasps) - len(releases) <= 2  # at most one cut short per day
    assert env.state.held is None
    moved = {i.object_id for i in history.interactions}
    for object_id, placement in env.state.placements.items():  # interrupted ones are put back, not left in the gripper
        if object_id not in moved:
            assert np.allclose(placement.position, history.initial_state.placements[object_id].position)
    tasks = generate_tasks(history, env, env.pose)
    assert len(tasks) == 0 and set(tasks.skipped.values()) == {NO_DAY}


def test_only_capped_days_go_unasked(two_days):
    history = dataclasses.replace(two_days.history, capped_days={0})  # as if day 0 had been capped
    tasks = generate_tasks(history, two_days.env, two_days.episode.final_pose)
    assert tasks and all(t.day == 1 for t in tasks)
    assert any(t.day == 0 for t in two_days.tasks)


def test_room_not_visited_fires_in_some_small_episode(two_days):
    episodes = [two_days]
    for seed in (1, 2):
        if any(t.task_id == "room_not_visited" for e in episodes for t in e.tasks):
            break
        episodes.append(RecordedEpisode(small_sim(days=2, rearrangements=2, rooms=4), seed=seed))
    fired = [(e, t) for e in episodes for t in e.tasks if t.task_id == "room_not_visited"]
    assert fired
    for episode, task in fired:
        visited = {s.room for s in episode.history.steps_of(task.day)}
        assert set(task.goals[0].rooms).isdisjoint(visited)
        assert all(episode.history.steps[f].day != task.day for f in task.keyframes[0])  # seen on another day


# ---------------------------------------------------------------------- homes and tasks
@pytest.mark.parametrize("config", [{}, {"rooms": 4, "objects_per_room": 3, "receptacles_per_room": (3, 3)}])
def test_every_home_has_repeated_object_categories(config):
    for seed in range(10):
        world = generate_world(WorldConfig(seed=seed, **config))
        counts = Counter(obj.category for obj in world.objects.values())
        assert sum(1 for c in counts.values() if c >= 2) >= 3
        assert 0.45 <= len(counts) / len(world.objects) <= 0.75
        assert Counter(o.category for o in generate_world(WorldConfig(seed=seed, **config)).objects.values()) == counts


def _description_fits(env, entity_id, spec) -> bool:
    if spec.get("category") is not None and env.label(entity_id) != spec["category"]:
        return False
    return all(env.attributes(entity_id).get(k) == v for k, v in (spec.get("attributes") or {}).items())


def test_no_generated_task_is_vacuous(one_day, two_days):
    for episode in (one_day, two_days):
        env = episode.env
        for task in episode.tasks:
            for spec, goal in zip(task.constraints["goals"], task.goals):
                if goal.kind == "room":
                    assert len(set(goal.rooms)) / len(env.room_names()) <= 0.5, task.instruction
                    continue
                pool = [i for i in env.entity_ids() if env.entity_kind(i) == goal.kind]
                assert len(set(goal.entity_ids)) / len(pool) <= 0.5, task.instruction
                if task.category != "Object Recall" and (spec.get("category") or spec.get("attributes")):
                    described = [i for i in pool if _description_fits(env, i, spec)]
                    assert set(described) - set(goal.entity_ids), task.instruction
            if task.task_id == "category_interacted":
                category = task.constraints["goals"][0]["category"]
                same = {i for i in env.world.objects if env.label(i) == category}
                assert same - set(task.goals[0].entity_ids)
        # every template is generated or has a reason
        assert {t.task_id for t in episode.tasks} | set(episode.tasks.skipped) == {t.task_id for t in TEMPLATES}


def test_room_object_final_is_where_the_object_was_put(two_days):
    tasks = [t for t in two_days.tasks if t.task_id == "room_object_final"]
    assert tasks
    for task in tasks:
        assert task.constraints["goals"][0]["select"]["when"] == "final"
        assert "where you put the" in task.instruction
        placed = {i.goal_room for i in two_days.history.interactions_of(task.day)}
        assert set(task.goals[0].rooms) <= placed


def test_revisit_names_each_receptacle_once(one_day):
    """A history where the robot placed two objects on the same receptacle."""
    history = dataclasses.replace(one_day.history, interactions=list(one_day.history.interactions))
    first, _, third = sorted(history.interactions, key=lambda i: i.pick_stamp)[:3]
    history.interactions[history.interactions.index(third)] = dataclasses.replace(third, goal_receptacle=first.goal_receptacle)
    revisits = [t.task_id for t in TEMPLATES if t.task_id.startswith("revisit")]
    tasks = generate_tasks(history, one_day.env, one_day.episode.final_pose, TaskConfig(templates=revisits))
    goal_tasks = [t for t in tasks if "goal" in t.task_id]
    assert goal_tasks
    for task in tasks:
        named = [g.entity_ids[0] for g in task.goals]
        assert len(named) == len(set(named)) >= 2, task.instruction
    for task in goal_tasks:
        if task.task_id == "revisit_goal_receptacles" or task.task_id == "revisit_goal_receptacles_ordered":
            assert len(task.goals) == 2  # three places, two receptacles
        if task.ordered:
            ordinals = re.search(r"The order to revisit them is: (.*)\.$", task.instruction).group(1).split(", ")
            assert sorted(ordinals) == ["first", "second"]  # the kept goals, numbered


def test_keyframes_are_where_the_predicates_held(two_days):
    env, history = two_days.env, two_days.history
    steps = {s.frame_id: s for s in history.steps}
    settled = {}
    for interaction in history.interactions:
        settled[interaction.object_id] = max(settled.get(interaction.object_id, -1), interaction.place_frame)
    checked = 0
    for task in two_days.tasks:
        assert len(task.keyframes) == len(task.goals)
        for goal, frames in zip(task.goals, task.keyframes):
            assert frames and frames == sorted(set(frames))
            for frame in frames[:: max(1, len(frames) // 3)]:
                step = steps[frame]
                if goal.kind == "room":
                    assert step.room in goal.rooms
                    continue
                # the recorded mask saw one of the goal's entities, from where its predicate holds
                held = [
                    e
                    for e in goal.entity_ids
                    if step.visible.get(e, 0) >= DEFAULT.min_visibility * history.image_pixels
                    and goal_satisfied(env, TargetGoal(goal.kind, [e]), step.pose, DTG)
                    and frame >= settled.get(e, -1)
                ]
                assert held, (task.task_id, frame)
                checked += 1
    assert checked > 50
