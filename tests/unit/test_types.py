import math

import numpy as np
import pytest

from embodied_mem.geometry import camera_mount, pinhole_camera
from embodied_mem.memory.base import FrameGate
from embodied_mem.perception import Vocabulary, check_detections
from embodied_mem.types import CameraInfo, Detection, Event, FloorPlan, Observation, Pose, Query, Region


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
        detections=[Detection("mug", np.ones((6, 8), bool))],
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
        (dict(detections=[Detection("mug", np.ones((5, 8), bool))]), r"detections\[0\]\.mask shape"),
        (dict(detections=["mug"]), r"detections\[0\] must be a Detection"),
        (dict(events=[("grasp", 1.0)]), r"events\[0\] must be an Event"),
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
    with pytest.raises(ValueError, match="Event.base_pose is required"):
        Event("grasp", 0.0)
    here = Pose.from_xy_yaw(0, 0, 0)
    with pytest.raises(ValueError, match="Event.gripper_pose is required"):
        Event("release", 0.0, base_pose=here)
    with pytest.raises(ValueError, match="Event.gripper_pose must be a Pose"):
        Event("grasp", 0.0, base_pose=here, gripper_pose=(0, 0, 1))
    event = Event("grasp", 3.0, here, Pose([0.5, 0.0, 0.8]))
    assert Event.from_dict(event.to_dict()).gripper_pose == event.gripper_pose
    assert not hasattr(event, "object_id") and not hasattr(event, "room")  # proprioception only
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


def test_detection_validation_names_the_field():
    with pytest.raises(ValueError, match="Detection.mask"):
        Detection("mug", np.ones((6, 8), np.uint8))
    with pytest.raises(ValueError, match="Detection.score"):
        Detection("mug", np.ones((6, 8), bool), score=1.5)
    with pytest.raises(ValueError, match="Detection.kind"):
        Detection("mug", np.ones((6, 8), bool), kind="animal")
    with pytest.raises(ValueError, match="Detection.label"):
        Detection("", np.ones((6, 8), bool))
    with pytest.raises(ValueError, match="Detection.attributes"):
        Detection("mug", np.ones((6, 8), bool), attributes={"color": 3})


def test_detector_output_is_checked_against_image_size_and_vocabulary():
    vocabulary = Vocabulary(("mug", "book"), ("table",))
    good = [Detection("mug", np.ones((6, 8), bool)), Detection("table", np.ones((6, 8), bool), kind="receptacle")]
    assert check_detections(good, vocabulary, (6, 8)) is good
    with pytest.raises(ValueError, match=r"detections\[0\]\.mask shape"):
        check_detections([Detection("mug", np.ones((4, 8), bool))], vocabulary, (6, 8))
    with pytest.raises(ValueError, match="outside the detector's vocabulary"):
        check_detections([Detection("unicorn", np.ones((6, 8), bool))], vocabulary, (6, 8))
    with pytest.raises(ValueError, match="does not match label"):
        check_detections([Detection("table", np.ones((6, 8), bool))], vocabulary, (6, 8))


def test_observation_validate_catches_fields_changed_after_construction():
    obs = observation()
    obs.stamp = math.inf
    with pytest.raises(ValueError, match="Observation.stamp"):
        obs.validate()
    obs = observation()
    obs.detections.append(Detection("mug", np.ones((2, 2), bool)))
    with pytest.raises(ValueError, match="mask shape"):
        obs.validate()


def test_floor_plan_rooms_and_round_trip():
    plan = FloorPlan((Region("kitchen", ((0, 0), (4, 0), (4, 3), (0, 3))), Region("hall", ((4, 0), (6, 0), (6, 3), (4, 3)))))
    assert plan.room_at((1.0, 1.0)) == "kitchen" and plan.room_at((5.0, 2.9)) == "hall"
    assert plan.room_at((7.0, 1.0)) is None
    assert FloorPlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(ValueError, match="unique"):
        FloorPlan((plan.regions[0], plan.regions[0]))
    with pytest.raises(ValueError, match="polygon"):
        Region("bad", ((0, 0), (1, 1)))


def test_a_waiting_writer_goes_before_new_readers():
    """observe() cannot starve under a busy recall loop: new readers queue behind a writer."""
    import threading
    import time

    from embodied_mem.memory.base import ReadWriteLock

    lock = ReadWriteLock()
    order = []
    first_reader_in = threading.Event()
    release_first = threading.Event()

    def first_reader():
        with lock.reading():
            first_reader_in.set()
            release_first.wait(5)
            order.append("reader 1 out")  # still inside: the writer cannot have started

    def writer():
        with lock.writing():
            order.append("writer")

    def late_reader():
        with lock.reading():
            order.append("reader 2")

    threads = [threading.Thread(target=first_reader)]
    threads[0].start()
    first_reader_in.wait(5)
    threads.append(threading.Thread(target=writer))
    threads[1].start()
    while not lock._writers_waiting:  # the writer is queued
        time.sleep(0.001)
    threads.append(threading.Thread(target=late_reader))
    threads[2].start()
    time.sleep(0.05)
    assert order == []  # the late reader waits behind the writer, the writer behind reader 1
    release_first.set()
    for thread in threads:
        thread.join(5)
    assert order == ["reader 1 out", "writer", "reader 2"]
