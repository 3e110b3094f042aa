"""The ground-truth record of a history, as any simulator writes it (embedded or Habitat).

The task generator reads only this record (and a ``SuccessOracle`` for distances), so tasks
are simulator-independent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embodied_mem.types import Pose


@dataclass
class InteractionRecord:
    day: int
    order: int  # within the day, 0-based
    object_id: int
    start_receptacle: int
    goal_receptacle: int
    pick_stamp: float
    place_stamp: float
    pick_frame: int
    place_frame: int
    pick_pose: Pose
    place_pose: Pose
    start_room: str
    goal_room: str
    start_position: np.ndarray
    goal_position: np.ndarray

    @property
    def duration(self) -> float:
        return self.place_stamp - self.pick_stamp


@dataclass
class StepRecord:
    frame_id: int
    stamp: float
    day: int
    pose: Pose
    room: str | None
    visible: dict[int, int]  # entity id -> pixels in view


@dataclass
class History:
    """What really happened, as the simulator recorded it."""

    interactions: list[InteractionRecord] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    initial_state: Any = None  # the simulator's state objects, for reference
    final_state: Any = None
    final_pose: Pose | None = None
    days: int = 0
    seen: set[int] = field(default_factory=set)  # entities the robot ever had in view
    # Days the step cap cut short. FindingDory discards a collection that does not finish, so
    # no task asks about these days (their completed rearrangements are still recorded).
    capped_days: set[int] = field(default_factory=set)
    image_pixels: int = 0  # pixels of the camera image StepRecord.visible counts in

    def visibility(self, step: StepRecord, entity_id: int) -> float:
        """FindingDory's visibility at a step: the entity's pixels over the image's pixels."""
        return step.visible.get(entity_id, 0) / self.image_pixels if self.image_pixels else 0.0

    def interactions_of(self, day: int | None) -> list[InteractionRecord]:
        return [i for i in self.interactions if day is None or i.day == day]

    def steps_of(self, day: int | None) -> list[StepRecord]:
        return [s for s in self.steps if day is None or s.day == day]


