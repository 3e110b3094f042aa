"""Sparse octree over world coordinates, addressed by Morton keys (Mem4Nav's spatial index).

A point ``p`` (metres) is quantised to integer voxel coordinates
``ijk = floor((p - origin) * 2^depth / world_size)`` and the leaf key is the Morton code
``kappa = interleave(i, j, k)`` (x in bit 0, y in bit 1, z in bit 2 of every 3-bit group, 21
bits per axis at most). Only visited leaves are stored (a dict ``code -> Leaf``). An internal
node at level ``l`` (root = 0, leaves = ``depth``) is the prefix ``code >> 3 * (depth - l)``,
so a node's parent is ``code >> 3``. The octree keeps one set of live prefixes per level,
which lets ``radius_query`` descend from the root and prune whole boxes that lie farther
than the radius, instead of scanning every leaf.

Departures from the public code, which are fixes: standard 21-bit magic masks (the public
masks map every point to key 0), and an ``origin`` shift so that negative coordinates are
not clipped to the boundary. Points outside ``[origin, origin + world_size)`` are rejected
(``quantize`` returns None) rather than clamped, because clamping merges distinct places.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from embodied_mem.memory.mem4nav.journal import Journal, record
from embodied_mem.memory.mem4nav.state import pose_rows, shaped
from embodied_mem.types import Pose

MAX_DEPTH = 21  # 21 bits per axis -> 63-bit keys, which fit an int64 in checkpoints

# Spread the low 21 bits of an integer so that bit b moves to bit 3b: after each shift the
# value is masked with the next mask (shifts 32, 16, 8, 4, 2). Compacting runs the same masks
# backwards with right shifts.
_SHIFTS = (32, 16, 8, 4, 2)
_MASKS = (0x1FFFFF, 0x1F00000000FFFF, 0x1F0000FF0000FF, 0x100F00F00F00F00F, 0x10C30C30C30C30C3, 0x1249249249249249)


def _spread_bits(value: int) -> int:
    value &= _MASKS[0]
    for shift, mask in zip(_SHIFTS, _MASKS[1:]):
        value = (value | (value << shift)) & mask
    return value


def _compact_bits(value: int) -> int:
    """Inverse of ``_spread_bits``: gather every third bit (from bit 0) into the low 21 bits."""
    value &= _MASKS[-1]
    for shift, mask in zip(reversed(_SHIFTS), reversed(_MASKS[:-1])):
        value = (value | (value >> shift)) & mask
    return value


def morton_encode(i: int, j: int, k: int) -> int:
    """Interleave three non-negative integers of up to 21 bits (x lowest).

    ``ValueError`` for a negative coordinate or one of 22 bits or more: masking it to 21 bits
    (or wrapping a negative) would give another voxel's key.
    """
    coordinates = (int(i), int(j), int(k))
    for axis, value in zip("ijk", coordinates):
        if not 0 <= value <= _MASKS[0]:
            raise ValueError(f"morton_encode: {axis}={value} is outside [0, 2^{MAX_DEPTH})")
    i, j, k = coordinates
    return _spread_bits(i) | (_spread_bits(j) << 1) | (_spread_bits(k) << 2)


def morton_decode(code: int) -> tuple[int, int, int]:
    """Inverse of ``morton_encode``; ``ValueError`` for a code outside [0, 2^63)."""
    code = int(code)
    if not 0 <= code < 1 << (3 * MAX_DEPTH):
        raise ValueError(f"morton_decode: {code} is outside [0, 2^{3 * MAX_DEPTH})")
    return _compact_bits(code), _compact_bits(code >> 1), _compact_bits(code >> 2)


@dataclass
class Sighting:
    """One entity (a tracker track) as seen in one leaf (our bookkeeping, not the paper's)."""

    stamp: float  # when it was last seen here
    frame_id: int  # the frame of its best view here
    view: Pose  # the observer pose of that best view: where to stand to see it
    quality: float  # of that view: mask fraction, discounted when far or off-centre


@dataclass
class Leaf:
    """A visited leaf voxel.

    Paper / public-code fields: ``center``, ``size``, ``level``. The public code's
    ``observations_count`` and last ``v_t`` are not kept: nothing reads them (the latest ``v_t``
    written here is what ``R^-1`` of the leaf's token gives back), and ``last_v`` alone cost
    1.5 KB a leaf. The leaf's LTM token is not copied here either: it lives once, in the LTM
    token index, under the key ``("leaf", code)`` (the public code keeps a second copy).
    Our bookkeeping, used by ``catalog`` / ``locate``: ``last_stamp`` and ``sightings``
    (track id -> ``Sighting``).
    """

    code: int
    center: np.ndarray
    size: float
    level: int
    last_stamp: float = -math.inf
    sightings: dict[int, Sighting] = field(default_factory=dict)

    def see(self, track_id: int, stamp: float, frame_id: int, view: Pose, quality: float) -> None:
        """Record a sighting; the best view is replaced by one at least as good."""
        old = self.sightings.get(track_id)
        if old is None or quality >= old.quality:
            self.sightings[track_id] = Sighting(stamp, frame_id, view, quality)
        else:
            old.stamp = stamp


class SparseOctree:
    """Visited leaves of a ``2^depth``-per-axis grid over a cube of ``world_size`` metres."""

    def __init__(self, depth: int, world_size: float, origin: tuple[float, float, float]) -> None:
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"octree depth must be in [1, {MAX_DEPTH}], got {depth}")
        if not (world_size > 0 and math.isfinite(world_size)):
            raise ValueError(f"octree world_size must be a positive number, got {world_size}")
        self.depth = int(depth)
        self.world_size = float(world_size)
        self.origin = np.asarray(origin, dtype=np.float64).reshape(3)
        self.leaf_size = self.world_size / (1 << self.depth)
        self.leaves: dict[int, Leaf] = {}
        # levels[l] holds the live node codes at level l; levels[depth] mirrors the leaf keys.
        self.levels: list[set[int]] = [set() for _ in range(self.depth + 1)]

    # ------------------------------------------------------------------ keys
    def quantize(self, point: np.ndarray) -> tuple[int, int, int] | None:
        """Integer voxel coordinates of ``point``, or None outside the world cube."""
        scaled = (np.asarray(point, dtype=np.float64) - self.origin) / self.leaf_size
        if not np.all(np.isfinite(scaled)):
            return None
        ijk = np.floor(scaled).astype(np.int64)
        if np.any(ijk < 0) or np.any(ijk >= (1 << self.depth)):
            return None
        return int(ijk[0]), int(ijk[1]), int(ijk[2])

    def key(self, point: np.ndarray) -> int | None:
        """Morton key of the leaf holding ``point`` (None outside the world cube)."""
        ijk = self.quantize(point)
        return None if ijk is None else morton_encode(*ijk)

    def node_box(self, code: int, level: int) -> tuple[np.ndarray, float]:
        """Minimum corner and edge length of the node ``code`` at ``level``."""
        size = self.world_size / (1 << level)
        return self.origin + np.array(morton_decode(code), dtype=np.float64) * size, size

    def center_of(self, code: int) -> np.ndarray:
        corner, size = self.node_box(code, self.depth)
        return corner + 0.5 * size

    # ------------------------------------------------------------------ leaves
    def insert_or_get(self, code: int, journal: Journal | None = None) -> Leaf:
        """The leaf ``code``, created (with its ancestors registered) if it was never visited.
        Undo (``journal``): the new leaf and the level codes it registered are removed."""
        leaf = self.leaves.get(code)
        if leaf is None:
            leaf = Leaf(code=code, center=self.center_of(code), size=self.leaf_size, level=self.depth)
            prefixes = [code >> (3 * (self.depth - level)) for level in range(self.depth + 1)]
            added = [level for level, prefix in enumerate(prefixes) if prefix not in self.levels[level]]

            def undo() -> None:
                self.leaves.pop(code, None)
                for level in added:
                    self.levels[level].discard(prefixes[level])

            record(journal, undo)
            self.leaves[code] = leaf
            for level in added:
                self.levels[level].add(prefixes[level])
        return leaf

    def see(self, leaf: Leaf, track_id: int, stamp: float, frame_id: int, view: Pose, quality: float, journal: Journal | None = None) -> None:
        """``leaf`` saw ``track_id`` now: its ``last_stamp`` and the sighting (``Leaf.see``).
        Undo (``journal``): the old stamp and the old sighting (object and stamp) are put back."""
        if journal is not None:
            last, old = leaf.last_stamp, leaf.sightings.get(track_id)
            old_stamp = None if old is None else old.stamp

            def undo() -> None:
                leaf.last_stamp = last
                if old is None:
                    leaf.sightings.pop(track_id, None)
                else:  # the same object, in the same dict slot (see() replaces or edits it)
                    old.stamp = old_stamp
                    leaf.sightings[track_id] = old

            journal(undo)
        leaf.last_stamp = stamp
        leaf.see(track_id, stamp, frame_id, view, quality)

    def forget(self, track_id: int, codes, journal: Journal | None = None) -> None:
        """Drop the sightings of ``track_id`` in the leaves ``codes`` (a track the tracker dropped).
        The leaves stay (their LTM tokens hold what was written there)."""
        for code in sorted(codes):
            leaf = self.leaves[code]
            old = leaf.sightings.get(track_id)
            if old is None:
                continue
            order = list(leaf.sightings)  # a leaf holds a handful of sightings: put it back in place

            def undo(leaf=leaf, old=old, order=order) -> None:
                current = dict(leaf.sightings)
                current[track_id] = old
                leaf.sightings = {key: current[key] for key in order if key in current}

            record(journal, undo)
            del leaf.sightings[track_id]

    def radius_query(self, point: np.ndarray, radius: float) -> tuple[list[Leaf], int]:
        """Leaves whose centre lies within ``radius`` of ``point``, and how many leaves were tested.

        Descends level by level from the root, keeping only children whose box is within
        ``radius`` of the point (box-sphere distance), so far-away subtrees are never opened.
        Plain floats, not numpy: the boxes are tested one by one.
        """
        if not self.leaves:
            return [], 0
        point = [float(x) for x in np.asarray(point, dtype=np.float64).reshape(3)]
        origin = self.origin.tolist()
        limit = float(radius) ** 2
        frontier = [(0, 0, 0, 0)]  # (code, i, j, k) of live nodes at the current level
        tested_leaves = 0
        for level in range(1, self.depth + 1):
            live, size = self.levels[level], self.world_size / (1 << level)
            children = []
            for parent, pi, pj, pk in frontier:
                for octant in range(8):
                    child = (parent << 3) | octant
                    if child not in live:
                        continue
                    if level == self.depth:
                        tested_leaves += 1
                    ijk = (2 * pi + (octant & 1), 2 * pj + ((octant >> 1) & 1), 2 * pk + (octant >> 2))
                    gap = 0.0
                    for axis in range(3):
                        low = origin[axis] + ijk[axis] * size
                        nearest = min(max(point[axis], low), low + size)
                        gap += (nearest - point[axis]) ** 2
                    if gap <= limit:
                        children.append((child, *ijk))
            frontier = children
            if not frontier:
                break
        found = [self.leaves[code] for code, *_ in frontier]
        found = [leaf for leaf in found if sum((c - p) ** 2 for c, p in zip(leaf.center.tolist(), point)) <= limit]
        return found, tested_leaves

    def clear(self) -> None:
        self.leaves.clear()
        for level in self.levels:
            level.clear()

    # ------------------------------------------------------------------ checkpoints
    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Geometry, the visited leaves (code, last stamp) and their sightings (one row each)."""
        leaves = list(self.leaves.values())
        sight = [(row, track_id, s) for row, leaf in enumerate(leaves) for track_id, s in leaf.sightings.items()]
        state = {"depth": self.depth, "world_size": self.world_size, "origin": self.origin.tolist()}
        arrays = {
            "codes": np.array([leaf.code for leaf in leaves], dtype=np.int64),
            "last_stamp": np.array([leaf.last_stamp for leaf in leaves], dtype=np.float64),
            "sight_leaf": np.array([row for row, _, _ in sight], dtype=np.int64),
            "sight_id": np.array([track_id for _, track_id, _ in sight], dtype=np.int64),
            "sight_stamp": np.array([s.stamp for _, _, s in sight], dtype=np.float64),
            "sight_frame": np.array([s.frame_id for _, _, s in sight], dtype=np.int64),
            "sight_view": pose_rows([s.view for _, _, s in sight]),
            "sight_quality": np.array([s.quality for _, _, s in sight], dtype=np.float64),
        }
        return state, arrays

    @classmethod
    def from_state(cls, state: dict, arrays: dict[str, np.ndarray]) -> SparseOctree:
        """A new octree from ``to_state``'s output; ``ValueError`` if it is not consistent."""
        tree = cls(int(state["depth"]), float(state["world_size"]), tuple(float(x) for x in state["origin"]))
        codes = shaped(arrays, "codes", (len(arrays["codes"]),), "i")
        stamps = shaped(arrays, "last_stamp", codes.shape, "f", finite=False)
        if np.any(np.isnan(stamps)):
            raise ValueError("octree leaf stamps are NaN")
        if np.any(codes < 0) or np.any(codes >= 1 << (3 * tree.depth)):
            raise ValueError(f"leaf codes outside an octree of depth {tree.depth}")
        if len(np.unique(codes)) != len(codes):
            raise ValueError("a leaf code appears twice")
        leaves = []
        for code, stamp in zip(codes.tolist(), stamps.tolist()):
            leaf = tree.insert_or_get(int(code))
            leaf.last_stamp = float(stamp)
            leaves.append(leaf)
        rows = shaped(arrays, "sight_leaf", (len(arrays["sight_leaf"]),), "i")
        n = len(rows)
        if np.any(rows < 0) or np.any(rows >= len(leaves)):
            raise ValueError("a sighting names a leaf that does not exist")
        columns = zip(
            rows.tolist(),
            shaped(arrays, "sight_id", (n,), "i").tolist(),
            shaped(arrays, "sight_stamp", (n,), "f").tolist(),
            shaped(arrays, "sight_frame", (n,), "i").tolist(),
            shaped(arrays, "sight_view", (n, 7), "f"),
            shaped(arrays, "sight_quality", (n,), "f").tolist(),
        )
        for row, track_id, stamp, frame_id, view, quality in columns:
            if int(track_id) in leaves[row].sightings:
                raise ValueError(f"leaf {leaves[row].code} has two sightings of {track_id}")
            leaves[row].sightings[int(track_id)] = Sighting(float(stamp), int(frame_id), Pose(view[:3], view[3:]), float(quality))
        return tree
