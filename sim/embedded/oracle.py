"""The oracle robot that lives in the home for several days, and the ground-truth history it leaves.

Each day is one of FindingDory's collection runs: the robot wakes where it slept and does a few
pick-and-place rearrangements (navigate to one of the object's receptacle's viewpoints, grasp,
carry it to another receptacle's viewpoint, place), wandering between them, all in a random
subset of the rooms. The day ends at the last place, or when ``max_steps_per_day`` steps are
spent (then it is recorded as capped). Every step is an ``Observation`` with its events
(``grasp`` and ``release`` with the gripper pose, ``day_start``, ``day_end``). The simulator keeps its own
record of what happened (``History``), which the task generator reads; the memory under test
only ever sees the observations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from embodied_mem.sim.embedded.env import Action, EmbeddedEnv
from embodied_mem.sim.embedded.navigator import Navigator, Unreachable
from embodied_mem.sim.embedded.viewpoints import MIN_PIXELS
from embodied_mem.sim.embedded.world import free_spot
from embodied_mem.sim.tasks.history import History, InteractionRecord, StepRecord
from embodied_mem.sim.tasks.success import MIN_VISIBILITY, RECEPTACLE_ANGLE
from embodied_mem.types import Observation, Pose


@dataclass
class HistoryConfig:
    """How the robot spends its days. One day is FindingDory's collection run (cap 4000 steps)."""

    days: int = 2
    rearrangements_per_day: int = 5
    wander_probability: float = 0.5  # chance of visiting another room before each rearrangement
    max_steps_per_day: int = 4000  # hard cap: the day ends there, wherever the robot is
    rooms_skipped_per_day: tuple[int, int] = (1, 2)  # rooms left out of each day's work (at least 2 stay)
    manipulation_steps: int = 2  # steps spent grasping / placing (the event is on the last one)
    seed: int = 0


class DayCapped(Exception):
    """The day's step budget is spent (not an error: the day simply ends)."""


class OracleRobot:
    """Drives ``env`` through ``config.days`` days and records a ``History``."""

    def __init__(self, env: EmbeddedEnv, config: HistoryConfig) -> None:
        self.env = env
        self.config = config
        self.rng = np.random.default_rng(config.seed + 7919 * env.world.seed)
        self.navigator = Navigator(env)
        self.history = History(
            initial_state=env.state.copy(), days=config.days, image_pixels=env.camera.width * env.camera.height
        )
        self._steps_today = 0
        self._rooms_today: set[str] = set()
        self._holding_from: tuple[int, np.ndarray] | None = None  # (receptacle, position) of the held object

    # ------------------------------------------------------------------ recording
    def _record(self, obs: Observation) -> Observation:
        """Log the step (the truth: true pose, room, what was in view) and hand the observation on."""
        # The truth stays here, in the simulator's record: the memory gets only ``obs``.
        room = self.env.room_of(self.env.pose.position)
        ids, counts = np.unique(self.env.last_frame.instances, return_counts=True)
        visible = {int(i): int(c) for i, c in zip(ids, counts) if i > 0}
        self.history.seen.update(visible)
        self.history.steps.append(StepRecord(obs.frame_id, obs.stamp, obs.day, self.env.pose, room, visible))
        self._steps_today += 1
        return obs

    def _check_budget(self) -> None:
        """Raise ``DayCapped`` if today has no step left for work (the last one is the day's end)."""
        if self._steps_today >= self.config.max_steps_per_day - 1:
            raise DayCapped

    def _act(self, action: Action, events: list[tuple] | None = None) -> Observation:
        self._check_budget()
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
        """One collection run: rearrangements (with wandering between them) in today's rooms.

        As FindingDory collects a history, the day ends at the last place, or wherever the
        robot is when ``max_steps_per_day`` steps are spent (the day is then recorded as
        capped, and its interrupted rearrangement is neither recorded nor left half done).
        """
        env = self.env
        start = env.pose if day > 0 else self._random_pose()
        env.start_day(day, start)
        self._steps_today = 0
        self._rooms_today = self._choose_rooms()
        yield self._record(env.observe([("day_start", None)]))
        try:
            yield from self._work(day)
        except DayCapped:
            self.history.capped_days.add(day)
            self._undo_pick()
        # The final wait step carries the day's end (the budget kept one step for it).
        yield self._record(env.step(Action("wait"), [("day_end", None)]))

    def _work(self, day: int) -> Iterator[Observation]:
        for object_id in self._objects_for_today():
            if self._steps_today > self.config.max_steps_per_day * 0.8:
                break  # too late in the day to start another rearrangement
            if self.rng.random() < self.config.wander_probability:
                yield from self._wander()
            try:
                yield from self._rearrange(day, object_id)
            except Unreachable:
                continue

    def _choose_rooms(self) -> set[str]:
        """Today's rooms: all but ``rooms_skipped_per_day`` random ones (never the one the robot
        wakes in), so some days leave a room unvisited (FindingDory's ``visited`` property).
        The robot may still drive through a skipped room on its way: that counts as a visit."""
        names = [room.name for room in self.env.world.rooms]
        here = self.env.room_of(self.env.pose.position)
        low, high = self.config.rooms_skipped_per_day
        count = min(int(self.rng.integers(low, high + 1)), max(0, len(names) - 2))
        others = [name for name in names if name != here]
        skipped = {str(name) for name in self.rng.choice(others, size=min(count, len(others)), replace=False)} if count else set()
        return set(names) - skipped

    def _undo_pick(self) -> None:
        """Put a held object back where it was picked: the interrupted rearrangement is not
        recorded, so the home must not keep half of it."""
        if self.env.state.held is not None and self._holding_from is not None:
            receptacle_id, position = self._holding_from
            self.env.state.place(receptacle_id, position)
        self._holding_from = None

    def _random_pose(self) -> Pose:
        cells = np.argwhere(self.env.grid.navigable & (self.env.grid.clearance > 0.5))
        cell = cells[int(self.rng.integers(len(cells)))]
        xy = self.env.grid.spec.center(int(cell[0]), int(cell[1]))
        return Pose.from_xy_yaw(float(xy[0]), float(xy[1]), float(self.rng.uniform(-math.pi, math.pi)))

    def _objects_for_today(self) -> list[int]:
        """Objects resting in today's rooms (all objects if none do)."""
        world = self.env.world
        placements = self.env.state.placements
        candidates = sorted(i for i, p in placements.items() if world.receptacles[p.receptacle_id].room in self._rooms_today)
        candidates = candidates or sorted(placements)
        count = min(self.config.rearrangements_per_day, len(candidates))
        return [int(i) for i in self.rng.choice(candidates, size=count, replace=False)]

    def _wander(self) -> Iterator[Observation]:
        """Visit a random room of today's: prefer one not visited today."""
        visited = {s.room for s in self.history.steps if s.day == self.env.day}
        today = [r for r in self.env.world.rooms if r.name in self._rooms_today]
        rooms = [r for r in today if r.name not in visited] or today
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
        """One of the receptacle's sparse viewpoints (``EmbeddedEnv.receptacle_viewpoints``),
        reachable from here, so the frame of a pick or place is a valid receptacle answer as
        in FindingDory.

        Nearest to ``focus`` first, each tried facing ``focus``: the first from which both
        ``watch`` (default: the receptacle) and the receptacle are in view, and the receptacle
        within ``robot_at_receptacle``'s angle. Otherwise the nearest viewpoint in its own
        heading (facing the receptacle, which it sees by construction).
        """
        env = self.env
        viewpoints = env.receptacle_viewpoints(receptacle_id)
        grid = env.grid
        reachable = grid.distance_field(np.array([grid.spec.cell(env.pose.position)]))
        viewpoints = [v for v in viewpoints if math.isfinite(reachable[grid.spec.cell(v.position)])]
        if not viewpoints:
            raise Unreachable(f"no reachable viewpoint for receptacle {receptacle_id}")
        viewpoints.sort(key=lambda v: float(np.linalg.norm(v.position[:2] - focus[:2])))
        watch = receptacle_id if watch is None else watch
        pixels = env.camera.width * env.camera.height
        for viewpoint in viewpoints:
            xy = viewpoint.position[:2]
            pose = Pose.from_xy_yaw(float(xy[0]), float(xy[1]), math.atan2(focus[1] - xy[1], focus[0] - xy[0]))
            if env.bearing(pose, receptacle_id) > RECEPTACLE_ANGLE:
                continue
            if env.visible_fraction(pose, watch) * pixels < MIN_PIXELS:
                continue
            if watch != receptacle_id and env.visible_fraction(pose, receptacle_id) < MIN_VISIBILITY:
                continue
            return pose
        return viewpoints[0]

    def _rearrange(self, day: int, object_id: int):
        """Pick ``object_id`` and place it elsewhere; the record is kept the moment it is placed."""
        env, world = self.env, self.env.world
        start = env.state.placements[object_id]
        start_receptacle = world.receptacles[start.receptacle_id]
        yield from self._drive(self._viewpoint(start_receptacle.entity_id, start.position, watch=object_id))
        for _ in range(self.config.manipulation_steps - 1):
            yield self._act(Action("wait"))
        # The gripper closes on the object: the event carries only where the gripper is.
        pick = self._act(Action("wait"), [("grasp", start.position)])
        pick_pose = env.pose  # the truth, for the record (the memory got its drifting estimate)
        env.state.pick(object_id)
        self._holding_from = (start.receptacle_id, start.position.copy())
        yield pick
        goal_receptacle, position = self._goal_for(object_id, start)
        try:
            yield from self._drive(self._viewpoint(goal_receptacle.entity_id, position))
        except Unreachable:
            goal_receptacle, position = start_receptacle, start.position
            yield from self._drive(self._viewpoint(goal_receptacle.entity_id, position))
        for _ in range(self.config.manipulation_steps - 1):
            yield self._act(Action("wait"))
        self._check_budget()  # the place step must happen if the object is put down
        env.state.place(goal_receptacle.entity_id, position)
        self._holding_from = None
        place = self._act(Action("wait"), [("release", np.asarray(position, dtype=np.float64))])
        place_pose = env.pose
        self.history.interactions.append(
            InteractionRecord(
                day=day,
                order=len(self.history.interactions_of(day)),
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
        )
        yield place

    def _goal_for(self, object_id: int, start):
        """A different receptacle of today's rooms with room for the object (usually in another room)."""
        world, env = self.env.world, self.env
        obj = world.objects[object_id]
        current = start.receptacle_id
        here = world.receptacles[current].room
        options = [r for r in world.receptacles.values() if r.entity_id != current and r.room in self._rooms_today]
        other_rooms = [r for r in options if r.room != here]
        pool = other_rooms if other_rooms and self.rng.random() < 0.7 else options
        for index in self.rng.permutation(len(pool)):
            receptacle = pool[int(index)]
            position = free_spot(self.rng, receptacle, obj, env.state.placements, world.objects)
            if position is not None:
                return receptacle, position
        return world.receptacles[current], start.position
