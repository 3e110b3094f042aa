"""The nodes' message checks and stamp synchronisation, without rclpy (stand-in messages).

These run everywhere (no ``ros`` marker): the code that decides what a bad message is and how
frames are put together is plain numpy.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace as NS

import numpy as np
import pytest

from embodied_mem.nodes import convert
from embodied_mem.nodes.convert import BadMessage
from embodied_mem.nodes.graph import load_graph, node_command
from embodied_mem.nodes.memory_node import reason_key
from embodied_mem.nodes.sync import FrameAssembler
from embodied_mem.types import Detection, Pose


def stamp(seconds: float) -> NS:
    whole = math.floor(seconds)
    return NS(sec=whole, nanosec=int(round((seconds - whole) * 1e9)))


def image(encoding: str, array: np.ndarray, step: int | None = None, data: bytes | None = None, bigendian: int = 0) -> NS:
    h, w = array.shape[:2]
    raw = array.tobytes()
    return NS(header=NS(stamp=stamp(1.0), frame_id="cam"), height=h, width=w, encoding=encoding, is_bigendian=bigendian, step=step if step is not None else len(raw) // max(h, 1), data=raw if data is None else data)


def test_rgb_encodings_and_padding():
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    assert np.array_equal(convert.rgb_from_msg(image("rgb8", rgb)), rgb)
    assert np.array_equal(convert.rgb_from_msg(image("bgr8", rgb[:, :, ::-1].copy())), rgb)
    padded = np.zeros((4, 5 * 3 + 1), np.uint8)
    padded[:, :15] = rgb.reshape(4, 15)
    msg = image("rgb8", rgb, step=16, data=padded.tobytes())
    assert np.array_equal(convert.rgb_from_msg(msg), rgb)


@pytest.mark.parametrize(
    "msg, reason",
    [
        (image("yuv422", np.zeros((4, 5, 2), np.uint8)), "encoding"),
        (NS(height=0, width=0, step=0, encoding="rgb8", data=b"", is_bigendian=0), "zero size"),
        (image("rgb8", np.zeros((4, 5, 3), np.uint8), data=bytes(30)), "truncated"),
        (image("rgb8", np.zeros((4, 5, 3), np.uint8), step=14, data=bytes(56)), "step"),
    ],
)
def test_bad_rgb_is_refused_with_its_reason(msg, reason):
    with pytest.raises(BadMessage, match=reason):
        convert.rgb_from_msg(msg)


def test_depth_16uc1_millimetres_and_32fc1_metres():
    mm = np.array([[0, 1000], [2500, 65535]], dtype="<u2")
    depth = convert.depth_from_msg(image("16UC1", mm))
    assert depth.dtype == np.float32 and np.allclose(depth, [[0, 1], [2.5, 65.535]])
    big = mm.astype(">u2")
    assert np.allclose(convert.depth_from_msg(image("16UC1", big, bigendian=1)), depth)
    metres = np.array([[np.nan, 1.5], [0.0, 3.0]], dtype="<f4")
    assert np.allclose(convert.depth_from_msg(image("32FC1", metres)), metres, equal_nan=True)
    with pytest.raises(BadMessage, match="negative"):
        convert.depth_from_msg(image("32FC1", -metres))
    with pytest.raises(BadMessage, match="depth encoding"):
        convert.depth_from_msg(image("8UC1", mm.astype(np.uint8)))


def test_poses_nan_and_non_unit_quaternions_are_refused():
    good = NS(position=NS(x=1.0, y=2.0, z=0.0), orientation=NS(x=0.0, y=0.0, z=0.0, w=1.0))
    assert np.allclose(convert.pose_from_msg(good).position, [1, 2, 0])
    with pytest.raises(BadMessage, match="finite"):
        convert.pose_from_msg(NS(position=NS(x=math.nan, y=0.0, z=0.0), orientation=good.orientation))
    with pytest.raises(BadMessage, match="unit quaternion"):
        convert.pose_from_msg(NS(position=good.position, orientation=NS(x=0.0, y=0.0, z=0.0, w=2.0)))


def test_detections_json_round_trip_and_rle():
    rng = np.random.default_rng(0)
    masks = [rng.random((6, 7)) > 0.5, np.zeros((6, 7), bool), np.ones((6, 7), bool)]
    detections = [Detection("mug", masks[0], 0.8, "object", {"color": "red"}), Detection("table", masks[2], 1.0, "receptacle", {}, 7)]
    text = convert.detections_to_json(detections, 12.5, "cam", 6, 7)
    when, size, back = convert.detections_from_json(text)
    assert when == pytest.approx(12.5) and size == (6, 7)
    assert [d.label for d in back] == ["mug", "table"] and back[1].instance_id == 7 and back[0].attributes == {"color": "red"}
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(back, detections))
    for mask in masks:
        assert np.array_equal(convert.mask_from_rle(convert.mask_to_rle(mask), 6, 7), mask)
    data = json.loads(text)
    data["detections"][0]["mask"]["rle"] = [3, 4]
    with pytest.raises(BadMessage, match="covers 7 pixels"):
        convert.detections_from_json(json.dumps(data))
    with pytest.raises(BadMessage, match="not JSON"):
        convert.detections_from_json("{nope")


def test_events_need_base_and_gripper():
    pose = NS(position=NS(x=0.0, y=0.0, z=0.0), orientation=NS(x=0.0, y=0.0, z=0.0, w=1.0))
    event = convert.event_from_msg("grasp", NS(header=NS(stamp=stamp(3.0)), poses=[pose, pose]))
    assert event.kind == "grasp" and event.stamp == 3.0
    with pytest.raises(BadMessage, match="poses"):
        convert.event_from_msg("release", NS(header=NS(stamp=stamp(3.0)), poses=[pose]))


INFO = {"width": 4, "height": 3, "fx": 2.0, "fy": 2.0, "cx": 2.0, "cy": 1.5, "distorted": False}


def feed(assembler: FrameAssembler, t: float, streams=("rgb", "depth", "odom", "detections"), shape=(3, 4)):
    values = {
        "rgb": np.zeros((*shape, 3), np.uint8),
        "depth": np.ones(shape, np.float32),
        "odom": Pose([t, 0.0, 0.0]),
        "detections": (shape, []),
    }
    for stream in streams:
        assembler.add(stream, t, values[stream])


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_assembler_pairs_by_stamp_within_tolerance_in_order():
    clock = Clock()
    a = FrameAssembler(tolerance=0.02, odom_tolerance=0.05, max_wait_s=1.0, clock=clock)
    a.add("camera_info", 0.0, INFO)
    a.add("rgb", 1.0, np.zeros((3, 4, 3), np.uint8))
    a.add("rgb", 2.0, np.zeros((3, 4, 3), np.uint8))
    assert a.poll() == ([], [])  # waiting for partners
    a.add("depth", 1.01, np.ones((3, 4), np.float32))
    a.add("odom", 0.97, Pose([1.0, 0.0, 0.0]))
    a.add("detections", 0.995, ((3, 4), []))
    ready, dropped = a.poll()
    assert [b.stamp for b in ready] == [1.0] and not dropped
    # frame 2's depth is 30 ms off: it can never be completed once newer depth has come
    a.add("depth", 2.03, np.ones((3, 4), np.float32))
    ready, dropped = a.poll()
    assert not ready and dropped and "no depth within 20 ms" in dropped[0][1]


def test_assembler_times_out_drops_mismatches_and_refuses_backwards():
    clock = Clock()
    a = FrameAssembler(max_wait_s=1.0, clock=clock)
    a.add("camera_info", 0.0, INFO)
    feed(a, 1.0, ("rgb", "depth", "detections"))  # odometry never comes
    clock.now = 1.5
    ready, dropped = a.poll()
    assert not ready and "no odom" in dropped[0][1] and "after waiting" in dropped[0][1]
    with pytest.raises(BadMessage, match="went backwards"):
        a.add("rgb", 0.5, np.zeros((3, 4, 3), np.uint8))
    with pytest.raises(BadMessage, match="repeated"):
        a.add("depth", 1.0, np.ones((3, 4), np.float32))
    a.add("camera_info", 3.0, {**INFO, "width": 8})
    feed(a, 3.0)
    ready, dropped = a.poll()
    assert not ready and "camera_info is 8x3" in dropped[0][1]


def test_events_ride_on_the_next_frame():
    from embodied_mem.types import Event

    a = FrameAssembler()
    a.add("camera_info", 0.0, INFO)
    base = Pose([0.0, 0.0, 0.0])
    a.add("event", 0.99, Event("grasp", 0.99, base, base))
    feed(a, 1.0)
    feed(a, 2.0)
    ready, _ = a.poll()
    assert [len(b.events) for b in ready] == [1, 0]


def test_reason_keys_group_numbers():
    assert reason_key("rgb", "image is 0x0: zero size") == reason_key("rgb", "image is 12x1: zero size")


def test_graph_description_and_overrides(tmp_path):
    from pathlib import Path

    graph = load_graph(Path(__file__).resolve().parents[2] / "launch" / "graph_small.yaml", ["memory.memory=mem4nav", "sim.rate_hz=5"])
    names = [n.name for n in graph.nodes]
    assert names == ["sim", "memory", "agent"]
    memory = graph.nodes[1]
    assert memory.parameters["memory"] == "mem4nav" and graph.nodes[0].parameters["rate_hz"] == 5
    command = node_command(memory, "p.yaml", "robot1")
    assert command[1:3] == ["-m", "embodied_mem.nodes.memory_node"] and "__ns:=/robot1" in command
    with pytest.raises(ValueError, match="no node"):
        load_graph(Path(__file__).resolve().parents[2] / "launch" / "graph_small.yaml", ["nobody.x=1"])


def test_cli_nodes_verb_prints_the_graph(capsys):
    from pathlib import Path

    from embodied_mem.cli import main

    graph = Path(__file__).resolve().parents[2] / "launch" / "graph_small.yaml"
    assert main(["nodes", str(graph), "memory.memory=snapshots3d", "--print"]) == 0
    out = capsys.readouterr().out
    assert "embodied_mem.nodes.sim_node" in out and "'memory': 'snapshots3d'" in out and "embodied_mem.nodes.agent_node" in out
    assert main(["nodes", str(graph), "nobody.x=1"]) == 2


def test_library_does_not_import_rclpy():
    """The library stays importable without ROS: only embodied_mem.nodes.*_node import rclpy."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['rclpy'] = None\n"
        "import embodied_mem.agent, embodied_mem.registry, embodied_mem.memory.frame_bank, embodied_mem.eval.runner\n"
        "import embodied_mem.nodes.convert, embodied_mem.nodes.sync, embodied_mem.nodes.graph, embodied_mem.nodes.memory_node\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_parameters_convert_only_losslessly():
    from embodied_mem.nodes.common import _as_type

    assert _as_type("rate_hz", 40, 20.0) == 40.0 and isinstance(_as_type("rate_hz", 40, 20.0), float)
    assert _as_type("memory", "mem4nav", "frame_bank") == "mem4nav"
    with pytest.raises(ValueError, match="rate_hz"):
        _as_type("rate_hz", "fast", 20.0)
    with pytest.raises(ValueError, match="seed"):
        _as_type("seed", 1.5, 3)
