"""3D-Mem's memory snapshots: co-visibility clustering of objects over candidate frames.

Every processed view with at least one object is a candidate ``Frame`` holding
``full_obj_list`` = {object id: detection confidence}. A ``Snapshot`` is a frame chosen to
show a ``cluster`` of objects. ``fit`` is the paper's greedy hierarchical clustering
(``SceneHierarchicalClustering.fit``): start with all objects in one cluster, repeatedly take
the largest leaf, look for frames that see every object of it (ranked by how many objects the
frame sees, then the confidence sum over the cluster, preferring a frame already chosen in
this pass); assign the leaf to that frame, or else split it in two with 2-means on the
objects' (x, y) centres. ``SnapshotMemory.update`` re-clusters only the objects that changed
or are near the agent, with every snapshot they belong to; the others stay as they were.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from embodied_mem.geometry import wrap_angle
from embodied_mem.memory.snapshots3d.state import (
    Journal,
    integer,
    integers,
    number,
    refusing,
)
from embodied_mem.types import Pose


def kmeans(points: np.ndarray, k: int, n_init: int = 10, seed: int = 0, iterations: int = 100) -> np.ndarray:
    """Labels of Lloyd's k-means with k-means++ seeding, best inertia of ``n_init`` runs.

    The same algorithm as ``sklearn.cluster.KMeans(n_clusters=k, n_init=10)``, run for all
    seeds at once in numpy: sklearn spends ~16 ms per call on a 20-point problem, and the
    snapshot update makes several such splits per frame. Seeded, so it is deterministic.
    """
    points = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    n = len(points)
    if k >= n:
        return np.arange(n) % max(k, 1)
    rng = np.random.default_rng(seed)
    centres = np.empty((n_init, k, points.shape[1]))
    centres[:, 0] = points[rng.integers(n, size=n_init)]
    for c in range(1, k):  # k-means++: next centre drawn in proportion to the squared distance
        d2 = ((points[None, :, None, :] - centres[:, None, :c, :]) ** 2).sum(-1).min(-1)  # (runs, n)
        total = d2.sum(axis=1, keepdims=True)
        probabilities = np.where(total > 0, d2 / np.where(total > 0, total, 1.0), 1.0 / n)
        cumulative = np.cumsum(probabilities, axis=1)
        draws = rng.random((n_init, 1)) * cumulative[:, -1:]
        chosen = np.minimum((cumulative < draws).sum(axis=1), n - 1)
        centres[:, c] = points[chosen]
    for _ in range(iterations):
        d2 = ((points[None, :, None, :] - centres[:, None, :, :]) ** 2).sum(-1)  # (runs, n, k)
        labels = d2.argmin(-1)
        one_hot = labels[..., None] == np.arange(k)  # (runs, n, k)
        sizes = one_hot.sum(axis=1)  # (runs, k)
        sums = np.einsum("rnk,nd->rkd", one_hot.astype(np.float64), points)
        updated = np.where(sizes[..., None] > 0, sums / np.maximum(sizes, 1)[..., None], centres)
        if np.allclose(updated, centres):
            break
        centres = updated
    d2 = ((points[None, :, None, :] - centres[:, None, :, :]) ** 2).sum(-1)
    labels = d2.argmin(-1)
    inertia = np.take_along_axis(d2, labels[..., None], -1)[..., 0].sum(-1)
    return labels[int(np.argmin(inertia))]


@dataclass
class Frame:
    """A candidate view: where it was taken and the objects it saw (``full_obj_list``)."""

    frame_id: int
    stamp: float
    pose: Pose
    objects: dict[int, float]  # full_obj_list: object id -> confidence
    bin: tuple[int, int, int]  # (cell x, cell y, heading bin) of the pose
    order: int  # insertion order (ties in frame ranking go to the older frame, as in the paper)

    @property
    def obs_point(self) -> np.ndarray:
        return self.pose.position[:2]

    def nbytes(self) -> int:
        return 120 + 16 * len(self.objects)


@dataclass
class Snapshot:
    """A chosen frame and the cluster of objects it stands for."""

    frame_id: int
    cluster: list[int] = field(default_factory=list)


def pose_bin(pose: Pose, cell: float, heading_deg: float) -> tuple[int, int, int]:
    heading = math.floor((wrap_angle(pose.yaw) + math.pi) / math.radians(heading_deg)) % max(1, round(360.0 / heading_deg))
    return (math.floor(pose.position[0] / cell), math.floor(pose.position[1] / cell), heading)


class SnapshotMemory:
    """Candidate frames, the snapshots chosen among them, and the incremental update."""

    def __init__(self, min_detection: int = 1) -> None:
        self.min_detection = min_detection
        self.frames: dict[int, Frame] = {}
        self.snapshots: dict[int, Snapshot] = {}
        self.object_frames: dict[int, set[int]] = {}  # inverted index: object -> frames that saw it
        self.bins: dict[tuple[int, int, int], int] = {}  # newest frame of each pose bin
        self.superseded: set[int] = set()  # older frames of a bin, dropped once nothing needs them
        self.orphans: list[int] = []  # objects no frame covered in the last update (should stay empty)
        self._order = 0
        self.journal: Journal | None = None  # open while a frame is being taken (see ``begin``)

    # ---------------------------------------------------------------- all or nothing
    def begin(self, journal: Journal) -> None:
        """Journal what the next changes do (frames, snapshots and holder sets are kept as they
        were before their first change; the dicts' key order too, when a key is removed)."""
        self.journal = journal
        order, orphans = self._order, self.orphans

        def restore() -> None:
            self._order, self.orphans = order, orphans

        journal.undo(restore)

    def _keep_frame(self, frame_id: int) -> Frame:
        """The frame, about to change in place (its ``objects``)."""
        if self.journal is not None:
            self.journal.entry(self.frames, frame_id, _copy_frame)
        return self.frames[frame_id]

    def _keep_snapshot(self, frame_id: int) -> Snapshot:
        if self.journal is not None:
            self.journal.entry(self.snapshots, frame_id, _copy_snapshot)
        return self.snapshots[frame_id]

    def _keep(self, d: dict, key, removing: bool = False) -> None:
        if self.journal is not None:
            (self.journal.removing if removing else self.journal.entry)(d, key)

    def _member(self, s: set, x) -> None:
        if self.journal is not None:
            self.journal.member(s, x)

    def _holders(self, object_id: int) -> set[int]:
        """The frames that saw an object (a new, empty set when none did)."""
        if object_id not in self.object_frames:
            self._keep(self.object_frames, object_id)
            self.object_frames[object_id] = set()
        return self.object_frames[object_id]

    # ---------------------------------------------------------------- frames
    def add_frame(self, frame_id: int, stamp: float, pose: Pose, objects: dict[int, float], bin_key: tuple[int, int, int]) -> Frame:
        frame = Frame(frame_id, stamp, pose, dict(objects), bin_key, self._order)
        self._order += 1
        self._keep(self.frames, frame_id)
        self.frames[frame_id] = frame
        for object_id in frame.objects:
            holders = self._holders(object_id)
            self._member(holders, frame_id)
            holders.add(frame_id)
        previous = self.bins.get(bin_key)
        if previous is not None and previous in self.frames:
            self._member(self.superseded, previous)
            self.superseded.add(previous)
        self._keep(self.bins, bin_key)
        self.bins[bin_key] = frame_id
        return frame

    def _drop_frame(self, frame_id: int) -> None:
        if self.journal is not None:  # (frames are added in ``order``: the dict is in that order)
            self.journal.removing(self.frames, frame_id, order=_by_order)
        frame = self.frames.pop(frame_id)
        for object_id in frame.objects:
            holders = self.object_frames.get(object_id)
            if holders is not None:
                self._member(holders, frame_id)
                holders.discard(frame_id)
                if not holders:
                    self._keep(self.object_frames, object_id, removing=True)
                    del self.object_frames[object_id]
        self._member(self.superseded, frame_id)
        self.superseded.discard(frame_id)
        if self.bins.get(frame.bin) == frame_id:
            self._keep(self.bins, frame.bin, removing=True)
            del self.bins[frame.bin]

    def prune(self) -> int:
        """Drop superseded frames no snapshot uses and whose objects other frames also see.

        Our departure to keep memory flat on revisits: a bin (0.5 m cell, 30 degree heading)
        keeps its newest frame; an older one lives on only while a snapshot uses it or it is
        the last frame that saw some object (so every object can always be clustered).
        """
        dropped = 0
        for frame_id in sorted(self.superseded):
            frame = self.frames.get(frame_id)
            if frame is None:
                self._member(self.superseded, frame_id)
                self.superseded.discard(frame_id)
                continue
            if frame_id in self.snapshots:
                continue
            if any(len(self.object_frames.get(o, ())) <= 1 for o in frame.objects):
                continue
            self._drop_frame(frame_id)
            dropped += 1
        return dropped

    # ---------------------------------------------------------------- object bookkeeping
    def remove_objects(self, object_ids) -> None:
        """Objects left the map: take them out of frames and snapshots; drop what is empty."""
        for object_id in object_ids:
            self._keep(self.object_frames, object_id, removing=True)
            for frame_id in self.object_frames.pop(object_id, set()):
                self._keep_frame(frame_id).objects.pop(object_id, None)
            for frame_id, snapshot in self.snapshots.items():
                if object_id in snapshot.cluster:
                    self._keep_snapshot(frame_id).cluster.remove(object_id)
        self._drop_empty()

    def remap_object(self, absorbed: int, keeper: int) -> None:
        """``absorbed`` was merged into ``keeper``: frames that saw one now see the other."""
        self._keep(self.object_frames, absorbed, removing=True)
        for frame_id in self.object_frames.pop(absorbed, set()):
            frame = self._keep_frame(frame_id)
            conf = frame.objects.pop(absorbed)
            frame.objects[keeper] = max(conf, frame.objects.get(keeper, conf))
            holders = self._holders(keeper)
            self._member(holders, frame_id)
            holders.add(frame_id)
        for frame_id, snapshot in self.snapshots.items():
            if absorbed in snapshot.cluster:
                self._keep_snapshot(frame_id).cluster = list(dict.fromkeys(keeper if o == absorbed else o for o in snapshot.cluster))

    def _drop_empty(self) -> None:
        for frame_id in [f for f, s in self.snapshots.items() if not s.cluster]:
            self._keep(self.snapshots, frame_id, removing=True)
            del self.snapshots[frame_id]
        for frame_id in [f for f, frame in self.frames.items() if not frame.objects]:
            if frame_id in self.snapshots:
                self._keep(self.snapshots, frame_id, removing=True)
                del self.snapshots[frame_id]
            self._drop_frame(frame_id)

    def owner(self) -> dict[int, int]:
        """Object id -> frame id of the snapshot holding it."""
        return {o: frame_id for frame_id, s in self.snapshots.items() for o in s.cluster}

    # ---------------------------------------------------------------- the update
    def update(self, object_ids, centres: dict[int, np.ndarray], detections: dict[int, int]) -> set[int]:
        """``update_snapshots``: re-cluster ``object_ids`` and every snapshot holding one of them.

        ``centres``: object id -> (x, y) box centre; ``detections``: object id -> detections.
        Objects with fewer than ``min_detection`` detections stay out of every snapshot.
        Returns the frame ids of the snapshots that were dissolved and rebuilt.
        """
        wanted = {o for o in object_ids if o in centres}
        dissolved = {frame_id for frame_id, s in self.snapshots.items() if wanted.intersection(s.cluster)}
        for frame_id in dissolved:
            self._keep(self.snapshots, frame_id, removing=True)
            wanted.update(self.snapshots.pop(frame_id).cluster)
        wanted = sorted(o for o in wanted if o in centres and detections.get(o, 0) >= self.min_detection)
        if wanted:
            xy = np.array([centres[o][:2] for o in wanted], dtype=np.float64)
            for frame_id, cluster in self.fit(xy, wanted).items():
                if frame_id in self.snapshots:
                    self._keep_snapshot(frame_id).cluster += cluster
                else:
                    self._keep(self.snapshots, frame_id)
                    self.snapshots[frame_id] = Snapshot(frame_id, cluster)
        return dissolved

    def fit(self, xy: np.ndarray, object_ids: list[int]) -> dict[int, list[int]]:
        """The greedy co-visibility clustering; returns {frame id: cluster}."""
        chosen: dict[int, list[int]] = {}
        self.orphans = []
        leaves = [(np.arange(len(object_ids)), 0)]  # (indices into object_ids, creation order)
        created = 1
        while leaves:
            # HiPart's select_kid(decreasing=True) with split criterion = size: the largest leaf
            position = max(range(len(leaves)), key=lambda i: (len(leaves[i][0]), -leaves[i][1]))
            indices, _ = leaves.pop(position)
            cluster = [object_ids[i] for i in indices]
            frame_id = self.select_frame(cluster, chosen)
            if frame_id is not None:
                chosen.setdefault(frame_id, []).extend(cluster)
                continue
            if len(indices) == 1:  # nothing saw it (cannot happen while frames are pruned as above)
                self.orphans.append(cluster[0])
                continue
            for part in split_in_two(xy[indices]):
                leaves.append((indices[part], created))
                created += 1
        return chosen

    def select_frame(self, cluster: list[int], chosen: dict[int, list[int]]) -> int | None:
        """The paper's ``select_frame``: frames whose object list contains the whole cluster."""
        holders = sorted((self.object_frames.get(o, set()) for o in cluster), key=len)
        if not holders or not holders[0]:
            return None
        candidates = set(holders[0]).intersection(*holders[1:])
        if not candidates:
            return None

        def rank(frame_id: int) -> tuple:
            frame = self.frames[frame_id]
            return (-len(frame.objects), -sum(frame.objects[o] for o in cluster), frame.order)

        ranked = sorted(candidates, key=rank)
        for frame_id in ranked:
            if frame_id in chosen:
                return frame_id
        return ranked[0]

    # ---------------------------------------------------------------- size
    def nbytes(self) -> int:
        frames = sum(f.nbytes() for f in self.frames.values())
        snapshots = sum(40 + 8 * len(s.cluster) for s in self.snapshots.values())
        return frames + snapshots + 48 * len(self.bins)

    # ---------------------------------------------------------------- checkpoints
    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Frames (with their ``full_obj_list``), snapshots, pose bins and bookkeeping; no arrays."""
        state = {
            "frames": [
                {"frame_id": f.frame_id, "stamp": f.stamp, "pose": f.pose.to_dict(), "objects": {str(k): v for k, v in f.objects.items()}, "bin": list(f.bin), "order": f.order}
                for f in self.frames.values()
            ],
            "snapshots": [{"frame_id": s.frame_id, "cluster": list(s.cluster)} for s in self.snapshots.values()],
            "bins": [[list(k), v] for k, v in self.bins.items()],
            "superseded": sorted(self.superseded),
            "order": self._order,
        }
        return state, {}

    @classmethod
    def from_state(cls, state: dict, arrays: dict[str, np.ndarray], min_detection: int = 1, object_ids=None) -> SnapshotMemory:
        """The memory ``to_state`` described; ``ValueError`` on malformed or inconsistent data.

        ``object_ids``: the objects of the map it goes with (frames may name no other).
        """
        with refusing("snapshot memory"):
            memory = cls(min_detection)
            known = None if object_ids is None else set(object_ids)
            for f in state["frames"]:
                seen = {integer(int(k)): number(v) for k, v in f["objects"].items()}
                frame = Frame(integer(f["frame_id"]), number(f["stamp"]), Pose.from_dict(f["pose"]), seen, tuple(integers(f["bin"])), integer(f["order"]))
                if len(frame.bin) != 3 or frame.frame_id in memory.frames or not frame.objects:
                    raise ValueError(f"frame {frame.frame_id} is repeated, empty or has a bad bin")
                if known is not None and not set(frame.objects) <= known:
                    raise ValueError(f"frame {frame.frame_id} refers to an unknown object")
                memory.frames[frame.frame_id] = frame
                for object_id in frame.objects:
                    memory.object_frames.setdefault(object_id, set()).add(frame.frame_id)
            placed: set[int] = set()
            for s in state["snapshots"]:
                snapshot = Snapshot(integer(s["frame_id"]), integers(s["cluster"]))
                if snapshot.frame_id not in memory.frames or snapshot.frame_id in memory.snapshots or not snapshot.cluster:
                    raise ValueError(f"snapshot {snapshot.frame_id} is repeated, empty or has no frame")
                if not set(snapshot.cluster) <= set(memory.frames[snapshot.frame_id].objects):
                    raise ValueError(f"snapshot {snapshot.frame_id} does not match its frame")
                if placed.intersection(snapshot.cluster) or len(set(snapshot.cluster)) != len(snapshot.cluster):
                    raise ValueError(f"snapshot {snapshot.frame_id} holds an object another snapshot holds")
                placed.update(snapshot.cluster)
                memory.snapshots[snapshot.frame_id] = snapshot
            memory.bins = {tuple(integers(key)): integer(frame_id) for key, frame_id in state["bins"]}
            memory.superseded = set(integers(state["superseded"]))
            if not set(memory.bins.values()) | memory.superseded <= set(memory.frames):
                raise ValueError("pose bins or superseded frames name no frame")
            memory._order = integer(state["order"])
            if memory.frames and memory._order <= max(f.order for f in memory.frames.values()):
                raise ValueError("frame order counter is behind the frames")
            return memory


def _by_order(item: tuple[int, Frame]) -> int:
    return item[1].order


def _copy_frame(frame: Frame) -> Frame:
    return dataclasses.replace(frame, objects=dict(frame.objects))


def _copy_snapshot(snapshot: Snapshot) -> Snapshot:
    return Snapshot(snapshot.frame_id, list(snapshot.cluster))


_SPLITS: OrderedDict[bytes, np.ndarray] = OrderedDict()  # 2-means is deterministic: reuse results
_SPLIT_CACHE = 4096


def split_in_two(xy: np.ndarray) -> list[np.ndarray]:
    """Split a leaf: size 2 -> 1/1; otherwise 2-means on the centres (halves if degenerate).

    The same objects near the agent are re-clustered frame after frame with unchanged
    centres, so the labels are memoised by the exact input.
    """
    n = len(xy)
    if n == 2:
        return [np.array([0]), np.array([1])]
    key = np.ascontiguousarray(xy, dtype=np.float64).tobytes()
    labels = _SPLITS.get(key)
    if labels is None:
        labels = kmeans(xy, 2, n_init=10, seed=0)
        _SPLITS[key] = labels
        if len(_SPLITS) > _SPLIT_CACHE:
            _SPLITS.popitem(last=False)
    else:
        _SPLITS.move_to_end(key)
    left, right = np.nonzero(labels == 0)[0], np.nonzero(labels == 1)[0]
    if len(left) == 0 or len(right) == 0:  # all centres equal: any split terminates
        return [np.arange(n // 2), np.arange(n // 2, n)]
    return [left, right]
