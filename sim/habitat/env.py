"""The robot in a Habitat scene: its true pose, the clock, actions and what it perceives.

The same interface as ``EmbeddedEnv`` where the runner and the navigator touch it (``pose``,
``move``, ``teleport``, ``observe``), over a backend that renders and answers navmesh queries
(``backend.HabitatBackend`` on a GPU machine). Motion is Stretch's
``BaseWaypointTeleportAction`` without sliding (``allow_sliding: False``): a forward step that
the navmesh refuses (``try_step`` ends short) is a collision and leaves the robot where it was.
"""

from __future__ import annotations

import math

import numpy as np

from embodied_mem.geometry import wrap_angle
from embodied_mem.sim.embedded.env import SECONDS_PER_DAY, Action
from embodied_mem.sim.embedded.perception import PerceptionConfig
from embodied_mem.sim.habitat.entities import EntityTable
from embodied_mem.sim.habitat.perception import HabitatPerception, HeadCamera, make_observation, panoptic_to_instances, visible_counts
from embodied_mem.sim.habitat.robot import WAKE_HOUR, step_seconds
from embodied_mem.types import Observation, Pose


class HabitatEnv:
    def __init__(self, backend, table: EntityTable, head: HeadCamera, perception: PerceptionConfig, seed: int, num_steps_daily: int = 4000) -> None:
        self.backend = backend
        self.table = table
        self.head = head
        self.pose = Pose.from_xy_yaw(0.0, 0.0, 0.0)
        self.frame_id = 0
        self.step_index = 0
        self.day = 0
        self.collisions = 0
        self.seconds_per_step = step_seconds(num_steps_daily)
        self.image_pixels = head.width * head.height
        self._last_instances = np.zeros((head.height, head.width), dtype=np.int64)
        self._held: str | None = None
        labels = self.labels()
        object_labels = tuple(r.category for r in table.records.values() if r.kind == "object")
        self.perception = HabitatPerception(labels, perception, seed=seed, object_labels=object_labels)
        self._semantic_to_entity = self._semantic_map()

    def labels(self) -> dict[int, tuple[str, str, dict]]:
        """Entity id -> (label, kind, attributes) for every object and receptacle."""
        out = {}
        for entity_id, record in self.table.records.items():
            if record.kind == "room":
                continue
            from embodied_mem.sim.habitat.tasks import PROPERTY_NAMES

            entity = self.table.entities.get(record.name)
            # The object's annotated attributes (FindingDory's CSV), as the detector's guesses start from.
            attributes = {p.name: str(p.value) for p in entity.properties if p.kind == "disc" and p.name not in PROPERTY_NAMES} if entity else {}
            out[entity_id] = (record.category.replace(" ", "_"), record.kind, attributes)
        return out

    def _semantic_map(self) -> dict[int, int]:
        out = {}
        for entity_id, record in self.table.records.items():
            if record.kind == "room":
                continue
            for semantic_id in self.backend.semantic_ids(record.name):
                out.setdefault(int(semantic_id), entity_id)
        return out

    # ------------------------------------------------------------------ clock
    @property
    def stamp(self) -> float:
        return self.day * SECONDS_PER_DAY + WAKE_HOUR * 3600.0 + self.step_index * self.seconds_per_step

    def start(self, pose: Pose) -> None:
        self.step_index = 0
        self.teleport(pose)

    # ------------------------------------------------------------------ acting
    def move(self, action: Action) -> bool:
        position, yaw = np.asarray(self.pose.position, dtype=np.float64), self.pose.yaw
        moved = True
        if action.kind == "forward":
            wanted = position + action.amount * np.array([math.cos(yaw), math.sin(yaw), 0.0])
            reached = np.asarray(self.backend.try_step(position, wanted), dtype=np.float64)
            if np.linalg.norm(reached[:2] - wanted[:2]) > 1e-3:
                self.collisions += 1
                moved = False
            else:
                position = reached
        elif action.kind == "turn":
            yaw = wrap_angle(yaw + action.amount)
        self.pose = Pose.from_xy_yaw(float(position[0]), float(position[1]), yaw, float(position[2]))
        self.backend.set_agent(self.pose)
        if self._held is not None:
            self.backend.carry(self._held, self.pose)
        self.step_index += 1
        return moved

    def teleport(self, pose: Pose) -> None:
        self.pose = Pose.from_xy_yaw(float(pose.position[0]), float(pose.position[1]), pose.yaw, float(pose.position[2]))
        self.backend.set_agent(self.pose)

    def hold(self, handle: str) -> None:
        """Magic grasp: the object leaves its receptacle and rides with the robot."""
        self._held = handle
        self.backend.carry(handle, self.pose)

    def place(self, handle: str, target) -> np.ndarray:
        """Magic place onto the surface below ``target``; returns where the object now is."""
        self._held = None
        return np.asarray(self.backend.place_object(handle, np.asarray(target, dtype=np.float64)), dtype=np.float64)

    def observe(self, events=None) -> Observation:
        rendered = self.backend.render(self.pose)
        instances = panoptic_to_instances(rendered.panoptic, self._semantic_to_entity)
        self._last_instances = instances
        mount = rendered.body_T_camera or self.head.nominal_mount()
        obs = make_observation(
            self.perception, self.head.info(mount), rendered.rgb, rendered.depth, instances, self.pose,
            self.stamp, self.frame_id, self.day, self.head, events or [],
        )
        self.frame_id += 1
        return obs

    def last_visible(self) -> dict[int, int]:
        return visible_counts(self._last_instances)

    # ------------------------------------------------------------------ scene
    def regions(self) -> list[str]:
        return list(self.backend.regions())

    def region_of(self, point) -> str | None:
        return self.backend.region_of(np.asarray(point, dtype=np.float64))

    def floor_plan(self):
        return self.backend.floor_plan()
