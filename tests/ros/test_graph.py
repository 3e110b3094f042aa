"""The ROS 2 graph end to end: sim, memory and agent nodes as separate processes.

The sim streams a small one-day episode (160x120, 3 rearrangements) over real topics into the
memory node (frame_bank); the agent asks it over the recall topics and drives the sim's base;
the sim's oracle checks FindingDory's predicate where the robot stopped. Then malformed
messages are published at the memory node: each is logged and dropped, the node keeps
running, and it answers the same recall as before. Needs the ROS 2 wheels (``.[ros]``).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
GRAPH = ROOT / "launch" / "graph_small.yaml"
# Single-goal tasks frame_bank solves on this episode in-process (embodied_mem.eval.runner):
# one goes to a remembered stand pose (goal_pose), one approaches a remembered object (goal_approach).
TASKS = ("receptacle_picked_from", "order_object_nth")


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from embodied_mem.nodes.common import ros
    from embodied_mem.nodes.graph import GraphProcesses, load_graph

    domain = str(100 + os.getpid() % 100)  # away from other graphs on this machine
    os.environ["ROS_DOMAIN_ID"] = domain
    rclpy = ros()
    log = (tmp_path_factory.mktemp("graph") / "graph.log").open("w")
    spec = load_graph(GRAPH, ["sim.rate_hz=40.0"])
    processes = GraphProcesses(spec, env={**os.environ, "ROS_DOMAIN_ID": domain, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=log)
    rclpy.init()
    from embodied_mem.nodes.client import GraphClient

    client = GraphClient()
    started = time.monotonic()
    try:
        status = client.wait_ingested(timeout=150.0)
        client.wait(lambda: client.tasks, 10.0, "the task list")
        yield client, processes, status, started, log.name
    finally:
        client.close()
        rclpy.shutdown()
        codes = processes.stop()
        log.close()
        print(f"graph log: {log.name}; exit codes {codes}")


def test_graph_streams_recalls_and_reaches_goal(graph):
    client, processes, status, started, log = graph
    published = client.sim_state["frames_published"]
    assert published > 100
    # Best-effort camera topics may lose a frame under load; nearly all must arrive and be kept.
    assert status["accepted"] >= 0.9 * published, (status, published)
    assert status["floor_plan"] and status["camera_mount"]
    assert status["stats"]["frames_seen"] == status["accepted"]
    for task_id in TASKS:
        result, evaluation = client.run_task(task_id)
        assert result["status"] == "done", result
        assert result["navigation"] and result["navigation"][-1]["status"] == "succeeded", result
        assert evaluation.get("success") is True, (task_id, result, evaluation)
    assert all(code is None for code in processes.poll().values()), processes.poll()
    print(f"graph up, history streamed and {len(TASKS)} tasks driven in {time.monotonic() - started:.1f} s")


def _image(encoding: str, height: int, width: int, step: int, data: bytes, stamp: float, frame: str = "camera_optical"):
    from sensor_msgs.msg import Image

    from embodied_mem.nodes.convert import seconds_to_stamp

    msg = Image()
    msg.header.stamp = seconds_to_stamp(stamp)
    msg.header.frame_id = frame
    msg.height, msg.width, msg.step, msg.encoding = height, width, step, encoding
    msg.data = data
    return msg


def test_bad_messages_are_dropped_and_change_nothing(graph):
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from embodied_mem.nodes import convert
    from embodied_mem.nodes.common import reliable_qos, sensor_qos, string_msg
    from sensor_msgs.msg import CameraInfo

    client, processes, _, _, _ = graph
    task = next(t for t in client.tasks if t["task_id"] == TASKS[0])
    before_status = client.wait_ingested(timeout=30.0)
    before = client.recall(task["instruction"], task["constraints"])
    assert before["ok"] and before["hits"]

    node = client.node
    rgb = node.create_publisher(Image, "camera/rgb/image_raw", sensor_qos(10))
    depth = node.create_publisher(Image, "camera/depth/image_raw", sensor_qos(10))
    info = node.create_publisher(CameraInfo, "camera/rgb/camera_info", sensor_qos(10))
    odom = node.create_publisher(Odometry, "odom", reliable_qos())
    detections = node.create_publisher(String, "detections", reliable_qos())
    for publisher in (rgb, depth, info, odom, detections):
        client.connected(publisher)
    # Stamps after anything the sim sent (the tasks' driving moved its clock on), except the one
    # meant to go backwards.
    last = float(client.sim_state["last_stamp"]) + 40000.0
    h, w = 120, 160
    good_rgb = bytes(h * w * 3)
    bad_images = [
        _image("yuv422", h, w, w * 2, bytes(h * w * 2), last + 10),  # wrong encoding
        _image("rgb8", 0, 0, 0, b"", last + 11),  # zero size
        _image("rgb8", h, w, w * 3, good_rgb[: len(good_rgb) // 2], last + 12),  # truncated
        _image("rgb8", h, w, w * 3 - 1, bytes((w * 3 - 1) * h), last + 13),  # step shorter than a row
        _image("rgb8", h, w, w * 3, good_rgb, 1.0),  # stamp going backwards
    ]
    nan_odom = convert.odometry_to_msg(convert.Pose([0.0, 0.0, 0.0]), last + 20, "map", "base_link")
    nan_odom.pose.pose.position.x = math.nan
    fat_odom = convert.odometry_to_msg(convert.Pose([0.0, 0.0, 0.0]), last + 21, "map", "base_link")
    fat_odom.pose.pose.orientation.w = 2.0  # not a unit quaternion
    # A complete, well-formed frame whose camera_info disagrees with its image size.
    from embodied_mem.types import CameraInfo as Camera

    wrong = Camera(320, 240, 160.0, 160.0, 160.0, 120.0, convert.Pose([0.0, 0.0, 0.0]))
    stamp = last + 30
    for _ in range(3):  # best-effort topics: send each more than once
        for msg in bad_images:
            rgb.publish(msg)
        depth.publish(_image("8UC3", h, w, w * 3, good_rgb, last + 14))
        odom.publish(nan_odom)
        odom.publish(fat_odom)
        detections.publish(String(data="{not json"))
        time.sleep(0.2)
    info.publish(convert.camera_info_to_msg(wrong, stamp, "camera_optical"))
    time.sleep(0.3)
    odom.publish(convert.odometry_to_msg(convert.Pose([0.0, 0.0, 0.0]), stamp, "map", "base_link"))
    detections.publish(string_msg(convert.detections_to_json([], stamp, "camera_optical", h, w)))
    depth.publish(convert.depth_to_msg(np.ones((h, w), np.float32), stamp, "camera_optical"))
    rgb.publish(convert.rgb_to_msg(np.zeros((h, w, 3), np.uint8), stamp, "camera_optical"))

    expected = ["rgb encoding", "zero size", "truncated", "step #", "went backwards", "depth encoding", "must be finite", "unit quaternion", "not JSON", "camera_info is #x#, rgb is #x#"]

    def all_reasons():
        reasons = " | ".join(client.memory_status.get("drop_reasons", {}))
        return all(word in reasons for word in expected)

    try:
        client.wait(all_reasons, 20.0, "every bad message to be dropped")
    except TimeoutError:
        pytest.fail(f"not every reason seen: {client.memory_status.get('drop_reasons')}")
    count = client.status_count
    client.wait(lambda: client.status_count > count + 1, 10.0, "the memory node to keep reporting")
    after_status = client.memory_status
    assert after_status["accepted"] == before_status["accepted"]
    assert after_status["stats"] == before_status["stats"]
    assert all(code is None for code in processes.poll().values())
    after = client.recall(task["instruction"], task["constraints"])
    assert after["hits"] == before["hits"]
    assert after["goals"][0]["pose"] == before["goals"][0]["pose"]
