"""The memory node's durable log: every accepted observation, in a rosbag2-compatible MCAP bag,
on disk before the memory is given it.

A bag is a directory as rosbag2 makes one: ``<dir>/<name>_<n>.mcap``, one file per run of the
node (a run after a crash starts the next file; the last file of a crashed run simply ends where
the crash cut it), and ``metadata.yaml`` written when a run closes cleanly. Each file has MCAP's
``ros2`` profile: schemas are ``ros2msg`` text (the ``.msg`` definitions with their
dependencies, as rosbag2 writes them) and messages are CDR, serialised by rclpy.

Each observation is written as the messages of the node's own input contract (docs/ros2.md),
with the observation's stamp as log time: odometry, camera_info, detections (JSON), its grasp /
release events, depth (32FC1, exact) and, last, rgb (rgb8). The rgb message closes a frame: on
recovery a frame whose rgb was not written (the crash came mid-frame) is ignored, and it was
never observed. Messages are not chunked, and the file is flushed and fsync'ed after each frame,
so a kill -9 loses nothing that counted. The camera mount (``TransformStamped``) and the floor plan
(``String``) are written when they change.

``ros2 bag play <dir>`` (after ``ros2 bag reindex <dir>`` for a run that crashed) plays it into any
memory node; ``read_observations`` reads it back here without ROS 2's bag tools.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Iterator

from embodied_mem.types import Observation, Pose

from . import convert

TOPICS = {
    "odom": "nav_msgs/msg/Odometry",
    "camera/rgb/camera_info": "sensor_msgs/msg/CameraInfo",
    "detections": "std_msgs/msg/String",
    "grasp": "geometry_msgs/msg/PoseArray",
    "release": "geometry_msgs/msg/PoseArray",
    "camera/depth/image_raw": "sensor_msgs/msg/Image",
    "camera/rgb/image_raw": "sensor_msgs/msg/Image",
    "camera_mount": "geometry_msgs/msg/TransformStamped",
    "floor_plan": "std_msgs/msg/String",
}
PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "string", "wstring"}
SEPARATOR = "=" * 80


def message_class(type_name: str):
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def _msg_file(package: str, name: str) -> Path:
    """``share/<package>/msg/<name>.msg`` of a ROS install (AMENT_PREFIX_PATH) or of the venv the
    PyPI wheels installed into (they set no AMENT_PREFIX_PATH)."""
    import sys

    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        path = Path(prefix) / "share" / package / "msg" / f"{name}.msg"
        if path.exists():
            return path
    raise FileNotFoundError(f"no definition of {package}/msg/{name} under {prefixes}")


def message_definition(type_name: str) -> str:
    """The ``ros2msg`` text of a type with every type it uses, as rosbag2 writes it in MCAP."""
    package, _, name = type_name.split("/")
    seen: list[tuple[str, str]] = []

    def visit(pkg: str, msg: str) -> None:
        text = _msg_file(pkg, msg).read_text()
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            base = re.sub(r"\[.*\]$", "", line.split()[0])  # arrays
            base = re.sub(r"<=\d+$", "", base)  # bounded strings
            if base in PRIMITIVES:  # constants are always primitive
                continue
            dep_pkg, _, dep = base.rpartition("/")
            if not dep_pkg:
                dep_pkg = "std_msgs" if dep == "Header" else pkg
            if (dep_pkg, dep) not in seen:
                seen.append((dep_pkg, dep))
                visit(dep_pkg, dep)

    visit(package, name)
    parts = [_msg_file(package, name).read_text().rstrip("\n")]
    for dep_pkg, dep in seen:
        parts.append(f"{SEPARATOR}\nMSG: {dep_pkg}/{dep}\n{_msg_file(dep_pkg, dep).read_text().rstrip(chr(10))}")
    return "\n".join(parts) + "\n"


class ObservationBag:
    """Appends observations to ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, map_frame: str = "map", camera_frame: str = "camera_optical", base_frame: str = "base_link", fsync: bool = True) -> None:
        from mcap.writer import CompressionType, Writer

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.map_frame, self.camera_frame, self.base_frame = map_frame, camera_frame, base_frame
        self.fsync = fsync
        index = len(bag_files(self.directory))
        self.path = self.directory / f"{self.directory.name}_{index}.mcap"
        self.stream = open(self.path, "xb")
        self.writer = Writer(self.stream, compression=CompressionType.NONE, use_chunking=False)
        self.writer.start(profile="ros2", library="embodied_mem")
        self.channels: dict[str, int] = {}
        self.schemas: dict[str, int] = {}
        self.frames = 0
        self.messages = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.counts: dict[str, int] = {}
        self.mount: Pose | None = None
        self.plan_json: str | None = None
        self._sync()

    def _channel(self, topic: str) -> int:
        if topic not in self.channels:
            type_name = TOPICS[topic]
            if type_name not in self.schemas:
                self.schemas[type_name] = self.writer.register_schema(type_name, "ros2msg", message_definition(type_name).encode())
            self.channels[topic] = self.writer.register_channel("/" + topic, "cdr", self.schemas[type_name], {"offered_qos_profiles": ""})
        return self.channels[topic]

    def _write(self, topic: str, msg, log_ns: int) -> None:
        from rclpy.serialization import serialize_message

        self.writer.add_message(self._channel(topic), log_time=log_ns, data=serialize_message(msg), publish_time=log_ns)
        self.messages += 1
        self.counts[topic] = self.counts.get(topic, 0) + 1
        self.first_ns = log_ns if self.first_ns is None else min(self.first_ns, log_ns)
        self.last_ns = log_ns if self.last_ns is None else max(self.last_ns, log_ns)

    def _sync(self) -> None:
        self.writer.flush() if hasattr(self.writer, "flush") else None
        self.stream.flush()
        if self.fsync:
            os.fsync(self.stream.fileno())

    def write_context(self, mount: Pose | None, plan_json: str | None, stamp: float) -> None:
        """The camera mount and floor plan, when they differ from what the bag last holds."""
        log_ns = int(round(stamp * 1e9))
        if mount is not None and (self.mount is None or not self.mount == mount):
            self._write("camera_mount", convert.transform_to_msg(mount, stamp, self.base_frame, self.camera_frame), log_ns)
            self.mount = mount
        if plan_json is not None and plan_json != self.plan_json:
            self._write("floor_plan", convert.string_message(plan_json), log_ns)
            self.plan_json = plan_json

    def append(self, obs: Observation, plan_json: str | None = None) -> None:
        """Write one observation and make it durable; raises OSError when it cannot."""
        stamp = obs.stamp
        log_ns = int(round(stamp * 1e9))
        self.write_context(obs.camera.body_T_camera, plan_json, stamp)
        self._write("odom", convert.odometry_to_msg(obs.pose, stamp, self.map_frame, self.base_frame), log_ns)
        self._write("camera/rgb/camera_info", convert.camera_info_to_msg(obs.camera, stamp, self.camera_frame), log_ns)
        height, width = obs.rgb.shape[:2]
        self._write("detections", convert.string_message(convert.detections_to_json(obs.detections, stamp, self.camera_frame, height, width)), log_ns)
        for event in obs.events:
            if event.kind in convert.EVENT_TOPICS:
                self._write(event.kind, convert.event_to_msg(event, self.map_frame), log_ns)
        self._write("camera/depth/image_raw", convert.depth_to_msg(obs.depth, stamp, self.camera_frame, "32FC1"), log_ns)
        self._write("camera/rgb/image_raw", convert.rgb_to_msg(obs.rgb, stamp, self.camera_frame), log_ns)
        self._sync()
        self.frames += 1

    def close(self) -> None:
        """Finish the MCAP file (summary and footer) and write rosbag2's metadata.yaml."""
        self.writer.finish()
        self._sync()
        self.stream.close()
        write_metadata(self.directory)


def bag_files(directory: str | os.PathLike) -> list[Path]:
    directory = Path(directory)
    files = [p for p in directory.glob(f"{directory.name}_*.mcap") if p.stem.rsplit("_", 1)[-1].isdigit()]
    return sorted(files, key=lambda p: int(p.stem.rsplit("_", 1)[-1]))


def read_messages(directory: str | os.PathLike) -> Iterator[tuple[str, str, bytes, int]]:
    """(topic, type, CDR bytes, log time ns) of every message of every file, in order; a file cut
    short by a crash is read up to its last whole record."""
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader

    for path in bag_files(directory):
        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, str]] = {}
        with open(path, "rb") as stream:
            reader = StreamReader(stream, record_size_limit=1 << 30)
            try:
                for record in reader.records:
                    if isinstance(record, Schema):
                        schemas[record.id] = record.name
                    elif isinstance(record, Channel):
                        channels[record.id] = (record.topic.lstrip("/"), schemas.get(record.schema_id, ""))
                    elif isinstance(record, Message) and record.channel_id in channels:
                        topic, type_name = channels[record.channel_id]
                        yield topic, type_name, record.data, record.log_time
            except Exception:  # the end of a file a crash cut short
                continue


def read_observations(directory: str | os.PathLike, day_origin_s: float = 0.0) -> Iterator[Observation]:
    """The observations of a bag, rebuilt through the same checks as live messages."""
    import math

    from rclpy.serialization import deserialize_message

    mount: Pose | None = None
    group: dict = {}
    group_ns = None
    for topic, type_name, data, log_ns in read_messages(directory):
        msg = deserialize_message(data, message_class(type_name))
        if topic == "camera_mount":
            mount = convert.pose_from_transform(msg.transform)
            continue
        if topic == "floor_plan":
            continue
        if log_ns != group_ns:
            group, group_ns = {"events": []}, log_ns
        if topic in convert.EVENT_TOPICS:
            group["events"].append(convert.event_from_msg(topic, msg))
        else:
            group[topic] = msg
        if topic == "camera/rgb/image_raw" and mount is not None:
            stamp = convert.stamp_to_seconds(msg.header.stamp)
            _, size, detections = convert.detections_from_json(group["detections"].data)
            intrinsics = convert.intrinsics_from_msg(group["camera/rgb/camera_info"])
            yield Observation(
                stamp=stamp,
                frame_id=int(round(stamp * 1000.0)),
                rgb=convert.rgb_from_msg(msg),
                depth=convert.depth_from_msg(group["camera/depth/image_raw"]),
                pose=convert.pose_from_msg(group["odom"].pose.pose, "odometry"),
                camera=convert.camera_from(intrinsics, mount),
                detections=detections,
                events=group["events"],
                day=max(int(math.floor((stamp - day_origin_s) / 86400.0)), 0),
            )
            group, group_ns = {"events": []}, None


def latest_floor_plan(directory: str | os.PathLike) -> str | None:
    from rclpy.serialization import deserialize_message

    plan = None
    for topic, type_name, data, _ in read_messages(directory):
        if topic == "floor_plan":
            plan = deserialize_message(data, message_class(type_name)).data
    return plan


def write_metadata(directory: str | os.PathLike) -> None:
    """rosbag2's ``metadata.yaml`` for the bag's files (what ``ros2 bag info`` reads)."""
    import yaml

    directory = Path(directory)
    topics: dict[str, dict] = {}
    start, end, total = None, None, 0
    for topic, type_name, _, log_ns in read_messages(directory):
        entry = topics.setdefault(topic, {"type": type_name, "count": 0})
        entry["count"] += 1
        total += 1
        start = log_ns if start is None else min(start, log_ns)
        end = log_ns if end is None else max(end, log_ns)
    metadata = {
        "rosbag2_bagfile_information": {
            "version": 9,
            "storage_identifier": "mcap",
            "duration": {"nanoseconds": 0 if start is None else end - start},
            "starting_time": {"nanoseconds_since_epoch": start or 0},
            "message_count": total,
            "topics_with_message_count": [
                {
                    "topic_metadata": {"name": "/" + name, "type": entry["type"], "serialization_format": "cdr", "offered_qos_profiles": "", "type_description_hash": ""},
                    "message_count": entry["count"],
                }
                for name, entry in sorted(topics.items())
            ],
            "compression_format": "",
            "compression_mode": "",
            "relative_file_paths": [p.name for p in bag_files(directory)],
            "files": [],
            "custom_data": {},
            "ros_distro": "kilted",
        }
    }
    (directory / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False))
