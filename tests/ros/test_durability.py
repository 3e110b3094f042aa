"""The memory node's durable log: a rosbag2-compatible MCAP bag written before an observation
counts, read back exactly, readable by an independent ROS 2 decoder, and recovered after kill -9.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def observations(one_day):
    """A stretch of the small episode with grasps and releases in it."""
    obs = one_day.observations
    with_events = [i for i, o in enumerate(obs) if any(e.kind in ("grasp", "release") for e in o.events)]
    start = max(with_events[0] - 10, 0)
    return obs[start : start + 60]


def test_bag_round_trip_is_exact_and_rosbag2_readable(tmp_path, observations):
    from embodied_mem.nodes.bag import ObservationBag, bag_files, read_observations

    bag = ObservationBag(tmp_path / "log", fsync=False)
    for obs in observations:
        bag.append(obs, '{"regions": []}')
    bag.close()
    assert (tmp_path / "log" / "metadata.yaml").exists()
    back = list(read_observations(tmp_path / "log"))
    assert len(back) == len(observations)
    assert sum(len(o.events) for o in back) == sum(len(o.events) for o in observations) > 0
    for a, b in zip(observations, back):
        assert a.stamp == b.stamp and a.day == b.day
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth, equal_nan=True)
        assert a.pose == b.pose and a.camera.to_dict() == b.camera.to_dict()
        assert [(d.label, d.kind, d.score, d.attributes) for d in a.detections] == [(d.label, d.kind, d.score, d.attributes) for d in b.detections]
        assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.detections, b.detections))
        assert [(e.kind, e.stamp, e.base_pose, e.gripper_pose) for e in a.events] == [(e.kind, e.stamp, e.base_pose, e.gripper_pose) for e in b.events]

    # An independent ROS 2 decoder (mcap-ros2-support) reads every message from the schema texts.
    mcap_ros2 = pytest.importorskip("mcap_ros2.decoder")
    from mcap.reader import make_reader

    with open(bag_files(tmp_path / "log")[0], "rb") as stream:
        reader = make_reader(stream, decoder_factories=[mcap_ros2.DecoderFactory()])
        topics = {}
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            topics[channel.topic] = topics.get(channel.topic, 0) + 1
            if channel.topic == "/camera/rgb/image_raw":
                assert decoded.encoding == "rgb8" and decoded.width == observations[0].rgb.shape[1]
    assert topics["/camera/rgb/image_raw"] == len(observations) and topics["/odom"] == len(observations)


def test_a_bag_cut_by_a_crash_reads_up_to_its_last_whole_frame(tmp_path, observations):
    from embodied_mem.nodes.bag import ObservationBag, bag_files, read_observations

    bag = ObservationBag(tmp_path / "log", fsync=False)
    for obs in observations[:20]:
        bag.append(obs)
    path = bag_files(tmp_path / "log")[0]
    size = path.stat().st_size
    bag.stream.close()  # no footer, no summary: as a kill -9 leaves it
    with open(path, "r+b") as stream:
        stream.truncate(int(size * 0.7))  # and cut mid-frame
    back = list(read_observations(tmp_path / "log"))
    assert 10 <= len(back) < 20
    assert [o.stamp for o in back] == [o.stamp for o in observations[: len(back)]]


def _start(graph, env, log):
    from embodied_mem.nodes.graph import GraphProcesses

    return GraphProcesses(graph, env=env, stdout=log, stderr=log)


def test_kill_9_loses_nothing_that_counted(tmp_path):
    """kill -9 the memory node 20 times (19 during the stream, once after it), restarting it on
    its bag each time: every observation it had reported accepted is back, and after the last
    crash it answers the same recall as before it."""
    from embodied_mem.nodes.client import GraphClient
    from embodied_mem.nodes.common import ros
    from embodied_mem.nodes.graph import Graph, load_graph

    domain = str(50 + os.getpid() % 50)
    env = {**os.environ, "ROS_DOMAIN_ID": domain, "PYTHONUNBUFFERED": "1"}
    os.environ["ROS_DOMAIN_ID"] = domain
    rclpy = ros()
    spec = load_graph(Path(__file__).resolve().parents[2] / "launch" / "graph_small.yaml", ["sim.rate_hz=8.0", f"memory.bag_path={tmp_path / 'bag'}"])
    sim_graph = Graph([n for n in spec.nodes if n.name == "sim"])
    memory_graph = Graph([n for n in spec.nodes if n.name == "memory"])
    log = (tmp_path / "graph.log").open("w")
    memory = _start(memory_graph, env, log)
    sim = _start(sim_graph, env, log)
    rclpy.init()
    client = GraphClient("durability_client")
    try:
        # 1. kill -9 during ingest, 19 times at random moments: each restart has every
        # observation the node had reported accepted (it replays its bag), and goes on
        rng = random.Random(7)
        for kill in range(19):
            client.wait(lambda: client.memory_status.get("accepted", 0) >= 20, 120.0, "20 accepted observations")
            time.sleep(rng.uniform(0.0, 0.6))
            counted = client.memory_status["accepted"]
            memory.processes["memory"].send_signal(signal.SIGKILL)
            memory.processes["memory"].wait(10)
            client.memory_status = {}
            memory = _start(memory_graph, env, log)
            first = client.wait(lambda: client.memory_status.get("recovered") is not None and client.memory_status, 60.0, "the restarted node")
            assert first["recovered"] >= counted, (kill, first, counted)
        # 2. after the stream: same answer before and after the crash
        status = client.wait_ingested(timeout=120.0)
        # (a text-only recall: which interactions the memory saw depends on when it was down)
        query = "the table where you put the mug"
        before = client.recall(query, k=10)
        assert before["ok"] and len(before["hits"]) == 10
        memory.processes["memory"].send_signal(signal.SIGKILL)
        memory.processes["memory"].wait(10)
        client.memory_status = {}
        memory = _start(memory_graph, env, log)
        after_status = client.wait(lambda: client.memory_status.get("recovered") is not None and client.memory_status, 60.0, "the restarted node")
        assert after_status["recovered"] == status["accepted"] == after_status["stats"]["frames_seen"]
        after = client.recall(query, k=10)
        assert after["hits"] == before["hits"]
    finally:
        client.close()
        rclpy.shutdown()
        memory.stop()
        sim.stop()
        log.close()
