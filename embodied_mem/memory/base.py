"""The MemorySystem protocol and helpers every system shares (nothing system-specific).

A memory system is any object with these methods::

    observe(obs) -> None         idempotent per frame_id; never raises on a good frame
    recall(query) -> Recall      read-only; safe to call concurrently with observe
    save(dir) / load(dir)        safetensors / npz / json only, never pickle
    stats() -> MemoryStats
    reset() -> None

and a ``name`` attribute. Structured queries (the ``oracle`` track) are answered by the
shared reasoner in ``embodied_mem.memory.resolve``, which reads two things from a system:
its ``diary`` (an ``ActionDiary`` of what the robot did: picks, places, rooms) and its own
answers to ``catalog()`` (what entities it believes exist and where) and
``locate(goal)`` (from where to see them). How well a system keeps those is what the
benchmark measures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Protocol, runtime_checkable

import numpy as np

from embodied_mem.geometry import transform_points
from embodied_mem.perception import describe  # noqa: F401 - re-exported: memories name entities with it
from embodied_mem.types import FloorPlan, MemoryStats, Observation, Pose, Query, Recall

CHECKPOINT_FORMAT = "embodied_mem/2"  # 2: versioned folders, checksums, the config that made it


@runtime_checkable
class MemorySystem(Protocol):
    name: str

    def observe(self, obs: Observation) -> None: ...

    def recall(self, query: Query) -> Recall: ...

    def save(self, directory: str | os.PathLike) -> None: ...

    def load(self, directory: str | os.PathLike) -> None: ...

    def stats(self) -> MemoryStats: ...

    def reset(self) -> None: ...


# ----------------------------------------------------------------------------------------
# Stream hygiene
# ----------------------------------------------------------------------------------------
class FrameGate:
    """Makes ``observe`` idempotent per frame_id and rejects time going backwards.

    ``admit(obs)`` returns False for a frame already seen (a re-sent message, a replay that
    overlaps) and raises ``ValueError`` for a stamp older than the newest one admitted, before
    the caller has touched its memory, so a bad frame leaves the memory as it was. The ids of
    the last ``window`` frames are remembered, so the gate's size stays flat over a long life;
    a frame re-sent after that is refused as out of order.
    """

    def __init__(self, window: int = 4096) -> None:
        self.window = window
        self.seen: set[int] = set()
        self._order: deque[int] = deque()
        self.last_stamp = -math.inf
        self.frames_seen = 0

    def admit(self, obs: Observation) -> bool:
        if obs.frame_id in self.seen:
            return False
        if obs.stamp < self.last_stamp:
            raise ValueError(
                f"Observation.stamp {obs.stamp:.3f} of frame {obs.frame_id} is older than the newest "
                f"stamp already observed ({self.last_stamp:.3f}); the stream is out of order"
            )
        return True

    def commit(self, obs: Observation) -> None:
        """Mark a frame as stored; call after the memory has taken it."""
        self.seen.add(int(obs.frame_id))
        self._order.append(int(obs.frame_id))
        if len(self._order) > self.window:
            self.seen.discard(self._order.popleft())
        self.last_stamp = obs.stamp
        self.frames_seen += 1

    def reset(self) -> None:
        self.__init__(self.window)

    def to_dict(self) -> dict:
        return {"seen": list(self._order), "last_stamp": self.last_stamp, "frames_seen": self.frames_seen, "window": self.window}

    def load_dict(self, data: dict) -> None:
        self.window = int(data.get("window", self.window))
        self._order = deque(int(i) for i in data["seen"])
        self.seen = set(self._order)
        self.last_stamp = float(data["last_stamp"])
        self.frames_seen = int(data["frames_seen"])


# ----------------------------------------------------------------------------------------
# What one frame shows
# ----------------------------------------------------------------------------------------
@dataclass
class InstanceView:
    """One detection as seen in one frame: its pixels' 3D centroid and extent, in the memory's
    world frame. ``instance_id`` is the simulator's identity, set only in ``gt`` perception."""

    instance_id: int | None
    category: str
    attributes: dict[str, str]
    kind: str
    score: float
    pixels: int
    centroid: np.ndarray  # world xyz
    extent_min: np.ndarray
    extent_max: np.ndarray
    mask_fraction: float  # pixels / image pixels (FindingDory's visibility measure)

    @property
    def description(self) -> str:
        return describe(self.category, self.attributes)


def view_score(fraction, distance, bearing):
    """How well a view shows an instance: its mask fraction, x0.3 beyond 2.5 m, x0.3 beyond
    35 degrees off the heading. Elementwise, so it scores one view or arrays of them."""
    near = np.where(np.asarray(distance) < 2.5, 1.0, 0.3)
    centred = np.where(np.asarray(bearing) < math.radians(35), 1.0, 0.3)
    return np.asarray(fraction) * near * centred


def visible_instances(obs: Observation, min_pixels: int = 20) -> list[InstanceView]:
    """The frame's detections with at least ``min_pixels`` pixels of valid depth, placed in 3D.

    Detections without depth (a depth image of zeros, say) are skipped: without depth there is
    no position to remember.
    """
    if not obs.detections:
        return []
    valid = obs.valid_depth()
    camera = obs.camera
    world_T_camera = obs.world_T_camera.matrix()
    image_pixels = float(valid.size)
    views = []
    for detection in obs.detections:
        rows, cols = np.nonzero(detection.mask & valid)
        if rows.size < min_pixels:
            continue
        z = obs.depth[rows, cols].astype(np.float64)
        points = np.stack([(cols + 0.5 - camera.cx) / camera.fx * z, (rows + 0.5 - camera.cy) / camera.fy * z, z], axis=-1)
        world = transform_points(world_T_camera, points)
        attributes = dict(detection.attributes)
        attributes["kind"] = detection.kind
        views.append(
            InstanceView(
                instance_id=None if detection.instance_id is None else int(detection.instance_id),
                category=detection.label,
                attributes=attributes,
                kind=detection.kind,
                score=float(detection.score),
                pixels=int(rows.size),
                centroid=world.mean(axis=0),
                extent_min=world.min(axis=0),
                extent_max=world.max(axis=0),
                mask_fraction=float(rows.size) / image_pixels,
            )
        )
    return views


# ----------------------------------------------------------------------------------------
# What the robot did: the action diary every system keeps
# ----------------------------------------------------------------------------------------
@dataclass
class DiaryEntry:
    """One grasp ("pick") or release ("place") as the memory understood it.

    ``object_id`` / ``receptacle_id`` are the memory's own entity ids (its inference of what was
    grasped, and of the surface under the gripper), or None where it could not tell; categories
    and attributes are what the memory believed of them at the time.
    """

    kind: str
    stamp: float
    day: int
    frame_id: int
    pose: Pose
    object_id: int | None = None
    object_category: str | None = None
    object_attributes: dict[str, str] = field(default_factory=dict)
    receptacle_id: int | None = None
    receptacle_category: str | None = None
    receptacle_attributes: dict[str, str] = field(default_factory=dict)
    room: str | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["pose"] = self.pose.to_dict()
        return data

    @staticmethod
    def from_dict(data: dict) -> "DiaryEntry":
        fields = dict(data)
        fields["pose"] = Pose.from_dict(fields["pose"])
        return DiaryEntry(**fields)


@dataclass
class RoomStay:
    """A contiguous stay of the robot in one room."""

    room: str
    day: int
    start: float
    end: float
    pose: Pose  # a pose the robot held inside the room (the middle of the stay)
    frame_id: int

    def to_dict(self) -> dict:
        data = asdict(self)
        data["pose"] = self.pose.to_dict()
        return data

    @staticmethod
    def from_dict(data: dict) -> "RoomStay":
        fields = dict(data)
        fields["pose"] = Pose.from_dict(fields["pose"])
        return RoomStay(**fields)


class ActionDiary:
    """The robot's log of its own actions, as the memory perceived them.

    Grasps and releases come from proprioception (``Event``: a stamp, the base and gripper
    pose); what was grasped and where it went are the memory's own inferences (its entity ids
    and beliefs), handed in by the system. Rooms come from the floor plan the robot was given
    (``set_floor_plan``) at the robot's own pose; without one, the diary knows no rooms.
    """

    def __init__(self) -> None:
        self.floor_plan: FloorPlan | None = None
        self._clear()

    def _clear(self) -> None:
        self.entries: list[DiaryEntry] = []
        self.stays: list[RoomStay] = []
        self._stay_poses: list[tuple[float, Pose, int]] = []
        self.last_pose: Pose | None = None
        self.last_stamp: float | None = None
        # interactions(), paired once per change of the entries (a lifelong diary is long, and
        # every goal of every query asks for them): ((version, length), all, by day).
        self._version = getattr(self, "_version", 0) + 1
        self._paired: tuple | None = None
        self._places: tuple | None = None  # last_places(), made once per change the same way
        self._touched: dict[tuple, frozenset[int]] = {}  # touched(day) by (version, length, day)

    def set_floor_plan(self, plan: FloorPlan | None) -> None:
        if plan is not None and not isinstance(plan, FloorPlan):
            raise ValueError(f"floor plan must be a FloorPlan or None, got {type(plan).__name__}")
        self.floor_plan = plan

    def room_at(self, pose: Pose) -> str | None:
        return None if self.floor_plan is None else self.floor_plan.room_at(pose.position[:2])

    def record(self, frame_id: int, stamp: float, day: int, pose: Pose, inferences: Iterable, label_of) -> None:
        """One frame: where the robot was, and what its grasps / releases were about.

        ``inferences`` are ``EventInference``s (kind, stamp, object_id, receptacle_id);
        ``label_of(entity_id) -> (category, attributes)`` is the memory's belief of an entity.
        """
        self.last_pose, self.last_stamp = pose, stamp
        room = self.room_at(pose)
        self._track_room(frame_id, stamp, day, pose, room)
        for inference in inferences:
            if inference is None:
                continue
            object_category, object_attributes = label_of(inference.object_id) if inference.object_id is not None else (None, {})
            receptacle_category, receptacle_attributes = (
                label_of(inference.receptacle_id) if inference.receptacle_id is not None else (None, {})
            )
            self._version += 1
            self.entries.append(
                DiaryEntry(
                    kind="pick" if inference.kind == "grasp" else "place",
                    stamp=inference.stamp,
                    day=day,
                    frame_id=frame_id,
                    pose=pose,
                    object_id=inference.object_id,
                    object_category=object_category,
                    object_attributes=dict(object_attributes),
                    receptacle_id=inference.receptacle_id,
                    receptacle_category=receptacle_category,
                    receptacle_attributes=dict(receptacle_attributes),
                    room=room,
                )
            )

    def _track_room(self, frame_id: int, stamp: float, day: int, pose: Pose, room: str | None) -> None:
        if room is None:
            return
        current = self.stays[-1] if self.stays else None
        if current is not None and current.room == room and current.day == day:
            current.end = stamp
            self._stay_poses.append((stamp, pose, frame_id))
            middle = self._stay_poses[len(self._stay_poses) // 2]
            current.pose, current.frame_id = middle[1], middle[2]
            return
        self.stays.append(RoomStay(room, day, stamp, stamp, pose, frame_id))
        self._stay_poses = [(stamp, pose, frame_id)]

    def mark(self) -> tuple:
        """A token for ``rollback``: what one frame's ``record`` may change."""
        last = self.stays[-1] if self.stays else None
        stay = None if last is None else (last.end, last.pose, last.frame_id)
        return (len(self.entries), len(self.stays), len(self._stay_poses), stay, self.last_pose, self.last_stamp, list(self._stay_poses[:1]))

    def rollback(self, token: tuple) -> None:
        """Undo what ``record`` did since ``mark``."""
        entries, stays, stay_poses, stay, self.last_pose, self.last_stamp, first_pose = token
        del self.entries[entries:]
        self._version += 1
        del self.stays[stays:]
        if stay_poses <= len(self._stay_poses) and (not first_pose or self._stay_poses[:1] == first_pose):
            del self._stay_poses[stay_poses:]
        else:  # a new stay had begun: rebuild the pose list of the one that is last again
            self._stay_poses = [(s.end, s.pose, s.frame_id) for s in self.stays[-1:]]
        if stay is not None and self.stays:
            self.stays[-1].end, self.stays[-1].pose, self.stays[-1].frame_id = stay

    def interactions(self, day: int | None = None) -> list["Interaction"]:
        """Pick -> place pairs in order, optionally of one day.

        The robot carries one thing at a time, so a place closes the last open pick (whatever
        the memory thought either was about).
        """
        key = (self._version, len(self.entries))  # the length too: a caller may edit the list itself
        if self._paired is None or self._paired[0] != key:
            found: list[Interaction] = []
            by_day: dict[int, list[Interaction]] = {}
            open_pick: DiaryEntry | None = None
            for entry in self.entries:
                if entry.kind == "pick":
                    open_pick = entry
                elif entry.kind == "place" and open_pick is not None:
                    found.append(Interaction(open_pick, entry))
                    by_day.setdefault(open_pick.day, []).append(found[-1])
                    open_pick = None
            self._paired = (key, found, by_day)
        _, found, by_day = self._paired
        return list(found) if day is None else list(by_day.get(day, ()))

    def last_places(self) -> Mapping[int | None, DiaryEntry]:
        """The last ``place`` entry of each object id (read-only; made once per change of the
        entries: recalls ask for it per goal, and the diary grows with every day)."""
        key = (self._version, len(self.entries))
        if self._places is None or self._places[0] != key:
            self._places = (key, MappingProxyType({e.object_id: e for e in self.entries if e.kind == "place"}))
        return self._places[1]

    def touched(self, day: int | None = None) -> frozenset[int]:
        """The entity ids the robot interacted with (the objects it moved and the receptacles
        it picked them from or put them on), optionally on one day; made once per change."""
        key = (self._version, len(self.entries), day)
        cached = self._touched.get(key)
        if cached is None:
            interactions = self.interactions(day)
            cached = frozenset(i.object_id for i in interactions) | frozenset(
                r for i in interactions for r in (i.pick.receptacle_id, i.place.receptacle_id) if r is not None
            )
            if len(self._touched) > 64:
                self._touched.clear()
            self._touched[key] = cached
        return cached

    def days(self) -> list[int]:
        return sorted({stay.day for stay in self.stays} | {entry.day for entry in self.entries})

    def reset(self) -> None:
        self._clear()

    def to_dict(self) -> dict:
        return {
            "entries": [entry.to_dict() for entry in self.entries],
            "stays": [stay.to_dict() for stay in self.stays],
            "last_pose": None if self.last_pose is None else self.last_pose.to_dict(),
            "last_stamp": self.last_stamp,
            "floor_plan": None if self.floor_plan is None else self.floor_plan.to_dict(),
        }

    def load_dict(self, data: dict) -> None:
        self._version += 1
        self.entries = [DiaryEntry.from_dict(entry) for entry in data["entries"]]
        self.stays = [RoomStay.from_dict(stay) for stay in data["stays"]]
        self._stay_poses = [(s.end, s.pose, s.frame_id) for s in self.stays[-1:]]
        self.last_pose = None if data["last_pose"] is None else Pose.from_dict(data["last_pose"])
        self.last_stamp = data["last_stamp"]
        plan = data.get("floor_plan")
        self.floor_plan = None if plan is None else FloorPlan.from_dict(plan)


@dataclass
class Interaction:
    """One rearrangement: the pick and the place of one object."""

    pick: DiaryEntry
    place: DiaryEntry

    @property
    def object_id(self) -> int | None:
        """The memory's id of the thing moved (from the pick, else the place), or None."""
        value = self.pick.object_id if self.pick.object_id is not None else self.place.object_id
        return None if value is None else int(value)

    @property
    def duration(self) -> float:
        return self.place.stamp - self.pick.stamp


# ----------------------------------------------------------------------------------------
# What a system believes exists
# ----------------------------------------------------------------------------------------
@dataclass
class Entity:
    """An object or receptacle as a memory system believes it is now."""

    entity_id: int
    kind: str  # "object" | "receptacle"
    category: str
    attributes: dict[str, str]
    position: np.ndarray
    last_seen: float
    extent: tuple[np.ndarray, np.ndarray] | None = None  # world box (min, max) of what was seen of it

    @property
    def description(self) -> str:
        return describe(self.category, self.attributes)

    def nearest_point(self, xy: np.ndarray) -> np.ndarray:
        """The point of the entity (its box, else its centre) nearest to ``xy``, in plan view."""
        if self.extent is None:
            return self.position[:2]
        return np.clip(np.asarray(xy, dtype=np.float64)[:2], self.extent[0][:2], self.extent[1][:2])


def matches(category: str | None, attributes: dict[str, str], wanted: dict | None) -> bool:
    """Does an entity with ``category`` / ``attributes`` fit ``wanted`` = {"category", "attributes"}?"""
    if not wanted:
        return True
    if wanted.get("category") and wanted["category"] != category:
        return False
    return all(attributes.get(key) == value for key, value in (wanted.get("attributes") or {}).items())


class Grow:
    """A numpy array grown at the end in amortised O(1) (its capacity doubles): an index that a
    memory extends as frames arrive instead of rebuilding it from every frame at each recall."""

    __slots__ = ("data", "size")

    def __init__(self, tail: tuple[int, ...] = (), dtype: Any = np.float64, capacity: int = 16) -> None:
        self.data = np.empty((capacity, *tail), dtype=dtype)
        self.size = 0

    def extend(self, rows) -> None:
        rows = np.asarray(rows, dtype=self.data.dtype).reshape(-1, *self.data.shape[1:])
        need = self.size + len(rows)
        if need > len(self.data):
            grown = np.empty((max(need, 2 * len(self.data)), *self.data.shape[1:]), dtype=self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : need] = rows
        self.size = need

    def view(self) -> np.ndarray:
        """The rows so far (a view: valid until the next extend)."""
        return self.data[: self.size]

    def __len__(self) -> int:
        return self.size


class RouteGraph:
    """The places the robot has been, binned into ``cell`` metre cells joined where it moved
    between them, and where two visited cells touch (the robot stood in both, so the short step
    between them is free: a wall's two sides are never neighbours, the base keeps clear of it).
    A graph of known-free routes, grown one position at a time.

    Each edge is kept once, whatever the traffic on it: a route walked a hundred times is no
    longer than one walked once.
    """

    NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1))

    def __init__(self, cell: float = 0.25) -> None:
        self.cell = float(cell)
        self._cells: dict[tuple[int, int], int] = {}
        self._centers = Grow((2,))
        self._edges: set[tuple[int, int]] = set()
        self._last: int | None = None
        self._graph = None  # the sparse matrix, rebuilt only after the graph changed

    def extend(self, positions) -> None:
        """Add positions in the order the robot held them."""
        positions = np.asarray(positions, dtype=np.float64)[..., :2].reshape(-1, 2)
        if not len(positions):
            return
        keys = np.floor(positions / self.cell).astype(np.int64)
        changed = np.ones(len(keys), dtype=bool)
        changed[1:] = np.any(keys[1:] != keys[:-1], axis=1)  # standing still adds nothing
        for i, j in keys[changed].tolist():
            self._visit((i, j))

    def _visit(self, key: tuple[int, int]) -> None:
        n = self._cells.get(key)
        if n is None:
            n = len(self._cells)
            self._cells[key] = n
            self._centers.extend([(key[0] + 0.5) * self.cell, (key[1] + 0.5) * self.cell])
            for di, dj in self.NEIGHBOURS:
                m = self._cells.get((key[0] + di, key[1] + dj))
                if m is not None:
                    self._edges.add((m, n))
            self._graph = None
        if self._last is not None and self._last != n:
            edge = (min(self._last, n), max(self._last, n))
            if edge not in self._edges:
                self._edges.add(edge)
                self._graph = None
        self._last = n

    def __len__(self) -> int:
        return len(self._cells)

    def distance_from(self, origin_xy):
        """Travel distance from ``origin_xy`` as a function of a point: the shortest route to
        the visited cell nearest the point plus the straight last leg. Unlike straight-line
        distance it goes around walls, through doors the robot used."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import dijkstra

        origin = np.asarray(origin_xy, dtype=np.float64)[:2]
        if not self._cells:
            return lambda xy: float(np.linalg.norm(np.asarray(xy, dtype=np.float64)[:2] - origin))
        centers = self._centers.view().copy()
        if self._graph is None:
            pairs = np.array(sorted(self._edges), dtype=np.int64).reshape(-1, 2)
            weights = np.linalg.norm(centers[pairs[:, 0]] - centers[pairs[:, 1]], axis=1)
            self._graph = coo_matrix((weights, (pairs[:, 0], pairs[:, 1])), shape=(len(centers), len(centers))).tocsr()
        start = int(np.argmin(np.linalg.norm(centers - origin, axis=1)))
        route = dijkstra(self._graph, directed=False, indices=start)
        head = float(np.linalg.norm(centers[start] - origin))

        def distance(xy) -> float:
            legs = np.linalg.norm(centers - np.asarray(xy, dtype=np.float64)[:2], axis=1)
            # The last leg is straight, so only from places close to the target (never through walls).
            close = legs <= max(1.5, float(legs.min()) + 0.5)
            return head + float(np.min(route[close] + legs[close]))

        return distance


def trajectory_distance(positions: np.ndarray, origin_xy: np.ndarray, cell: float = 0.25):
    """Travel distance from ``origin_xy`` along the robot's own path (``positions``, in order),
    as a function of a point: ``RouteGraph`` built at once."""
    graph = RouteGraph(cell)
    graph.extend(positions)
    return graph.distance_from(origin_xy)


# ----------------------------------------------------------------------------------------
# Hits and checkpoints
# ----------------------------------------------------------------------------------------
def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


CURRENT = "CURRENT"  # names the complete version folder of a checkpoint directory
_KEEP_VERSIONS = 2  # the newest and the one before it


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, default=_json_default, separators=(",", ":")).encode("utf-8")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_manifest(directory: str | os.PathLike, system: str, state: dict, arrays: dict[str, np.ndarray], config: Any = None) -> None:
    """Write a checkpoint so that a crash at any moment leaves the previous one or the new one.

    Layout: ``directory/v<N>/manifest.json`` + ``arrays.npz`` and ``directory/CURRENT`` naming
    the complete version. A new version is written in full (files and folder fsynced), then
    ``CURRENT`` is switched to it by one atomic rename; the previous version is kept until the
    next save completes. The manifest records a SHA-256 of the arrays file and of its own
    content, the schema version and (``config``) the configuration that made it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    versions = sorted(_versions(directory))
    number = versions[-1] + 1 if versions else 1
    folder = directory / f"v{number:06d}"
    if folder.exists():  # a crashed save left it: never complete (CURRENT never named it)
        shutil.rmtree(folder)
    folder.mkdir()
    arrays_path = folder / "arrays.npz"
    np.savez(arrays_path, **arrays)
    body = {
        "format": CHECKPOINT_FORMAT,
        "system": system,
        "state": state,
        "arrays": sorted(arrays),
        "arrays_sha256": _sha256(arrays_path),
        "config": _plain(config),
    }
    manifest = dict(body, sha256=hashlib.sha256(_canonical(body)).hexdigest())
    write_json(folder / "manifest.json", manifest)
    for path in (arrays_path, folder / "manifest.json", folder):
        _fsync(path)
    pointer = directory / f".{CURRENT}.tmp"
    pointer.write_text(folder.name)
    _fsync(pointer)
    os.replace(pointer, directory / CURRENT)  # the switch: one atomic rename
    _fsync(directory)
    for old in sorted(_versions(directory))[:-_KEEP_VERSIONS]:
        shutil.rmtree(directory / f"v{old:06d}", ignore_errors=True)


def _versions(directory: Path) -> list[int]:
    found = []
    for child in directory.glob("v[0-9]*"):
        if child.is_dir() and child.name[1:].isdigit():
            found.append(int(child.name[1:]))
    return found


def _plain(config: Any) -> Any:
    if config is None:
        return None
    if dataclasses.is_dataclass(config):
        return json.loads(_canonical(dataclasses.asdict(config)))
    return json.loads(_canonical(config))


def load_manifest(directory: str | os.PathLike, system: str, config: Any = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Read the checkpoint ``CURRENT`` names; ``ValueError`` on anything wrong.

    Checks the format, the system, both checksums (a flipped digit anywhere is refused) and,
    when ``config`` is given, that the checkpoint was made with the same configuration (a
    MiniLM memory does not load into a gt_hash one).
    """
    directory = Path(directory)
    pointer = directory / CURRENT
    if pointer.is_file():
        name = pointer.read_text().strip()
        if not (name.startswith("v") and name[1:].isdigit()):
            raise ValueError(f"corrupt checkpoint {directory}: {CURRENT} names {name!r}")
        folder = directory / name
    else:
        folder = directory  # a single-version checkpoint written before versioning
    manifest_path, arrays_path = folder / "manifest.json", folder / "arrays.npz"
    if not manifest_path.is_file() or not arrays_path.is_file():
        raise ValueError(f"{directory} is not a checkpoint: manifest.json or arrays.npz is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"corrupt checkpoint {manifest_path}: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ValueError(f"{manifest_path} is not an {CHECKPOINT_FORMAT} checkpoint (format {found!r})")
    if manifest.get("system") != system:
        raise ValueError(f"checkpoint {directory} holds a {manifest.get('system')!r} memory, not {system!r}")
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    if manifest.get("sha256") != hashlib.sha256(_canonical(body)).hexdigest():
        raise ValueError(f"corrupt checkpoint {manifest_path}: its checksum does not match its content")
    if manifest.get("arrays_sha256") != _sha256(arrays_path):
        raise ValueError(f"corrupt checkpoint {arrays_path}: its checksum does not match the manifest")
    if config is not None and manifest.get("config") != _plain(config):
        raise ValueError(
            f"checkpoint {directory} was made with another configuration: {_config_difference(manifest.get('config'), _plain(config))}"
        )
    try:
        with np.load(arrays_path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as error:  # zipfile.BadZipFile, ValueError, OSError, EOFError...
        raise ValueError(f"corrupt checkpoint {arrays_path}: {error}") from error
    missing = sorted(set(manifest.get("arrays", [])) - set(arrays))
    if missing:
        raise ValueError(f"corrupt checkpoint {arrays_path}: arrays {missing} are missing")
    if not isinstance(manifest.get("state"), dict):
        raise ValueError(f"corrupt checkpoint {manifest_path}: no state")
    return manifest["state"], arrays


def _config_difference(saved: Any, current: Any) -> str:
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        return ", ".join(f"{k}: saved {saved.get(k)!r}, this memory {current.get(k)!r}" for k in keys)
    return f"saved {saved!r}, this memory {current!r}"


def frame_slices(owner: np.ndarray, count: int, name: str) -> list[slice]:
    """The rows of each of ``count`` frames in a checkpoint's flat detection arrays, whose
    ``owner`` column (named ``name``) gives each row's frame index in sorted order.
    ``ValueError`` when it is not such an index. Slices, not one mask per frame: a mask per
    frame made a 100k-frame load quadratic (231 s)."""
    owner = np.asarray(owner)
    if owner.size and (owner.min() < 0 or owner.max() >= count or np.any(np.diff(owner) < 0)):
        raise ValueError(f"{name} is not a sorted index into the frames")
    bounds = np.searchsorted(owner, np.arange(count + 1), side="left")
    return [slice(int(start), int(stop)) for start, stop in zip(bounds[:-1], bounds[1:])]


def finite_array(arrays: dict[str, np.ndarray], name: str, dtype_kind: str, shape_tail: tuple[int, ...] = (), rows: int | None = None) -> np.ndarray:
    """Fetch ``arrays[name]`` checked on load: numeric kind ("f", "i"), trailing shape, row count,
    finite values. ``ValueError`` names the array."""
    if name not in arrays:
        raise ValueError(f"array {name!r} is missing")
    array = arrays[name]
    if array.dtype.kind not in dtype_kind:
        raise ValueError(f"array {name!r} has dtype {array.dtype}, expected kind {dtype_kind!r}")
    if tuple(array.shape[1:]) != tuple(shape_tail) or (rows is not None and array.shape[0] != rows):
        raise ValueError(f"array {name!r} has shape {array.shape}, expected ({rows if rows is not None else 'N'}, {shape_tail})")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError(f"array {name!r} holds NaN or inf")
    return array


class ReadWriteLock:
    """Many readers (recall) or one writer (observe, load, reset); a waiting writer goes first.

    New readers wait while a writer is waiting, so a busy recall loop cannot starve ``observe``.
    """

    def __init__(self) -> None:
        self._readers = 0
        self._writers_waiting = 0
        self._writing = False
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def reading(self) -> "_Guard":
        return _Guard(self._acquire_read, self._release_read)

    def writing(self) -> "_Guard":
        return _Guard(self._acquire_write, self._release_write)

    def _acquire_read(self) -> None:
        with self._lock:
            while self._writing or self._writers_waiting:
                self._changed.wait()
            self._readers += 1

    def _release_read(self) -> None:
        with self._lock:
            self._readers -= 1
            if self._readers == 0:
                self._changed.notify_all()

    def _acquire_write(self) -> None:
        with self._lock:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._changed.wait()
            self._writers_waiting -= 1
            self._writing = True

    def _release_write(self) -> None:
        with self._lock:
            self._writing = False
            self._changed.notify_all()


class _Guard:
    def __init__(self, enter, leave) -> None:
        self._enter, self._leave = enter, leave

    def __enter__(self) -> None:
        self._enter()

    def __exit__(self, *exc: object) -> None:
        self._leave()


def unique_by(items: Iterable[Any], key) -> list[Any]:
    """Keep the first item of each key, in order."""
    seen, kept = set(), []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            kept.append(item)
    return kept
