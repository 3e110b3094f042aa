"""Memory across robots: two simulated robots in one home, each in its own odometry frame, their
streams merged through the shared map frame into one memory that answers what either saw."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from embodied_mem.registry import build
from embodied_mem.store.merge import FRAME_STRIDE, RobotStream, merged, robot_of
from embodied_mem.types import Pose, Query

# Robot B's odometry frame in the map: 3 m along x, 1 m along y, turned 40 degrees.
MAP_T_ODOM_B = Pose.from_xy_yaw(3.0, 1.0, np.deg2rad(40.0))


def in_odom(obs, odom_T_map: Pose, renumber: int):
    """What robot B itself reports: its poses in its own odometry frame, its own frame ids."""
    events = [dataclasses.replace(e, base_pose=odom_T_map.compose(e.base_pose) if e.base_pose else None,
                                  gripper_pose=odom_T_map.compose(e.gripper_pose) if e.gripper_pose else None) for e in obs.events]
    return dataclasses.replace(obs, pose=odom_T_map.compose(obs.pose), events=events, frame_id=obs.frame_id - renumber)


def inverse(pose: Pose) -> Pose:
    return Pose.from_matrix(np.linalg.inv(pose.matrix()))


@pytest.fixture(scope="module")
def robots(two_days):
    """Robot A lived day 0, robot B day 1 (from its own odometry frame, ids from 0)."""
    day0 = [o for o in two_days.observations if o.day == 0]
    day1 = [o for o in two_days.observations if o.day == 1]
    first_b = day1[0].frame_id
    b_own = [in_odom(o, inverse(MAP_T_ODOM_B), first_b) for o in day1]
    return day0, b_own, first_b


def memory_of(observations, plan):
    memory = build("memory", {"name": "frame_bank", "encoder": "gt_hash"})
    memory.set_floor_plan(plan)
    for obs in observations:
        memory.observe(obs)
    return memory


def test_merged_stream_is_in_the_map_frame_with_unique_ids_in_time_order(robots, two_days):
    day0, b_own, first_b = robots
    stream = list(merged([RobotStream(day0), RobotStream(b_own, MAP_T_ODOM_B)]))
    assert len(stream) == len(two_days.observations)
    assert all(a.stamp <= b.stamp for a, b in zip(stream, stream[1:]))
    assert len({o.frame_id for o in stream}) == len(stream)
    truth = {o.frame_id: o for o in two_days.observations}
    for obs in stream:
        robot, own = robot_of(obs.frame_id)
        original = truth[own + (first_b if robot == 1 else 0)]
        assert np.allclose(obs.pose.position, original.pose.position, atol=1e-9)
        for event, want in zip(obs.events, original.events):
            if event.gripper_pose is not None:
                assert np.allclose(event.gripper_pose.position, want.gripper_pose.position, atol=1e-9)


def test_one_memory_answers_what_either_robot_saw(robots, two_days):
    day0, b_own, first_b = robots
    plan = two_days.episode.floor_plan()
    single = memory_of(two_days.observations, plan)  # one robot that lived both days
    shared = memory_of(merged([RobotStream(day0), RobotStream(b_own, MAP_T_ODOM_B)]), plan)
    unaligned = memory_of(merged([RobotStream(day0), RobotStream(b_own)]), plan)  # B's odometry taken as the map
    near = two_days.observations[-1].pose
    answered, misplaced = 0, 0
    for task in two_days.tasks:
        query = Query(task.instruction, k=1, near=near, constraints=task.constraints)
        want, got, bad = single.recall(query).hits, shared.recall(query).hits, unaligned.recall(query).hits
        assert len(got) == len(want), task.task_id
        for a, b in zip(want, got):
            robot, own = robot_of(b.frame_id)
            assert own + (first_b if robot == 1 else 0) == a.frame_id, task.task_id  # the same frame, named by robot
            assert np.allclose(a.agent_pose.position, b.agent_pose.position, atol=1e-6)
            answered += 1
        misplaced += sum(1 for a, c in zip(want, bad) if np.linalg.norm(a.agent_pose.position[:2] - c.agent_pose.position[:2]) > 0.5)
    assert answered >= len(two_days.tasks)
    assert misplaced > 0  # without the alignment, day-1 answers land in the wrong places
    days = {robot_of(h.frame_id)[0] for t in two_days.tasks for h in shared.recall(Query(t.instruction, k=1, near=near, constraints=t.constraints)).hits}
    assert days == {0, 1}  # answers come from both robots


def test_frame_ids_out_of_range_are_refused(robots):
    day0, _, _ = robots
    bad = dataclasses.replace(day0[0], frame_id=FRAME_STRIDE)
    with pytest.raises(ValueError, match="frame_id"):
        list(merged([RobotStream([bad])]))
