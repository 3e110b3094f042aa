"""FindingDory's success oracle over a Habitat scene (``SuccessOracle`` of ``sim/tasks/success.py``).

What ``is_robot_at_position`` measures, per entity:

- receptacles: the geodesic from the robot's base to the nearest of its precomputed
  ``view_points`` (the dataset's ``viewpoints.npy`` rows), the bearing of its position;
- objects: the geodesic to the object's *current* position snapped to the navmesh (FindingDory
  ignores object viewpoints, "not valid after the object moves"), the bearing of that position;
- visibility: the entity's pixels in the head panoptic image rendered at the pose, over the
  image's pixels;
- rooms: the region the base stands in (``semantic_scene.get_regions_for_point``).

The backend (``HabitatBackend`` on a GPU machine, a fake in the tests) answers in REP-103 world
coordinates. The protocol passes only x, y to ``geodesic_to_entity`` / ``room_of``; the height is
the floor the robot started on (FindingDory's HSSD scenes are single-floor).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from embodied_mem.geometry import bearing_in_body
from embodied_mem.sim.habitat.entities import EntityTable
from embodied_mem.types import Pose


class Backend(Protocol):
    """What the oracle, the navigator and the robot need from a simulator (REP-103 world frame)."""

    def geodesic(self, start: np.ndarray, ends: np.ndarray) -> float: ...  # min over ends; inf if none reachable

    def snap(self, point: np.ndarray) -> np.ndarray: ...  # nearest navigable point

    def object_position(self, name: str) -> np.ndarray: ...  # an object's current centre

    def panoptic(self, pose: Pose) -> np.ndarray: ...  # (H, W) int instance image seen from a base pose

    def semantic_ids(self, name: str) -> set[int]: ...  # the panoptic ids an entity shows as

    def region_of(self, point: np.ndarray) -> str | None: ...


class HabitatOracle:
    """``geodesic_to_entity``, ``bearing``, ``visible_fraction``, ``room_of`` for a table's entities."""

    def __init__(self, backend: Backend, table: EntityTable, floor_z: float = 0.0) -> None:
        self.backend = backend
        self.table = table
        self.floor_z = float(floor_z)

    def _lift(self, xy) -> np.ndarray:
        return np.array([float(xy[0]), float(xy[1]), self.floor_z])

    def entity_position(self, entity_id: int) -> np.ndarray:
        record = self.table.records[entity_id]
        if record.kind == "object":
            return np.asarray(self.backend.object_position(record.name), dtype=np.float64)
        if record.candidate is None:
            raise KeyError(f"entity {entity_id} ({record.name}) has no position")
        return record.candidate.position

    def goal_points(self, entity_id: int) -> np.ndarray:
        """(N, 3) points the entity's geodesic is measured to."""
        record = self.table.records[entity_id]
        if record.kind == "receptacle" and record.candidate is not None and record.candidate.view_points:
            return np.array([v.pose.position for v in record.candidate.view_points])
        return np.asarray(self.backend.snap(self.entity_position(entity_id)), dtype=np.float64).reshape(1, 3)

    def geodesic_to_entity(self, xy, entity_id: int) -> float:
        return float(self.backend.geodesic(self._lift(xy), self.goal_points(entity_id)))

    def bearing(self, pose: Pose, entity_id: int) -> float:
        return bearing_in_body(pose, self.entity_position(entity_id))

    def visible_fraction(self, pose: Pose, entity_id: int) -> float:
        image = np.asarray(self.backend.panoptic(pose))
        ids = self.backend.semantic_ids(self.table.records[entity_id].name)
        if not ids or image.size == 0:
            return 0.0
        return float(np.count_nonzero(np.isin(image, list(ids)))) / image.size

    def room_of(self, xy) -> str | None:
        return self.backend.region_of(self._lift(xy))

    # The generator's ``TaskScene`` side (keyframes, vacuity checks).
    def entity_ids(self) -> list[int]:
        return [i for i, r in self.table.records.items() if r.kind != "room"]

    def entity_kind(self, entity_id: int) -> str:
        return self.table.records[entity_id].kind

    def label(self, entity_id: int) -> str:
        return self.table.records[entity_id].category

    def room_names(self) -> list[str]:
        return [r.category for r in self.table.records.values() if r.kind == "room"]
