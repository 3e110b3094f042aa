"""Habitat's frames and the project's (REP-103), both ways.

Habitat (habitat-sim / habitat-lab): the world is y up; an agent looks along its local -z with
x to its right; a camera's frame is the same (x right, y up, looking along -z). Quaternions
are stored as coefficients (x, y, z, w) in the dataset files (``viewpoints.npy``, episode
``start_rotation``), as habitat's ``quaternion_from_coeff`` reads them.

The project (``embodied_mem.types``): world and body x forward, y left, z up; camera optical
frame z forward, x right, y down; quaternions (x, y, z, w).

The one rotation between them (``REP_R_HAB``) maps Habitat -z (forward) to REP x, Habitat -x
(left) to REP y and Habitat y (up) to REP z. It is applied on both sides of a body pose
(world and body frames both change convention), so a Habitat heading of theta about +y is a
REP yaw of theta about +z. A camera additionally flips y and z (Habitat camera -> optical).
"""

from __future__ import annotations

import math

import numpy as np

from embodied_mem.geometry import matrix_to_quaternion, quaternion_to_matrix
from embodied_mem.types import CameraInfo, Pose

# p_rep = REP_R_HAB @ p_hab: REP x = -hab z, REP y = -hab x, REP z = hab y.
REP_R_HAB = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
HAB_R_REP = REP_R_HAB.T
# A Habitat camera frame (x right, y up, -z forward) -> the optical frame (x right, y down, z forward).
HABCAM_R_OPTICAL = np.diag([1.0, -1.0, -1.0])


def _homogeneous(rotation: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rotation
    return out


REP_T_HAB = _homogeneous(REP_R_HAB)
HAB_T_REP = _homogeneous(HAB_R_REP)
HABCAM_T_OPTICAL = _homogeneous(HABCAM_R_OPTICAL)


def point_to_rep(point_hab) -> np.ndarray:
    """A Habitat world point (x, y up, z) as a REP world point."""
    return REP_R_HAB @ np.asarray(point_hab, dtype=np.float64).reshape(3)


def points_to_rep(points_hab: np.ndarray) -> np.ndarray:
    """(N, 3) Habitat world points as REP world points."""
    return np.asarray(points_hab, dtype=np.float64).reshape(-1, 3) @ REP_R_HAB.T


def point_to_habitat(point_rep) -> np.ndarray:
    return HAB_R_REP @ np.asarray(point_rep, dtype=np.float64).reshape(3)


def quat_hab_to_matrix(coeffs) -> np.ndarray:
    """Rotation matrix of a Habitat quaternion given as coefficients (x, y, z, w)."""
    return quaternion_to_matrix(np.asarray(coeffs, dtype=np.float64).reshape(4))


def habitat_matrix(position_hab, rotation_coeffs) -> np.ndarray:
    """4x4 ``world_T_frame`` in Habitat's convention from a position and (x, y, z, w) coefficients."""
    out = np.eye(4)
    out[:3, :3] = quat_hab_to_matrix(rotation_coeffs)
    out[:3, 3] = np.asarray(position_hab, dtype=np.float64).reshape(3)
    return out


def body_pose_to_rep(position_hab, rotation_coeffs) -> Pose:
    """A Habitat agent state (base position, rotation coefficients) as a REP ``world_T_body``."""
    return Pose.from_matrix(REP_T_HAB @ habitat_matrix(position_hab, rotation_coeffs) @ HAB_T_REP)


def body_pose_to_habitat(pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """A REP ``world_T_body`` as a Habitat agent state: (position, rotation coefficients x, y, z, w)."""
    matrix = HAB_T_REP @ pose.matrix() @ REP_T_HAB
    return matrix[:3, 3].copy(), matrix_to_quaternion(matrix[:3, :3])


def camera_pose_to_rep(world_T_habcam: np.ndarray) -> Pose:
    """A Habitat camera's 4x4 world transform (Habitat frames) as the REP ``world_T_optical``."""
    return Pose.from_matrix(REP_T_HAB @ np.asarray(world_T_habcam, dtype=np.float64) @ HABCAM_T_OPTICAL)


def body_T_camera(world_T_body: Pose, world_T_optical: Pose) -> Pose:
    """The camera mount ``body_T_camera`` (optical frame) from the two world poses."""
    return Pose.from_matrix(np.linalg.inv(world_T_body.matrix()) @ world_T_optical.matrix())


def heading_to_yaw(rotation_coeffs) -> float:
    """The REP yaw of a Habitat rotation (its heading about +y, with forward -z)."""
    forward = quat_hab_to_matrix(rotation_coeffs) @ np.array([0.0, 0.0, -1.0])
    rep = REP_R_HAB @ forward
    return math.atan2(rep[1], rep[0])


def yaw_to_coeffs(yaw: float) -> np.ndarray:
    """Habitat rotation coefficients (x, y, z, w) of a rotation by ``yaw`` about +y."""
    return np.array([0.0, math.sin(yaw / 2.0), 0.0, math.cos(yaw / 2.0)])


def habitat_intrinsics(width: int, height: int, hfov_deg: float, body_T_optical: Pose) -> CameraInfo:
    """A Habitat pinhole sensor's intrinsics: ``hfov`` is horizontal, pixels are square and the
    principal point is the image centre (habitat-sim's PINHOLE camera)."""
    focal = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return CameraInfo(int(width), int(height), focal, focal, width / 2.0, height / 2.0, body_T_optical)


def habitat_unproject(u: float, v: float, depth: float, camera: CameraInfo) -> np.ndarray:
    """A pixel (column ``u``, row ``v``) at z-depth ``depth`` as a point in the Habitat camera frame
    (x right, y up, -z forward): the convention Habitat's depth sensor and its mapping code use."""
    x = (u + 0.5 - camera.cx) / camera.fx * depth
    y = -(v + 0.5 - camera.cy) / camera.fy * depth
    return np.array([x, y, -depth])


def depth_to_metres(depth: np.ndarray, normalized: bool, min_depth: float, max_depth: float) -> np.ndarray:
    """Habitat depth as float32 metres along the optical axis, 0 where there is no return.

    habitat-lab's depth sensor clips to [min_depth, max_depth] and, with ``normalize_depth``
    (its default), divides by the range; habitat-sim gives raw metres. A value at the far clip
    is a pixel beyond range, not a surface there, so it becomes "no return" (0), as does 0.
    """
    array = np.asarray(depth, dtype=np.float32)
    if array.ndim == 3:  # habitat-lab keeps a trailing channel
        array = array[..., 0]
    metres = array * np.float32(max_depth - min_depth) + np.float32(min_depth) if normalized else array.copy()
    metres = np.where(np.isfinite(metres), metres, 0.0).astype(np.float32)
    beyond = metres >= np.float32(max_depth) - np.float32(1e-4)
    metres[beyond | (metres <= 0)] = 0.0
    return metres
