"""The memory node: one memory system of the library behind ROS 2 topics.

    python -m embodied_mem.nodes.memory_node --ros-args -p memory:=frame_bank \\
        -p memory_overrides:='{"encoder": "gt_hash"}' --params-file launch/params/memory.yaml

In (relative names: put the node in a namespace or remap with ``-r``):

==========================  ==============================  ==========================================
topic                       type                            QoS
==========================  ==============================  ==========================================
camera/rgb/image_raw        sensor_msgs/Image rgb8|bgr8     sensor data (``camera_qos``)
camera/depth/image_raw      sensor_msgs/Image 16UC1|32FC1   sensor data; registered to rgb
camera/rgb/camera_info      sensor_msgs/CameraInfo          sensor data
odom                        nav_msgs/Odometry               reliable (``state_qos``); world_T_base
detections                  std_msgs/String (JSON, RLE)     reliable
grasp, release              geometry_msgs/PoseArray         reliable; poses = [base, gripper]
camera_mount                geometry_msgs/TransformStamped  latched; base -> camera optical frame
floor_plan                  std_msgs/String (JSON)          latched
recall/request              std_msgs/String (JSON)          reliable
==========================  ==============================  ==========================================

Out: ``recall/result`` (std_msgs/String JSON, latched depth 10), ``recall/goals``
(geometry_msgs/PoseArray in ``map_frame``: the best stop of each goal), ``~/markers``
(visualization_msgs/MarkerArray, latched), ``~/status`` (std_msgs/String JSON, 1 Hz).
Services: ``~/save`` and ``~/load`` (std_srvs/Trigger) on the path in the ``checkpoint_path``
parameter (set it first with ``ros2 param set`` / SetParameters; std_srvs has no service
carrying a string). A load builds a new memory, loads it, and only then swaps it in.

With ``bag_path`` set, each observation is appended to a rosbag2-compatible MCAP bag (``bag.py``)
and fsync'ed before ``observe`` is called, and at start the node observes what the bag holds beyond
its memory (after ``load_on_start``), so a kill -9 loses nothing that counted.

Every bad message is logged with its reason, counted in ``~/status`` and dropped before it
reaches the memory; the node keeps running and what it remembers is unchanged.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from pathlib import Path

import numpy as np

from embodied_mem.types import Observation, Pose, Query

from . import convert
from .common import declare, json_object, latched_qos, memory_config, qos_by_name, reliable_qos, ros, run_node, string_msg
from .convert import BadMessage
from .sync import FrameAssembler

SECONDS_PER_DAY = 86400.0

DEFAULTS = {
    "memory": "frame_bank",
    "memory_config_file": "",
    "memory_overrides": "{}",
    "floor_plan_file": "",
    "body_T_camera": "",
    "checkpoint_path": "",
    "load_on_start": False,
    "bag_path": "",
    "bag_fsync": True,
    "recover_from_bag": True,
    "map_frame": "map",
    "sync_tolerance_s": 0.02,
    "odom_tolerance_s": 0.05,
    "max_wait_s": 2.0,
    "require_detections": True,
    "depth_scale_16u": 0.001,
    "day_origin_s": 0.0,
    "camera_qos": "sensor_data",
    "state_qos": "reliable",
    "camera_qos_depth": 10,
    "queue_size": 256,
    "markers_period_s": 2.0,
    "status_period_s": 1.0,
    "log_every_s": 5.0,
}
DESCRIPTIONS = {
    "memory": "registered memory name (configs/memory/<name>.yaml)",
    "memory_config_file": "a memory config YAML to use instead of configs/memory/<memory>.yaml",
    "memory_overrides": "JSON object merged into the memory config, e.g. {\"encoder\": \"gt_hash\"}",
    "floor_plan_file": "FloorPlan JSON (named room polygons); else taken from the floor_plan topic",
    "body_T_camera": "'x y z qx qy qz qw' base -> camera optical frame; else taken from the camera_mount topic",
    "checkpoint_path": "directory ~/save writes and ~/load reads",
    "load_on_start": "load checkpoint_path at start when it exists",
    "bag_path": "directory of the durable log (rosbag2 MCAP): every accepted observation is written there before the memory sees it (empty: none)",
    "bag_fsync": "fsync the bag after every observation (off: faster, a crash may lose the last frames)",
    "recover_from_bag": "at start, observe what bag_path holds and the memory does not (after load_on_start)",
    "map_frame": "frame of odometry, events and recall goals",
    "sync_tolerance_s": "largest stamp difference between rgb and depth / detections",
    "odom_tolerance_s": "largest stamp difference between rgb and the odometry sample used",
    "max_wait_s": "wall-clock seconds a frame waits for its partners before it is dropped",
    "require_detections": "drop frames without detections (else observe them without)",
    "depth_scale_16u": "metres per unit of a 16UC1 depth image",
    "day_origin_s": "stamp of midnight of day 0; Observation.day = floor((stamp - origin) / 86400)",
    "camera_qos": "sensor_data or reliable, for images and camera_info",
    "state_qos": "reliable or sensor_data, for odometry, detections and events",
    "camera_qos_depth": "history depth of the camera subscriptions",
    "queue_size": "assembled observations waiting for the memory before the oldest is dropped",
    "markers_period_s": "seconds between MarkerArray updates (0: never)",
    "status_period_s": "seconds between ~/status messages",
    "log_every_s": "a repeated drop reason is logged at most this often",
}


def reason_key(stream: str, reason: str) -> str:
    """A drop reason without its numbers, so counts group by kind."""
    return f"{stream}: " + re.sub(r"-?\d+(\.\d+)?", "#", reason)[:80]


def build_memory(params: dict):
    from embodied_mem.registry import build

    config = memory_config(params["memory"], params["memory_config_file"], json_object(params["memory_overrides"], "memory_overrides"))
    return build("memory", config), config


def make_node():
    ros()
    from geometry_msgs.msg import PoseArray, TransformStamped
    from nav_msgs.msg import Odometry
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String
    from std_srvs.srv import Trigger
    from visualization_msgs.msg import MarkerArray

    class MemoryNode(Node):
        def __init__(self) -> None:
            super().__init__("memory")
            self.params = declare(self, DEFAULTS, DESCRIPTIONS)
            p = self.params
            self.memory, self.memory_values = build_memory(p)
            self.floor_plan = None
            self.mount: Pose | None = convert.pose_list(p["body_T_camera"])
            self.assembler = FrameAssembler(p["sync_tolerance_s"], p["odom_tolerance_s"], p["max_wait_s"], p["require_detections"])
            self.input_lock = threading.Lock()  # subscription callbacks and the assembler
            self.memory_lock = threading.RLock()  # observe / save / swap
            self.work: deque = deque()
            self.work_ready = threading.Condition()
            self.closing = False
            self.received: Counter = Counter()
            self.callback_s: Counter = Counter()  # seconds spent in each stream's callbacks
            self.drops: Counter = Counter()
            self.last_logged: dict[str, float] = {}
            self.accepted = 0
            self.observe_s = 0.0
            self.bag_s = 0.0
            self.refused = 0
            self.last_drop = ""
            self.latencies: deque = deque(maxlen=2000)
            self.trail: deque = deque(maxlen=4000)
            self.markers_dirty = True
            self.floor_plan_json: str | None = None
            self.bag = None
            self.recovered = 0
            if p["floor_plan_file"]:
                self._set_floor_plan(convert.floor_plan_from_json(Path(p["floor_plan_file"]).read_text()), "file")
            if p["load_on_start"] and p["checkpoint_path"] and Path(p["checkpoint_path"]).exists():
                ok, message = self._load(p["checkpoint_path"])
                (self.get_logger().info if ok else self.get_logger().error)(message)
            if p["bag_path"]:
                self._open_bag(p["bag_path"])

            camera = qos_by_name(p["camera_qos"], int(p["camera_qos_depth"]))
            state = qos_by_name(p["state_qos"], 100)
            inputs = MutuallyExclusiveCallbackGroup()
            self.create_subscription(Image, "camera/rgb/image_raw", self.on_rgb, camera, callback_group=inputs)
            self.create_subscription(Image, "camera/depth/image_raw", self.on_depth, camera, callback_group=inputs)
            self.create_subscription(CameraInfo, "camera/rgb/camera_info", self.on_camera_info, camera, callback_group=inputs)
            self.create_subscription(Odometry, "odom", self.on_odom, state, callback_group=inputs)
            self.create_subscription(String, "detections", self.on_detections, state, callback_group=inputs)
            for kind in convert.EVENT_TOPICS:
                self.create_subscription(PoseArray, kind, lambda msg, kind=kind: self.on_event(kind, msg), state, callback_group=inputs)
            self.create_subscription(TransformStamped, "camera_mount", self.on_mount, latched_qos(), callback_group=inputs)
            self.create_subscription(String, "floor_plan", self.on_floor_plan, latched_qos(), callback_group=inputs)

            answers = MutuallyExclusiveCallbackGroup()
            self.create_subscription(String, "recall/request", self.on_recall, reliable_qos(), callback_group=answers)
            self.recall_pub = self.create_publisher(String, "recall/result", latched_qos(10))
            self.goals_pub = self.create_publisher(PoseArray, "recall/goals", latched_qos(1))
            services = MutuallyExclusiveCallbackGroup()
            self.create_service(Trigger, "~/save", self.on_save, callback_group=services)
            self.create_service(Trigger, "~/load", self.on_load, callback_group=services)
            self.status_pub = self.create_publisher(String, "~/status", reliable_qos(10))
            self.markers_pub = self.create_publisher(MarkerArray, "~/markers", latched_qos(1))
            timers = MutuallyExclusiveCallbackGroup()
            self.create_timer(0.1, self.on_tick, callback_group=timers)
            self.create_timer(max(float(p["status_period_s"]), 0.05), self.publish_status, callback_group=timers)
            if float(p["markers_period_s"]) > 0:
                self.create_timer(float(p["markers_period_s"]), self.publish_markers, callback_group=timers)
            self.worker = threading.Thread(target=self._observe_loop, name="observe", daemon=True)
            self.worker.start()
            self.get_logger().info(f"memory {self.memory.name} ready ({self.memory_values})")

        # ------------------------------------------------------------------ bookkeeping
        def drop(self, stream: str, reason: str) -> None:
            key = reason_key(stream, reason)
            self.drops[key] += 1
            self.last_drop = f"{stream}: {reason}"
            now = time.monotonic()
            if now - self.last_logged.get(key, -1e9) >= float(self.params["log_every_s"]):
                self.last_logged[key] = now
                count = self.drops[key]
                self.get_logger().warning(f"dropped {stream}: {reason}" + (f" ({count} so far of this kind)" if count > 1 else ""))

        def _input(self, stream: str, parse) -> None:
            """Parse one message and hand it to the assembler; a bad one is dropped, never raised."""
            self.received[stream] += 1
            began = time.perf_counter()
            try:
                stamp, value = parse()
                with self.input_lock:
                    for frame_stamp, reason in self.assembler.add(stream, stamp, value):
                        self.drop("frame", reason)
            except BadMessage as error:
                self.drop(stream, str(error))
                return
            except Exception as error:  # a message no check foresaw: still never fatal
                self.drop(stream, f"unexpected {type(error).__name__}: {error}")
                return
            if stream in ("rgb", "depth", "detections", "odom"):
                self.assemble()
            self.callback_s[stream] += time.perf_counter() - began

        # ------------------------------------------------------------------ inputs
        def on_rgb(self, msg) -> None:
            self._input("rgb", lambda: (convert.stamp_to_seconds(msg.header.stamp), convert.rgb_from_msg(msg)))

        def on_depth(self, msg) -> None:
            scale = float(self.params["depth_scale_16u"])
            self._input("depth", lambda: (convert.stamp_to_seconds(msg.header.stamp), convert.depth_from_msg(msg, scale)))

        def on_camera_info(self, msg) -> None:
            def parse():
                info = convert.intrinsics_from_msg(msg)
                if info["distorted"] and not getattr(self, "_warned_distortion", False):
                    self._warned_distortion = True
                    self.get_logger().warning("camera_info has non-zero distortion: images are used as if rectified")
                return convert.stamp_to_seconds(msg.header.stamp), info

            self._input("camera_info", parse)

        def on_odom(self, msg) -> None:
            frame = self.params["map_frame"]

            def parse():
                if msg.header.frame_id and frame and msg.header.frame_id not in (frame, "odom"):
                    raise BadMessage(f"odometry frame {msg.header.frame_id!r} is neither {frame!r} nor 'odom'")
                return convert.stamp_to_seconds(msg.header.stamp), convert.pose_from_msg(msg.pose.pose, "odometry pose")

            self._input("odom", parse)

        def on_detections(self, msg) -> None:
            def parse():
                stamp, size, detections = convert.detections_from_json(msg.data)
                return stamp, (size, detections)

            self._input("detections", parse)

        def on_event(self, kind: str, msg) -> None:
            def parse():
                event = convert.event_from_msg(kind, msg)
                return event.stamp, event

            self._input("event", parse)

        def on_mount(self, msg) -> None:
            try:
                self.mount = convert.pose_from_transform(msg.transform)
                self.get_logger().info(f"camera mount {msg.header.frame_id} -> {msg.child_frame_id}: {self.mount}")
            except BadMessage as error:
                self.drop("camera_mount", str(error))

        def on_floor_plan(self, msg) -> None:
            if self.params["floor_plan_file"]:
                return  # the file given at start wins
            try:
                self._set_floor_plan(convert.floor_plan_from_json(msg.data), "topic")
            except BadMessage as error:
                self.drop("floor_plan", str(error))

        def _set_floor_plan(self, plan, source: str) -> None:
            import json

            self.floor_plan = plan
            self.floor_plan_json = json.dumps(plan.to_dict())
            if hasattr(self.memory, "set_floor_plan"):
                self.memory.set_floor_plan(plan)
            if self.accepted:
                self.get_logger().warning(f"floor plan arrived after {self.accepted} observations: earlier frames have no rooms")
            self.get_logger().info(f"floor plan from {source}: rooms {plan.names()}")

        # ------------------------------------------------------------------ assembly
        def on_tick(self) -> None:
            self.assemble()

        def assemble(self) -> None:
            with self.input_lock:
                ready, dropped = self.assembler.poll()
            for _, reason in dropped:
                self.drop("frame", reason)
            for bundle in ready:
                if self.mount is None:
                    self.drop("frame", "no camera mount yet (camera_mount topic or body_T_camera parameter)")
                    continue
                try:
                    day = int(np.floor((bundle.stamp - float(self.params["day_origin_s"])) / SECONDS_PER_DAY))
                    obs = Observation(
                        stamp=bundle.stamp,
                        frame_id=int(round(bundle.stamp * 1000.0)),
                        rgb=bundle.rgb,
                        depth=bundle.depth,
                        pose=bundle.pose,
                        camera=convert.camera_from(bundle.intrinsics, self.mount),
                        detections=bundle.detections,
                        events=bundle.events,
                        day=max(day, 0),
                    )
                except ValueError as error:
                    self.drop("frame", str(error))
                    continue
                with self.work_ready:
                    self.work.append((obs, bundle.latency_start))
                    if len(self.work) > int(self.params["queue_size"]):
                        old, _ = self.work.popleft()
                        self.drop("frame", f"memory backlog over {self.params['queue_size']}: frame at {old.stamp:.3f} dropped")
                    self.work_ready.notify()

        def _observe_loop(self) -> None:
            while True:
                with self.work_ready:
                    while not self.work and not self.closing:
                        self.work_ready.wait(0.5)
                    if self.closing:
                        return
                    obs, started = self.work.popleft()
                with self.memory_lock:
                    began = time.perf_counter()
                    if self.bag is not None:
                        try:  # durable before it counts
                            self.bag.append(obs, self.floor_plan_json)
                        except Exception as error:
                            self.drop("bag", f"write failed, frame not observed: {type(error).__name__}: {error}")
                            continue
                        self.bag_s += time.perf_counter() - began
                        began = time.perf_counter()
                    try:
                        self.memory.observe(obs)
                    except ValueError as error:  # the memory's own checks (e.g. older than its checkpoint)
                        self.refused += 1
                        self.drop("memory", str(error))
                        continue
                    except Exception as error:
                        self.refused += 1
                        self.drop("memory", f"unexpected {type(error).__name__}: {error}")
                        continue
                self.observe_s += time.perf_counter() - began
                self.accepted += 1
                self.latencies.append(time.monotonic() - started)
                if self.accepted % 5 == 1:
                    self.trail.append(obs.pose.position.copy())
                self.markers_dirty = True

        # ------------------------------------------------------------------ durability
        def _open_bag(self, path: str) -> None:
            """Observe what the bag holds beyond the memory, then start this run's file of it."""
            from . import bag

            if self.params["recover_from_bag"] and bag.bag_files(path):
                started = time.monotonic()
                if self.floor_plan is None:
                    plan = bag.latest_floor_plan(path)
                    if plan is not None:
                        self._set_floor_plan(convert.floor_plan_from_json(plan), "bag")
                gate = getattr(self.memory, "gate", None)
                skipped = 0
                for obs in bag.read_observations(path, float(self.params["day_origin_s"])):
                    if self.mount is None or not (self.mount == obs.camera.body_T_camera):
                        self.mount = obs.camera.body_T_camera
                    if gate is not None and obs.stamp <= gate.last_stamp:
                        skipped += 1
                        continue
                    try:
                        self.memory.observe(obs)
                    except ValueError as error:
                        self.drop("recovery", str(error))
                        continue
                    self.recovered += 1
                    self.accepted += 1
                    if self.accepted % 5 == 1:
                        self.trail.append(obs.pose.position.copy())
                self.get_logger().info(f"recovered {self.recovered} observations from {path} in {time.monotonic() - started:.1f} s ({skipped} already in the memory)")
            self.bag = bag.ObservationBag(path, self.params["map_frame"], fsync=bool(self.params["bag_fsync"]))
            self.get_logger().info(f"durable log: {self.bag.path}")

        # ------------------------------------------------------------------ recall
        def on_recall(self, msg) -> None:
            started = time.perf_counter()
            request_id = None
            try:
                request = json_object(msg.data, "recall request")
                request_id = request.get("id")
                near = request.get("near")
                time_range = request.get("time_range")
                query = Query(
                    text=str(request.get("text", "")),
                    k=int(request.get("k", 5)),
                    time_range=None if time_range is None else tuple(time_range),
                    near=None if near is None else Pose.from_dict(near),
                    constraints=request.get("constraints"),
                )
                memory = self.memory  # a load swaps the reference; this answer uses one memory throughout
                recall = memory.recall(query)
            except (ValueError, TypeError, KeyError) as error:
                self.recall_pub.publish(string_msg({"id": request_id, "ok": False, "error": str(error), "hits": [], "goals": []}))
                self.get_logger().warning(f"recall {request_id}: refused: {error}")
                return
            stamp = self.get_clock().now().nanoseconds * 1e-9
            frame = self.params["map_frame"]
            best: dict[int, object] = {}
            for hit in recall.hits:
                if hit.agent_pose is not None and (hit.goal_index not in best or hit.score > best[hit.goal_index].score):
                    best[hit.goal_index] = hit
            goals = [
                {
                    "goal_index": index,
                    "header": {"stamp": convert.stamp_dict(stamp), "frame_id": frame},
                    "pose": best[index].agent_pose.to_dict(),
                    "target_xyz": None if best[index].target_xyz is None else [float(v) for v in best[index].target_xyz],
                }
                for index in sorted(best)
            ]
            result = {
                "id": request_id,
                "ok": True,
                "error": None,
                "system": recall.system,
                "latency_s": recall.latency_s,
                "frames_seen": self.accepted,
                "hits": [convert.hit_to_dict(h) for h in recall.hits],
                "goals": goals,
            }
            self.recall_pub.publish(string_msg(result))
            array = PoseArray()
            array.header.stamp = convert.seconds_to_stamp(stamp)
            array.header.frame_id = frame
            array.poses = [convert.pose_to_msg(best[index].agent_pose) for index in sorted(best)]
            self.goals_pub.publish(array)
            self.get_logger().info(f"recall {request_id}: {len(recall.hits)} hits in {(time.perf_counter() - started) * 1000:.1f} ms")

        # ------------------------------------------------------------------ checkpoints
        def on_save(self, request, response):
            path = str(self.get_parameter("checkpoint_path").value)
            if not path:
                response.success, response.message = False, "set the checkpoint_path parameter first"
                return response
            try:
                with self.memory_lock:
                    self.memory.save(path)
                    stats = self.memory.stats()
                response.success, response.message = True, f"saved {stats.frames_seen} frames ({stats.bytes} bytes) to {path}"
            except Exception as error:
                response.success, response.message = False, f"save to {path} failed: {type(error).__name__}: {error}"
            self.get_logger().info(response.message)
            return response

        def on_load(self, request, response):
            path = str(self.get_parameter("checkpoint_path").value)
            if not path:
                response.success, response.message = False, "set the checkpoint_path parameter first"
                return response
            response.success, response.message = self._load(path)
            (self.get_logger().info if response.success else self.get_logger().error)(response.message)
            return response

        def _load(self, path: str) -> tuple[bool, str]:
            """Load into a fresh memory, then swap it in: a failed load leaves the old one serving."""
            try:
                fresh, _ = build_memory(self.params)
                if self.floor_plan is not None and hasattr(fresh, "set_floor_plan"):
                    fresh.set_floor_plan(self.floor_plan)
                fresh.load(path)
            except Exception as error:
                return False, f"load of {path} failed, memory unchanged: {type(error).__name__}: {error}"
            with self.memory_lock:
                self.memory = fresh
            self.markers_dirty = True
            stats = fresh.stats()
            return True, f"loaded {path}: {stats.frames_seen} frames, {stats.items} items"

        # ------------------------------------------------------------------ outputs
        def status(self) -> dict:
            stats = self.memory.stats()
            latencies = np.array(self.latencies) * 1000.0 if self.latencies else np.zeros(1)
            return {
                "memory": self.memory.name,
                "received": dict(self.received),
                "accepted": self.accepted,
                "refused_by_memory": self.refused,
                "dropped": int(sum(self.drops.values())),
                "drop_reasons": dict(self.drops),
                "last_drop": self.last_drop,
                "queue": len(self.work),
                "pending": self.assembler.pending(),
                "floor_plan": self.floor_plan is not None,
                "recovered": self.recovered,
                "bag": None if self.bag is None else {"path": str(self.bag.path), "frames": self.bag.frames, "messages": self.bag.messages},
                "camera_mount": self.mount is not None,
                "stats": {"items": stats.items, "bytes": stats.bytes, "frames_seen": stats.frames_seen},
                "callback_ms_mean": {k: 1000.0 * v / max(self.received[k], 1) for k, v in self.callback_s.items()},
                "observe_ms_mean": 1000.0 * self.observe_s / max(self.accepted, 1),
                "bag_ms_mean": 1000.0 * self.bag_s / max(self.accepted - self.recovered, 1),
                "latency_ms_p50": float(np.percentile(latencies, 50)),
                "latency_ms_p95": float(np.percentile(latencies, 95)),
            }

        def publish_status(self) -> None:
            self.status_pub.publish(string_msg(self.status()))

        def publish_markers(self) -> None:
            if not self.markers_dirty:
                return
            self.markers_dirty = False
            try:
                markers = memory_markers(self.memory, list(self.trail), self.params["map_frame"], self.get_clock().now().to_msg())
            except Exception as error:  # a memory without a catalogue, or one mid-update
                self.get_logger().debug(f"markers: {error}")
                return
            self.markers_pub.publish(markers)

        def close(self) -> None:
            with self.work_ready:
                self.closing = True
                self.work_ready.notify_all()
            self.worker.join(timeout=5.0)
            if self.bag is not None:
                with self.memory_lock:
                    self.bag.close()
                self.bag = None

    return MemoryNode()


def memory_markers(memory, trail: list, frame: str, stamp):
    """What a memory remembers as markers: its entities (``catalog()``) and the robot's trail."""
    from geometry_msgs.msg import Point
    from visualization_msgs.msg import Marker, MarkerArray

    array = MarkerArray()
    clear = Marker()
    clear.header.frame_id, clear.header.stamp = frame, stamp
    clear.action = Marker.DELETEALL
    array.markers.append(clear)
    entities = memory.catalog() if hasattr(memory, "catalog") else []
    for index, entity in enumerate(entities):
        receptacle = entity.kind == "receptacle"
        x, y, z = (float(v) for v in entity.position)
        body = Marker()
        body.header.frame_id, body.header.stamp = frame, stamp
        body.ns, body.id = "entities", index
        body.type, body.action = Marker.CUBE if receptacle else Marker.SPHERE, Marker.ADD
        body.pose.position.x, body.pose.position.y, body.pose.position.z = x, y, z
        body.pose.orientation.w = 1.0
        size = 0.3 if receptacle else 0.15
        body.scale.x = body.scale.y = body.scale.z = size
        body.color.r, body.color.g, body.color.b, body.color.a = (0.2, 0.4, 1.0, 0.6) if receptacle else (0.1, 0.9, 0.2, 0.9)
        array.markers.append(body)
        label = Marker()
        label.header.frame_id, label.header.stamp = frame, stamp
        label.ns, label.id = "labels", index
        label.type, label.action = Marker.TEXT_VIEW_FACING, Marker.ADD
        label.pose.position.x, label.pose.position.y, label.pose.position.z = x, y, z + 0.25
        label.pose.orientation.w = 1.0
        label.scale.z = 0.12
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        label.text = entity.description
        array.markers.append(label)
    if len(trail) >= 2:
        line = Marker()
        line.header.frame_id, line.header.stamp = frame, stamp
        line.ns, line.id = "trail", 0
        line.type, line.action = Marker.LINE_STRIP, Marker.ADD
        line.pose.orientation.w = 1.0
        line.scale.x = 0.03
        line.color.r, line.color.g, line.color.b, line.color.a = 1.0, 0.6, 0.0, 0.8
        line.points = [Point(x=float(p[0]), y=float(p[1]), z=0.05) for p in trail]
        array.markers.append(line)
    return array


def main(argv: list[str] | None = None) -> int:
    return run_node(make_node, argv)


if __name__ == "__main__":
    raise SystemExit(main())
