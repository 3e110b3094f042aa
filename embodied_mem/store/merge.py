"""Memory across robots: several robots' observation streams of one home, merged into one.

Each robot localises in its own odometry frame; ``map_T_odom`` (a ``Pose``) puts that frame in
the shared map frame (what a multi-robot SLAM back-end or a one-off alignment against the
floor plan gives). ``merged`` re-expresses every pose of every observation (the body pose and
the grasp / release event poses) in the map frame, gives each frame an id unique across robots
(``robot * FRAME_STRIDE + frame_id``: a hit names which robot saw it), and interleaves the
streams by time, as one memory must see them (it refuses time going backwards). Any memory
then answers what either robot saw.

``embodied-mem replay <bag> <bag> ... memory=<name> replay.map_T_odom=[[x,y,yaw],...]`` does it
for recorded bags (``nodes/replay.py``).
"""

from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from embodied_mem.types import Observation, Pose

FRAME_STRIDE = 1_000_000_000  # frame ids of robot r are r * FRAME_STRIDE + its own id


@dataclass
class RobotStream:
    """One robot's observations, in its own frame, and where that frame sits in the map."""

    observations: Iterable[Observation]
    map_T_odom: Pose = field(default_factory=lambda: Pose.from_xy_yaw(0.0, 0.0, 0.0))


def robot_of(frame_id: int) -> tuple[int, int]:
    """(robot index, the robot's own frame id) of a merged frame id."""
    return int(frame_id) // FRAME_STRIDE, int(frame_id) % FRAME_STRIDE


def to_map(obs: Observation, map_T_odom: Pose, robot: int) -> Observation:
    """``obs`` with its poses in the map frame and its frame id unique across robots."""
    if not 0 <= obs.frame_id < FRAME_STRIDE:
        raise ValueError(f"Observation.frame_id {obs.frame_id} of robot {robot} must be in [0, {FRAME_STRIDE}) to merge")
    events = [
        dataclasses.replace(
            event,
            base_pose=None if event.base_pose is None else map_T_odom.compose(event.base_pose),
            gripper_pose=None if event.gripper_pose is None else map_T_odom.compose(event.gripper_pose),
        )
        for event in obs.events
    ]
    return dataclasses.replace(obs, frame_id=robot * FRAME_STRIDE + obs.frame_id, pose=map_T_odom.compose(obs.pose), events=events)


def merged(streams: list[RobotStream]) -> Iterator[Observation]:
    """Every robot's observations in the map frame, in time order (ties: robot order)."""
    def tagged(robot: int, stream: RobotStream):
        for obs in stream.observations:
            yield obs.stamp, robot, to_map(obs, stream.map_T_odom, robot)

    for _, _, obs in heapq.merge(*(tagged(r, s) for r, s in enumerate(streams)), key=lambda item: (item[0], item[1])):
        yield obs
