"""Core data types that flow through embodied_mem.

Conventions (ROS REP-103): metres, seconds; world and body frames are x forward,
y left, z up; the camera optical frame is z forward, x right, y down; quaternions
are (x, y, z, w). A `Pose` is ``world_T_frame``: it maps points of the frame into
the world.

Every type validates itself on construction and raises ``ValueError`` naming the
bad field, so a bad message from a sensor never reaches a memory system.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EVENT_KINDS = ("grasp", "release", "day_start", "day_end")
DETECTION_KINDS = ("object", "receptacle")


def _vector(name: str, value: Any, size: int) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be {size} numbers, got {value!r}") from error
    if array.shape != (size,):
        raise ValueError(f"{name} must have {size} elements, got shape {np.shape(value)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    return array


def _finite_number(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a number, got {value!r}") from error
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


@dataclass(frozen=True, eq=False)
class Pose:
    """A rigid transform ``world_T_frame``: position (3,) and unit quaternion (x, y, z, w)."""

    position: np.ndarray
    orientation: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 0.0, 1.0]))

    def __post_init__(self) -> None:
        position = _vector("Pose.position", self.position, 3)
        quaternion = _vector("Pose.orientation", self.orientation, 4)
        norm = float(np.linalg.norm(quaternion))
        # A quaternion read from a message is rarely exactly unit; far from unit it is garbage.
        if abs(norm - 1.0) > 1e-3:
            raise ValueError(f"Pose.orientation must be a unit quaternion (x, y, z, w), got norm {norm:.6f}")
        object.__setattr__(self, "position", position)
        object.__setattr__(self, "orientation", quaternion / norm)

    @staticmethod
    def from_xy_yaw(x: float, y: float, yaw: float, z: float = 0.0) -> "Pose":
        """A planar pose: position (x, y, z), heading ``yaw`` about +z."""
        return Pose(np.array([x, y, z]), np.array([0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)]))

    @staticmethod
    def from_matrix(matrix: np.ndarray) -> "Pose":
        from embodied_mem.geometry import matrix_to_quaternion

        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise ValueError(f"Pose.from_matrix needs a 4x4 matrix, got {matrix.shape}")
        return Pose(matrix[:3, 3].copy(), matrix_to_quaternion(matrix[:3, :3]))

    def matrix(self) -> np.ndarray:
        """The 4x4 homogeneous matrix of this transform."""
        from embodied_mem.geometry import quaternion_to_matrix

        out = np.eye(4)
        out[:3, :3] = quaternion_to_matrix(self.orientation)
        out[:3, 3] = self.position
        return out

    @property
    def yaw(self) -> float:
        """Heading about +z (radians, in (-pi, pi])."""
        x, y, z, w = self.orientation
        return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))

    def compose(self, other: "Pose") -> "Pose":
        """``self * other``: the pose of ``other``'s frame in ``self``'s parent frame."""
        return Pose.from_matrix(self.matrix() @ other.matrix())

    def to_dict(self) -> dict:
        return {"position": self.position.tolist(), "orientation": self.orientation.tolist()}

    @staticmethod
    def from_dict(data: dict) -> "Pose":
        return Pose(data["position"], data["orientation"])

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Pose)
            and np.allclose(self.position, other.position)
            and np.allclose(self.orientation, other.orientation)
        )

    def __repr__(self) -> str:
        x, y, z = self.position
        return f"Pose(xyz=({x:.3f}, {y:.3f}, {z:.3f}), yaw={math.degrees(self.yaw):.1f}deg)"


@dataclass(frozen=True)
class CameraInfo:
    """Pinhole intrinsics and the camera's mount on the body (``body_T_camera``, optical frame)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    body_T_camera: Pose

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"CameraInfo.{name} must be a positive integer, got {value!r}")
        for name in ("fx", "fy"):
            if _finite_number(f"CameraInfo.{name}", getattr(self, name)) <= 0:
                raise ValueError(f"CameraInfo.{name} must be positive, got {getattr(self, name)!r}")
        for name in ("cx", "cy"):
            _finite_number(f"CameraInfo.{name}", getattr(self, name))
        if not isinstance(self.body_T_camera, Pose):
            raise ValueError(f"CameraInfo.body_T_camera must be a Pose, got {type(self.body_T_camera).__name__}")

    def intrinsic_matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def to_dict(self) -> dict:
        data = {name: getattr(self, name) for name in ("width", "height", "fx", "fy", "cx", "cy")}
        data["body_T_camera"] = self.body_T_camera.to_dict()
        return data

    @staticmethod
    def from_dict(data: dict) -> "CameraInfo":
        fields = dict(data)
        fields["body_T_camera"] = Pose.from_dict(fields["body_T_camera"])
        return CameraInfo(**fields)


@dataclass(frozen=True, eq=False)
class Event:
    """Something the robot itself did, as its own body reports it: proprioception only.

    ``grasp`` / ``release``: the gripper closed on / let go of something, with the robot's base
    pose and the gripper pose at that moment (both ``world_T_frame`` in the same frame as
    ``Observation.pose``). ``day_start`` / ``day_end``: the robot's own schedule. An event names
    no entity, category or room: what was grasped and where it was put are the memory's
    inference from what it perceives.
    """

    kind: str
    stamp: float
    base_pose: Pose | None = None
    gripper_pose: Pose | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"Event.kind must be one of {EVENT_KINDS}, got {self.kind!r}")
        object.__setattr__(self, "stamp", _finite_number("Event.stamp", self.stamp))
        for name in ("base_pose", "gripper_pose"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Pose):
                raise ValueError(f"Event.{name} must be a Pose or None, got {type(value).__name__}")
            if value is None and self.kind in ("grasp", "release"):
                raise ValueError(f"Event.{name} is required for a {self.kind} event")

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "stamp": self.stamp,
            "base_pose": None if self.base_pose is None else self.base_pose.to_dict(),
            "gripper_pose": None if self.gripper_pose is None else self.gripper_pose.to_dict(),
        }

    @staticmethod
    def from_dict(data: dict) -> "Event":
        return Event(
            data["kind"],
            data["stamp"],
            None if data.get("base_pose") is None else Pose.from_dict(data["base_pose"]),
            None if data.get("gripper_pose") is None else Pose.from_dict(data["gripper_pose"]),
        )


@dataclass(frozen=True, eq=False)
class Detection:
    """One thing a perception module found in one frame: a class-labelled mask.

    ``kind`` is the detector's coarse class group ("object": things the robot can pick up;
    "receptacle": furniture they rest on). ``attributes`` are the detector's per-frame guesses
    (colour, material, ...), possibly wrong. ``instance_id`` is a persistent identity and is set
    only by the ``gt`` perception mode (an upper bound); a real detector gives None, so every
    memory does its own data association.
    """

    label: str
    mask: np.ndarray  # bool HxW
    score: float = 1.0
    kind: str = "object"
    attributes: dict[str, str] = field(default_factory=dict)
    instance_id: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"Detection.label must be a non-empty str, got {self.label!r}")
        if self.kind not in DETECTION_KINDS:
            raise ValueError(f"Detection.kind must be one of {DETECTION_KINDS}, got {self.kind!r}")
        mask = self.mask
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.ndim != 2:
            raise ValueError(f"Detection.mask must be a 2-D bool array, got {getattr(mask, 'dtype', type(mask).__name__)} {getattr(mask, 'shape', '')}")
        score = _finite_number("Detection.score", self.score)
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"Detection.score must be in [0, 1], got {score}")
        object.__setattr__(self, "score", score)
        if not isinstance(self.attributes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in self.attributes.items()):
            raise ValueError(f"Detection.attributes must map str to str, got {self.attributes!r}")
        if self.instance_id is not None and (not isinstance(self.instance_id, (int, np.integer)) or self.instance_id <= 0):
            raise ValueError(f"Detection.instance_id must be a positive int or None, got {self.instance_id!r}")


@dataclass(frozen=True)
class Region:
    """A named region of a floor plan: a polygon in the world's x, y plane."""

    name: str
    polygon: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Region.name must be a non-empty str, got {self.name!r}")
        points = np.asarray(self.polygon, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3 or not np.all(np.isfinite(points)):
            raise ValueError(f"Region.polygon of {self.name!r} must be 3 or more finite (x, y) points")
        object.__setattr__(self, "polygon", tuple(map(tuple, points.tolist())))

    def contains(self, x: float, y: float) -> bool:
        """Even-odd rule; points on the lower / left edges count as inside."""
        inside = False
        points = self.polygon
        for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]):
            if (y0 <= y) != (y1 <= y):
                if x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
                    inside = not inside
        return inside

    def center(self) -> np.ndarray:
        return np.asarray(self.polygon).mean(axis=0)


@dataclass(frozen=True)
class FloorPlan:
    """The map a robot is deployed with: named regions (rooms). Rooms come from here, never
    from a per-frame label."""

    regions: tuple[Region, ...]

    def __post_init__(self) -> None:
        regions = tuple(self.regions)
        if not all(isinstance(r, Region) for r in regions):
            raise ValueError("FloorPlan.regions must hold Region objects")
        names = [r.name for r in regions]
        if len(set(names)) != len(names):
            raise ValueError(f"FloorPlan region names must be unique, got {names}")
        object.__setattr__(self, "regions", regions)

    def room_at(self, xy) -> str | None:
        x, y = float(xy[0]), float(xy[1])
        for region in self.regions:
            if region.contains(x, y):
                return region.name
        return None

    def region(self, name: str) -> Region | None:
        return next((r for r in self.regions if r.name == name), None)

    def names(self) -> list[str]:
        return [r.name for r in self.regions]

    def to_dict(self) -> dict:
        return {"regions": [{"name": r.name, "polygon": [list(p) for p in r.polygon]} for r in self.regions]}

    @staticmethod
    def from_dict(data: dict) -> "FloorPlan":
        return FloorPlan(tuple(Region(r["name"], tuple(map(tuple, r["polygon"]))) for r in data["regions"]))


@dataclass(eq=False)
class Observation:
    """One time step of the robot: what its sensors and its own body report, nothing more.

    - ``rgb``: uint8 HxWx3; ``depth``: float32 HxW in metres along the optical axis, where 0,
      NaN or inf mean "no return" (as in a ROS 32FC1 depth image); negative depth is an error.
    - ``pose``: ``world_T_body`` as the robot's localisation reports it (with its drift);
      ``camera``: intrinsics and ``body_T_camera``.
    - ``detections``: what the perception module found in this frame (class-labelled masks, no
      persistent ids except in the ``gt`` upper-bound mode).
    - ``events``: the robot's own grasp / release (with base and gripper pose) and schedule.
    - ``day``: the robot's own calendar day.

    No entity id, category, attribute or room label comes with a frame or an event: rooms come
    from the ``FloorPlan`` a robot is deployed with, entities from the memory's own association.
    ``validate()`` runs on construction and again where a memory takes the frame, so a field
    changed after construction is caught before it is stored.
    """

    stamp: float
    frame_id: int
    rgb: np.ndarray
    depth: np.ndarray
    pose: Pose
    camera: CameraInfo
    detections: list[Detection] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    day: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; ``ValueError`` names the first bad one."""
        self.stamp = _finite_number("Observation.stamp", self.stamp)
        if isinstance(self.frame_id, bool) or not isinstance(self.frame_id, (int, np.integer)) or self.frame_id < 0:
            raise ValueError(f"Observation.frame_id must be a non-negative int, got {self.frame_id!r}")
        if isinstance(self.day, bool) or not isinstance(self.day, (int, np.integer)) or self.day < 0:
            raise ValueError(f"Observation.day must be a non-negative int, got {self.day!r}")
        if not isinstance(self.pose, Pose):
            raise ValueError(f"Observation.pose must be a Pose, got {type(self.pose).__name__}")
        if not isinstance(self.camera, CameraInfo):
            raise ValueError(f"Observation.camera must be a CameraInfo, got {type(self.camera).__name__}")
        self._check_images()
        if not isinstance(self.detections, list):
            raise ValueError(f"Observation.detections must be a list, got {type(self.detections).__name__}")
        for index, detection in enumerate(self.detections):
            if not isinstance(detection, Detection):
                raise ValueError(f"Observation.detections[{index}] must be a Detection, got {type(detection).__name__}")
            if detection.mask.shape != self.rgb.shape[:2]:
                raise ValueError(f"Observation.detections[{index}].mask shape {detection.mask.shape} does not match rgb {self.rgb.shape[:2]}")
        if not isinstance(self.events, list):
            raise ValueError(f"Observation.events must be a list, got {type(self.events).__name__}")
        for index, event in enumerate(self.events):
            if not isinstance(event, Event):
                raise ValueError(f"Observation.events[{index}] must be an Event, got {type(event).__name__}")

    def _check_images(self) -> None:
        rgb, depth = self.rgb, self.depth
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
            raise ValueError(f"Observation.rgb must be a uint8 array, got {getattr(rgb, 'dtype', type(rgb).__name__)}")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
            raise ValueError(f"Observation.rgb must be HxWx3 and non-empty, got shape {rgb.shape}")
        if not isinstance(depth, np.ndarray) or depth.dtype != np.float32:
            raise ValueError(f"Observation.depth must be a float32 array, got {getattr(depth, 'dtype', type(depth).__name__)}")
        if depth.shape != rgb.shape[:2]:
            raise ValueError(f"Observation.depth shape {depth.shape} does not match rgb {rgb.shape[:2]}")
        if np.any(depth < 0):  # NaN compares False, so NaN "no return" pixels pass
            raise ValueError("Observation.depth has negative values")
        expected = (self.camera.height, self.camera.width)
        if rgb.shape[:2] != expected:
            raise ValueError(f"Observation.rgb is {rgb.shape[:2]} but camera says {expected} (height, width)")

    @property
    def world_T_camera(self) -> Pose:
        return self.pose.compose(self.camera.body_T_camera)

    def valid_depth(self) -> np.ndarray:
        """Boolean HxW mask of pixels with a usable depth return."""
        return np.isfinite(self.depth) & (self.depth > 0)


@dataclass
class Query:
    """A request to a memory.

    ``constraints`` is the structured form of a task (see ``embodied_mem.sim.tasks``); the
    ``language`` track leaves it None and the memory must work from ``text`` alone.
    ``near`` is the robot's current pose, when the caller wants answers relative to it.
    """

    text: str
    k: int = 5
    time_range: tuple[float, float] | None = None
    near: Pose | None = None
    constraints: dict | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; ``ValueError`` names the first bad one (memories call it again)."""
        if not isinstance(self.text, str):
            raise ValueError(f"Query.text must be a str, got {type(self.text).__name__}")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k <= 0:
            raise ValueError(f"Query.k must be a positive int, got {self.k!r}")
        if self.time_range is not None:
            if not isinstance(self.time_range, (tuple, list)) or len(self.time_range) != 2:
                raise ValueError(f"Query.time_range must be (start, end), got {self.time_range!r}")
            start, end = (_finite_number("Query.time_range", value) for value in self.time_range)
            if end < start:
                raise ValueError(f"Query.time_range must be (start, end) with start <= end, got {self.time_range}")
            self.time_range = (start, end)
        if self.near is not None and not isinstance(self.near, Pose):
            raise ValueError(f"Query.near must be a Pose or None, got {type(self.near).__name__}")
        if self.constraints is not None and not isinstance(self.constraints, dict):
            raise ValueError(f"Query.constraints must be a dict or None, got {type(self.constraints).__name__}")


@dataclass
class Hit:
    """One answer: a remembered frame and, where known, the thing and a place to go.

    ``agent_pose`` is where the robot should stand (usually the pose it saw the target from);
    ``target_xyz`` is the target's position in the world. ``evidence`` is free-form and
    system-specific; ``evidence["goal_index"]`` says which goal of a multi-goal task a hit serves.
    """

    frame_id: int | None
    stamp: float | None
    agent_pose: Pose | None
    target_xyz: np.ndarray | None
    object_id: int | None
    score: float
    system: str
    evidence: dict = field(default_factory=dict)

    @property
    def goal_index(self) -> int:
        return int(self.evidence.get("goal_index", 0))


@dataclass
class Recall:
    hits: list[Hit]
    system: str
    latency_s: float


@dataclass
class MemoryStats:
    items: int
    bytes: int
    frames_seen: int
