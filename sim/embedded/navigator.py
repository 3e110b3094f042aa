"""The oracle navigator: A* on the occupancy grid, then forward / turn actions along the path.

It drives the robot to any reachable pose. The last forward and turn of an approach may be
shorter than the default step so the robot stops exactly on the goal pose.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np

from embodied_mem.geometry import wrap_angle
from embodied_mem.sim.embedded.env import FORWARD_STEP, TURN_STEP, Action, EmbeddedEnv
from embodied_mem.types import Observation, Pose


def drive_budget(navigator, goal: Pose, budget: int, on_step: Callable[[Pose], bool] | None = None, replans: int = 3) -> tuple[float, int, bool]:
    """Drive to ``goal`` with at most ``budget`` actions, calling ``on_step(pose)`` after each;
    stops early when it returns True. Returns (metres travelled, actions used, stopped early).
    A goal that cannot be reached uses no action and travels nothing (inf metres). A blocked
    move replans, at most ``replans`` times. Any navigator with ``plan_actions(start, goal)``
    and an ``env`` with ``pose`` / ``move(action)`` drives this way (embedded and Habitat)."""
    travelled, used = 0.0, 0
    for _ in range(replans + 1):
        try:
            actions = navigator.plan_actions(navigator.env.pose, goal)
        except Unreachable:
            return (math.inf if used == 0 else travelled), used, False
        blocked = False
        for action in actions:
            if used >= budget:
                return travelled, used, False
            moved = navigator.env.move(action)
            used += 1
            if action.kind == "forward" and moved:
                travelled += action.amount
            if on_step is not None and on_step(navigator.env.pose):
                return travelled, used, True
            if not moved:
                blocked = True
                break
        if not blocked:
            return travelled, used, False
    return travelled, used, False


class Unreachable(RuntimeError):
    pass


def turn_actions(current_yaw: float, target_yaw: float) -> list[Action]:
    delta = wrap_angle(target_yaw - current_yaw)
    actions = []
    while abs(delta) > 1e-6:
        step = math.copysign(min(abs(delta), TURN_STEP), delta)
        actions.append(Action("turn", step))
        delta -= step
    return actions


def forward_actions(distance: float) -> list[Action]:
    actions = []
    while distance > 1e-6:
        step = min(distance, FORWARD_STEP)
        actions.append(Action("forward", step))
        distance -= step
    return actions


class Navigator:
    """Plans on ``env.grid`` and executes with ``env.step``."""

    def __init__(self, env: EmbeddedEnv) -> None:
        self.env = env

    def plan_actions(self, start: Pose, goal: Pose) -> list[Action]:
        """The actions that take the robot from ``start`` to ``goal``; raises Unreachable."""
        waypoints = self.env.grid.plan(start.position[:2], goal.position[:2])
        if waypoints is None:
            raise Unreachable(f"no path from {start} to {goal}")
        actions: list[Action] = []
        yaw = start.yaw
        position = np.asarray(start.position[:2], dtype=np.float64)
        for waypoint in waypoints[1:]:
            delta = waypoint - position
            distance = float(np.linalg.norm(delta))
            if distance < 1e-6:
                continue
            heading = math.atan2(delta[1], delta[0])
            actions += turn_actions(yaw, heading)
            actions += forward_actions(distance)
            yaw, position = heading, waypoint
        actions += turn_actions(yaw, goal.yaw)
        return actions

    def drive_blind(self, goal: Pose, replans: int = 3) -> float:
        """Drive to ``goal`` without rendering; returns the distance travelled (inf if unreachable)."""
        travelled = 0.0
        for _ in range(replans + 1):
            try:
                actions = self.plan_actions(self.env.pose, goal)
            except Unreachable:
                return math.inf
            for action in actions:
                moved = self.env.move(action)
                if not moved:
                    break
                if action.kind == "forward":
                    travelled += action.amount
            else:
                return travelled
        return travelled

    def drive_budget(self, goal: Pose, budget: int, on_step: Callable[[Pose], bool] | None = None, replans: int = 3) -> tuple[float, int, bool]:
        """Drive to ``goal`` with at most ``budget`` actions (``drive_budget`` below)."""
        return drive_budget(self, goal, budget, on_step, replans)

    def drive(self, goal: Pose, on_step: Callable[[Observation], None] | None = None, max_steps: int = 10_000) -> Iterator[Observation]:
        """Drive to ``goal``, yielding each observation; raises Unreachable."""
        for index, action in enumerate(self.plan_actions(self.env.pose, goal)):
            if index >= max_steps:
                return
            obs = self.env.step(action)
            if on_step is not None:
                on_step(obs)
            yield obs

    def path_length(self, start: Pose, goal: Pose) -> float:
        waypoints = self.env.grid.plan(start.position[:2], goal.position[:2])
        if waypoints is None:
            return math.inf
        return float(sum(np.linalg.norm(b - a) for a, b in zip(waypoints[:-1], waypoints[1:])))

    def approach_pose(self, target_xyz: np.ndarray, standoff: float = 0.7, start: Pose | None = None) -> Pose | None:
        """A reachable pose about ``standoff`` from the target, facing it; None if there is none."""
        grid = self.env.grid
        target = np.asarray(target_xyz, dtype=np.float64)[:2]
        reachable = None
        if start is not None:
            reachable = grid.distance_field(np.array([grid._snap_cell(start.position)]))
        for radius in (standoff + 0.4, standoff + 1.0, standoff + 2.0):
            cells = grid.cells_within(target, radius)
            if len(cells) == 0:
                continue
            centers = grid.spec.centers(cells)
            gap = np.abs(np.linalg.norm(centers - target, axis=1) - standoff)
            for index in np.argsort(gap)[:60]:
                candidate = centers[index]
                if reachable is not None and math.isinf(reachable[tuple(cells[index])]):
                    continue
                if not grid.clear_view(candidate, target):
                    continue
                yaw = math.atan2(target[1] - candidate[1], target[0] - candidate[0])
                return Pose.from_xy_yaw(float(candidate[0]), float(candidate[1]), yaw)
        return None
