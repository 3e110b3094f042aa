"""Load on the memory node: 640x480 rgb + depth at 30 Hz into it for a minute, over real topics.

    python benchmarks/bench_ros_ingest.py [--seconds 60] [--hz 30] [--width 640 --height 480]
        [--memory frame_bank] [--depth-encoding 16UC1] [--detections 3] [--bag DIR] [--json out.json]

The memory node runs as its own process (as in ``embodied-mem nodes``); this process publishes
a synthetic stream (a moving noise image, a flat depth, three box detections, odometry along a
line, camera_info) with the nodes' QoS (sensor data for the camera, reliable for the rest) and
then reads the node's ``~/status``: messages received per topic, observations accepted, frames
dropped (by reason), latency from an rgb image's arrival to the end of its ``observe`` (p50 /
p95), and the node's resident memory (``/proc/<pid>/status``). Needs the ``ros`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hz", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--memory", default="frame_bank")
    parser.add_argument("--encoder", default="gt_hash")
    parser.add_argument("--depth-encoding", default="16UC1", choices=["16UC1", "32FC1"])
    parser.add_argument("--detections", type=int, default=3)
    parser.add_argument("--bag", default="", help="the memory node's bag_path (durable log); empty: none")
    parser.add_argument("--markers-period", type=float, default=5.0, help="the node's markers_period_s (0: no markers)")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)

    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    from embodied_mem.nodes import convert
    from embodied_mem.nodes.common import reliable_qos, ros, sensor_qos, string_msg
    from embodied_mem.nodes.graph import Graph, GraphProcesses, NodeSpec
    from embodied_mem.types import CameraInfo, Detection, Pose

    rclpy = ros()
    mount = "0 0 1.2 -0.5 0.5 -0.5 0.5"  # optical frame looking along +x, 1.2 m up
    graph = Graph(
        [
            NodeSpec(
                "memory",
                "embodied_mem.nodes.memory_node",
                {"memory": args.memory, "memory_overrides": json.dumps({"encoder": args.encoder}) if args.memory in ("frame_bank", "mem4nav", "snapshots3d") else "{}", "body_T_camera": mount, "markers_period_s": args.markers_period, "queue_size": 64, "bag_path": args.bag},
            )
        ]
    )
    log = open(os.devnull, "w") if not os.environ.get("BENCH_VERBOSE") else None
    processes = GraphProcesses(graph, stdout=log, stderr=log)
    pid = processes.processes["memory"].pid
    rclpy.init()
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import CameraInfo as CameraInfoMsg
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from embodied_mem.nodes.client import GraphClient

    client = GraphClient("bench_client")
    node = client.node
    rgb_pub = node.create_publisher(Image, "camera/rgb/image_raw", sensor_qos(10))
    depth_pub = node.create_publisher(Image, "camera/depth/image_raw", sensor_qos(10))
    info_pub = node.create_publisher(CameraInfoMsg, "camera/rgb/camera_info", sensor_qos(10))
    odom_pub = node.create_publisher(Odometry, "odom", reliable_qos())
    det_pub = node.create_publisher(String, "detections", reliable_qos())
    try:
        for publisher in (rgb_pub, depth_pub, info_pub, odom_pub, det_pub):
            client.connected(publisher, timeout=60.0)
        client.wait(lambda: client.memory_status, 30.0, "the memory node's status")
        w, h = args.width, args.height
        f = w / 2.0  # 90 degrees horizontal field of view
        camera = CameraInfo(w, h, f, f, w / 2.0, h / 2.0, Pose([0.0, 0.0, 0.0]))
        rng = np.random.default_rng(0)
        noise = rng.integers(0, 255, (h, w * 2, 3), dtype=np.uint8)
        depth = np.full((h, w), 2.0, np.float32)
        depth[: h // 3] = np.nan  # some pixels without a return
        masks = []
        labels = ["mug", "table", "book", "plant", "chair"]
        for i in range(args.detections):
            mask = np.zeros((h, w), bool)
            x0 = int((i + 0.5) * w / (args.detections + 1))
            mask[h // 2 : h // 2 + h // 6, x0 : x0 + w // 10] = True
            masks.append(Detection(labels[i % len(labels)], mask, 0.9, "receptacle" if labels[i % len(labels)] == "table" else "object", {"color": "red"}))
        period = 1.0 / args.hz
        frames = int(args.seconds * args.hz)
        sent = 0
        publish_s = []
        rss_peak = 0.0
        start = time.monotonic()
        t0 = 1000.0
        for index in range(frames):
            target = start + index * period
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stamp = t0 + index * period
            began = time.perf_counter()
            pose = Pose.from_xy_yaw(0.01 * index, 0.0, 0.0)
            odom_pub.publish(convert.odometry_to_msg(pose, stamp, "map", "base_link"))
            info_pub.publish(convert.camera_info_to_msg(camera, stamp, "camera_optical"))
            det_pub.publish(string_msg(convert.detections_to_json(masks, stamp, "camera_optical", h, w)))
            shift = index % w
            depth_pub.publish(convert.depth_to_msg(depth, stamp, "camera_optical", args.depth_encoding))
            rgb_pub.publish(convert.rgb_to_msg(np.ascontiguousarray(noise[:, shift : shift + w]), stamp, "camera_optical"))
            publish_s.append(time.perf_counter() - began)
            sent += 1
            if index % int(args.hz) == 0:
                rss_peak = max(rss_peak, rss_mb(pid))
        wall = time.monotonic() - start
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:  # let the node finish its queue
            s = client.memory_status
            if s.get("queue", 1) == 0 and s.get("pending", 1) == 0 and s.get("accepted", 0) + s.get("dropped", 0) >= s.get("received", {}).get("rgb", 0):
                break
            time.sleep(0.5)
        time.sleep(1.5)
        status = dict(client.memory_status)
        rss_peak = max(rss_peak, rss_mb(pid))
        received = status.get("received", {})
        frame_drops = {k: v for k, v in status.get("drop_reasons", {}).items()}
        result = {
            "memory": args.memory,
            "resolution": f"{w}x{h}",
            "hz": args.hz,
            "seconds": args.seconds,
            "depth_encoding": args.depth_encoding,
            "bag": bool(args.bag),
            "publisher_achieved_hz": sent / wall,
            "publish_ms_p50": float(np.percentile(np.array(publish_s) * 1000, 50)),
            "sent_frames": sent,
            "received": received,
            "received_rgb_fraction": received.get("rgb", 0) / max(sent, 1),
            "accepted": status.get("accepted"),
            "processed_fps": status.get("accepted", 0) / wall,
            "dropped": status.get("dropped"),
            "drop_reasons": frame_drops,
            "latency_ms_p50": status.get("latency_ms_p50"),
            "latency_ms_p95": status.get("latency_ms_p95"),
            "rss_mb_peak": rss_peak,
            "memory_stats": status.get("stats"),
            "callback_ms_mean": status.get("callback_ms_mean"),
            "observe_ms_mean": status.get("observe_ms_mean"),
            "bag_ms_mean": status.get("bag_ms_mean"),
        }
    finally:
        client.close()
        rclpy.shutdown()
        processes.stop()
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
