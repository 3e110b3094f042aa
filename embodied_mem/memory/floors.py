"""Floors: what a memory that remembers (almost) nothing scores on the same tasks.

Every result table shows these beside the systems, per category, on the same episodes: a
number that a floor also reaches measures nothing.

- ``diary_only``: the robot's own action log and nothing else. At each grasp / release it
  notes what its detector labelled at the gripper in that very frame (object, and the surface
  under it), the time and the room (from the floor plan). It keeps no frames, no poses it
  answers with, and no map of objects: asked anything, it names no history frame (so every
  high-level check fails) and drives to the centre of the room where the matching action
  happened. This is FindingDory's text-only agent in spirit (9.5 on its benchmark).
- ``stay``: stops where it stands; names the last frame it saw (the robot is there).
- ``chance``: keeps what ``frame_bank`` keeps, but answers each goal with a uniformly random
  entity of the right kind from its own catalogue (a random room for room goals), seeded by
  the instruction. It measures how often a task is right by luck.

They are registered like any memory (``memory=diary_only``; Hydra reads ``memory=null`` as
None, hence the names).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embodied_mem.memory.association import EventInference, TrackerConfig
from embodied_mem.memory.base import ActionDiary, Entity, FrameGate, ReadWriteLock, load_manifest, save_manifest, visible_instances
from embodied_mem.memory.frame_bank import FrameBank, FrameBankConfig
from embodied_mem.memory.resolve import ResolvedGoal, recall_structured, validate_constraints
from embodied_mem.registry import register
from embodied_mem.types import FloorPlan, Hit, MemoryStats, Observation, Pose, Query, Recall


def _room_center_pose(plan: FloorPlan | None, room: str | None) -> Pose | None:
    if plan is None or room is None:
        return None
    region = plan.region(room)
    if region is None:
        return None
    x, y = region.center()
    return Pose.from_xy_yaw(float(x), float(y), 0.0)


# ----------------------------------------------------------------------------------------
@dataclass
class DiaryOnlyConfig:
    """The action log alone. ``grasp_radius``: how far from the gripper a detection may be."""

    min_pixels: int = 20
    grasp_radius: float = 0.6
    surface_margin: float = 0.25


class DiaryOnly:
    """Keeps the diary its own perception gives it, and no map of objects."""

    name = "diary_only"

    def __init__(self, config: DiaryOnlyConfig) -> None:
        self.config = config
        self._lock = ReadWriteLock()
        self.reset()

    def reset(self) -> None:
        plan = getattr(self, "_diary", None) and self._diary.floor_plan
        self.gate = FrameGate()
        self._diary = ActionDiary()
        self._diary.set_floor_plan(plan or None)
        self.labels: dict[int, tuple[str, dict[str, str]]] = {}  # id -> what the detector said, at the event
        self.next_id = 1
        self.held: int | None = None

    @property
    def diary(self) -> ActionDiary:
        return self._diary

    def set_floor_plan(self, plan: FloorPlan | None) -> None:
        with self._lock.writing():
            self._diary.set_floor_plan(plan)

    def observe(self, obs: Observation) -> None:
        obs.validate()
        if not self.gate.admit(obs):
            return
        acting = [e for e in obs.events if e.kind in ("grasp", "release")]
        views = visible_instances(obs, self.config.min_pixels) if acting else []
        with self._lock.writing():
            inferences = [self._infer(event, views) for event in acting]
            self._diary.record(obs.frame_id, obs.stamp, obs.day, obs.pose, inferences, lambda i: self.labels.get(i, ("unknown", {})))
            self.gate.commit(obs)

    def _infer(self, event, views) -> EventInference:
        """Label what is at the gripper in this frame only (each grasp is a new, nameless thing)."""
        gripper = event.gripper_pose.position
        objects = [v for v in views if v.kind == "object" and np.linalg.norm(v.centroid - gripper) <= self.config.grasp_radius]
        under = [
            v
            for v in views
            if v.kind == "receptacle"
            and np.linalg.norm(np.clip(gripper[:2], v.extent_min[:2], v.extent_max[:2]) - gripper[:2]) <= self.config.surface_margin
        ]
        receptacle_id = self._label(min(under, key=lambda v: -v.pixels)) if under else None
        if event.kind == "grasp":
            nearest = min(objects, key=lambda v: float(np.linalg.norm(v.centroid - gripper))) if objects else None
            self.held = self._label(nearest) if nearest is not None else None
            return EventInference("grasp", event.stamp, self.held, receptacle_id)
        object_id, self.held = self.held, None
        return EventInference("release", event.stamp, object_id, receptacle_id)

    def _label(self, view) -> int:
        entity_id = self.next_id
        self.next_id += 1
        self.labels[entity_id] = (view.category, dict(view.attributes))
        return entity_id

    # ------------------------------------------------------------------ answers
    def catalog(self) -> list[Entity]:
        return []  # no map of objects

    def locate(self, goal: ResolvedGoal, query: Query) -> list[Hit]:
        plan = self._diary.floor_plan
        if goal.target == "room":
            rooms = [stay.room for stay in goal.rooms]
        else:
            rooms = [e.room for e in self._diary.entries if e.object_id in goal.entity_ids or e.receptacle_id in goal.entity_ids]
        hits = []
        for rank, room in enumerate(dict.fromkeys(r for r in rooms if r)):
            pose = _room_center_pose(plan, room)
            if pose is not None:  # no frame: it keeps none
                hits.append(Hit(None, None, pose, None, None, 1.0 / (rank + 1), self.name, {"room": room}))
        return hits

    def recall(self, query: Query) -> Recall:
        started = time.perf_counter()
        query.validate()
        with self._lock.reading():
            hits = recall_structured(self, query) if query.constraints is not None else []
        return Recall(hits, self.name, time.perf_counter() - started)

    def stats(self) -> MemoryStats:
        with self._lock.reading():
            items = len(self._diary.entries)
            return MemoryStats(items, 200 * items + 120 * len(self._diary.stays), self.gate.frames_seen)

    def save(self, directory) -> None:
        with self._lock.reading():
            state = {
                "gate": self.gate.to_dict(),
                "diary": self._diary.to_dict(),
                "labels": {str(k): [c, a] for k, (c, a) in self.labels.items()},
                "next_id": self.next_id,
                "held": self.held,
            }
        save_manifest(directory, self.name, state, {}, config=self.config)

    def load(self, directory) -> None:
        state, _ = load_manifest(Path(directory), self.name, config=self.config)
        try:
            gate, diary = FrameGate(), ActionDiary()
            gate.load_dict(state["gate"])
            diary.load_dict(state["diary"])
            labels = {int(k): (str(c), dict(a)) for k, (c, a) in state["labels"].items()}
            next_id, held = int(state["next_id"]), state["held"]
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"corrupt {self.name} checkpoint {directory}: {error!r}") from error
        with self._lock.writing():
            self.gate, self._diary, self.labels, self.next_id, self.held = gate, diary, labels, next_id, held


# ----------------------------------------------------------------------------------------
@dataclass
class StayConfig:
    """Stops where it stands. No options."""


class Stay:
    """Answers every goal with where the robot is now (the last frame it saw)."""

    name = "stay"

    def __init__(self, config: StayConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.gate = FrameGate()
        self.last: tuple[int, float, Pose] | None = None

    def observe(self, obs: Observation) -> None:
        obs.validate()
        if self.gate.admit(obs):
            self.last = (int(obs.frame_id), float(obs.stamp), obs.pose)
            self.gate.commit(obs)

    def recall(self, query: Query) -> Recall:
        started = time.perf_counter()
        query.validate()
        goals = validate_constraints(query.constraints) if query.constraints is not None else [{}]
        hits = []
        if self.last is not None:
            frame_id, stamp, pose = self.last
            here = query.near or pose
            hits = [Hit(frame_id, stamp, here, None, None, 1.0, self.name, {"goal_index": i}) for i in range(len(goals))]
        return Recall(hits, self.name, time.perf_counter() - started)

    def stats(self) -> MemoryStats:
        return MemoryStats(int(self.last is not None), 80, self.gate.frames_seen)

    def save(self, directory) -> None:
        last = None if self.last is None else [self.last[0], self.last[1], self.last[2].to_dict()]
        save_manifest(directory, self.name, {"gate": self.gate.to_dict(), "last": last}, {}, config=self.config)

    def load(self, directory) -> None:
        state, _ = load_manifest(Path(directory), self.name, config=self.config)
        try:
            gate = FrameGate()
            gate.load_dict(state["gate"])
            last = state["last"]
            last = None if last is None else (int(last[0]), float(last[1]), Pose.from_dict(last[2]))
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise ValueError(f"corrupt {self.name} checkpoint {directory}: {error!r}") from error
        self.gate, self.last = gate, last


# ----------------------------------------------------------------------------------------
@dataclass
class ChanceConfig:
    """A random entity of the right kind from what ``frame_bank`` would keep."""

    encoder: str = "gt_hash"  # its text is never used for answers; the fast encoder suffices
    min_pixels: int = 20
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


class Chance(FrameBank):
    """frame_bank's store, random answers."""

    def __init__(self, config: ChanceConfig) -> None:
        super().__init__(FrameBankConfig(config.encoder, config.min_pixels, config.tracker), "chance")
        self.config = config

    def recall(self, query: Query) -> Recall:
        started = time.perf_counter()
        query.validate()
        self.flush()
        with self._lock.reading():
            goals = validate_constraints(query.constraints) if query.constraints is not None else [{"target": None}]
            rng = np.random.default_rng(zlib.crc32(query.text.encode("utf-8")))
            catalog = self.catalog()
            hits = []
            for index, goal in enumerate(goals):
                hit = self._random_answer(goal.get("target"), catalog, rng)
                if hit is not None:
                    hit.evidence["goal_index"] = index
                    hits.append(hit)
        return Recall(hits, self.name, time.perf_counter() - started)

    def _random_answer(self, target: str | None, catalog: list[Entity], rng: np.random.Generator) -> Hit | None:
        if target == "room":
            stays = self._diary.stays
            if not stays:
                return None
            rooms = sorted({s.room for s in stays})
            room = rooms[int(rng.integers(len(rooms)))]
            stay = max((s for s in stays if s.room == room), key=lambda s: s.end - s.start)
            return Hit(stay.frame_id, stay.start, stay.pose, None, None, 1.0, self.name, {"room": room})
        pool = [e for e in catalog if target is None or e.kind == target]
        if not pool:
            return None
        entity = pool[int(rng.integers(len(pool)))]
        return self._best_view(entity.entity_id, ResolvedGoal(0, entity.kind))


@register("memory", "diary_only", DiaryOnlyConfig)
def build_diary_only(config: DiaryOnlyConfig) -> DiaryOnly:
    return DiaryOnly(config)


@register("memory", "stay", StayConfig)
def build_stay(config: StayConfig) -> Stay:
    return Stay(config)


@register("memory", "chance", ChanceConfig)
def build_chance(config: ChanceConfig) -> Chance:
    return Chance(config)
