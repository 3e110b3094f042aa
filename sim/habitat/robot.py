"""The oracle robot of a FindingDory episode: its collection run, recorded as a ``History``.

As FindingDory's data collection (``FindingDoryTask.step`` with its ``OracleAgent``): from the
episode's start pose the robot rearranges ``candidate_objects`` in their order (index =
``interaction_order``): drive to the first reachable viewpoint of the object, pick it (magic
grasp), drive to the goal receptacle's viewpoint ``place_valid_receps[i]`` (else the first
reachable one), place it (magic place), then drive to ``nav_goal_pos`` / ``nav_goal_rot``. The
step cap is ``num_steps_daily`` = 4000; a run that hits it is recorded as capped (FindingDory
then fails the episode). The clock is FindingDory's ``time_of_day`` sensor: 06:00 to 22:00
spread over the 4000 steps (14.4 s a step), interaction times in whole minutes.

Ours: FindingDory's heuristic pick and place policies extend Stretch's arm and lower the object
until it touches the surface; here the arm is not simulated (``manipulation_steps`` waiting
steps, then the object is attached to / released onto the receptacle by the backend, dropped
onto the surface below the receptacle's goal position). The head camera stays in navigation
mode (FindingDory pans it for manipulation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from embodied_mem.sim.embedded.navigator import Unreachable
from embodied_mem.sim.habitat.dataset import Candidate, FindingDoryEpisode
from embodied_mem.sim.habitat.entities import EntityTable, HistoryFacts, ObjectTimes
from embodied_mem.sim.habitat.navigator import HabitatNavigator
from embodied_mem.sim.tasks.history import History, InteractionRecord, StepRecord
from embodied_mem.types import Observation, Pose

WAKE_HOUR, SLEEP_HOUR = 6, 22  # FindingDory's TimeOfDaySensor


@dataclass
class CollectionConfig:
    num_steps_daily: int = 4000  # FindingDory's cap
    manipulation_steps: int = 2  # waiting steps for a pick or a place (the event is on the last)


class Capped(Exception):
    pass


def step_seconds(num_steps_daily: int) -> float:
    return (SLEEP_HOUR - WAKE_HOUR) * 3600.0 / num_steps_daily


class HabitatOracleRobot:
    """Drives ``env`` through an episode's rearrangements and records what happened."""

    def __init__(self, env, navigator: HabitatNavigator, episode: FindingDoryEpisode, table: EntityTable, config: CollectionConfig | None = None) -> None:
        self.env = env
        self.navigator = navigator
        self.episode = episode
        self.table = table
        self.config = config or CollectionConfig()
        self.history = History(days=1, image_pixels=env.image_pixels)
        self.facts = HistoryFacts(regions=list(env.regions()))
        self.steps = 0

    # ------------------------------------------------------------------ recording
    def minute(self) -> int:
        """FindingDory's ``time_of_day`` in minutes (HH:MM, floored)."""
        return int(WAKE_HOUR * 60 + math.floor(self.steps / self.config.num_steps_daily * (SLEEP_HOUR - WAKE_HOUR) * 60))

    def _record(self, obs: Observation) -> Observation:
        pose = self.env.pose
        room = self.env.region_of(pose.position)
        visible = self.env.last_visible()
        self.history.seen.update(visible)
        self.history.steps.append(StepRecord(obs.frame_id, obs.stamp, obs.day, pose, room, visible))
        if room is not None:
            self.facts.visited.add(room)
            self.facts.time_in_region[room] = self.facts.time_in_region.get(room, 0.0) + 1.0
            if self.facts.start_room is None:
                self.facts.start_room = room
        self.steps += 1
        return obs

    def _act(self, action=None, events=None) -> Observation:
        if self.steps >= self.config.num_steps_daily - 1:
            raise Capped
        if action is not None:
            self.env.move(action)
        return self._record(self.env.observe(events or []))

    def _drive(self, goal: Pose) -> Iterator[Observation]:
        for _ in range(4):
            collisions = self.env.collisions
            for action in self.navigator.plan_actions(self.env.pose, goal):
                yield self._act(action)
                if self.env.collisions != collisions:
                    break
            else:
                return
        raise Unreachable(f"kept bumping into things on the way to {goal}")

    def _reachable(self, views) -> list:
        here = self.env.pose.position
        return [v for v in views if math.isfinite(self.env.backend.geodesic(here, np.asarray(v.pose.position).reshape(1, 3)))]

    def _wait(self, events=None) -> Iterator[Observation]:
        for _ in range(self.config.manipulation_steps - 1):
            yield self._act()
        yield self._act(events=events)

    # ------------------------------------------------------------------ living
    def live(self) -> Iterator[Observation]:
        env, episode = self.env, self.episode
        env.start(episode.start_pose)
        objects = episode.candidates["candidate_objects"]
        self.facts.object_room_initial = {i: env.region_of(env.backend.object_position(episode.candidate_handles[i])) for i in range(len(objects))}
        yield self._record(env.observe([("day_start", None)]))
        try:
            for index, candidate in enumerate(objects):
                yield from self._rearrange(index, candidate)
            final = episode.nav_goal_pose
            if final is not None:
                yield from self._drive(final)
        except (Capped, Unreachable):
            self.history.capped_days.add(0)
        self.steps = min(self.steps, self.config.num_steps_daily - 1)
        yield self._record(env.observe([("day_end", None)]))
        self.facts.final_room = env.region_of(env.pose.position)
        self.facts.object_room_final = {i: env.region_of(env.backend.object_position(episode.candidate_handles[i])) for i in range(len(objects))}
        self.history.final_pose = env.pose

    def _rearrange(self, index: int, candidate: Candidate) -> Iterator[Observation]:
        env, episode, table = self.env, self.episode, self.table
        handle = episode.candidate_handles[index]
        views = self._reachable(candidate.view_points)
        if not views:
            raise Unreachable(f"no reachable viewpoint of {handle}")
        yield from self._drive(views[0].pose)
        start_minute = self.minute()
        start_position = np.asarray(env.backend.object_position(handle), dtype=np.float64)
        pick_pose = env.pose
        pick = None
        for obs in self._wait([("grasp", start_position)]):
            pick = obs
            yield obs
        env.hold(handle)
        nav_place_minute = self.minute()
        receptacle = episode.goal_receptacle_of(index)
        views = receptacle.view_points
        chosen = None
        if episode.place_valid_receps is not None:
            valid = episode.place_valid_receps.get(str(index))
            if valid is not None and 0 <= valid < len(views):
                chosen = views[valid]
        if chosen is None:
            reachable = self._reachable(views)
            if not reachable:
                raise Unreachable(f"no reachable viewpoint of {receptacle.object_name}")
            chosen = reachable[0]
        yield from self._drive(chosen.pose)
        place_minute = self.minute()
        goal_position = env.place(handle, receptacle.position)
        place_pose = env.pose
        place = None
        for obs in self._wait([("release", np.asarray(goal_position, dtype=np.float64))]):
            place = obs
            yield obs
        start_name = episode.name_to_receptacle.get(handle, episode.target_receptacles[index] if episode.target_receptacles else "")
        self.facts.times[index] = ObjectTimes(float(start_minute), float(nav_place_minute), float(place_minute), float(self.minute()))
        self.history.interactions.append(
            InteractionRecord(
                day=0,
                order=index,
                object_id=table.id_of(handle),
                start_receptacle=table.id_of(start_name) if start_name in table.by_name else 0,
                goal_receptacle=table.id_of(receptacle.object_name),
                pick_stamp=pick.stamp,
                place_stamp=place.stamp,
                pick_frame=pick.frame_id,
                place_frame=place.frame_id,
                pick_pose=pick_pose,
                place_pose=place_pose,
                start_room=env.region_of(start_position) or "",
                goal_room=env.region_of(np.asarray(goal_position)) or "",
                start_position=start_position,
                goal_position=np.asarray(goal_position, dtype=np.float64),
            )
        )
