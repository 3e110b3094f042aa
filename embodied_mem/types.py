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

EVENT_KINDS = ("pick", "place", "room_entered", "open", "close", "day_start", "day_end")


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


@dataclass(frozen=True)
class Event:
    """Something the robot did or noticed: pick, place, room_entered, ...

    Ids are the simulator's instance ids (the same ids as in ``Observation.instances``).
    """

    kind: str
    stamp: float
    object_id: int | None = None
    receptacle_id: int | None = None
    room: str | None = None
    text: str = ""

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"Event.kind must be one of {EVENT_KINDS}, got {self.kind!r}")
        object.__setattr__(self, "stamp", _finite_number("Event.stamp", self.stamp))
        for name in ("object_id", "receptacle_id"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (int, np.integer)):
                raise ValueError(f"Event.{name} must be an int or None, got {value!r}")
        if not isinstance(self.text, str):
            raise ValueError(f"Event.text must be a str, got {type(self.text).__name__}")

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "stamp": self.stamp,
            "object_id": None if self.object_id is None else int(self.object_id),
            "receptacle_id": None if self.receptacle_id is None else int(self.receptacle_id),
            "room": self.room,
            "text": self.text,
        }

    @staticmethod
    def from_dict(data: dict) -> "Event":
        return Event(**data)


@dataclass(eq=False)
class Observation:
    """One time step of the robot: camera images, pose, semantics and events.

    - ``rgb``: uint8 HxWx3; ``depth``: float32 HxW in metres along the optical axis, where 0,
      NaN or inf mean "no return" (as in a ROS 32FC1 depth image); negative depth is an error.
    - ``pose``: ``world_T_body``; ``camera``: intrinsics and ``body_T_camera``.
    - ``instances``: int32 HxW instance ids (0 = background / structure) or None.
    - ``labels``: ``{instance id: category}`` for ids that appear in ``instances``.
    - ``attributes``: ``{instance id: {"kind": "object" | "receptacle", "color": ..., ...}}``,
      the simulator's ground-truth semantics; empty where a real detector gives none.
    - ``room``: the region the robot is in when the simulator knows it (None otherwise).
    """

    stamp: float
    frame_id: int
    rgb: np.ndarray
    depth: np.ndarray
    pose: Pose
    camera: CameraInfo
    instances: np.ndarray | None = None
    labels: dict[int, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    day: int = 0
    attributes: dict[int, dict[str, str]] = field(default_factory=dict)
    room: str | None = None

    def __post_init__(self) -> None:
        self.stamp = _finite_number("Observation.stamp", self.stamp)
        if not isinstance(self.frame_id, (int, np.integer)) or self.frame_id < 0:
            raise ValueError(f"Observation.frame_id must be a non-negative int, got {self.frame_id!r}")
        if not isinstance(self.day, (int, np.integer)) or self.day < 0:
            raise ValueError(f"Observation.day must be a non-negative int, got {self.day!r}")
        if not isinstance(self.pose, Pose):
            raise ValueError(f"Observation.pose must be a Pose, got {type(self.pose).__name__}")
        if not isinstance(self.camera, CameraInfo):
            raise ValueError(f"Observation.camera must be a CameraInfo, got {type(self.camera).__name__}")
        self._check_images()
        for event in self.events:
            if not isinstance(event, Event):
                raise ValueError(f"Observation.events must hold Event objects, got {type(event).__name__}")

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
        if self.instances is not None:
            instances = self.instances
            if not isinstance(instances, np.ndarray) or instances.dtype != np.int32:
                raise ValueError(
                    f"Observation.instances must be an int32 array, got {getattr(instances, 'dtype', type(instances).__name__)}"
                )
            if instances.shape != rgb.shape[:2]:
                raise ValueError(f"Observation.instances shape {instances.shape} does not match rgb {rgb.shape[:2]}")

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
        if not isinstance(self.text, str):
            raise ValueError(f"Query.text must be a str, got {type(self.text).__name__}")
        if not isinstance(self.k, (int, np.integer)) or self.k <= 0:
            raise ValueError(f"Query.k must be a positive int, got {self.k!r}")
        if self.time_range is not None:
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
