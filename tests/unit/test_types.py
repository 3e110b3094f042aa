import math

import numpy as np
import pytest

from embodied_mem.geometry import camera_mount, pinhole_camera
from embodied_mem.memory.base import FrameGate
from embodied_mem.types import CameraInfo, Event, Observation, Pose, Query


def camera(width=8, height=6):
    return pinhole_camera(width, height, 90.0, camera_mount(1.2, 0.3))


def observation(**changes):
    values = dict(
        stamp=1.0,
        frame_id=0,
        rgb=np.zeros((6, 8, 3), np.uint8),
        depth=np.ones((6, 8), np.float32),
        pose=Pose.from_xy_yaw(0, 0, 0),
        camera=camera(),
        instances=np.zeros((6, 8), np.int32),
    )
    values.update(changes)
    return Observation(**values)


def test_pose_rejects_nan_and_names_the_field():
    with pytest.raises(ValueError, match="Pose.position"):
        Pose([0.0, math.nan, 0.0])
    with pytest.raises(ValueError, match="Pose.orientation"):
        Pose([0, 0, 0], [0, 0, 0, math.inf])


def test_pose_rejects_non_unit_quaternion_and_normalises_near_unit():
    with pytest.raises(ValueError, match="unit quaternion"):
        Pose([0, 0, 0], [0, 0, 0, 2.0])
    pose = Pose([0, 0, 0], [0, 0, 0, 1.0005])
    assert np.isclose(np.linalg.norm(pose.orientation), 1.0)


def test_pose_matrix_round_trip_and_yaw():
    pose = Pose.from_xy_yaw(1.0, -2.0, 2.5, z=0.3)
    again = Pose.from_matrix(pose.matrix())
    assert again == pose
    assert math.isclose(again.yaw, 2.5, abs_tol=1e-9)


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(rgb=np.zeros((6, 8, 3), np.float32)), "rgb must be a uint8"),
        (dict(rgb=np.zeros((0, 8, 3), np.uint8), depth=np.zeros((0, 8), np.float32)), "non-empty"),
        (dict(depth=np.ones((5, 8), np.float32)), "depth shape"),
        (dict(depth=np.ones((6, 8), np.float64)), "depth must be a float32"),
        (dict(depth=-np.ones((6, 8), np.float32)), "negative"),
        (dict(instances=np.zeros((6, 8), np.int64)), "instances must be an int32"),
        (dict(camera=camera(16, 12)), "camera says"),
        (dict(stamp=math.nan), "stamp"),
        (dict(frame_id=-1), "frame_id"),
        (dict(pose="here"), "Observation.pose"),
    ],
)
def test_observation_rejects_bad_fields(changes, field):
    with pytest.raises(ValueError, match=field):
        observation(**changes)


def test_observation_accepts_nan_depth_as_no_return():
    depth = np.ones((6, 8), np.float32)
    depth[0, 0] = np.nan
    obs = observation(depth=depth)
    assert not obs.valid_depth()[0, 0] and obs.valid_depth()[1, 1]


def test_event_and_query_validation():
    with pytest.raises(ValueError, match="Event.kind"):
        Event("teleport", 0.0)
    with pytest.raises(ValueError, match="Query.k"):
        Query("x", k=0)
    with pytest.raises(ValueError, match="time_range"):
        Query("x", time_range=(5.0, 1.0))
    with pytest.raises(ValueError, match="CameraInfo.fx"):
        CameraInfo(8, 6, -1.0, 1.0, 4.0, 3.0, Pose.from_xy_yaw(0, 0, 0))


def test_frame_gate_is_idempotent_and_rejects_time_going_back():
    gate = FrameGate()
    first = observation(stamp=2.0, frame_id=1)
    assert gate.admit(first)
    gate.commit(first)
    assert not gate.admit(first)
    with pytest.raises(ValueError, match="out of order"):
        gate.admit(observation(stamp=1.0, frame_id=2))
    assert gate.frames_seen == 1


def test_frame_gate_stays_small_over_a_long_life():
    gate = FrameGate(window=8)
    for frame_id in range(100):
        obs = observation(stamp=float(frame_id), frame_id=frame_id)
        assert gate.admit(obs)
        gate.commit(obs)
    assert len(gate.seen) == 8 and gate.frames_seen == 100
    assert not gate.admit(observation(stamp=99.0, frame_id=99))  # a recent re-send: ignored
    with pytest.raises(ValueError, match="out of order"):
        gate.admit(observation(stamp=3.0, frame_id=3))  # re-sent long after: refused
