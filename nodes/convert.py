"""ROS 2 messages <-> embodied_mem types, in plain numpy (no rclpy import at module level).

Readers (``*_from_msg``) take any object with the message's fields (a real rclpy message or a
stand-in), check it, and raise ``BadMessage`` naming the reason; nothing is half-converted.
Writers (``*_to_msg``) import the message class they build, so only they need the ROS wheels.

The wire formats this module defines (``docs/ros2.md`` is the contract):

- detections: ``std_msgs/String`` holding JSON (schema ``DETECTIONS_SCHEMA``); each mask is a
  run-length code over the row-major image, zeros first.
- grasp / release: ``geometry_msgs/PoseArray`` on topics ``grasp`` and ``release``;
  ``poses = [base_pose, gripper_pose]`` in the map frame, ``header.stamp`` = when it happened.
- camera mount: ``geometry_msgs/TransformStamped`` (what ``/tf_static`` would hold):
  ``base_link -> camera optical frame``.
- floor plan: ``std_msgs/String`` holding ``FloorPlan.to_dict()`` as JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from embodied_mem.types import DETECTION_KINDS, CameraInfo, Detection, Event, FloorPlan, Hit, Pose

DETECTIONS_SCHEMA = "embodied_mem/detections/1"
RGB_ENCODINGS = {"rgb8": (3, False), "bgr8": (3, True), "rgba8": (4, False), "bgra8": (4, True)}
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
MAX_PIXELS = 8192 * 8192  # anything larger is refused before allocating it


class BadMessage(ValueError):
    """A message that cannot become part of an observation; ``str()`` is the reason."""


# ---------------------------------------------------------------------------------- time
def stamp_to_seconds(stamp) -> float:
    sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    if not 0 <= nanosec < 1_000_000_000:
        raise BadMessage(f"header.stamp.nanosec {nanosec} out of range")
    return sec + nanosec * 1e-9


def seconds_to_stamp(seconds: float):
    from builtin_interfaces.msg import Time

    whole = math.floor(seconds)
    nanos = int(round((seconds - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return Time(sec=int(whole), nanosec=nanos)


def stamp_dict(seconds: float) -> dict:
    whole = math.floor(seconds)
    nanos = int(round((seconds - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return {"sec": int(whole), "nanosec": nanos}


def stamp_from_dict(data: Any) -> float:
    if not isinstance(data, dict) or "sec" not in data:
        raise BadMessage(f"stamp must be {{'sec', 'nanosec'}}, got {data!r}")
    try:
        sec, nanosec = int(data["sec"]), int(data.get("nanosec", 0))
    except (TypeError, ValueError) as error:
        raise BadMessage(f"stamp must hold integers, got {data!r}") from error
    if not 0 <= nanosec < 1_000_000_000:
        raise BadMessage(f"stamp.nanosec {nanosec} out of range")
    return sec + nanosec * 1e-9


# ---------------------------------------------------------------------------------- images
def _image_buffer(msg, channels: int, itemsize: int) -> np.ndarray:
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise BadMessage(f"image is {width}x{height}: zero size")
    if height * width > MAX_PIXELS:
        raise BadMessage(f"image is {width}x{height}: larger than {MAX_PIXELS} pixels")
    row = width * channels * itemsize
    if step < row:
        raise BadMessage(f"image step {step} is less than width*channels*bytes = {row}")
    data = msg.data
    size = len(data)
    if size != step * height:
        raise BadMessage(f"image data is {size} bytes, step*height = {step * height} (truncated or padded)")
    buffer = np.asarray(data, dtype=np.uint8) if isinstance(data, list) else np.frombuffer(data, dtype=np.uint8)
    return buffer.reshape(height, step)[:, :row]


def rgb_from_msg(msg) -> np.ndarray:
    """uint8 HxWx3 RGB from a ``sensor_msgs/Image`` in rgb8 / bgr8 (rgba8 / bgra8: alpha dropped)."""
    encoding = str(msg.encoding).lower()
    if encoding not in RGB_ENCODINGS:
        raise BadMessage(f"rgb encoding {msg.encoding!r} not supported (use {', '.join(RGB_ENCODINGS)})")
    channels, bgr = RGB_ENCODINGS[encoding]
    rows = _image_buffer(msg, channels, 1)
    image = rows.reshape(int(msg.height), int(msg.width), channels)[:, :, :3]
    if bgr:
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


def depth_from_msg(msg, scale_16u: float = 0.001) -> np.ndarray:
    """float32 HxW metres from 16UC1 / mono16 (millimetres; 0 = no return) or 32FC1 (metres)."""
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise BadMessage(f"depth encoding {encoding!r} not supported (use 16UC1 in mm or 32FC1 in m)")
    float_depth = encoding == "32FC1"
    itemsize = 4 if float_depth else 2
    rows = _image_buffer(msg, 1, itemsize)
    order = ">" if int(msg.is_bigendian) else "<"
    dtype = np.dtype(f"{order}f4") if float_depth else np.dtype(f"{order}u2")
    values = np.ascontiguousarray(rows).view(dtype).reshape(int(msg.height), int(msg.width))
    depth = values.astype(np.float32) if float_depth else values.astype(np.float32) * np.float32(scale_16u)
    if float_depth and np.any(depth < 0):
        raise BadMessage("depth has negative values")
    return depth


def rgb_to_msg(rgb: np.ndarray, stamp: float, frame_id: str):
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp = seconds_to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg


def depth_to_msg(depth: np.ndarray, stamp: float, frame_id: str, encoding: str = "32FC1"):
    """32FC1 metres (NaN / 0 = no return), or 16UC1 millimetres (0 = no return)."""
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp = seconds_to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(depth.shape[0]), int(depth.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    if encoding == "32FC1":
        msg.step = msg.width * 4
        msg.data = np.ascontiguousarray(depth, dtype="<f4").tobytes()
    elif encoding == "16UC1":
        millimetres = np.where(np.isfinite(depth), np.clip(np.round(depth * 1000.0), 0, 65535), 0)
        msg.step = msg.width * 2
        msg.data = millimetres.astype("<u2").tobytes()
    else:
        raise ValueError(f"depth encoding must be 32FC1 or 16UC1, got {encoding!r}")
    return msg


# ---------------------------------------------------------------------------------- camera
def intrinsics_from_msg(msg) -> dict:
    """width, height, fx, fy, cx, cy of a ``sensor_msgs/CameraInfo`` (k = row-major 3x3)."""
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise BadMessage(f"camera_info is {width}x{height}: zero size")
    k = [float(v) for v in msg.k]
    if len(k) != 9 or not all(math.isfinite(v) for v in k):
        raise BadMessage(f"camera_info.k must be 9 finite numbers, got {k}")
    fx, fy, cx, cy = k[0], k[4], k[2], k[5]
    if fx <= 0 or fy <= 0:
        raise BadMessage(f"camera_info focal lengths must be positive, got fx={fx} fy={fy}")
    distorted = any(abs(float(v)) > 1e-9 for v in msg.d)
    return {"width": width, "height": height, "fx": fx, "fy": fy, "cx": cx, "cy": cy, "distorted": distorted}


def camera_from(intrinsics: dict, body_T_camera: Pose) -> CameraInfo:
    return CameraInfo(intrinsics["width"], intrinsics["height"], intrinsics["fx"], intrinsics["fy"], intrinsics["cx"], intrinsics["cy"], body_T_camera)


def camera_info_to_msg(camera: CameraInfo, stamp: float, frame_id: str):
    from sensor_msgs.msg import CameraInfo as CameraInfoMsg

    msg = CameraInfoMsg()
    msg.header.stamp = seconds_to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(camera.width), int(camera.height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [float(camera.fx), 0.0, float(camera.cx), 0.0, float(camera.fy), float(camera.cy), 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [float(camera.fx), 0.0, float(camera.cx), 0.0, 0.0, float(camera.fy), float(camera.cy), 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


# ---------------------------------------------------------------------------------- poses
def pose_from_msg(msg, what: str = "pose") -> Pose:
    """A ``Pose`` from a ``geometry_msgs/Pose``; NaN or a non-unit quaternion is a BadMessage."""
    p, q = msg.position, msg.orientation
    try:
        return Pose(np.array([p.x, p.y, p.z], dtype=np.float64), np.array([q.x, q.y, q.z, q.w], dtype=np.float64))
    except ValueError as error:
        raise BadMessage(f"{what}: {error}") from error


def pose_from_transform(msg) -> Pose:
    """A ``Pose`` from a ``geometry_msgs/Transform``."""
    t, q = msg.translation, msg.rotation
    try:
        return Pose(np.array([t.x, t.y, t.z], dtype=np.float64), np.array([q.x, q.y, q.z, q.w], dtype=np.float64))
    except ValueError as error:
        raise BadMessage(f"transform: {error}") from error


def pose_to_msg(pose: Pose):
    from geometry_msgs.msg import Pose as PoseMsg

    msg = PoseMsg()
    msg.position.x, msg.position.y, msg.position.z = (float(v) for v in pose.position)
    msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = (float(v) for v in pose.orientation)
    return msg


def pose_stamped_to_msg(pose: Pose, stamp: float, frame_id: str):
    from geometry_msgs.msg import PoseStamped

    msg = PoseStamped()
    msg.header.stamp = seconds_to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.pose = pose_to_msg(pose)
    return msg


def odometry_to_msg(pose: Pose, stamp: float, frame_id: str, child_frame_id: str):
    from nav_msgs.msg import Odometry

    msg = Odometry()
    msg.header.stamp = seconds_to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.child_frame_id = child_frame_id
    msg.pose.pose = pose_to_msg(pose)
    return msg


def transform_to_msg(pose: Pose, stamp: float, parent: str, child: str):
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped()
    msg.header.stamp = seconds_to_stamp(stamp)
    msg.header.frame_id = parent
    msg.child_frame_id = child
    t, q = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = (float(v) for v in pose.position)
    q.x, q.y, q.z, q.w = (float(v) for v in pose.orientation)
    return msg


def pose_list(text_or_list) -> Pose | None:
    """``"x y z qx qy qz qw"`` (or a 7-list) -> Pose; empty -> None."""
    if isinstance(text_or_list, str):
        text_or_list = text_or_list.replace(",", " ").split()
    values = [float(v) for v in text_or_list]
    if not values:
        return None
    if len(values) != 7:
        raise ValueError(f"a pose is 7 numbers (x y z qx qy qz qw), got {len(values)}")
    return Pose(np.array(values[:3]), np.array(values[3:]))


# ---------------------------------------------------------------------------------- events
EVENT_TOPICS = ("grasp", "release")


def event_from_msg(kind: str, msg) -> Event:
    """A grasp / release ``Event`` from a ``geometry_msgs/PoseArray`` [base_pose, gripper_pose]."""
    if kind not in EVENT_TOPICS:
        raise BadMessage(f"event kind must be one of {EVENT_TOPICS}, got {kind!r}")
    poses = list(msg.poses)
    if len(poses) != 2:
        raise BadMessage(f"{kind} event needs poses [base, gripper], got {len(poses)} poses")
    stamp = stamp_to_seconds(msg.header.stamp)
    base = pose_from_msg(poses[0], f"{kind}.base_pose")
    gripper = pose_from_msg(poses[1], f"{kind}.gripper_pose")
    return Event(kind, stamp, base_pose=base, gripper_pose=gripper)


def event_to_msg(event: Event, frame_id: str):
    from geometry_msgs.msg import PoseArray

    msg = PoseArray()
    msg.header.stamp = seconds_to_stamp(event.stamp)
    msg.header.frame_id = frame_id
    msg.poses = [pose_to_msg(event.base_pose), pose_to_msg(event.gripper_pose)]
    return msg


# ---------------------------------------------------------------------------------- detections
def mask_to_rle(mask: np.ndarray) -> list[int]:
    """Run lengths of a bool mask in row-major order, starting with a run of False (maybe 0)."""
    flat = np.asarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return []
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return [int(r) for r in runs]


def mask_from_rle(counts, height: int, width: int) -> np.ndarray:
    if not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise BadMessage("mask rle must be a list of non-negative integers")
    total = height * width
    if sum(counts) != total:
        raise BadMessage(f"mask rle covers {sum(counts)} pixels, image has {total}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape(height, width)


def detections_to_json(detections: list[Detection], stamp: float, frame_id: str, height: int, width: int) -> str:
    items = []
    for detection in detections:
        items.append(
            {
                "label": detection.label,
                "score": float(detection.score),
                "kind": detection.kind,
                "attributes": dict(detection.attributes),
                "instance_id": None if detection.instance_id is None else int(detection.instance_id),
                "mask": {"rle": mask_to_rle(detection.mask)},
            }
        )
    return json.dumps(
        {
            "schema": DETECTIONS_SCHEMA,
            "header": {"stamp": stamp_dict(stamp), "frame_id": frame_id},
            "height": int(height),
            "width": int(width),
            "detections": items,
        },
        separators=(",", ":"),
    )


def detections_from_json(text: str) -> tuple[float, tuple[int, int], list[Detection]]:
    """(stamp, (height, width), detections) from the JSON of ``detections_to_json``."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as error:
        raise BadMessage(f"detections are not JSON: {error}") from error
    if not isinstance(data, dict) or data.get("schema", DETECTIONS_SCHEMA) != DETECTIONS_SCHEMA:
        raise BadMessage(f"detections must be a {DETECTIONS_SCHEMA} object")
    header = data.get("header")
    if not isinstance(header, dict):
        raise BadMessage("detections need a header {stamp, frame_id}")
    stamp = stamp_from_dict(header.get("stamp"))
    try:
        height, width = int(data["height"]), int(data["width"])
    except (KeyError, TypeError, ValueError) as error:
        raise BadMessage("detections need integer height and width") from error
    if height <= 0 or width <= 0 or height * width > MAX_PIXELS:
        raise BadMessage(f"detections are for a {width}x{height} image")
    items = data.get("detections", [])
    if not isinstance(items, list):
        raise BadMessage("detections.detections must be a list")
    found = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("mask"), dict):
            raise BadMessage(f"detections[{index}] needs a label and a mask {{rle}}")
        mask = mask_from_rle(item["mask"].get("rle"), height, width)
        kind = item.get("kind", "object")
        if kind not in DETECTION_KINDS:
            raise BadMessage(f"detections[{index}].kind must be one of {DETECTION_KINDS}, got {kind!r}")
        try:
            found.append(
                Detection(
                    label=item.get("label"),
                    mask=mask,
                    score=item.get("score", 1.0),
                    kind=kind,
                    attributes=item.get("attributes") or {},
                    instance_id=item.get("instance_id"),
                )
            )
        except ValueError as error:
            raise BadMessage(f"detections[{index}]: {error}") from error
    return stamp, (height, width), found


# ---------------------------------------------------------------------------------- floor plan
def floor_plan_from_json(text: str) -> FloorPlan:
    try:
        return FloorPlan.from_dict(json.loads(text))
    except (TypeError, ValueError, KeyError) as error:
        raise BadMessage(f"floor plan: {error}") from error


# ---------------------------------------------------------------------------------- recall
def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Pose):
        return value.to_dict()
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def hit_to_dict(hit: Hit) -> dict:
    return {
        "frame_id": None if hit.frame_id is None else int(hit.frame_id),
        "stamp": None if hit.stamp is None else float(hit.stamp),
        "agent_pose": None if hit.agent_pose is None else hit.agent_pose.to_dict(),
        "target_xyz": None if hit.target_xyz is None else [float(v) for v in hit.target_xyz],
        "object_id": None if hit.object_id is None else int(hit.object_id),
        "score": float(hit.score),
        "system": hit.system,
        "goal_index": hit.goal_index,
        "evidence": _plain(hit.evidence),
    }


def hit_from_dict(data: dict) -> Hit:
    return Hit(
        frame_id=data.get("frame_id"),
        stamp=data.get("stamp"),
        agent_pose=None if data.get("agent_pose") is None else Pose.from_dict(data["agent_pose"]),
        target_xyz=None if data.get("target_xyz") is None else np.asarray(data["target_xyz"], dtype=np.float64),
        object_id=data.get("object_id"),
        score=float(data.get("score", 0.0)),
        system=str(data.get("system", "")),
        evidence=dict(data.get("evidence") or {}),
    )


def string_message(text: str):
    from std_msgs.msg import String

    return String(data=text)


def to_json(value: Any) -> str:
    return json.dumps(_plain(value), separators=(",", ":"))
