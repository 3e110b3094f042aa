import math

import numpy as np

from embodied_mem.geometry import (
    back_project,
    bearing_in_body,
    camera_mount,
    matrix_to_quaternion,
    pinhole_camera,
    project,
    quaternion_to_matrix,
    rotation_rpy,
    wrap_angle,
)
from embodied_mem.types import Pose


def test_quaternion_matrix_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        rotation = rotation_rpy(*rng.uniform(-math.pi, math.pi, 3))
        assert np.allclose(quaternion_to_matrix(matrix_to_quaternion(rotation)), rotation, atol=1e-9)


def test_back_projection_inverts_projection():
    cam = pinhole_camera(64, 48, 90.0, camera_mount(1.0, 0.0))
    depth = np.full((48, 64), 2.0, np.float32)
    points = back_project(depth, cam)
    pixels, in_front = project(points, cam)
    assert in_front.all()
    rows, cols = np.nonzero(np.ones((48, 64), bool))
    assert np.allclose(pixels, np.stack([cols + 0.5, rows + 0.5], axis=-1), atol=1e-6)


def test_camera_mount_looks_forward_and_down():
    mount = camera_mount(1.2, math.radians(20))
    optical_z = mount.matrix()[:3, 2]  # the optical axis in the body frame
    assert optical_z[0] > 0.9 and optical_z[2] < -0.3  # forward (+x) and down (-z)
    assert np.isclose(mount.position[2], 1.2)


def test_wrap_angle_and_bearing():
    assert math.isclose(wrap_angle(3 * math.pi / 2), -math.pi / 2)
    body = Pose.from_xy_yaw(0, 0, math.pi / 2)
    assert math.isclose(bearing_in_body(body, np.array([0.0, 2.0, 0.5])), 0.0, abs_tol=1e-9)
    assert math.isclose(bearing_in_body(body, np.array([2.0, 0.0, 0.0])), math.pi / 2, abs_tol=1e-9)
