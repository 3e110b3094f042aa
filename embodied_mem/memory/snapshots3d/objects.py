"""3D-Mem's object map (the ConceptGraphs mapping it builds on): detections -> 3D objects.

Each detection (a mask, a class, a confidence, a feature) becomes a small point cloud:
masked depth back-projected with the intrinsics and pose, at most ``max_points`` points,
voxel-downsampled, denoised by density clustering, and dropped when its box centre is too
far from the agent. It is then matched against the map by ``sim = (1 + b) * spatial +
(1 - b) * visual`` and merged into the best object when ``sim > sim_threshold``, else added.
Every ``cleanup_interval`` processed frames the map is denoised, far objects with few
detections are dropped and strongly overlapping, similar objects are merged.

Point clouds live on a global 1 cm voxel grid: per object the sorted voxel keys, the mean
point of each voxel and how many raw points it averages. Merging a detection appends its
voxels; they are compacted into the sorted arrays (one sorted merge for many detections)
once they reach half the cloud or when the cloud is read, which gives the same cloud as a
re-downsampling of the concatenated points. Neighbour queries use a scipy cKDTree cached
per object (see ``MapObject.near``).

Detections come from the robot's perception (``Observation.detections``: class-labelled masks
with scores and the detector's attribute guesses, no identity). Beyond the paper, each map
object keeps votes of its detections' kinds and attributes (its category is the paper's
majority class), and what the robot's own actions did to it: ``held`` while the gripper
carries it (it then takes no detections and no cleanup touches it), and after a release the
cloud moved to where it was put (``move_by``, ``moved_at``).
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from embodied_mem.memory.base import describe
from embodied_mem.memory.snapshots3d.state import (
    Journal,
    array,
    flag,
    integer,
    integers,
    number,
    refusing,
    vector,
    votes,
)
from embodied_mem.types import Observation

_BITS = 21  # bits per axis of a packed voxel key: +-10 km at 1 cm
_OFFSET = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1
COARSE_MIN = 2000  # query clouds at least this large get the coarse-cell bound in periodic merging
COMPACT_MIN = 4096  # appended voxels an object holds before it compacts by itself (see ``MapObject.append_voxels``)
_COMPACT_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------
# Detections
# ----------------------------------------------------------------------------------------
@dataclass
class Detection:
    """One 2D detection as 3D-Mem's mapping takes it: a mask, a class, a confidence, a feature.

    ``description`` is the text whose embedding stands in for the CLIP feature (defaults to
    ``class_name``); ``kind`` and ``attributes`` are the detector's guesses ("object" /
    "receptacle", colour...); ``instance_id`` is the simulator's id, set only by the ``gt``
    perception upper bound (kept as a diagnostic vote, never used for association).
    """

    mask: np.ndarray  # bool HxW
    class_name: str
    confidence: float = 1.0
    description: str = ""
    instance_id: int | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    kind: str = "object"

    def text(self) -> str:
        return self.description or self.class_name.replace("_", " ")


DetectionFn = Callable[[Observation], list[Detection]]


def observation_detections(obs: Observation) -> list[Detection]:
    """The robot's perception output for one frame (``Observation.detections``) as 3D-Mem
    detections: mask, class, score as confidence, the description of class and attributes."""
    return [
        Detection(
            det.mask,
            det.label,
            float(det.score),
            describe(det.label, det.attributes),
            None if det.instance_id is None else int(det.instance_id),
            dict(det.attributes),
            det.kind,
        )
        for det in obs.detections
    ]


# ----------------------------------------------------------------------------------------
# Voxel clouds
# ----------------------------------------------------------------------------------------
def representable(points: np.ndarray, voxel: float) -> np.ndarray:
    """Which points have a voxel key (finite, within the +-2**20 voxels a key holds per axis);
    others would wrap onto keys of other places."""
    limit = (_OFFSET - 1) * voxel
    return np.all(np.abs(points) < limit, axis=1)  # (NaN compares False)


def pack_cells(cells: np.ndarray) -> np.ndarray:
    """(N, 3) int voxel indices -> (N,) int64 keys that sort like (x, y, z)."""
    shifted = (cells.astype(np.int64) + _OFFSET) & _MASK
    return (shifted[:, 0] << (2 * _BITS)) | (shifted[:, 1] << _BITS) | shifted[:, 2]


def voxel_keys(points: np.ndarray, voxel: float) -> np.ndarray:
    return pack_cells(np.floor(points / voxel).astype(np.int64))


def voxelize(points: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-downsample: sorted unique keys, the mean point per voxel (float32), raw counts."""
    if len(points) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 3), np.float32), np.zeros(0, np.int32)
    keys, inverse, counts = np.unique(voxel_keys(points, voxel), return_inverse=True, return_counts=True)
    means = np.stack([np.bincount(inverse, weights=points[:, axis], minlength=len(keys)) for axis in range(3)], axis=1)
    means /= counts[:, None]
    return keys, means.astype(np.float32), counts.astype(np.int32)


def merge_voxels(
    keys_a: np.ndarray, points_a: np.ndarray, counts_a: np.ndarray, keys_b: np.ndarray, points_b: np.ndarray, counts_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Union of two voxel clouds on the same grid; shared voxels average by raw counts.

    Returns keys, points, counts and the points of the voxels that were new to ``a``.
    """
    if len(keys_a) == 0:
        return keys_b.copy(), points_b.copy(), counts_b.copy(), points_b
    where = np.searchsorted(keys_a, keys_b)
    clipped = np.minimum(where, len(keys_a) - 1)
    found = keys_a[clipped] == keys_b
    points, counts = points_a.copy(), counts_a.copy()
    rows = clipped[found]
    weight_a, weight_b = counts[rows].astype(np.float32), counts_b[found].astype(np.float32)
    points[rows] = (points[rows] * weight_a[:, None] + points_b[found] * weight_b[:, None]) / (weight_a + weight_b)[:, None]
    counts[rows] += counts_b[found]
    new = ~found
    if not np.any(new):
        return keys_a.copy(), points, counts, points_b[:0]
    at = where[new]  # keys_b is sorted, so insertion positions are non-decreasing
    return (
        np.insert(keys_a, at, keys_b[new]),
        np.insert(points, at, points_b[new], axis=0),
        np.insert(counts, at, counts_b[new]),
        points_b[new],
    )


def combine_voxels(chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Several voxel clouds on one grid as one: sorted unique keys, count-weighted means, summed counts."""
    if len(chunks) == 1:
        return chunks[0]
    keys = np.concatenate([k for k, _, _ in chunks])
    points = np.concatenate([p for _, p, _ in chunks]).astype(np.float64)
    counts = np.concatenate([c for _, _, c in chunks]).astype(np.float64)
    unique, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(-1)
    total = np.bincount(inverse, weights=counts, minlength=len(unique))
    sums = np.stack([np.bincount(inverse, weights=points[:, axis] * counts, minlength=len(unique)) for axis in range(3)], axis=1)
    return unique, (sums / total[:, None]).astype(np.float32), total.astype(np.int32)


def shift_voxels(keys: np.ndarray, points: np.ndarray, counts: np.ndarray, delta: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A voxel cloud translated by ``delta``, re-binned on the grid (voxels that land in the
    same cell average by raw counts)."""
    if len(points) == 0:
        return keys.copy(), points.copy(), counts.copy()
    moved = points.astype(np.float64) + np.asarray(delta, dtype=np.float64)
    new_keys, inverse, _ = np.unique(voxel_keys(moved, voxel), return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    weights = counts.astype(np.float64)
    total = np.bincount(inverse, weights=weights, minlength=len(new_keys))
    means = np.stack([np.bincount(inverse, weights=moved[:, axis] * weights, minlength=len(new_keys)) for axis in range(3)], axis=1) / total[:, None]
    return new_keys, means.astype(np.float32), total.astype(np.int32)


def largest_cluster(points: np.ndarray, eps: float, min_points: int) -> np.ndarray:
    """Boolean mask of the largest density cluster (DBSCAN-like), or all True.

    Open3D's ``cluster_dbscan`` costs ~40 ms for 5000 points on our CPUs, so this is a grid
    version of the same rule: points are binned in cells of ``eps / 2``; a cell is *core*
    when its 3x3x3 block (about the eps-ball) holds at least ``min_points`` points; clusters
    are 26-connected core cells plus the occupied cells touching them. As in ConceptGraphs,
    the original points are kept when no cluster exists or the largest has fewer than 5 points.
    """
    keep_all = np.ones(len(points), dtype=bool)
    if len(points) < min_points:
        return keep_all
    cell = eps / 2.0
    extent = points.max(axis=0) - points.min(axis=0)
    while np.prod(np.floor(extent / cell) + 3) > 4e6:  # a huge object: coarser cells keep it bounded
        cell *= 2.0
    grid = np.floor((points - points.min(axis=0)) / cell).astype(np.int64) + 1
    dims = tuple(int(d) for d in grid.max(axis=0) + 2)
    flat = np.ravel_multi_index(grid.T, dims)
    counts = np.bincount(flat, minlength=int(np.prod(dims))).reshape(dims)
    block = ndimage.uniform_filter(counts.astype(np.float32), size=3, mode="constant") * 27.0
    core = (counts > 0) & (block >= min_points - 0.5)
    labels, found = ndimage.label(core, structure=np.ones((3, 3, 3)))
    if found == 0:
        return keep_all
    border = ndimage.maximum_filter(labels, size=3, mode="constant")
    cell_label = np.where(core, labels, np.where(counts > 0, border, 0))
    point_label = cell_label.ravel()[flat]
    sizes = np.bincount(point_label, minlength=found + 1)
    sizes[0] = 0
    best = int(np.argmax(sizes))
    if sizes[best] < 5:
        return keep_all
    return point_label == best


# ----------------------------------------------------------------------------------------
# Map objects
# ----------------------------------------------------------------------------------------
@dataclass
class MapObject:
    """One object of the map (a ConceptGraphs object)."""

    object_id: int
    voxel_keys: np.ndarray  # int64 (n,) sorted voxel keys of the compacted cloud (read ``keys``)
    voxel_points: np.ndarray  # float32 (n, 3) mean point of each voxel (read ``points``)
    voxel_counts: np.ndarray  # int32 (n,) raw points averaged in each voxel (read ``counts``)
    embedding: np.ndarray  # float32 unit vector: detection-count-weighted mean of detection features
    num_detections: int
    conf: float  # max detection confidence
    class_votes: dict[str, int]
    instance_votes: dict[int, int]  # diagnostics: the simulator ids its detections carried (gt perception only)
    first_seen: float
    last_seen: float
    bbox_min: np.ndarray = field(default=None)  # type: ignore[assignment]
    bbox_max: np.ndarray = field(default=None)  # type: ignore[assignment]
    # Our bookkeeping (not in the paper): votes of the detector's guesses, and the robot's own actions.
    kind_votes: dict[str, int] = field(default_factory=dict)  # "object" / "receptacle" -> detections
    attribute_votes: dict[str, dict[str, int]] = field(default_factory=dict)  # key -> value -> detections
    held: bool = False  # the gripper carries it: its points are where it was picked from
    grasp_point: np.ndarray | None = None  # gripper position when it was grasped (while held)
    moved_at: float | None = None  # stamp of the last release that put it where it is
    # Neighbour index: a tree over the points when it was built plus the voxels added since.
    _tree: cKDTree | None = field(default=None, repr=False)
    _tree_size: int = field(default=0, repr=False)
    _extra: list[np.ndarray] = field(default_factory=list, repr=False)
    _extra_tree: cKDTree | None = field(default=None, repr=False)
    # Merged detections not yet folded into the sorted cloud: (keys, points, counts) chunks.
    _chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)
    _pending: int = field(default=0, repr=False)
    # The map holding it: a compaction (which any read of the cloud may do) is journaled there.
    _owner: ObjectMap | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.bbox_min is None:
            self.refresh_bbox()

    # ---------------------------------------------------------------- the cloud
    @property
    def keys(self) -> np.ndarray:
        self.compact()
        return self.voxel_keys

    @property
    def points(self) -> np.ndarray:
        self.compact()
        return self.voxel_points

    @property
    def counts(self) -> np.ndarray:
        self.compact()
        return self.voxel_counts

    def set_voxels(self, keys: np.ndarray, points: np.ndarray, counts: np.ndarray) -> None:
        """Replace the whole cloud (drops anything appended and not yet compacted)."""
        self.voxel_keys, self.voxel_points, self.voxel_counts = keys, points, counts
        self._chunks, self._pending = [], 0

    def append_voxels(self, keys: np.ndarray, points: np.ndarray, counts: np.ndarray) -> None:
        """Merge a voxel cloud on the same grid, lazily: it is appended and folded in by
        ``compact`` (one sorted merge for many detections instead of one per detection).
        Compacts by itself once the appended voxels reach half the cloud (amortised O(1))."""
        if len(keys) == 0:
            return
        self._chunks.append((keys, points, counts))
        self._pending += len(keys)
        if self._pending > max(COMPACT_MIN, len(self.voxel_keys) // 2):
            self.compact()

    def compact(self) -> None:
        """Fold the appended chunks into the sorted cloud: the same keys, counts and (to float
        rounding) count-weighted means as merging each chunk in turn with ``merge_voxels``."""
        if not self._chunks:
            return
        owner = self._owner
        if owner is not None and owner.journal is not None:  # within a frame: the rounding of later merges depends on it
            owner.touch(self.object_id)
        with _COMPACT_LOCK:  # readers (recall, save) may compact too
            if not self._chunks:
                return
            keys, points, counts = combine_voxels(self._chunks)
            merged = merge_voxels(self.voxel_keys, self.voxel_points, self.voxel_counts, keys, points, counts)
            self.voxel_keys, self.voxel_points, self.voxel_counts = merged[:3]
            self._chunks, self._pending = [], 0

    def snapshot(self) -> MapObject:
        """A copy that later changes of this one do not reach (its arrays are never changed in
        place, only replaced, so they are shared; votes and appended chunks are copied)."""
        twin = copy.copy(self)
        twin.class_votes, twin.instance_votes, twin.kind_votes = dict(self.class_votes), dict(self.instance_votes), dict(self.kind_votes)
        twin.attribute_votes = {key: dict(votes) for key, votes in self.attribute_votes.items()}
        twin._chunks, twin._extra = list(self._chunks), list(self._extra)
        return twin

    # ---------------------------------------------------------------- derived
    @property
    def class_name(self) -> str:
        """Majority vote of the detections' classes (ties: alphabetical, for determinism)."""
        return min(self.class_votes.items(), key=lambda item: (-item[1], item[0]))[0]

    @property
    def instance_id(self) -> int | None:
        """Diagnostics only (gt perception): the simulator id most of its detections carried."""
        if not self.instance_votes:
            return None
        return min(self.instance_votes.items(), key=lambda item: (-item[1], item[0]))[0]

    @property
    def kind(self) -> str:
        """Majority vote of the detections' kinds ("object" when none voted; ties: "object")."""
        if not self.kind_votes:
            return "object"
        return min(self.kind_votes.items(), key=lambda item: (-item[1], item[0]))[0]

    @property
    def attributes(self) -> dict[str, str]:
        """Per attribute the value most detections guessed (ties: alphabetical), and the kind."""
        values = {key: min(votes.items(), key=lambda item: (-item[1], item[0]))[0] for key, votes in sorted(self.attribute_votes.items()) if votes}
        values["kind"] = self.kind
        return values

    @property
    def robot_moved(self) -> bool:
        """The robot itself carried it (held now, or put it down): it is real, whatever its detections."""
        return self.held or self.moved_at is not None

    def vote(self, kind: str, attributes: dict[str, str], weight: int = 1) -> None:
        self.kind_votes[kind] = self.kind_votes.get(kind, 0) + weight
        for key, value in attributes.items():
            if key == "kind":
                continue
            votes = self.attribute_votes.setdefault(key, {})
            votes[value] = votes.get(value, 0) + weight

    def move_by(self, delta: np.ndarray, voxel: float) -> None:
        """The robot carried it and put it down ``delta`` away: the whole cloud goes with it."""
        self.set_voxels(*shift_voxels(self.keys, self.points, self.counts, delta, voxel))
        self.forget_index()
        self.refresh_bbox()

    @property
    def center(self) -> np.ndarray:
        return (self.bbox_min + self.bbox_max) / 2.0

    def refresh_bbox(self, pad: float = 0.005) -> None:
        """Axis-aligned box of the voxel points, padded by half a voxel (a flat top keeps a volume)."""
        self.bbox_min = self.points.min(axis=0).astype(np.float64) - pad
        self.bbox_max = self.points.max(axis=0).astype(np.float64) + pad

    def nbytes(self) -> int:
        votes = len(self.class_votes) + len(self.instance_votes) + len(self.kind_votes) + sum(len(v) for v in self.attribute_votes.values())
        cloud = (len(self.voxel_keys) + self._pending) * 24  # int64 key + 3 float32 + int32 count per voxel
        return cloud + self.embedding.nbytes + 200 + 24 * votes

    # ---------------------------------------------------------------- neighbours
    def forget_index(self) -> None:
        self._tree, self._tree_size, self._extra, self._extra_tree = None, 0, [], None

    def note_new_points(self, new_points: np.ndarray) -> None:
        """Voxels were added: keep the tree, remember them, rebuild once they are half of it
        (so rebuilds cost O(1) per point over the object's life).

        Means of existing voxels drift by less than a voxel when they absorb points, which a
        0.025 m neighbour radius tolerates; a full rebuild per merge would cost ~10 ms for
        a large piece of furniture.
        """
        if self._tree is None or len(new_points) == 0:
            return
        self._extra.append(new_points)
        self._extra_tree = None
        if sum(len(e) for e in self._extra) > max(1024, self._tree_size // 2):
            self.forget_index()

    def near(self, queries: np.ndarray, radius: float) -> np.ndarray:
        """For each query point: is some point of this object closer than ``radius``?"""
        if len(queries) == 0:
            return np.zeros(0, dtype=bool)
        if self._tree is None:
            self._tree, self._tree_size = cKDTree(self.points), len(self.points)
            self._extra, self._extra_tree = [], None
        distance = self._tree.query(queries, k=1, distance_upper_bound=radius)[0]
        close = distance < radius
        if self._extra:
            if self._extra_tree is None:
                self._extra_tree = cKDTree(np.concatenate(self._extra))
            close |= self._extra_tree.query(queries, k=1, distance_upper_bound=radius)[0] < radius
        return close

    def overlap_fraction(
        self, points: np.ndarray, radius: float, needed: float = -np.inf, coarse: bool = False, keys: np.ndarray | None = None
    ) -> float:
        """Fraction of ``points`` within ``radius`` of this object (ConceptGraphs' overlap).

        Returns a cheap upper bound instead when it cannot exceed ``needed`` (the caller only
        compares the result with that): the fraction inside the box grown by ``radius``, and
        with ``coarse`` (for large clouds) the fraction in cells of size ``radius`` next to a
        cell holding a point of this object (a point within ``radius`` of one of ours is in
        such a cell). Points outside those cells are certainly not near, so only the others
        are looked up. ``keys``: the points' voxel keys on this object's grid, given when a
        voxel's diagonal is shorter than ``radius``: a point in a voxel this object holds is
        near without a lookup (both are means of points inside that voxel).
        """
        if len(points) == 0:
            return 0.0
        inside = np.all((points >= self.bbox_min - radius) & (points <= self.bbox_max + radius), axis=1)
        bound = float(np.count_nonzero(inside)) / len(points)
        if bound == 0.0 or bound <= needed:
            return bound
        candidates = points[inside]
        keys = None if keys is None else keys[inside]
        if coarse and len(candidates) > COARSE_MIN:
            hit = self.coarse_cells(radius, candidates)
            if hit is not None:
                bound = float(np.count_nonzero(hit)) / len(points)
                if bound == 0.0 or bound <= needed:
                    return bound
                candidates, keys = candidates[hit], None if keys is None else keys[hit]
        found = 0
        if keys is not None and len(self.voxel_keys):
            known = self.voxel_keys
            same = known[np.minimum(np.searchsorted(known, keys), len(known) - 1)] == keys
            found, candidates = int(np.count_nonzero(same)), candidates[~same]
        return float(found + np.count_nonzero(self.near(candidates, radius))) / len(points)

    def coarse_cells(self, cell: float, queries: np.ndarray) -> np.ndarray | None:
        """For each query: is it in a cell (of side ``cell``) next to or in a cell holding one
        of this object's points? (None when the object spans too many cells.)"""
        points = self.points
        low = np.floor(points.min(axis=0) / cell).astype(np.int64) - 1
        index = np.floor(points / cell).astype(np.int64) - low
        dims = index.max(axis=0) + 2
        if np.prod(dims.astype(np.float64)) > 8e6:
            return None
        grid = np.zeros(tuple(int(d) for d in dims), dtype=bool)
        grid[index[:, 0], index[:, 1], index[:, 2]] = True
        grid = ndimage.maximum_filter(grid, size=3, mode="constant")
        at = np.floor(queries / cell).astype(np.int64) - low
        valid = np.all((at >= 0) & (at < dims), axis=1)
        hit = np.zeros(len(queries), dtype=bool)
        hit[valid] = grid[at[valid, 0], at[valid, 1], at[valid, 2]]
        return hit


@dataclass(eq=False)  # holds arrays: compared by identity
class _Candidate:
    """A detection inside ``filter_detections``: its mask, pixel box (r0, r1, c0, c1) and mask area."""

    det: Detection
    mask: np.ndarray
    box: tuple[int, int, int, int]
    area: int

    @property
    def box_area(self) -> int:
        return (self.box[1] - self.box[0]) * (self.box[3] - self.box[2])

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[2] + self.box[3]) / 2.0, (self.box[0] + self.box[1]) / 2.0)


@dataclass
class ProcessedDetection:
    """A detection turned into a voxel cloud, ready to match."""

    keys: np.ndarray
    points: np.ndarray
    counts: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    embedding: np.ndarray
    class_name: str
    conf: float
    instance_id: int | None
    kind: str = "object"
    attributes: dict[str, str] = field(default_factory=dict)


def boxes_overlap(min_a: np.ndarray, max_a: np.ndarray, mins: np.ndarray, maxs: np.ndarray) -> np.ndarray:
    """Which boxes (mins, maxs: (n, 3)) intersect box a with a positive volume (3D IoU > 0)."""
    return np.all((np.minimum(max_a, maxs) - np.maximum(min_a, mins)) > 0, axis=1)


# ----------------------------------------------------------------------------------------
# The map
# ----------------------------------------------------------------------------------------
class ObjectMap:
    """Objects by id, with ConceptGraphs' matching, merging and periodic cleanup."""

    def __init__(self, config) -> None:
        self.config = config
        self.objects: dict[int, MapObject] = {}
        self.next_id = 0
        self.dirty_denoise: set[int] = set()  # changed since they were last denoised
        self.dirty_merge: set[int] = set()  # changed since the last merge pass
        self.journal: Journal | None = None  # open while a frame is being taken (see ``begin``)

    # ---------------------------------------------------------------- all or nothing
    def begin(self, journal: Journal) -> None:
        """Journal what the next changes do: an object is copied before its first change in
        the frame (``touch``), new ones are removed and removed ones put back on rollback."""
        self.journal = journal
        next_id, dirty_denoise, dirty_merge = self.next_id, set(self.dirty_denoise), set(self.dirty_merge)  # (objects changed since the last cleanup: few)

        def restore() -> None:
            self.next_id, self.dirty_denoise, self.dirty_merge = next_id, dirty_denoise, dirty_merge

        journal.undo(restore)

    def touch(self, object_id: int) -> None:
        """An object is about to change: keep a copy of it as it was (once per frame)."""
        if self.journal is not None:
            self.journal.entry(self.objects, object_id, MapObject.snapshot)

    def _removing(self, object_id: int) -> None:
        if self.journal is not None:
            self.journal.removing(self.objects, object_id, MapObject.snapshot, _by_id)  # (ids only grow: the dict is in id order)

    # ---------------------------------------------------------------- detections -> clouds
    def filter_detections(self, detections: list[Detection], image_shape: tuple[int, int]) -> list[Detection]:
        """ConceptGraphs' ``filter_detections`` then ``filter_gobs``, in the public code's order.

        ``filter_detections``, most confident first: drop masks under ``min_mask_fraction`` of
        the image and confidences under ``det_conf_threshold``; drop a detection whose mask IoU
        with a kept one exceeds ``mask_iou_threshold``; of two whose box centres are closer than
        ``det_proximity_px`` (20 px at ``det_proximity_width`` 1280 px, scaled to this image's
        width) keep the one with the larger box (the kept one on ties). ``filter_gobs`` then
        drops masks under ``min_mask_pixels`` (at least 10) and boxes over
        ``max_bbox_area_ratio`` of the image. Boxes are the masks' pixel bounding boxes.
        """
        c = self.config
        height, width = image_shape
        proximity = c.det_proximity_px * width / c.det_proximity_width
        kept: list[_Candidate] = []
        for det in sorted(detections, key=lambda d: -d.confidence):  # stable: ties keep the given order
            mask = np.asarray(det.mask, dtype=bool)
            if mask.shape != (height, width):
                continue
            area = int(np.count_nonzero(mask))
            if area == 0 or area < c.min_mask_fraction * height * width or det.confidence < c.det_conf_threshold:
                continue
            rows, cols = np.nonzero(np.any(mask, axis=1))[0], np.nonzero(np.any(mask, axis=0))[0]
            current = _Candidate(det, mask, (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1), area)
            keep = True
            for other in list(kept):  # (the public code removes from the list it iterates, skipping one: we check all)
                if _mask_iou(current.mask, current.box, current.area, other.mask, other.box, other.area) > c.mask_iou_threshold:
                    keep = False
                    break
                if math.dist(current.centre, other.centre) < proximity:
                    if current.box_area > other.box_area:
                        kept = [k for k in kept if k is not other]  # by identity: candidates hold arrays
                    else:
                        keep = False
                        break
            if keep:
                kept.append(current)
        out = []
        for candidate in kept:  # filter_gobs
            if candidate.area < max(c.min_mask_pixels, 10) or candidate.box_area > c.max_bbox_area_ratio * height * width:
                continue
            candidate.det.mask = candidate.mask
            out.append(candidate.det)
        return out

    def cloud_of(self, world: np.ndarray, agent_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Back-projected points of one mask -> denoised voxel cloud, or None if it fails a test."""
        c = self.config
        if len(world) < c.min_points:
            return None
        keys, points, counts = voxelize(world, c.voxel_size)
        keep = largest_cluster(points, c.dbscan_eps, c.dbscan_min_points)
        keys, points, counts = keys[keep], points[keep], counts[keep]
        center = (points.min(axis=0) + points.max(axis=0)) / 2.0
        if np.linalg.norm(center[:2] - agent_xy) > c.obj_include_dist:
            return None
        return keys, points, counts

    # ---------------------------------------------------------------- matching
    def _same_voxel(self, keys: np.ndarray) -> np.ndarray | None:
        """``keys`` when sharing a voxel implies being within the overlap radius, else None."""
        c = self.config
        return keys if c.voxel_size * math.sqrt(3.0) < c.overlap_radius else None

    def match(self, detections: list[ProcessedDetection]) -> list[int | None]:
        """For each detection the id of the object it merges into, or None (a new object)."""
        c = self.config
        ids = [i for i, obj in self.objects.items() if not obj.held]  # a carried object is not where its points are
        if not ids or not detections:
            return [None] * len(detections)
        mins = np.stack([self.objects[i].bbox_min for i in ids])
        maxs = np.stack([self.objects[i].bbox_max for i in ids])
        features = np.stack([self.objects[i].embedding for i in ids])
        matches: list[int | None] = []
        for det in detections:
            visual = features @ det.embedding  # float32, as the paper's torch sums (1.2 is compared in float32 too)
            sim = (1.0 - c.phys_bias) * visual
            for column in np.nonzero(boxes_overlap(det.bbox_min, det.bbox_max, mins, maxs))[0]:
                # spatial <= the fraction of points inside the object's grown box: skip hopeless queries
                needed = (c.sim_threshold - sim[column]) / (1.0 + c.phys_bias) if c.phys_bias > -1.0 else np.inf
                spatial = self.objects[ids[column]].overlap_fraction(det.points, c.overlap_radius, needed, keys=self._same_voxel(det.keys))
                sim[column] += (1.0 + c.phys_bias) * spatial
            best = int(np.argmax(sim))
            matches.append(ids[best] if sim[best] > c.sim_threshold else None)
        return matches

    def add(self, det: ProcessedDetection, stamp: float) -> int:
        object_id = self.next_id
        self.next_id += 1
        self.touch(object_id)  # (new: removed on rollback)
        self.objects[object_id] = MapObject(
            object_id=object_id,
            voxel_keys=det.keys,
            voxel_points=det.points,
            voxel_counts=det.counts,
            embedding=det.embedding.astype(np.float32),
            num_detections=1,
            conf=float(det.conf),
            class_votes={det.class_name: 1},
            instance_votes={} if det.instance_id is None else {int(det.instance_id): 1},
            first_seen=stamp,
            last_seen=stamp,
            _owner=self,
        )
        self.objects[object_id].vote(det.kind, det.attributes)
        self.dirty_denoise.add(object_id)
        self.dirty_merge.add(object_id)
        return object_id

    def merge_detection(self, object_id: int, det: ProcessedDetection, stamp: float) -> None:
        """``merge_obj2_into_obj1`` for a detection (no DBSCAN, as in 3D-Mem's matching merge)."""
        self.touch(object_id)
        obj = self.objects[object_id]
        # voxels new to the compacted cloud go to the neighbour index (as merge_voxels' "new" ones)
        known = obj.voxel_keys
        where = np.minimum(np.searchsorted(known, det.keys), max(len(known) - 1, 0))
        new = (known[where] != det.keys) if len(known) else np.ones(len(det.keys), dtype=bool)
        obj.append_voxels(det.keys, det.points, det.counts)
        obj.note_new_points(det.points[new])
        # voxel means stay inside the union of the two boxes: no pass over all points needed
        obj.bbox_min, obj.bbox_max = np.minimum(obj.bbox_min, det.bbox_min), np.maximum(obj.bbox_max, det.bbox_max)
        obj.embedding = _weighted_unit(obj.embedding, obj.num_detections, det.embedding, 1)
        obj.num_detections += 1
        obj.class_votes[det.class_name] = obj.class_votes.get(det.class_name, 0) + 1
        if det.instance_id is not None:
            obj.instance_votes[int(det.instance_id)] = obj.instance_votes.get(int(det.instance_id), 0) + 1
        obj.vote(det.kind, det.attributes)
        obj.conf = max(obj.conf, float(det.conf))
        obj.last_seen = max(obj.last_seen, stamp)
        self.dirty_denoise.add(object_id)
        self.dirty_merge.add(object_id)

    def merge_objects(self, keeper_id: int, absorbed_id: int) -> None:
        """Merge object ``absorbed`` into ``keeper`` (with DBSCAN, as the periodic merge does)."""
        c = self.config
        self.touch(keeper_id)
        self._removing(absorbed_id)
        keeper, absorbed = self.objects[keeper_id], self.objects.pop(absorbed_id)
        keys, points, counts, _ = merge_voxels(keeper.keys, keeper.points, keeper.counts, absorbed.keys, absorbed.points, absorbed.counts)
        keep = largest_cluster(points, c.dbscan_eps, c.dbscan_min_points)
        keeper.set_voxels(keys[keep], points[keep], counts[keep])
        keeper.forget_index()
        keeper.refresh_bbox()
        keeper.embedding = _weighted_unit(keeper.embedding, keeper.num_detections, absorbed.embedding, absorbed.num_detections)
        keeper.num_detections += absorbed.num_detections
        for votes_a, votes_b in ((keeper.class_votes, absorbed.class_votes), (keeper.instance_votes, absorbed.instance_votes), (keeper.kind_votes, absorbed.kind_votes)):
            for key, count in votes_b.items():
                votes_a[key] = votes_a.get(key, 0) + count
        for key, votes_b in absorbed.attribute_votes.items():
            votes_a = keeper.attribute_votes.setdefault(key, {})
            for value, count in votes_b.items():
                votes_a[value] = votes_a.get(value, 0) + count
        if absorbed.moved_at is not None:
            keeper.moved_at = absorbed.moved_at if keeper.moved_at is None else max(keeper.moved_at, absorbed.moved_at)
        keeper.conf = max(keeper.conf, absorbed.conf)
        keeper.first_seen = min(keeper.first_seen, absorbed.first_seen)
        keeper.last_seen = max(keeper.last_seen, absorbed.last_seen)
        self.dirty_denoise.discard(absorbed_id)
        self.dirty_merge.discard(absorbed_id)
        self.dirty_merge.add(keeper_id)

    # ---------------------------------------------------------------- the robot's own actions
    def held_id(self) -> int | None:
        return next((i for i, obj in self.objects.items() if obj.held), None)

    def nearest_object(self, xyz: np.ndarray, radius: float) -> int | None:
        """The map object (kind "object", not carried) whose box centre is nearest ``xyz``, within ``radius``."""
        best, best_distance = None, radius
        for object_id in sorted(self.objects):
            obj = self.objects[object_id]
            if obj.held or obj.kind != "object":
                continue
            distance = float(np.linalg.norm(obj.center - xyz))
            if distance <= best_distance:
                best, best_distance = object_id, distance
        return best

    def surface_under(self, xyz: np.ndarray, margin: float, min_detections: int) -> int | None:
        """The receptacle whose box holds ``xyz`` in plan view, or is within ``margin`` of it
        (the nearest box if several; inside several, the one with the nearest centre)."""
        best, best_key = None, (np.inf, np.inf)
        for object_id in sorted(self.objects):
            obj = self.objects[object_id]
            if obj.kind != "receptacle" or obj.num_detections < min_detections:
                continue
            gap = float(np.linalg.norm(np.clip(xyz[:2], obj.bbox_min[:2], obj.bbox_max[:2]) - xyz[:2]))
            key = (gap, float(np.linalg.norm(obj.center[:2] - xyz[:2])))
            if gap <= margin and key < best_key:
                best, best_key = object_id, key
        return best

    def grasp(self, object_id: int, gripper: np.ndarray) -> None:
        self.touch(object_id)
        obj = self.objects[object_id]
        obj.held, obj.grasp_point = True, np.asarray(gripper, dtype=np.float64).copy()
        self.dirty_denoise.discard(object_id)
        self.dirty_merge.discard(object_id)

    def release(self, object_id: int, gripper: np.ndarray, stamp: float) -> None:
        """Put the carried object down: its cloud moves with the gripper, from where it was
        grasped to ``gripper`` (it keeps its offset from the gripper; orientation is not tracked)."""
        self.touch(object_id)
        obj = self.objects[object_id]
        gripper = np.asarray(gripper, dtype=np.float64)
        start = obj.grasp_point if obj.grasp_point is not None else obj.center
        obj.move_by(gripper - start, self.config.voxel_size)
        obj.held, obj.grasp_point, obj.moved_at = False, None, float(stamp)
        obj.last_seen = max(obj.last_seen, float(stamp))
        self.dirty_denoise.add(object_id)
        self.dirty_merge.add(object_id)

    def let_go(self, object_id: int) -> None:
        """The gripper took something else: the carried object stays where it was seen (a release we never heard of)."""
        self.touch(object_id)
        obj = self.objects[object_id]
        obj.held, obj.grasp_point = False, None

    def remove(self, object_id: int) -> None:
        self._removing(object_id)
        self.objects.pop(object_id, None)
        self.dirty_denoise.discard(object_id)
        self.dirty_merge.discard(object_id)

    # ---------------------------------------------------------------- periodic cleanup
    def denoise(self) -> set[int]:
        """``denoise_objects``: keep each object's largest cluster (only objects changed since
        their last denoise: the rule is idempotent, so the others would not change)."""
        c = self.config
        changed = set()
        for object_id in sorted(self.dirty_denoise):
            obj = self.objects.get(object_id)
            if obj is None or len(obj.points) <= 1:
                continue
            keep = largest_cluster(obj.points, c.dbscan_eps, c.dbscan_min_points)
            if np.all(keep) or np.count_nonzero(keep) < 4:
                continue
            self.touch(object_id)
            obj = self.objects[object_id]
            obj.set_voxels(obj.keys[keep], obj.points[keep], obj.counts[keep])
            obj.forget_index()
            obj.refresh_bbox()
            changed.add(object_id)
        self.dirty_denoise.clear()
        return changed

    def filter_far(self, agent_xy: np.ndarray) -> list[int]:
        """``filter_objects``: drop objects farther than ``obj_include_dist`` with few detections."""
        c = self.config
        removed = [
            i
            for i, obj in self.objects.items()
            if np.linalg.norm(obj.center[:2] - agent_xy) > c.obj_include_dist and obj.num_detections < c.obj_min_detections and not obj.robot_moved
        ]
        for object_id in removed:
            self.remove(object_id)
        return removed

    def merge_overlapping(self) -> dict[int, int]:
        """``merge_objects``: merge pairs whose overlap > thresh and feature cosine > thresh.

        Pairs are taken by decreasing overlap (measured before any merge of the pass, as the
        paper's overlap matrix); the cosine is read when the pair's turn comes. Only pairs with
        an object changed since the last pass are tested; the others were tested before with
        the same clouds. Overlaps are measured only where they can matter: a pair whose cosine
        is at most the threshold can merge only after an earlier merge of the pass changed a
        feature, so its overlap is measured only when some pair will merge. Returns
        {absorbed id: keeper id}.
        """
        c = self.config
        ids = sorted(i for i, obj in self.objects.items() if not obj.held)
        if len(ids) < 2 or not self.dirty_merge:
            self.dirty_merge.clear()
            return {}
        mins = np.stack([self.objects[i].bbox_min for i in ids])
        maxs = np.stack([self.objects[i].bbox_max for i in ids])
        pairs, deferred = [], []
        for a_index, a in enumerate(ids):
            overlapping = np.nonzero(boxes_overlap(mins[a_index], maxs[a_index], mins, maxs))[0]
            for b_index in overlapping:
                b = ids[b_index]
                if a == b or (a not in self.dirty_merge and b not in self.dirty_merge):
                    continue
                if float(self.objects[a].embedding @ self.objects[b].embedding) > c.merge_visual_sim_thresh:
                    pairs.append((a, b))
                else:
                    deferred.append((a, b))

        def above(candidates):
            # overlap[a, b]: the fraction of b's points near a's points; the cheap bound settles
            # (exactly) the pairs that cannot exceed the threshold
            found = []
            for a, b in candidates:
                other = self.objects[b]
                ratio = self.objects[a].overlap_fraction(other.points, c.overlap_radius, c.merge_overlap_thresh, coarse=True, keys=self._same_voxel(other.keys))
                if ratio > c.merge_overlap_thresh:
                    found.append((ratio, a, b))
            return found

        pairs = above(pairs)
        if pairs:  # the first of them merges (nothing changed yet): later features may differ
            pairs += above(deferred)
        self.dirty_merge.clear()
        merged: dict[int, int] = {}
        for ratio, a, b in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
            if a not in self.objects or b not in self.objects:
                continue
            if float(self.objects[a].embedding @ self.objects[b].embedding) <= c.merge_visual_sim_thresh:
                continue
            keeper, absorbed = (b, a) if self.objects[b].conf >= self.objects[a].conf else (a, b)
            self.merge_objects(keeper, absorbed)
            merged = {k: (keeper if v == absorbed else v) for k, v in merged.items()}
            merged[absorbed] = keeper
        return merged

    def nbytes(self) -> int:
        return sum(obj.nbytes() for obj in self.objects.values())

    # ---------------------------------------------------------------- checkpoints
    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON-able fields and arrays (clouds concatenated in id order, ``sizes`` per object)."""
        objects = [self.objects[i] for i in sorted(self.objects)]
        arrays = {
            "ids": np.array([o.object_id for o in objects], dtype=np.int64),
            "sizes": np.array([len(o.keys) for o in objects], dtype=np.int64),
            "keys": np.concatenate([o.keys for o in objects] or [np.zeros(0, np.int64)]).astype(np.int64),
            "points": np.concatenate([o.points for o in objects] or [np.zeros((0, 3), np.float32)]).astype(np.float32),
            "counts": np.concatenate([o.counts for o in objects] or [np.zeros(0, np.int32)]).astype(np.int32),
            "embeddings": np.stack([o.embedding for o in objects]).astype(np.float32) if objects else np.zeros((0, 0), np.float32),
            "boxes": np.array([np.concatenate([o.bbox_min, o.bbox_max]) for o in objects], dtype=np.float64).reshape(-1, 6),
        }
        state = {
            "objects": [
                {
                    "num_detections": o.num_detections,
                    "conf": o.conf,
                    "class_votes": o.class_votes,
                    "instance_votes": {str(k): v for k, v in o.instance_votes.items()},
                    "kind_votes": o.kind_votes,
                    "attribute_votes": o.attribute_votes,
                    "first_seen": o.first_seen,
                    "last_seen": o.last_seen,
                    "held": o.held,
                    "grasp_point": None if o.grasp_point is None else o.grasp_point.tolist(),
                    "moved_at": o.moved_at,
                }
                for o in objects
            ],
            "next_id": self.next_id,
            "dirty_denoise": sorted(self.dirty_denoise),
            "dirty_merge": sorted(self.dirty_merge),
        }
        return state, arrays

    @classmethod
    def from_state(cls, config, state: dict, arrays: dict[str, np.ndarray], dim: int | None = None) -> ObjectMap:
        """The map ``to_state`` described; ``ValueError`` on malformed or inconsistent data.

        ``dim``: the feature size the encoder gives (checked when there are objects).
        """
        with refusing("object map"):
            ids, sizes = array(arrays, "ids", "i", 1), array(arrays, "sizes", "i", 1)
            keys, points, counts = array(arrays, "keys", "i", 1), array(arrays, "points", "f", 2, 3), array(arrays, "counts", "i", 1)
            embeddings, boxes = array(arrays, "embeddings", "f", 2), array(arrays, "boxes", "f", 2, 6)
            records = state["objects"]
            if not isinstance(records, list) or not (len(ids) == len(sizes) == len(records) == len(embeddings) == len(boxes)):
                raise ValueError("object arrays and object records disagree in length")
            if len(set(ids.tolist())) != len(ids):
                raise ValueError("object ids repeat")
            if np.any(sizes <= 0) or int(sizes.sum()) != len(points) or len(keys) != len(points) or len(counts) != len(points):
                raise ValueError("object point arrays disagree in length (or an object has no points)")
            if np.any(counts <= 0):
                raise ValueError("voxel counts must be positive")
            if dim is not None and len(ids) and embeddings.shape[1] != dim:
                raise ValueError(f"object features have {embeddings.shape[1]} dimensions, the encoder gives {dim}")
            if np.any(boxes[:, :3] > boxes[:, 3:]):
                raise ValueError("an object box has min > max")
            starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            step = np.diff(keys) > 0
            step[starts[1:-1] - 1] = True  # a new object may start anywhere
            if not np.all(step):
                raise ValueError("voxel keys are not strictly increasing within an object")
            objects = cls(config)
            for n, meta in enumerate(records):
                rows = slice(int(starts[n]), int(starts[n + 1]))
                object_id = int(ids[n])
                objects.objects[object_id] = MapObject(
                    object_id=object_id,
                    voxel_keys=keys[rows].astype(np.int64),
                    voxel_points=points[rows].astype(np.float32),
                    voxel_counts=counts[rows].astype(np.int32),
                    embedding=embeddings[n].astype(np.float32),
                    num_detections=integer(meta["num_detections"]),
                    conf=number(meta["conf"]),
                    class_votes=votes(meta["class_votes"]),
                    instance_votes=votes(meta["instance_votes"], int),
                    first_seen=number(meta["first_seen"]),
                    last_seen=number(meta["last_seen"]),
                    bbox_min=boxes[n, :3].astype(np.float64),
                    bbox_max=boxes[n, 3:].astype(np.float64),
                    kind_votes=votes(meta["kind_votes"]),
                    attribute_votes={str(k): votes(v) for k, v in meta["attribute_votes"].items()},
                    held=flag(meta["held"]),
                    grasp_point=None if meta["grasp_point"] is None else vector(meta["grasp_point"], 3),
                    moved_at=None if meta["moved_at"] is None else number(meta["moved_at"]),
                    _owner=objects,
                )
                if objects.objects[object_id].num_detections < 1 or not objects.objects[object_id].class_votes:
                    raise ValueError(f"object {object_id} has no detections")
            if sum(o.held for o in objects.objects.values()) > 1:
                raise ValueError("more than one object is held")
            objects.next_id = integer(state["next_id"])
            if objects.objects and objects.next_id <= max(objects.objects):
                raise ValueError("next object id is not above every object id")
            objects.dirty_denoise = set(integers(state["dirty_denoise"]))
            objects.dirty_merge = set(integers(state["dirty_merge"]))
            if not (objects.dirty_denoise | objects.dirty_merge) <= set(objects.objects):
                raise ValueError("dirty object ids name no object")
            return objects


def _by_id(item: tuple[int, MapObject]) -> int:
    return item[0]


def _weighted_unit(a: np.ndarray, weight_a: int, b: np.ndarray, weight_b: int) -> np.ndarray:
    mean = (a.astype(np.float64) * weight_a + b.astype(np.float64) * weight_b) / (weight_a + weight_b)
    norm = float(np.linalg.norm(mean))
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def _mask_iou(mask_a, box_a, area_a, mask_b, box_b, area_b) -> float:
    """IoU of two masks, computed only inside their boxes' intersection."""
    r0, r1 = max(box_a[0], box_b[0]), min(box_a[1], box_b[1])
    c0, c1 = max(box_a[2], box_b[2]), min(box_a[3], box_b[3])
    if r1 <= r0 or c1 <= c0:
        return 0.0
    inter = int(np.count_nonzero(mask_a[r0:r1, c0:c1] & mask_b[r0:r1, c0:c1]))
    return inter / max(area_a + area_b - inter, 1)
