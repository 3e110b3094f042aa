"""Ray-cast rendering of a home with Open3D's ``RaycastingScene``.

One ray per pixel through the pixel centre, with a unit optical-axis component, so the hit
distance *is* the metric depth along the optical axis. Colours are the albedo of what was hit,
shaded by a head-light plus a little sky light. Each mesh carries an instance id (0 for walls,
floors and ceiling), which gives the per-pixel instance image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from embodied_mem.geometry import pixel_rays
from embodied_mem.sim.embedded.catalog import COLORS, ROOM_COLORS
from embodied_mem.sim.embedded.world import WALL_HEIGHT, Box, World, WorldState
from embodied_mem.types import CameraInfo, Pose

_FLOOR_COLORS = {"kitchen": (0.75, 0.75, 0.72), "bathroom": (0.80, 0.82, 0.84)}
_DEFAULT_FLOOR = (0.62, 0.48, 0.34)


@dataclass
class Frame:
    rgb: np.ndarray  # uint8 HxWx3
    depth: np.ndarray  # float32 HxW, 0 where nothing was hit within range
    instances: np.ndarray  # int32 HxW


def _box_mesh(box: Box) -> o3d.t.geometry.TriangleMesh:
    size = np.maximum(box.size, 1e-3)
    mesh = o3d.geometry.TriangleMesh.create_box(float(size[0]), float(size[1]), float(size[2]))
    mesh.translate(box.min_corner.astype(np.float64))
    return o3d.t.geometry.TriangleMesh.from_legacy(mesh)


def object_mesh(shape: str, extent: np.ndarray) -> o3d.geometry.TriangleMesh:
    """A mesh centred on the origin for an object of ``shape`` and (x, y, z) ``extent``."""
    if shape == "cylinder":
        mesh = o3d.geometry.TriangleMesh.create_cylinder(radius=float(max(extent[0], extent[1]) / 2), height=float(extent[2]), resolution=12, split=1)
    elif shape == "sphere":
        mesh = o3d.geometry.TriangleMesh.create_sphere(radius=0.5, resolution=8)
        mesh.scale(1.0, center=(0, 0, 0))
        vertices = np.asarray(mesh.vertices) * extent
        mesh.vertices = o3d.utility.Vector3dVector(vertices)
    else:
        mesh = o3d.geometry.TriangleMesh.create_box(float(extent[0]), float(extent[1]), float(extent[2]))
        mesh.translate(-extent / 2)
    return mesh


class Renderer:
    """Renders RGB, depth and instance ids of a world in a given state from a camera pose."""

    def __init__(self, world: World, camera: CameraInfo, max_depth: float = 10.0) -> None:
        self.world = world
        self.camera = camera
        self.max_depth = max_depth
        rays = pixel_rays(camera).reshape(-1, 3)
        self._rays_optical = rays.astype(np.float32)
        self._rays_unit = (rays / np.linalg.norm(rays, axis=1, keepdims=True)).astype(np.float32)
        self._static = self._static_meshes()
        self._object_meshes = {
            entity_id: o3d.t.geometry.TriangleMesh.from_legacy(object_mesh(obj.shape, obj.extent))
            for entity_id, obj in world.objects.items()
        }
        self._scene = None
        self._scene_version = None
        self._albedo = np.zeros((0, 3))
        self._instance_of = np.zeros(0, dtype=np.int32)

    def _static_meshes(self) -> list[tuple[o3d.t.geometry.TriangleMesh, int, tuple[float, float, float]]]:
        meshes = []
        x0, y0, x1, y1 = self.world.bounds
        for room in self.world.rooms:
            floor = Box(np.array([room.x0, room.y0, -0.05]), np.array([room.x1, room.y1, 0.0]))
            meshes.append((_box_mesh(floor), 0, _FLOOR_COLORS.get(room.kind, _DEFAULT_FLOOR)))
        ceiling = Box(np.array([x0 - 0.2, y0 - 0.2, WALL_HEIGHT]), np.array([x1 + 0.2, y1 + 0.2, WALL_HEIGHT + 0.05]))
        meshes.append((_box_mesh(ceiling), 0, (0.97, 0.97, 0.97)))
        for wall in self.world.walls:
            center = wall.center
            room = self.world.room_at(float(center[0]) + 0.06, float(center[1]) + 0.06) or self.world.rooms[0]
            meshes.append((_box_mesh(wall), 0, ROOM_COLORS.get(room.kind, (0.9, 0.9, 0.9))))
        for receptacle in self.world.receptacles.values():
            meshes.append((_box_mesh(receptacle.box), receptacle.entity_id, COLORS[receptacle.color]))
        return meshes

    def _build(self, state: WorldState) -> None:
        scene = o3d.t.geometry.RaycastingScene()
        albedo, instance_of = [], []
        for mesh, instance_id, color in self._static:
            scene.add_triangles(mesh)
            albedo.append(color)
            instance_of.append(instance_id)
        for entity_id, placement in sorted(state.placements.items()):
            mesh = self._object_meshes[entity_id].clone()
            mesh.translate(placement.position.astype(np.float32))
            scene.add_triangles(mesh)
            albedo.append(COLORS[self.world.objects[entity_id].color])
            instance_of.append(entity_id)
        self._scene = scene
        self._albedo = np.array(albedo + [(0.0, 0.0, 0.0)], dtype=np.float32)  # last row: no hit
        self._instance_of = np.array(instance_of + [0], dtype=np.int32)
        self._scene_version = state.version

    def render(self, state: WorldState, body: Pose) -> Frame:
        if self._scene is None or self._scene_version != state.version:
            self._build(state)
        world_T_camera = body.compose(self.camera.body_T_camera).matrix()
        rotation = world_T_camera[:3, :3].T.astype(np.float32)
        rays = np.empty((len(self._rays_optical), 6), dtype=np.float32)
        rays[:, :3] = world_T_camera[:3, 3]
        rays[:, 3:] = self._rays_optical @ rotation
        result = self._scene.cast_rays(o3d.core.Tensor(rays))
        t_hit = result["t_hit"].numpy()
        geometry = result["geometry_ids"].numpy().astype(np.int64)
        hit = np.isfinite(t_hit) & (t_hit <= self.max_depth)
        geometry = np.where(hit, geometry, len(self._albedo) - 1)
        normals = result["primitive_normals"].numpy()
        head_light = np.abs(np.einsum("ij,ij->i", normals, self._rays_unit @ rotation))
        shade = 76.5 + 140.0 * head_light + 38.0 * np.maximum(normals[:, 2], 0.0)
        rgb = np.minimum(self._albedo[geometry] * shade[:, None], 255.0).astype(np.uint8)
        h, w = self.camera.height, self.camera.width
        depth = np.where(hit, t_hit, 0.0).astype(np.float32)
        return Frame(rgb.reshape(h, w, 3), depth.reshape(h, w), self._instance_of[geometry].reshape(h, w))
