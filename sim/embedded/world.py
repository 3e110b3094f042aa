"""Procedural homes: rooms on a grid, doors, receptacles against walls, small objects on top.

``generate_world(WorldConfig(seed=3))`` is deterministic for a seed. The world is a plain
description (dataclasses of boxes and ids); rendering and navigation read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from embodied_mem.sim.embedded.catalog import (
    COLORS,
    CORE_ROOMS,
    OBJECTS,
    RECEPTACLES,
    ROOM_TYPES,
    SIZE_CLASSES,
)

WALL_HEIGHT = 2.5
WALL_THICKNESS = 0.1
DOOR_WIDTH = 1.0
RECEPTACLE_ID_BASE = 1
OBJECT_ID_BASE = 1000


@dataclass
class WorldConfig:
    """How to draw a home. ``rooms`` is 4, 6, 8 or 9 (a 2x2, 3x2, 4x2 or 3x3 grid)."""

    seed: int = 0
    rooms: int = 6
    room_size: tuple[float, float] = (3.8, 5.2)
    receptacles_per_room: tuple[int, int] = (3, 4)
    objects_per_room: int = 4
    extra_door_probability: float = 0.25


@dataclass
class Room:
    name: str  # unique in the home: "bedroom", "bedroom_2"
    kind: str
    x0: float
    y0: float
    x1: float
    y1: float

    def contains(self, x: float, y: float) -> bool:
        return self.x0 <= x < self.x1 and self.y0 <= y < self.y1

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2])


@dataclass
class Box:
    """An axis-aligned box."""

    min_corner: np.ndarray
    max_corner: np.ndarray

    @property
    def center(self) -> np.ndarray:
        return (self.min_corner + self.max_corner) / 2

    @property
    def size(self) -> np.ndarray:
        return self.max_corner - self.min_corner


@dataclass
class Receptacle:
    entity_id: int
    kind: str
    room: str
    box: Box
    color: str
    material: str

    @property
    def top_z(self) -> float:
        return float(self.box.max_corner[2])

    @property
    def category(self) -> str:
        return self.kind

    @property
    def attributes(self) -> dict[str, str]:
        return {"kind": "receptacle", "color": self.color, "material": self.material}


@dataclass
class SmallObject:
    entity_id: int
    category: str
    color: str
    material: str
    size_class: str
    extent: np.ndarray  # (x, y, z) size in metres

    @property
    def attributes(self) -> dict[str, str]:
        spec = OBJECTS[self.category]
        return {
            "kind": "object",
            "color": self.color,
            "material": self.material,
            "size": self.size_class,
            "shape": spec.shape_word,
            "function": spec.function,
        }

    @property
    def shape(self) -> str:
        return OBJECTS[self.category].shape


@dataclass
class Placement:
    """Where an object rests: on a receptacle, at a world position (its centre)."""

    receptacle_id: int
    position: np.ndarray


@dataclass
class World:
    seed: int
    rooms: list[Room]
    walls: list[Box]
    doors: list[Box]  # the gaps, for reference and plotting
    receptacles: dict[int, Receptacle]
    objects: dict[int, SmallObject]
    placements: dict[int, Placement]  # initial placements; the simulator owns the current ones
    bounds: tuple[float, float, float, float]  # x0, y0, x1, y1

    def room_at(self, x: float, y: float) -> Room | None:
        for room in self.rooms:
            if room.contains(x, y):
                return room
        return None

    def room(self, name: str) -> Room:
        for room in self.rooms:
            if room.name == name:
                return room
        raise KeyError(name)

    def label(self, entity_id: int) -> str:
        if entity_id in self.receptacles:
            return self.receptacles[entity_id].kind
        return self.objects[entity_id].category

    def attributes(self, entity_id: int) -> dict[str, str]:
        if entity_id in self.receptacles:
            return self.receptacles[entity_id].attributes
        return self.objects[entity_id].attributes


_GRIDS = {4: (2, 2), 6: (3, 2), 8: (4, 2), 9: (3, 3)}


def generate_world(config: WorldConfig) -> World:
    """A home for ``config.seed``."""
    if config.rooms not in _GRIDS:
        raise ValueError(f"WorldConfig.rooms must be one of {sorted(_GRIDS)}, got {config.rooms}")
    rng = np.random.default_rng(config.seed)
    cols, rows = _GRIDS[config.rooms]
    xs = np.concatenate([[0.0], np.cumsum(rng.uniform(*config.room_size, size=cols))])
    ys = np.concatenate([[0.0], np.cumsum(rng.uniform(*config.room_size, size=rows))])
    rooms = _rooms(rng, xs, ys, cols, rows)
    doors = _door_plan(rng, cols, rows, config.extra_door_probability)
    walls, door_boxes = _walls(rng, xs, ys, cols, rows, doors)
    receptacles = _receptacles(rng, rooms, door_boxes, config)
    objects, placements = _objects(rng, rooms, receptacles, config)
    return World(
        seed=config.seed,
        rooms=rooms,
        walls=walls,
        doors=door_boxes,
        receptacles=receptacles,
        objects=objects,
        placements=placements,
        bounds=(float(xs[0]), float(ys[0]), float(xs[-1]), float(ys[-1])),
    )


def _rooms(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, cols: int, rows: int) -> list[Room]:
    count = cols * rows
    others = [kind for kind in ROOM_TYPES if kind not in CORE_ROOMS] + ["bedroom"]
    kinds = list(CORE_ROOMS) + list(rng.choice(others, size=count - len(CORE_ROOMS), replace=False))
    kinds = [str(kind) for kind in kinds]
    rng.shuffle(kinds)
    rooms, used = [], {}
    for index, kind in enumerate(kinds):
        c, r = index % cols, index // cols
        used[kind] = used.get(kind, 0) + 1
        name = kind if used[kind] == 1 else f"{kind}_{used[kind]}"
        rooms.append(Room(name, kind, float(xs[c]), float(ys[r]), float(xs[c + 1]), float(ys[r + 1])))
    return rooms


def _door_plan(rng: np.random.Generator, cols: int, rows: int, extra: float) -> set[tuple[int, int]]:
    """Pairs of cell indices joined by a door: a random spanning tree plus a few extra doors."""
    edges = []
    for r in range(rows):
        for c in range(cols):
            here = r * cols + c
            if c + 1 < cols:
                edges.append((here, here + 1))
            if r + 1 < rows:
                edges.append((here, here + cols))
    order = rng.permutation(len(edges))
    parent = list(range(cols * rows))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    doors = set()
    for index in order:
        a, b = edges[index]
        if find(a) != find(b):
            parent[find(a)] = find(b)
            doors.add((a, b))
        elif rng.random() < extra:
            doors.add((a, b))
    return doors


def _walls(rng, xs, ys, cols, rows, doors) -> tuple[list[Box], list[Box]]:
    walls, door_boxes = [], []
    half = WALL_THICKNESS / 2

    def segment(axis: str, fixed: float, start: float, end: float, has_door: bool) -> None:
        pieces = [(start, end)]
        if has_door:
            door_start = rng.uniform(start + 0.6, end - 0.6 - DOOR_WIDTH)
            pieces = [(start, door_start), (door_start + DOOR_WIDTH, end)]
            door_boxes.append(_wall_box(axis, fixed, door_start, door_start + DOOR_WIDTH, half))
        for a, b in pieces:
            walls.append(_wall_box(axis, fixed, a, b, half))

    for i, x in enumerate(xs):  # walls along y at each x line
        for r in range(rows):
            left, right = r * cols + i - 1, r * cols + i
            inner = 0 < i < cols
            segment("y", x, ys[r] - half, ys[r + 1] + half, inner and (left, right) in doors)
    for j, y in enumerate(ys):  # walls along x at each y line
        for c in range(cols):
            below, above = (j - 1) * cols + c, j * cols + c
            inner = 0 < j < rows
            segment("x", y, xs[c] - half, xs[c + 1] + half, inner and (below, above) in doors)
    return walls, door_boxes


def _wall_box(axis: str, fixed: float, start: float, end: float, half: float) -> Box:
    if axis == "y":
        return Box(np.array([fixed - half, start, 0.0]), np.array([fixed + half, end, WALL_HEIGHT]))
    return Box(np.array([start, fixed - half, 0.0]), np.array([end, fixed + half, WALL_HEIGHT]))


def _receptacles(rng, rooms: list[Room], doors: list[Box], config: WorldConfig) -> dict[int, Receptacle]:
    receptacles: dict[int, Receptacle] = {}
    next_id = RECEPTACLE_ID_BASE
    # Keep the floor in front of every door clear so the robot can always pass.
    keep_clear = [_grow(door, 1.1) for door in doors]
    for room in rooms:
        kinds = list(ROOM_TYPES[room.kind])
        low, high = config.receptacles_per_room
        count = min(len(kinds), int(rng.integers(low, high + 1)))
        chosen = [kinds[0]] + [str(k) for k in rng.choice(kinds[1:], size=count - 1, replace=False)]
        placed: list[Box] = []
        for kind in chosen:
            box = _place_receptacle(rng, room, RECEPTACLES[kind], placed + keep_clear)
            if box is None:
                continue
            spec = RECEPTACLES[kind]
            placed.append(_grow(box, 0.75))  # room for the robot between furniture
            receptacles[next_id] = Receptacle(next_id, kind, room.name, box, str(rng.choice(spec.colors)), spec.material)
            next_id += 1
    return receptacles


def _place_receptacle(rng, room: Room, spec, blocked: list[Box]) -> Box | None:
    width, depth, height = spec.size
    inset = WALL_THICKNESS / 2 + 0.02
    for _ in range(60):
        if spec.against_wall:
            side = int(rng.integers(4))
            along = (room.x1 - room.x0) if side in (0, 1) else (room.y1 - room.y0)
            if along < width + 0.4:
                continue
            offset = rng.uniform(0.2, along - width - 0.2)
            if side == 0:  # south wall, width along x
                lo = [room.x0 + offset, room.y0 + inset]
                hi = [lo[0] + width, lo[1] + depth]
            elif side == 1:  # north wall
                hi = [room.x0 + offset + width, room.y1 - inset]
                lo = [hi[0] - width, hi[1] - depth]
            elif side == 2:  # west wall, width along y
                lo = [room.x0 + inset, room.y0 + offset]
                hi = [lo[0] + depth, lo[1] + width]
            else:  # east wall
                hi = [room.x1 - inset, room.y0 + offset + width]
                lo = [hi[0] - depth, hi[1] - width]
        else:
            w, d = (width, depth) if rng.random() < 0.5 else (depth, width)
            margin = 0.95
            if room.x1 - room.x0 < w + 2 * margin or room.y1 - room.y0 < d + 2 * margin:
                continue
            lo = [rng.uniform(room.x0 + margin, room.x1 - margin - w), rng.uniform(room.y0 + margin, room.y1 - margin - d)]
            hi = [lo[0] + w, lo[1] + d]
        box = Box(np.array([lo[0], lo[1], 0.0]), np.array([hi[0], hi[1], height]))
        if not any(_overlap_2d(box, other) for other in blocked):
            return box
    return None


def _grow(box: Box, margin: float) -> Box:
    grow = np.array([margin, margin, 0.0])
    return Box(box.min_corner - grow, box.max_corner + grow)


def _overlap_2d(a: Box, b: Box) -> bool:
    return bool(np.all(a.min_corner[:2] < b.max_corner[:2]) and np.all(b.min_corner[:2] < a.max_corner[:2]))


def _objects(rng, rooms: list[Room], receptacles: dict[int, Receptacle], config: WorldConfig):
    objects: dict[int, SmallObject] = {}
    placements: dict[int, Placement] = {}
    total = config.objects_per_room * len(rooms)
    order = _object_categories(rng, total)
    receptacle_ids = sorted(receptacles)
    for index in range(total):
        spec = OBJECTS[order[index]]
        size_class = str(rng.choice(list(SIZE_CLASSES)))
        extent = np.array(spec.size) * SIZE_CLASSES[size_class]
        entity_id = OBJECT_ID_BASE + index
        obj = SmallObject(entity_id, spec.name, str(rng.choice(list(COLORS))), str(rng.choice(spec.materials)), size_class, extent)
        for _ in range(30):
            receptacle = receptacles[int(rng.choice(receptacle_ids))]
            position = free_spot(rng, receptacle, obj, placements, objects)
            if position is not None:
                objects[entity_id] = obj
                placements[entity_id] = Placement(receptacle.entity_id, position)
                break
    return objects, placements


DISTINCT_CATEGORY_FRACTION = 0.6  # of a home's objects, about this share have a category of their own
MIN_REPEATED_CATEGORIES = 3


def _object_categories(rng, total: int) -> list[str]:
    """The categories of a home's ``total`` objects, in placement order.

    About 60% distinct, and at least ``MIN_REPEATED_CATEGORIES`` categories appear twice or
    more (when there are objects enough): with two mugs in the home, "the mug you moved"
    needs a memory of the moving, not only of the mug.
    """
    categories = list(OBJECTS)
    distinct = min(len(categories), max(1, round(DISTINCT_CATEGORY_FRACTION * total)), total)
    chosen = [str(c) for c in rng.permutation(categories)[:distinct]]
    extra = total - distinct
    repeats = chosen[: min(extra, MIN_REPEATED_CATEGORIES)]
    repeats += [chosen[int(i)] for i in rng.integers(distinct, size=extra - len(repeats))]
    order = chosen + repeats
    return [order[int(i)] for i in rng.permutation(len(order))]


def free_spot(rng, receptacle: Receptacle, obj: SmallObject, placements: dict[int, Placement], objects: dict[int, SmallObject], near: np.ndarray | None = None) -> np.ndarray | None:
    """A position on ``receptacle``'s top where ``obj`` touches no other object, or None.

    With ``near`` (a robot position), spots closer to it are preferred, so a placed object
    lands where the robot can reach and see it.
    """
    lo, hi = receptacle.box.min_corner[:2], receptacle.box.max_corner[:2]
    radius = float(np.max(obj.extent[:2])) / 2
    margin = radius + 0.04
    if np.any(hi - lo < 2 * margin):
        return None
    candidates = rng.uniform(lo + margin, hi - margin, size=(24, 2))
    if near is not None:
        candidates = candidates[np.argsort(np.linalg.norm(candidates - near[:2], axis=1))]
    for xy in candidates:
        clear = True
        for other_id, placement in placements.items():
            if placement.receptacle_id != receptacle.entity_id:
                continue
            other = objects[other_id]
            gap = float(np.linalg.norm(placement.position[:2] - xy))
            if gap < radius + float(np.max(other.extent[:2])) / 2 + 0.03:
                clear = False
                break
        if clear:
            return np.array([xy[0], xy[1], receptacle.top_z + obj.extent[2] / 2])
    return None


def yaw_towards(source_xy: np.ndarray, target_xy: np.ndarray) -> float:
    delta = np.asarray(target_xy)[:2] - np.asarray(source_xy)[:2]
    return math.atan2(float(delta[1]), float(delta[0]))


@dataclass
class WorldState:
    """What changes while the robot lives in the world: where each object rests, what it holds."""

    placements: dict[int, Placement]
    held: int | None = None
    version: int = 0  # bumped on every change, so renderers know to rebuild

    @staticmethod
    def initial(world: World) -> "WorldState":
        return WorldState({k: Placement(v.receptacle_id, v.position.copy()) for k, v in world.placements.items()})

    def pick(self, object_id: int) -> Placement:
        if self.held is not None:
            raise RuntimeError(f"already holding object {self.held}")
        placement = self.placements.pop(object_id)
        self.held = object_id
        self.version += 1
        return placement

    def place(self, receptacle_id: int, position: np.ndarray) -> None:
        if self.held is None:
            raise RuntimeError("place without a held object")
        self.placements[self.held] = Placement(receptacle_id, np.asarray(position, dtype=np.float64))
        self.held = None
        self.version += 1

    def copy(self) -> "WorldState":
        return WorldState({k: Placement(v.receptacle_id, v.position.copy()) for k, v in self.placements.items()}, self.held, self.version)


__all__ = [
    "Box",
    "Placement",
    "Receptacle",
    "Room",
    "SmallObject",
    "World",
    "WorldConfig",
    "WorldState",
    "free_spot",
    "generate_world",
    "yaw_towards",
]
