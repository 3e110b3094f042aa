"""The oracle robot that lives in the home for several days, and the ground-truth history it leaves.

Each day it wakes where it slept, does a few pick-and-place rearrangements (FindingDory's
collection phase: navigate to the object's receptacle, grasp, carry it to another receptacle,
place), and wanders to other rooms in between. Every step is an ``Observation`` with its
events (``grasp`` and ``release`` with the gripper pose, ``day_start``, ``day_end``). The simulator
keeps its own record of what happened (``History``), which the task generator reads; the
memory under test only ever sees the observations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from embodied_mem.sim.embedded.env import Action, EmbeddedEnv
from embodied_mem.sim.embedded.navigator import Navigator, Unreachable
from embodied_mem.sim.embedded.world import free_spot
from embodied_mem.sim.tasks.history import History, InteractionRecord, StepRecord
from embodied_mem.types import Observation, Pose


@dataclass
class HistoryConfig:
    """How the robot spends its days. One day is FindingDory's collection run (cap 4000 steps)."""

    days: int = 2
    rearrangements_per_day: int = 5
    wander_probability: float = 0.5  # chance of visiting another room before each rearrangement
    max_steps_per_day: int = 4000
    manipulation_steps: int = 2  # steps spent grasping / placing (the event is on the last one)
    seed: int = 0


class OracleRobot:
    """Drives ``env`` through ``config.days`` days and records a ``History``."""

    def __init__(self, env: EmbeddedEnv, config: HistoryConfig) -> None:
        self.env = env
        self.config = config
        self.rng = np.random.default_rng(config.seed + 7919 * env.world.seed)
        self.navigator = Navigator(env)
        self.history = History(initial_state=env.state.copy(), days=config.days)

    # ------------------------------------------------------------------ recording
    def _record(self, obs: Observation) -> Observation:
        """Add room-change events, log the step, and hand the observation on."""
        # The truth stays here, in the simulator's record: the memory gets only ``obs``.
        room = self.env.room_of(self.env.pose.position)
        ids, counts = np.unique(self.env.last_frame.instances, return_counts=True)
        visible = {int(i): int(c) for i, c in zip(ids, counts) if i > 0}
        self.history.seen.update(visible)
        self.history.steps.append(StepRecord(obs.frame_id, obs.stamp, obs.day, self.env.pose, room, visible))
        return obs

    def _act(self, action: Action, events: list[tuple] | None = None) -> Observation:
        return self._record(self.env.step(action, events))

    def _drive(self, goal: Pose, replans: int = 3) -> Iterator[Observation]:
        """Closed loop: re-plan from where the robot is if a step was blocked."""
        for _ in range(replans + 1):
            collisions = self.env.collisions
            for action in self.navigator.plan_actions(self.env.pose, goal):
                yield self._act(action)
                if self.env.collisions != collisions:
                    break
            else:
                return
        raise Unreachable(f"kept bumping into things on the way to {goal}")

    # ------------------------------------------------------------------ living
    def live(self) -> Iterator[Observation]:
        """Yield every observation of every day; ``self.history`` is complete afterwards."""
        for day in range(self.config.days):
            yield from self._live_day(day)
        self.history.final_state = self.env.state.copy()
        self.history.final_pose = self.env.pose

    def _live_day(self, day: int) -> Iterator[Observation]:
        env = self.env
        start = env.pose if day > 0 else self._random_pose()
        env.start_day(day, start)
        yield self._record(env.observe([("day_start", None)]))
        chosen = self._objects_for_today()
        order = 0
        for object_id in chosen:
            if env.step_index > self.config.max_steps_per_day * 0.8:
                break
            if self.rng.random() < self.config.wander_probability:
                yield from self._wander()
            try:
                record = yield from self._rearrange(day, order, object_id)
            except Unreachable:
                continue
            if record is not None:
                self.history.interactions.append(record)
                order += 1
        yield from self._wander()
        yield self._act(Action("wait"), [("day_end", None)])

    def _random_pose(self) -> Pose:
        cells = np.argwhere(self.env.grid.navigable & (self.env.grid.clearance > 0.5))
        cell = cells[int(self.rng.integers(len(cells)))]
        xy = self.env.grid.spec.center(int(cell[0]), int(cell[1]))
        return Pose.from_xy_yaw(float(xy[0]), float(xy[1]), float(self.rng.uniform(-math.pi, math.pi)))

    def _objects_for_today(self) -> list[int]:
        candidates = sorted(self.env.state.placements)
        count = min(self.config.rearrangements_per_day, len(candidates))
        return [int(i) for i in self.rng.choice(candidates, size=count, replace=False)]

    def _wander(self) -> Iterator[Observation]:
        """Visit a random room: prefer one not visited today."""
        visited = {s.room for s in self.history.steps if s.day == self.env.day}
        rooms = [r for r in self.env.world.rooms if r.name not in visited] or list(self.env.world.rooms)
        room = rooms[int(self.rng.integers(len(rooms)))]
        grid = self.env.grid
        cells = np.argwhere(grid.navigable & (grid.clearance > 0.45))
        centers = grid.spec.centers(cells)
        inside = np.array([room.contains(x, y) for x, y in centers])
        if not np.any(inside):
            return
        choice = centers[inside][int(self.rng.integers(int(inside.sum())))]
        goal = Pose.from_xy_yaw(float(choice[0]), float(choice[1]), float(self.rng.uniform(-math.pi, math.pi)))
        try:
            yield from self._drive(goal)
        except Unreachable:
            return

    def _viewpoint(self, receptacle_id: int, focus: np.ndarray, watch: int | None = None) -> Pose:
        """A reachable pose in front of the receptacle, facing ``focus``, from which the
        entity ``watch`` (default: the receptacle) is in view."""
        env = self.env
        cells = env.viewpoint_cells(receptacle_id)
        if len(cells) == 0:
            raise Unreachable(f"receptacle {receptacle_id} has no viewpoint")
        centers = env.grid.spec.centers(cells)
        distance = np.linalg.norm(centers - focus[:2], axis=1)
        reachable = env.grid.distance_field(np.array([env.grid.spec.cell(env.pose.position)]))
        watch = receptacle_id if watch is None else watch
        fallback = None
        for index in np.argsort(np.abs(distance - 0.75))[:12]:
            xy = centers[index]
            if math.isinf(reachable[tuple(cells[index])]):
                continue
            yaw = math.atan2(focus[1] - xy[1], focus[0] - xy[0])
            pose = Pose.from_xy_yaw(float(xy[0]), float(xy[1]), yaw)
            fallback = fallback or pose
            if env.visible_fraction(pose, watch) * env.camera.width * env.camera.height >= 50:
                return pose
        if fallback is None:
            raise Unreachable(f"no reachable viewpoint for receptacle {receptacle_id}")
        return fallback

    def _rearrange(self, day: int, order: int, object_id: int):
        env, world = self.env, self.env.world
        start = env.state.placements[object_id]
        start_receptacle = world.receptacles[start.receptacle_id]
        yield from self._drive(self._viewpoint(start_receptacle.entity_id, start.position, watch=object_id))
        for _ in range(self.config.manipulation_steps - 1):
            yield self._act(Action("wait"))
        # The gripper closes on the object: the event carries only where the gripper is.
        pick = self._act(Action("wait"), [("grasp", start.position)])
        pick_pose = env.pose  # the truth, for the record (the memory got the drifting estimate)
        env.state.pick(object_id)
        yield pick
        goal_receptacle, position = self._goal_for(object_id, start)
        try:
            yield from self._drive(self._viewpoint(goal_receptacle.entity_id, position))
        except Unreachable:
            goal_receptacle, position = start_receptacle, start.position
            yield from self._drive(self._viewpoint(goal_receptacle.entity_id, position))
        for _ in range(self.config.manipulation_steps - 1):
            yield self._act(Action("wait"))
        env.state.place(goal_receptacle.entity_id, position)
        place = self._act(Action("wait"), [("release", np.asarray(position, dtype=np.float64))])
        place_pose = env.pose
        yield place
        return InteractionRecord(
            day=day,
            order=order,
            object_id=object_id,
            start_receptacle=start_receptacle.entity_id,
            goal_receptacle=goal_receptacle.entity_id,
            pick_stamp=pick.stamp,
            place_stamp=place.stamp,
            pick_frame=pick.frame_id,
            place_frame=place.frame_id,
            pick_pose=pick_pose,
            place_pose=place_pose,
            start_room=start_receptacle.room,
            goal_room=goal_receptacle.room,
            start_position=start.position.copy(),
            goal_position=np.asarray(position, dtype=np.float64).copy(),
        )

    def _goal_for(self, object_id: int, start):
        """A different receptacle with room for the object (usually in another room)."""
        world, env = self.env.world, self.env
        obj = world.objects[object_id]
        current = start.receptacle_id
        here = world.receptacles[current].room
        options = [r for r in world.receptacles.values() if r.entity_id != current]
        other_rooms = [r for r in options if r.room != here]
        pool = other_rooms if other_rooms and self.rng.random() < 0.7 else options
        for index in self.rng.permutation(len(pool)):
            receptacle = pool[int(index)]
            position = free_spot(self.rng, receptacle, obj, env.state.placements, world.objects)
            if position is not None:
                return receptacle, position
        return world.receptacles[current], start.position
