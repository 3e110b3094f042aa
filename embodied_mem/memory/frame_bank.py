"""Baselines: keep every frame (``frame_bank``), or a fixed number of uniformly spaced frames
(``subsampled_frames``, as FindingDory's VLM baselines see 96 frames of the video).

A stored frame is its pose, time, room (from the floor plan), events, a caption embedding, and
for each detection its label, attributes, pixel count and 3D centroid (not the images: 10k
frames of 320x240 RGB-D would be 8 GB). Detections carry no identity, so the frames are tied
together by the shared ``EntityTracker`` (``memory/association.py``): the ids a frame names are
the memory's own tracks, and its diary says what the tracker inferred each grasp and release
was about. Recall is an exact scan: every sighting of each entity a goal names is scored. The
flat sightings index and the per-entity catalog entries grow with the bank (an entry is redone
only when a frame sees that entity), so at 100k frames a recall does not rebuild them from every
frame. These are the yardsticks every other system is measured against in the same run.

``subsampled_frames`` keeps 96 frames and knows only what they show: its tracks and diary are
rebuilt from the kept frames alone (a grasp in a dropped frame is forgotten), as FindingDory's
VLMs see only the 96 frames they are given.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from embodied_mem.encoders import build_encoder
from embodied_mem.memory.association import EntityTracker, TrackerConfig
from embodied_mem.memory.base import (
    ActionDiary,
    InstanceView,
    Entity,
    FrameGate,
    Grow,
    ReadWriteLock,
    RouteGraph,
    describe,
    finite_array,
    frame_slices,
    load_manifest,
    save_manifest,
    view_score,
    visible_instances,
)
from embodied_mem.memory.resolve import ResolvedGoal, recall_structured, room_hits
from embodied_mem.registry import register
from embodied_mem.types import Event, FloorPlan, Hit, MemoryStats, Observation, Pose, Query, Recall

CAPTION_OBJECTS = 8  # instances named in a frame caption, largest first
EMBED_BATCH = 64  # frames are embedded in batches: one at a time costs MiniLM several times more


@dataclass
class FrameBankConfig:
    """Every frame kept. ``encoder``: "minilm" (real language) or "gt_hash" (label words, fast)."""

    encoder: str = "minilm"
    min_pixels: int = 20
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


@dataclass
class SubsampledFramesConfig:
    """At most ``max_frames`` frames, uniformly spaced over the whole stream so far."""

    encoder: str = "minilm"
    min_pixels: int = 20
    max_frames: int = 96
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


@dataclass
class FrameRecord:
    frame_id: int
    stamp: float
    day: int
    pose: Pose
    room: str | None
    caption: str
    embedding: np.ndarray | None  # None until its batch is embedded
    parts: list[str]  # what the embedding averages: room, detection descriptions
    instance_ids: np.ndarray  # int32 (n,): the memory's track id of each detection
    pixels: np.ndarray  # int32 (n,)
    centroids: np.ndarray  # float32 (n, 3)
    extents: np.ndarray  # float32 (n, 6): min xyz, max xyz of the visible part
    fractions: np.ndarray  # float32 (n,)
    labels: list[str] = field(default_factory=list)  # the detector's label of each detection
    attributes: list[dict[str, str]] = field(default_factory=list)  # its attributes, "kind" included
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    gt_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # gt perception only, else -1
    events: list[Event] = field(default_factory=list)

    def nbytes(self) -> int:
        arrays = (self.instance_ids, self.pixels, self.centroids, self.extents, self.fractions, self.scores, self.gt_ids)
        text = len(self.caption) + sum(len(label) + 16 * len(a) for label, a in zip(self.labels, self.attributes))
        return sum(a.nbytes for a in arrays) + 4 * 384 + 8 * 12 + text + 120 * len(self.events)

    def views(self) -> list[InstanceView]:
        """The stored detections as views (for re-running association over kept frames)."""
        return [
            InstanceView(
                None if self.gt_ids[n] < 0 else int(self.gt_ids[n]),
                self.labels[n],
                self.attributes[n],
                self.attributes[n].get("kind", "object"),
                float(self.scores[n]),
                int(self.pixels[n]),
                self.centroids[n].astype(np.float64),
                self.extents[n, :3].astype(np.float64),
                self.extents[n, 3:].astype(np.float64),
                float(self.fractions[n]),
            )
            for n in range(len(self.labels))
        ]


class Sightings:
    """All (frame, instance) sightings as flat arrays, and each instance's rows in time order.

    Kept incrementally: a frame the bank appends is appended here, so recall after a new frame
    costs that frame, not a rebuild from every frame (which at 100k frames took longer than the
    whole recall budget). ``build`` makes one from a list of frames (after a load, an undo or a
    subsampling pass). ``routes``: the robot's route graph over the same frames.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.last: int | None = None
        self._frame_rows = Grow((), np.int64)
        self._centroids = Grow((3,))
        self._extents = Grow((6,))
        self._fractions = Grow(())
        self._positions = Grow((2,))
        self._yaws = Grow(())
        self._stamps = Grow(())
        self._groups: dict[int, Grow] = {}
        self.routes = RouteGraph()

    @staticmethod
    def build(frames: list[FrameRecord]) -> "Sightings":
        index = Sightings()
        for frame in frames:
            index.append(frame)
        return index

    def append(self, frame: FrameRecord) -> None:
        start = len(self._frame_rows)
        count = frame.instance_ids.size
        self._frame_rows.extend(np.full(count, self.frames, np.int64))
        self._centroids.extend(frame.centroids)
        self._extents.extend(frame.extents)
        self._fractions.extend(frame.fractions)
        for row, instance_id in enumerate(frame.instance_ids.tolist(), start):
            rows = self._groups.get(instance_id)
            if rows is None:
                rows = self._groups[instance_id] = Grow((), np.int64, capacity=4)
            rows.extend([row])
        self._positions.extend(frame.pose.position[:2])
        self._yaws.extend([frame.pose.yaw])
        self._stamps.extend([frame.stamp])
        self.routes.extend(frame.pose.position[:2])
        self.frames += 1
        self.last = frame.frame_id

    def rows(self, instance_id: int) -> np.ndarray | None:
        """The sighting rows of one instance, oldest first (None: never seen)."""
        rows = self._groups.get(instance_id)
        return None if rows is None else rows.view()

    @property
    def groups(self) -> dict[int, np.ndarray]:
        return {instance_id: rows.view() for instance_id, rows in self._groups.items()}

    frame_rows = property(lambda self: self._frame_rows.view(), doc="(M,) index into the frame list")
    centroids = property(lambda self: self._centroids.view(), doc="(M, 3)")
    extents = property(lambda self: self._extents.view(), doc="(M, 6) min xyz, max xyz")
    fractions = property(lambda self: self._fractions.view(), doc="(M,)")
    positions = property(lambda self: self._positions.view(), doc="(F, 2) robot x, y per frame")
    yaws = property(lambda self: self._yaws.view(), doc="(F,)")
    stamps = property(lambda self: self._stamps.view(), doc="(F,)")


class FrameBank:
    """Keeps frames (all, or ``max_frames`` uniformly spaced) and answers by exact scan."""

    def __init__(self, config: FrameBankConfig | SubsampledFramesConfig, name: str = "frame_bank") -> None:
        self.name = name
        self.config = config
        self.max_frames = getattr(config, "max_frames", None)
        if self.max_frames is not None and self.max_frames < 2:
            raise ValueError(f"max_frames must be at least 2, got {self.max_frames}")
        self.encoder = build_encoder(config.encoder)
        self._lock = ReadWriteLock()
        self._embed_lock = threading.Lock()  # the encoder is not thread-safe
        self._deferred_lock = threading.Lock()  # one reader at a time finishes deferred work (and grows the caption matrix)
        self.reset()

    # ------------------------------------------------------------------ protocol
    def reset(self) -> None:
        plan = getattr(self, "_diary", None) and self._diary.floor_plan  # the map outlives a reset
        self.gate = FrameGate()
        self.frames: list[FrameRecord] = []
        self.tracker = EntityTracker(self.config.tracker)
        self._diary = ActionDiary()
        self._diary.set_floor_plan(plan or None)
        self._dirty = False  # subsampling: tracks and diary to rebuild from the kept frames
        self._stride = 1  # subsampling: keep stream index % stride == 0
        self._stream_index: dict[int, int] = {}
        self._matrix: Grow | None = None
        self._pending: list[FrameRecord] = []
        self._index: Sightings | None = None
        # Catalog entries per instance, with the number of its sightings they were made from:
        # an instance's entry changes only when a frame sees it (its label votes too), so a
        # recall after a new frame recomputes the few instances that frame saw.
        self._entities: dict[int, tuple[int, Entity]] = {}

    def set_floor_plan(self, plan: FloorPlan | None) -> None:
        """The map the robot is deployed with: rooms for the diary and the captions."""
        with self._lock.writing():
            self._diary.set_floor_plan(plan)

    def observe(self, obs: Observation) -> None:
        obs.validate()  # fields may have changed since construction
        if not self.gate.admit(obs):
            return
        index = self.gate.frames_seen
        record = self._record(obs) if index % self._stride == 0 else None
        with self._lock.writing():
            if record is None:
                self.gate.commit(obs)
                return
            # All or nothing: what this frame changes is undone if anything below raises.
            # (subsampling keeps at most max_frames + 1 frames, so copying its lists is cheap)
            small = self.max_frames is not None
            undo = (
                list(self.frames) if small else len(self.frames),
                list(self._pending) if small else len(self._pending),
                dict(self._stream_index) if small else None,
                self._diary.mark(), self._dirty, self._stride,
            )
            self.tracker.begin()
            try:
                self.frames.append(record)
                self._pending.append(record)
                self._stream_index[record.frame_id] = index
                if self.max_frames is None:
                    self._associate(record, self.tracker, self._diary)
                    if self._index is not None:  # the index grows with the bank (undo drops it)
                        self._index.append(record)
                else:
                    self._matrix, self._index, self._entities = None, None, {}
                    self._dirty = True
                    self._decimate()
                if len(self._pending) >= EMBED_BATCH:
                    self._embed_pending()
                self.gate.commit(obs)
            except BaseException:
                self._undo_frame(record, undo)
                raise
            self.tracker.commit()

    def _undo_frame(self, record: FrameRecord, undo: tuple) -> None:
        frames, pending, stream_index, diary_mark, dirty, stride = undo
        self.tracker.rollback()
        self._diary.rollback(diary_mark)
        if stream_index is not None:
            self.frames, self._pending, self._stream_index = frames, pending, stream_index
        else:
            del self.frames[frames:]
            del self._pending[pending:]
            self._stream_index.pop(record.frame_id, None)
        self._dirty, self._stride = dirty, stride
        self._matrix, self._index, self._entities = None, None, {}

    def _associate(self, record: FrameRecord, tracker: EntityTracker, diary: ActionDiary) -> None:
        """Tie a frame's detections to tracks, and note what its grasps / releases were about."""
        ids, inferences = tracker.frame(record.views(), record.events, record.stamp)
        record.instance_ids = np.array(ids, dtype=np.int32)
        diary.record(record.frame_id, record.stamp, record.day, record.pose, inferences, lambda i: self._label_of(i, tracker))

    def _label_of(self, track_id: int, tracker: EntityTracker | None = None) -> tuple[str, dict[str, str]]:
        track = (tracker or self.tracker).tracks.get(int(track_id))
        return ("unknown", {}) if track is None else (track.category, track.attribute_values)

    def _record(self, obs: Observation) -> FrameRecord:
        views = sorted(visible_instances(obs, self.config.min_pixels), key=lambda v: -v.pixels)
        words = ", ".join(v.description for v in views[:CAPTION_OBJECTS]) or "nothing in view"
        room_name = self._diary.room_at(obs.pose)
        room = (room_name or "somewhere").replace("_", " ")
        caption = f"{room}: {words}."
        parts = [room] + [v.description for v in views[:CAPTION_OBJECTS]]
        return FrameRecord(
            frame_id=obs.frame_id,
            stamp=obs.stamp,
            day=obs.day,
            pose=obs.pose,
            room=room_name,
            caption=caption,
            embedding=None,
            parts=parts,
            instance_ids=np.full(len(views), -1, dtype=np.int32),
            pixels=np.array([v.pixels for v in views], dtype=np.int32),
            centroids=np.array([v.centroid for v in views], dtype=np.float32).reshape(-1, 3),
            extents=np.array([np.concatenate([v.extent_min, v.extent_max]) for v in views], dtype=np.float32).reshape(-1, 6),
            fractions=np.array([v.mask_fraction for v in views], dtype=np.float32),
            labels=[v.category for v in views],
            attributes=[dict(v.attributes) for v in views],
            scores=np.array([v.score for v in views], dtype=np.float32),
            gt_ids=np.array([-1 if v.instance_id is None else v.instance_id for v in views], dtype=np.int32),
            events=list(obs.events),
        )

    def _embed_pending(self) -> None:
        """Embed the captions still waiting (under the write lock)."""
        pending = [f for f in self._pending if f.embedding is None]
        if not pending:
            self._pending = []
            return
        # A frame's embedding is the mean of its parts' embeddings. Parts repeat across frames
        # (the same mug, the same room), so each distinct string is encoded once, while whole
        # captions are nearly all distinct.
        texts = list(dict.fromkeys(p for f in pending for p in f.parts))
        with self._embed_lock:
            vectors = dict(zip(texts, self.encoder.encode(texts)))
        for record in pending:
            mean = np.mean([vectors[p] for p in record.parts], axis=0)
            record.embedding = (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)
            record.parts = []
        self._pending = []  # only now: an encoder that raised leaves them pending, not lost
        # The matrix holds only frames embedded before it grew: pending frames are its tail.

    def flush(self) -> None:
        """Finish deferred work (caption embeddings, subsampled association) so recall sees every frame."""
        with self._lock.writing():
            self._finish_deferred()

    def _finish_deferred(self) -> None:
        """Under the write lock, or the read lock (no frame can arrive meanwhile): embeddings
        still pending and the subsampled rebuild. Readers take turns doing it."""
        with self._deferred_lock:
            self._embed_pending()
            self._rebuild()

    def _decimate(self) -> None:
        """Keep the stream uniformly spaced: past capacity, double the stride and drop the odd ones."""
        while len(self.frames) > self.max_frames:
            self._stride *= 2
            self.frames = [f for f in self.frames if self._stream_index[f.frame_id] % self._stride == 0]
            kept = {f.frame_id for f in self.frames}
            self._stream_index = {k: v for k, v in self._stream_index.items() if k in kept}
            self._pending = [f for f in self._pending if f.frame_id in kept]

    def _rebuild(self) -> None:
        """Subsampling: re-run association and the diary over the kept frames alone."""
        if not self._dirty:
            return
        tracker, diary = EntityTracker(self.config.tracker), ActionDiary()
        diary.set_floor_plan(self._diary.floor_plan)
        for record in self.frames:
            self._associate(record, tracker, diary)
        self.tracker, self._diary, self._dirty, self._index, self._entities = tracker, diary, False, None, {}

    @property
    def diary(self) -> ActionDiary:
        """What the robot did, as far as the kept frames tell."""
        with self._deferred_lock:
            self._rebuild()
        return self._diary

    def recall(self, query: Query) -> Recall:
        started = time.perf_counter()
        query.validate()  # a query changed after construction is caught here
        with self._lock.reading():
            # Finished inside the read lock: a frame observed between a flush and the read lock
            # would otherwise have no embedding yet when the scan stacks them.
            self._finish_deferred()
            if query.constraints is not None:
                hits = recall_structured(self, query)
            else:
                hits = self._recall_text(query)
        return Recall(hits, self.name, time.perf_counter() - started)

    def stats(self) -> MemoryStats:
        with self._lock.reading():
            self._finish_deferred()  # the same numbers whether or not a recall came first
            total = sum(f.nbytes() for f in self.frames) + 200 * len(self.tracker.tracks) + 200 * len(self._diary.entries)
            return MemoryStats(items=len(self.frames), bytes=int(total), frames_seen=self.gate.frames_seen)

    # ------------------------------------------------------------------ structured recall
    def _sightings(self) -> "Sightings":
        """Every (frame, instance) pair as flat arrays: built once, then grown frame by frame."""
        if self._index is None or self._index.frames != len(self.frames) or self._index.last != (self.frames[-1].frame_id if self.frames else None):
            self._index, self._entities = Sightings.build(self.frames), {}
        return self._index

    def catalog(self) -> list[Entity]:
        """Every instance where it was last seen, with the box of all its sightings there."""
        index = self._sightings()
        entities = []
        for track in self.tracker.confirmed():  # seen once: likely a false detection
            rows = index.rows(track.track_id)
            if rows is None:
                continue
            cached = self._entities.get(track.track_id)
            if cached is None or cached[0] != len(rows):
                cached = self._entities[track.track_id] = (len(rows), self._entity(track.track_id, rows, index))
            entities.append(cached[1])
        return entities

    def _entity(self, instance_id: int, rows: np.ndarray, index: "Sightings") -> Entity:
        latest = rows[-1]
        position = index.centroids[latest]
        here = rows[np.linalg.norm(index.centroids[rows] - position, axis=1) <= 0.5]
        box = (index.extents[here, :3].min(axis=0), index.extents[here, 3:].max(axis=0))
        category, attributes = self._label_of(instance_id)
        stamp = float(index.stamps[index.frame_rows[latest]])
        return Entity(instance_id, attributes.get("kind", "object"), category, attributes, position.copy(), stamp, box)

    def distance_from(self, near: Pose):
        """Travel distance along the routes the kept frames show the robot took."""
        return self._sightings().routes.distance_from(near.position)

    def locate(self, goal: ResolvedGoal, query: Query) -> list[Hit]:
        if goal.target == "room":
            return room_hits(goal, self.name)
        hits = []
        for entity_id in goal.entity_ids:
            hit = self._best_view(entity_id, goal)
            if hit is not None:
                hits.append(hit)
        hits.sort(key=lambda h: -h.score)
        return hits

    def _best_view(self, entity_id: int, goal: ResolvedGoal) -> Hit | None:
        """The frame that shows the entity where it is now, largest and most centred."""
        index = self._sightings()
        rows = index.rows(entity_id)
        if rows is None:
            return None
        track = self.tracker.tracks.get(entity_id)
        if track is not None and track.moved_at is not None:
            rows = rows[index.stamps[index.frame_rows[rows]] >= track.moved_at]  # only since the robot put it there
            if rows.size == 0:
                return self._release_view(entity_id, track)
        latest = index.centroids[rows[-1]]
        rows = rows[np.linalg.norm(index.centroids[rows] - latest, axis=1) <= 0.5]  # older places: it moved since
        frames = index.frame_rows[rows]
        offset = index.centroids[rows, :2] - index.positions[frames]
        distance = np.linalg.norm(offset, axis=1)
        bearing = np.abs(np.angle(np.exp(1j * (np.arctan2(offset[:, 1], offset[:, 0]) - index.yaws[frames]))))
        score = view_score(index.fractions[rows], distance, bearing)
        best = len(score) - 1 - int(np.argmax(score[::-1]))  # ties: the most recent
        frame = self.frames[int(frames[best])]
        agent_pose, frame_id = frame.pose, frame.frame_id
        poses = goal.interaction_poses.get(entity_id)
        if poses:  # the robot stood right there when it picked from / placed on it
            agent_pose, frame_id = poses[-1][0], poses[-1][1]
        centroid = index.centroids[rows[best]].copy()
        return Hit(frame_id, frame.stamp, agent_pose, centroid, entity_id, float(score[best]), self.name, {"sightings": int(len(rows))})

    def _release_view(self, entity_id: int, track) -> Hit | None:
        """An object the robot put down and has not seen since: the frame of the release."""
        places = [e for e in self._diary.entries if e.kind == "place" and e.object_id == entity_id]
        if not places:
            return None
        place = places[-1]
        return Hit(place.frame_id, place.stamp, place.pose, track.position.copy(), entity_id, 0.01, self.name, {"from": "release"})

    # ------------------------------------------------------------------ language recall
    def _embeddings(self) -> np.ndarray:
        """Every kept frame's caption embedding; grown at the end while frames are only appended.

        Readers share the read lock, so growing it is deferred work, one reader's at a time (two
        readers extending at once wrote past each other: "could not broadcast (4, 384) into
        (0, 384)"); a view handed out stays valid, as growing only writes rows beyond it or
        reallocates."""
        with self._deferred_lock:
            if self._matrix is None or len(self._matrix) > len(self.frames):
                self._matrix = Grow((self.encoder.dim,), np.float32)
            if len(self._matrix) < len(self.frames):
                self._matrix.extend(np.stack([f.embedding for f in self.frames[len(self._matrix) :]]))
            return self._matrix.view()

    def _recall_text(self, query: Query) -> list[Hit]:
        if not self.frames:
            return []
        with self._embed_lock:
            vector = self.encoder.encode([query.text])[0]
        scores = self._embeddings() @ vector
        if query.time_range is not None:
            stamps = np.array([f.stamp for f in self.frames])
            scores = np.where((stamps >= query.time_range[0]) & (stamps <= query.time_range[1]), scores, -np.inf)
        hits = []
        for row in np.argsort(-scores)[: query.k]:
            if not np.isfinite(scores[row]):
                break
            frame = self.frames[int(row)]
            target, object_id = self._best_instance(frame, vector)
            hits.append(Hit(frame.frame_id, frame.stamp, frame.pose, target, object_id, float(scores[row]), self.name, {"caption": frame.caption}))
        return hits

    def _best_instance(self, frame: FrameRecord, vector: np.ndarray) -> tuple[np.ndarray | None, int | None]:
        if frame.instance_ids.size == 0:
            return None, None
        texts = [describe(*self._label_of(int(i))) for i in frame.instance_ids]
        with self._embed_lock:
            similarity = self.encoder.encode(texts) @ vector
        row = int(np.argmax(similarity))
        return frame.centroids[row].astype(np.float64), int(frame.instance_ids[row])

    # ------------------------------------------------------------------ pictures
    def plot(self, ax) -> None:
        """Kept frames as heading ticks coloured by time; remembered entities where last seen."""
        self.flush()
        with self._lock.reading():
            if not self.frames:
                return
            xy = np.array([f.pose.position[:2] for f in self.frames])
            yaw = np.array([f.pose.yaw for f in self.frames])
            stamps = np.array([f.stamp for f in self.frames])
            ax.quiver(xy[:, 0], xy[:, 1], np.cos(yaw), np.sin(yaw), stamps, cmap="viridis", scale=40, width=0.002, zorder=5)
            for entity in self.catalog():
                marker = "s" if entity.kind == "receptacle" else "o"
                ax.scatter(*entity.position[:2], marker=marker, s=30, facecolors="none", edgecolors="#d62728", linewidths=0.8, zorder=6)

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory) -> None:
        self.flush()
        with self._lock.reading():
            frames = self.frames

            def flat(name: str, empty: np.ndarray) -> np.ndarray:
                return np.concatenate([getattr(f, name) for f in frames] or [empty])

            arrays = {
                "frame_ids": np.array([f.frame_id for f in frames], dtype=np.int64),
                "stamps": np.array([f.stamp for f in frames], dtype=np.float64),
                "days": np.array([f.day for f in frames], dtype=np.int32),
                "poses": np.array([np.concatenate([f.pose.position, f.pose.orientation]) for f in frames]).reshape(-1, 7),
                "embeddings": self._embeddings().copy(),
                "instance_frame": np.concatenate([np.full(f.instance_ids.size, n, np.int32) for n, f in enumerate(frames)] or [np.zeros(0, np.int32)]),
                "instance_ids": flat("instance_ids", np.zeros(0, np.int32)),
                "pixels": flat("pixels", np.zeros(0, np.int32)),
                "centroids": flat("centroids", np.zeros((0, 3), np.float32)),
                "extents": flat("extents", np.zeros((0, 6), np.float32)),
                "fractions": flat("fractions", np.zeros(0, np.float32)),
                "scores": flat("scores", np.zeros(0, np.float32)),
                "gt_ids": flat("gt_ids", np.zeros(0, np.int32)),
            }
            state = {
                "config": asdict(self.config),
                "gate": self.gate.to_dict(),
                "stride": self._stride,
                "stream_index": {str(k): v for k, v in self._stream_index.items()},
                "tracker": self.tracker.to_dict(),
                "frames": [
                    {"room": f.room, "caption": f.caption, "labels": f.labels, "attributes": f.attributes, "events": [e.to_dict() for e in f.events]}
                    for f in frames
                ],
                "diary": self._diary.to_dict(),
            }
        save_manifest(directory, self.name, state, arrays, config=self.config)

    def load(self, directory) -> None:
        """Parse everything into fresh state, check it, and swap it in only then."""
        state, arrays = load_manifest(Path(directory), self.name, config=self.config)
        try:
            count = len(state["frames"])
            finite_array(arrays, "frame_ids", "i", (), count)
            finite_array(arrays, "stamps", "f", (), count)
            finite_array(arrays, "poses", "f", (7,), count)
            finite_array(arrays, "embeddings", "f", (self.encoder.dim,), count)
            rows = len(finite_array(arrays, "instance_frame", "i"))
            for name, tail, kind in (("instance_ids", (), "i"), ("pixels", (), "i"), ("centroids", (3,), "f"), ("extents", (6,), "f"), ("fractions", (), "f"), ("scores", (), "f"), ("gt_ids", (), "i")):
                finite_array(arrays, name, kind, tail, rows)
            slices = frame_slices(arrays["instance_frame"], count, "instance_frame")
            if np.any(np.diff(arrays["stamps"]) < 0):
                raise ValueError("frame stamps go back in time")
            frames = []
            for n, meta in enumerate(state["frames"]):
                rows = slices[n]
                labels = [str(label) for label in meta["labels"]]
                if len(labels) != rows.stop - rows.start or len(meta["attributes"]) != len(labels):
                    raise ValueError(f"frame {n}: {len(labels)} labels for {rows.stop - rows.start} detections")
                frames.append(
                    FrameRecord(
                        frame_id=int(arrays["frame_ids"][n]),
                        stamp=float(arrays["stamps"][n]),
                        day=int(arrays["days"][n]),
                        pose=Pose(arrays["poses"][n][:3], arrays["poses"][n][3:]),
                        room=meta["room"],
                        caption=meta["caption"],
                        embedding=arrays["embeddings"][n].astype(np.float32),
                        parts=[],
                        instance_ids=arrays["instance_ids"][rows].astype(np.int32),
                        pixels=arrays["pixels"][rows].astype(np.int32),
                        centroids=arrays["centroids"][rows].astype(np.float32),
                        extents=arrays["extents"][rows].astype(np.float32),
                        fractions=arrays["fractions"][rows].astype(np.float32),
                        labels=labels,
                        attributes=[{str(k): str(v) for k, v in a.items()} for a in meta["attributes"]],
                        scores=arrays["scores"][rows].astype(np.float32),
                        gt_ids=arrays["gt_ids"][rows].astype(np.int32),
                        events=[Event.from_dict(e) for e in meta["events"]],
                    )
                )
            gate = FrameGate()
            gate.load_dict(state["gate"])
            diary = ActionDiary()
            diary.load_dict(state["diary"])
            tracker = EntityTracker(self.config.tracker)
            tracker.load_dict(state["tracker"])
            stream_index = {int(k): int(v) for k, v in state["stream_index"].items()}
            stride = int(state["stride"])
            if stride < 1 or (stride & (stride - 1)):
                raise ValueError(f"stride {stride} is not a power of two")
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"corrupt {self.name} checkpoint {directory}: {error!r}") from error
        with self._lock.writing():  # swap in only once everything parsed
            self.frames, self.gate, self._diary, self.tracker = frames, gate, diary, tracker
            self._dirty = False
            self._stride, self._stream_index, self._matrix = stride, stream_index, None
            self._pending, self._index = [], None


@register("memory", "frame_bank", FrameBankConfig)
def build_frame_bank(config: FrameBankConfig) -> FrameBank:
    return FrameBank(config, "frame_bank")


@register("memory", "subsampled_frames", SubsampledFramesConfig)
def build_subsampled_frames(config: SubsampledFramesConfig) -> FrameBank:
    return FrameBank(config, "subsampled_frames")
