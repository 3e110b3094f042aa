"""SE(3) helpers, quaternions (x, y, z, w), and pinhole projection / back-projection.

Frames follow REP-103 (see ``embodied_mem.types``). ``OPTICAL_T_LINK`` turns a camera link
frame (x forward, y left, z up) into the optical frame (z forward, x right, y down).
"""

from __future__ import annotations

import math

import numpy as np

from embodied_mem.types import CameraInfo, Observation, Pose

# Rotation whose columns are the optical axes expressed in the link frame:
# optical x (right) = -link y, optical y (down) = -link z, optical z (forward) = link x.
LINK_R_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def quaternion_to_matrix(quaternion: np.ndarray) -> np.ndarray:
    x, y, z, w = np.asarray(quaternion, dtype=np.float64) / np.linalg.norm(quaternion)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (x, y, z, w), with w >= 0."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """R = Rz(yaw) @ Ry(pitch) @ Rx(roll) (fixed-axis x, then y, then z)."""
    cr, sr, cp, sp, cy, sy = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def camera_mount(height: float, pitch_down: float, forward: float = 0.0) -> Pose:
    """``body_T_camera`` (optical frame) for a camera at ``height`` tilted down by ``pitch_down`` rad."""
    link_rotation = rotation_rpy(0.0, pitch_down, 0.0)  # +pitch about y tips x (forward) down
    matrix = np.eye(4)
    matrix[:3, :3] = link_rotation @ LINK_R_OPTICAL
    matrix[:3, 3] = [forward, 0.0, height]
    return Pose.from_matrix(matrix)


def pinhole_camera(width: int, height: int, hfov_deg: float, body_T_camera: Pose) -> CameraInfo:
    focal = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return CameraInfo(width, height, focal, focal, width / 2.0, height / 2.0, body_T_camera)


def wrap_angle(angle: float) -> float:
    """Angle in (-pi, pi]."""
    wrapped = math.fmod(angle + math.pi, 2.0 * math.pi)
    if wrapped <= 0:
        wrapped += 2.0 * math.pi
    return wrapped - math.pi


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to (N, 3) points."""
    return points @ transform[:3, :3].T + transform[:3, 3]


def pixel_rays(camera: CameraInfo) -> np.ndarray:
    """(H, W, 3) ray directions in the optical frame with unit z, through pixel centres."""
    u = (np.arange(camera.width) + 0.5 - camera.cx) / camera.fx
    v = (np.arange(camera.height) + 0.5 - camera.cy) / camera.fy
    uu, vv = np.meshgrid(u, v)
    return np.stack([uu, vv, np.ones_like(uu)], axis=-1)


def back_project(depth: np.ndarray, camera: CameraInfo, mask: np.ndarray | None = None) -> np.ndarray:
    """Optical-frame 3D points (N, 3) of the pixels in ``mask`` that have a valid depth."""
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= mask
    rows, cols = np.nonzero(valid)
    z = depth[rows, cols].astype(np.float64)
    x = (cols + 0.5 - camera.cx) / camera.fx * z
    y = (rows + 0.5 - camera.cy) / camera.fy * z
    return np.stack([x, y, z], axis=-1)


def project(points_camera: np.ndarray, camera: CameraInfo) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) as (u, v) of optical-frame points, and a mask of those in front."""
    z = points_camera[:, 2]
    in_front = z > 1e-6
    safe_z = np.where(in_front, z, 1.0)
    u = points_camera[:, 0] / safe_z * camera.fx + camera.cx
    v = points_camera[:, 1] / safe_z * camera.fy + camera.cy
    return np.stack([u, v], axis=-1), in_front


def observation_points_world(obs: Observation, mask: np.ndarray | None = None) -> np.ndarray:
    """World-frame points (N, 3) of an observation's valid depth pixels inside ``mask``."""
    points = back_project(obs.depth, obs.camera, mask)
    return transform_points(obs.world_T_camera.matrix(), points)


def bearing_in_body(body: Pose, target_xyz: np.ndarray) -> float:
    """Absolute angle between the body's +x axis and the target, projected onto the floor plane."""
    local = transform_points(np.linalg.inv(body.matrix()), np.asarray(target_xyz, dtype=np.float64)[None])[0]
    return abs(math.atan2(local[1], local[0]))


def grid_graph(mask: np.ndarray, resolution: float):
    """The 8-connected graph of a 2D boolean grid's True cells (flat indices, metre weights)."""
    from scipy.sparse import csr_matrix

    nx, ny = mask.shape
    index = np.arange(nx * ny).reshape(nx, ny)
    rows, cols, weights = [], [], []
    for di, dj in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)):
        src = (slice(max(0, -di), nx - max(0, di)), slice(max(0, -dj), ny - max(0, dj)))
        dst = (slice(max(0, di), nx - max(0, -di)), slice(max(0, dj), ny - max(0, -dj)))
        both = mask[src] & mask[dst]
        rows.append(index[src][both])
        cols.append(index[dst][both])
        weights.append(np.full(int(both.sum()), resolution * math.hypot(di, dj)))
    return csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(nx * ny, nx * ny))


def free_space_distance(free: np.ndarray, centers: np.ndarray, resolution: float, origin_xy: np.ndarray, reach: float = 1.0, kept: dict | None = None):
    """Travel distance from ``origin_xy`` over a grid's free cells, as a function of a point.

    ``centers`` (nx, ny, 2) holds each cell's world x, y. A target's distance is the shortest
    route to a free cell within ``reach`` of it plus the straight last leg (targets stand on
    occupied cells: furniture, walls). ``kept``: a dict the caller keeps for this one grid (and
    drops when the grid changes); the graph and the routes from each start cell go in it.
    """
    from scipy.sparse.csgraph import dijkstra

    flat_free = free.reshape(-1)
    flat_centers = centers.reshape(-1, 2)
    origin = np.asarray(origin_xy, dtype=np.float64)[:2]
    candidates = np.flatnonzero(flat_free)
    if candidates.size == 0:
        return lambda xy: float(np.linalg.norm(np.asarray(xy)[:2] - origin))
    start = candidates[int(np.argmin(np.linalg.norm(flat_centers[candidates] - origin, axis=1)))]
    kept = {} if kept is None else kept
    route = kept.get(("route", int(start)))
    if route is None:
        graph = kept.get("graph")
        if graph is None:
            graph = kept["graph"] = grid_graph(free, resolution)
        route = kept[("route", int(start))] = dijkstra(graph, directed=False, indices=int(start))
    head = float(np.linalg.norm(flat_centers[start] - origin))
    reachable = candidates[np.isfinite(route[candidates])]

    def distance(xy) -> float:
        legs = np.linalg.norm(flat_centers[reachable] - np.asarray(xy, dtype=np.float64)[:2], axis=1)
        close = legs <= max(reach, float(legs.min()) + 0.5)
        return head + float(np.min(route[reachable][close] + legs[close]))

    return distance
