"""habitat-sim behind the adapter (GPU machines; ``import habitat_sim`` happens here only).

Pinned as FindingDory pins it (``findingdory-habitat/setup.sh``): ``habitat-sim=0.3.1``
(``withbullet headless``, conda) with habitat-lab 0.3.1 from FindingDory's fork
(``ykarmesh/habitat-lab`` branch ``karmeshyadav/memory_dataset``, submodule commit
``904743e40437242065f800e33685ef483001d4a2``).

What it does, in habitat-sim's own terms:

- the scene: ``SimulatorConfiguration`` with the episode's ``scene_dataset_config`` and
  ``scene_id`` (HSSD), physics on, the episode's rigid objects added from the object config
  folders FindingDory uses (``additional_object_paths``) at their ``transformations.npy``
  poses, kinematic; every rigid object's ``semantic_id`` set to ``object_id + OBJECT_IDS_START``
  as habitat-lab's ``RearrangeSim`` does, so the panoptic image names instances and an entity's
  id is FindingDory's (``rom.get_object_id_by_handle(asset) + _object_ids_start``);
- the robot: a habitat-sim agent of Stretch's size (radius 0.25 m, height 1.41 m) with the head
  camera's three sensors (``perception.HeadCamera``) at its mount; Stretch's articulated URDF
  is not loaded (see ``robot.py``);
- the navmesh: the scene's, recomputed with FindingDory's agent settings (radius 0.25, height
  1.41, max climb 0.01, max slope 5) when the scene has none or ``recompute_navmesh`` is set;
  geodesics with ``MultiGoalShortestPath``, paths with ``ShortestPath``, snapping with
  ``snap_point``, steps with ``try_step_no_sliding``;
- rooms: ``semantic_scene.regions`` (``get_regions_for_point``, FindingDory's
  ``is_robot_in_room``), the floor plan from each region's polygon (``poly_loop_points``) or
  its bounding box.

Everything it returns is in the REP-103 world frame (``frames.py``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embodied_mem.sim.habitat.frames import (
    body_T_camera,
    body_pose_to_habitat,
    camera_pose_to_rep,
    point_to_habitat,
    point_to_rep,
)
from embodied_mem.sim.habitat.perception import HeadCamera
from embodied_mem.types import FloorPlan, Pose, Region

OBJECT_IDS_START = 100  # habitat-lab's RearrangeSim._object_ids_start
RGB, DEPTH, PANOPTIC = "head_rgb", "head_depth", "head_panoptic"
AGENT_RADIUS, AGENT_HEIGHT, MAX_CLIMB, MAX_SLOPE = 0.25, 1.41, 0.01, 5.0  # config/agents/stretch.yaml


@dataclass
class Rendered:
    rgb: np.ndarray
    depth: np.ndarray
    panoptic: np.ndarray
    body_T_camera: Pose | None = None


def _vec(v) -> np.ndarray:
    return np.array([float(v[0]), float(v[1]), float(v[2])])


class HabitatBackend:
    """One scene with one episode's objects loaded."""

    def __init__(self, episode, head: HeadCamera, data_root: str | Path = ".", object_paths: list[str] | None = None, gpu_device_id: int = 0, recompute_navmesh: bool = False) -> None:
        import habitat_sim  # noqa: F401  (the clear error lives in sim/episodes.py)

        self.habitat_sim = habitat_sim
        self.episode = episode
        self.head = head
        self.root = Path(data_root)
        self.sim = habitat_sim.Simulator(self._configuration(gpu_device_id))
        if recompute_navmesh or not self.sim.pathfinder.is_loaded:
            self._recompute_navmesh()
        self._objects = self._add_objects(object_paths or [])
        self._label_instances()

    # ------------------------------------------------------------------ set-up
    def _path(self, value: str) -> str:
        path = Path(value)
        return str(path if path.is_absolute() or path.exists() else self.root / path)

    def _configuration(self, gpu_device_id: int):
        hs = self.habitat_sim
        sim_cfg = hs.SimulatorConfiguration()
        sim_cfg.scene_dataset_config_file = self._path(self.episode.scene_dataset_config)
        sim_cfg.scene_id = self.episode.scene_id
        sim_cfg.enable_physics = True
        sim_cfg.gpu_device_id = gpu_device_id
        head = self.head
        specs = []
        for uuid, kind in ((RGB, hs.SensorType.COLOR), (DEPTH, hs.SensorType.DEPTH), (PANOPTIC, hs.SensorType.SEMANTIC)):
            spec = hs.CameraSensorSpec()
            spec.uuid = uuid
            spec.sensor_type = kind
            spec.resolution = [head.height, head.width]
            spec.position = [0.0, head.height_m, 0.0]
            spec.orientation = [head.tilt_rad, 0.0, 0.0]  # about x: negative tilts the view down
            spec.hfov = head.hfov_deg
            specs.append(spec)
        agent = hs.agent.AgentConfiguration(height=AGENT_HEIGHT, radius=AGENT_RADIUS, sensor_specifications=specs)
        return hs.Configuration(sim_cfg, [agent])

    def _recompute_navmesh(self) -> None:
        settings = self.habitat_sim.NavMeshSettings()
        settings.set_defaults()
        settings.agent_radius, settings.agent_height = AGENT_RADIUS, AGENT_HEIGHT
        settings.agent_max_climb, settings.agent_max_slope = MAX_CLIMB, MAX_SLOPE
        settings.include_static_objects = True
        self.sim.recompute_navmesh(self.sim.pathfinder, settings)

    def _add_objects(self, object_paths: list[str]) -> dict:
        """The episode's rigid objects under their FindingDory handles, candidates first."""
        import magnum as mn

        rom = self.sim.get_rigid_object_manager()
        folders = [self._path(p) for p in object_paths]
        out = {}
        for obj in self.episode.rigid_objects:
            template = next((os.path.join(f, obj.template) for f in folders if os.path.isfile(os.path.join(f, obj.template))), None)
            if template is None:
                raise ValueError(f"object template {obj.template!r} is in none of habitat.object_paths {folders}")
            ro = rom.add_object_by_template_handle(template)
            if ro is None:
                raise ValueError(f"habitat-sim could not add {template!r}")
            ro.transformation = mn.Matrix4([[float(obj.matrix_hab[j][i]) for j in range(4)] for i in range(4)])
            ro.motion_type = self.habitat_sim.physics.MotionType.KINEMATIC
            out[obj.handle] = ro
        return out

    def _label_instances(self) -> None:
        rom = self.sim.get_rigid_object_manager()
        for handle in rom.get_object_handles():
            ro = rom.get_object_by_handle(handle)
            ro.semantic_id = int(ro.object_id) + OBJECT_IDS_START

    def close(self) -> None:
        self.sim.close()

    # ------------------------------------------------------------------ navmesh
    def snap(self, point) -> np.ndarray:
        snapped = _vec(self.sim.pathfinder.snap_point(point_to_habitat(point)))
        return point_to_rep(snapped) if np.all(np.isfinite(snapped)) else np.asarray(point, dtype=np.float64)

    def is_navigable(self, point) -> bool:
        return bool(self.sim.pathfinder.is_navigable(point_to_habitat(self.snap(point))))

    def geodesic(self, start, ends) -> float:
        path = self.habitat_sim.MultiGoalShortestPath()
        path.requested_start = point_to_habitat(start)
        path.requested_ends = [point_to_habitat(e) for e in np.asarray(ends, dtype=np.float64).reshape(-1, 3)]
        if not self.sim.pathfinder.find_path(path):
            return math.inf
        distance = float(path.geodesic_distance)
        return distance if math.isfinite(distance) else math.inf

    def plan(self, start, goal) -> list[np.ndarray] | None:
        path = self.habitat_sim.ShortestPath()
        path.requested_start = point_to_habitat(self.snap(start))
        path.requested_end = point_to_habitat(self.snap(goal))
        if not self.sim.pathfinder.find_path(path) or not path.points:
            return None
        return [point_to_rep(_vec(p)) for p in path.points]

    def try_step(self, start, end) -> np.ndarray:
        return point_to_rep(_vec(self.sim.pathfinder.try_step_no_sliding(point_to_habitat(start), point_to_habitat(end))))

    # ------------------------------------------------------------------ agent and rendering
    def set_agent(self, pose: Pose) -> None:
        import quaternion  # numpy-quaternion, a habitat-sim dependency

        position, coeffs = body_pose_to_habitat(pose)
        state = self.habitat_sim.AgentState()
        state.position = position.astype(np.float32)
        state.rotation = quaternion.quaternion(float(coeffs[3]), float(coeffs[0]), float(coeffs[1]), float(coeffs[2]))
        self.sim.get_agent(0).set_state(state, reset_sensors=False)
        self._pose = pose

    def _camera_world(self) -> np.ndarray:
        node = self.sim._sensors[RGB]._sensor_object.node
        transform = node.absolute_transformation()
        matrix = np.eye(4)
        for axis in range(3):
            unit = [0.0, 0.0, 0.0]
            unit[axis] = 1.0
            matrix[:3, axis] = _vec(transform.transform_vector(unit))
        matrix[:3, 3] = _vec(transform.translation)
        return matrix

    def render(self, pose: Pose) -> Rendered:
        self.set_agent(pose)
        obs = self.sim.get_sensor_observations()
        mount = body_T_camera(pose, camera_pose_to_rep(self._camera_world()))
        return Rendered(np.asarray(obs[RGB])[..., :3], np.asarray(obs[DEPTH], dtype=np.float32), np.asarray(obs[PANOPTIC]), mount)

    def panoptic(self, pose: Pose) -> np.ndarray:
        keep = getattr(self, "_pose", None)
        image = self.render(pose).panoptic
        if keep is not None:
            self.set_agent(keep)
        return image

    # ------------------------------------------------------------------ entities
    def semantic_ids(self, name: str) -> set[int]:
        """Panoptic ids of an entity: an object's own, a receptacle's asset's (FindingDory's rule)."""
        rom = self.sim.get_rigid_object_manager()
        if name in self._objects:
            return {int(self._objects[name].object_id) + OBJECT_IDS_START}
        asset = name.split("|")[0]
        if rom.get_library_has_handle(asset):
            return {int(rom.get_object_id_by_handle(asset)) + OBJECT_IDS_START}
        return set()

    def object_position(self, name: str) -> np.ndarray:
        return point_to_rep(_vec(self._objects[name].translation))

    def carry(self, name: str, pose: Pose) -> None:
        """A held object rides at the robot's base, 0.8 m up (out of the head camera's view)."""
        import magnum as mn

        position = point_to_habitat(np.asarray(pose.position) + np.array([0.0, 0.0, 0.8]))
        self._objects[name].translation = mn.Vector3(*position)

    def place_object(self, name: str, target) -> np.ndarray:
        """Drop the object onto the first surface below ``target`` (1 m above it downwards)."""
        import magnum as mn

        ro = self._objects[name]
        origin = point_to_habitat(np.asarray(target, dtype=np.float64)) + np.array([0.0, 1.0, 0.0])
        ray = self.habitat_sim.geo.Ray(mn.Vector3(*origin), mn.Vector3(0.0, -1.0, 0.0))
        hits = self.sim.cast_ray(ray, max_distance=3.0)
        surface = None
        for hit in hits.hits:
            if int(hit.object_id) != int(ro.object_id):
                surface = _vec(hit.point)
                break
        if surface is None:
            surface = point_to_habitat(np.asarray(target, dtype=np.float64))
        bottom = float(ro.root_scene_node.cumulative_bb.min.y)
        ro.translation = mn.Vector3(float(surface[0]), float(surface[1] - bottom + 0.01), float(surface[2]))
        return self.object_position(name)

    # ------------------------------------------------------------------ rooms
    def regions(self) -> list[str]:
        return [str(r.id) for r in self.sim.semantic_scene.regions]

    def region_of(self, point) -> str | None:
        scene = self.sim.semantic_scene
        indices = scene.get_regions_for_point(point_to_habitat(point))
        return str(scene.regions[indices[0]].id) if len(indices) else None

    def floor_plan(self) -> FloorPlan:
        regions = []
        for region in self.sim.semantic_scene.regions:
            loop = [point_to_rep(_vec(p))[:2] for p in (getattr(region, "poly_loop_points", None) or [])]
            if len(loop) < 3:
                box = region.aabb
                c, s = point_to_rep(_vec(box.center()))[:2], np.abs((np.array([[0, 0, -1], [-1, 0, 0]]) @ _vec(box.size())))
                loop = [c + np.array([dx, dy]) * s / 2 for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
            if str(region.id) not in [r.name for r in regions]:
                regions.append(Region(str(region.id), tuple(tuple(float(v) for v in p) for p in loop)))
        return FloorPlan(tuple(regions))
