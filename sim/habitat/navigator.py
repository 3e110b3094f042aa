"""The oracle navigator over Habitat's navmesh: shortest path, then forward / turn actions.

FindingDory's discrete actions are 0.25 m forward and 10 degree turns
(``findingdory.yaml``: ``forward_step_size: 0.25``, ``turn_angle: 10``), executed by Stretch's
``BaseWaypointTeleportAction``, which takes any displacement up to its limits: the last step of
an approach may be shorter so the robot stops on the goal pose (as the embedded navigator).
The planner is the backend's ``plan(start, goal) -> [points]`` (habitat-sim's
``ShortestPath`` on GPU machines); the interface is the embedded ``Navigator``'s
(``drive_budget``, ``approach_pose``, ``plan_actions``, ``path_length``), which the runner uses.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import numpy as np

from embodied_mem.geometry import wrap_angle
from embodied_mem.sim.embedded.env import Action
from embodied_mem.sim.embedded.navigator import Unreachable, drive_budget
from embodied_mem.types import Pose

FORWARD_STEP = 0.25
TURN_STEP = math.radians(10.0)


class Planner(Protocol):
    def plan(self, start: np.ndarray, goal: np.ndarray) -> list[np.ndarray] | None: ...

    def geodesic(self, start: np.ndarray, ends: np.ndarray) -> float: ...

    def snap(self, point: np.ndarray) -> np.ndarray: ...

    def is_navigable(self, point: np.ndarray) -> bool: ...


def turn_actions(current: float, target: float) -> list[Action]:
    delta, out = wrap_angle(target - current), []
    while abs(delta) > 1e-6:
        step = math.copysign(min(abs(delta), TURN_STEP), delta)
        out.append(Action("turn", step))
        delta -= step
    return out


def forward_actions(distance: float) -> list[Action]:
    out = []
    while distance > 1e-6:
        step = min(distance, FORWARD_STEP)
        out.append(Action("forward", step))
        distance -= step
    return out


class HabitatNavigator:
    """Plans with ``backend`` and executes with ``env.move`` (no rendering while it drives)."""

    def __init__(self, env, backend: Planner) -> None:
        self.env = env
        self.backend = backend

    def plan_actions(self, start: Pose, goal: Pose) -> list[Action]:
        points = self.backend.plan(start.position, goal.position)
        if points is None:
            raise Unreachable(f"no path from {start} to {goal}")
        actions: list[Action] = []
        yaw, here = start.yaw, np.asarray(start.position[:2], dtype=np.float64)
        for point in points[1:]:
            delta = np.asarray(point[:2], dtype=np.float64) - here
            distance = float(np.linalg.norm(delta))
            if distance < 1e-6:
                continue
            heading = math.atan2(delta[1], delta[0])
            actions += turn_actions(yaw, heading) + forward_actions(distance)
            yaw, here = heading, np.asarray(point[:2], dtype=np.float64)
        return actions + turn_actions(yaw, goal.yaw)

    def drive_budget(self, goal: Pose, budget: int, on_step: Callable[[Pose], bool] | None = None, replans: int = 3) -> tuple[float, int, bool]:
        """The embedded simulator's ``drive_budget``, over this navigator's plans and moves."""
        return drive_budget(self, goal, budget, on_step, replans)

    def path_length(self, start: Pose, goal: Pose) -> float:
        return float(self.backend.geodesic(start.position, np.asarray(goal.position).reshape(1, 3)))

    def approach_pose(self, target_xyz: np.ndarray, standoff: float = 0.7, start: Pose | None = None) -> Pose | None:
        """A navigable, reachable pose about ``standoff`` from the target, facing it."""
        target = np.asarray(target_xyz, dtype=np.float64)
        floor = float(self.env.pose.position[2]) if start is None else float(start.position[2])
        for radius in (standoff, standoff + 0.4, standoff + 1.0, standoff + 2.0):
            best = None
            for angle in np.linspace(-math.pi, math.pi, 24, endpoint=False):
                point = np.array([target[0] + radius * math.cos(angle), target[1] + radius * math.sin(angle), floor])
                if not self.backend.is_navigable(point):
                    continue
                snapped = np.asarray(self.backend.snap(point), dtype=np.float64)
                if start is not None and not math.isfinite(self.backend.geodesic(start.position, snapped.reshape(1, 3))):
                    continue
                cost = 0.0 if start is None else float(self.backend.geodesic(start.position, snapped.reshape(1, 3)))
                if best is None or cost < best[0]:
                    best = (cost, snapped)
            if best is not None:
                xy = best[1]
                yaw = math.atan2(target[1] - xy[1], target[0] - xy[0])
                return Pose.from_xy_yaw(float(xy[0]), float(xy[1]), yaw, float(xy[2]))
        return None
