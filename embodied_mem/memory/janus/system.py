"""The ``janus`` memory system: observe / recall / save / load over the dual implicit memory.

See the package docstring (``embodied_mem.memory.janus``) for what the paper does and what we do.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from embodied_mem.encoders import build_encoder
from embodied_mem.memory.association import EntityTracker, TrackerConfig
from embodied_mem.memory.base import (
    ActionDiary,
    Entity,
    FrameGate,
    ReadWriteLock,
    describe,
    finite_array,
    frame_slices,
    load_manifest,
    save_manifest,
    trajectory_distance,
    view_score,
    visible_instances,
)
from embodied_mem.memory.frame_bank import CAPTION_OBJECTS, FrameRecord, Sightings
from embodied_mem.memory.janus.attention import Shape
from embodied_mem.memory.janus.dual import DualImplicitMemory
from embodied_mem.memory.janus.encoders import GeometricTokenizer, HFImage, SemanticTokenizer, frame_features, weights_digest
from embodied_mem.memory.resolve import ResolvedGoal, recall_structured, room_hits
from embodied_mem.registry import register
from embodied_mem.runtime import torch_threads
from embodied_mem.types import Event, FloorPlan, Hit, MemoryStats, Observation, Pose, Query, Recall


@dataclass
class JanusConfig:
    """JanusVLN's dual implicit memory. Window: ``start_frames`` initial + ``recent_frames`` latest."""

    encoder: str = "minilm"  # text encoder for the detector's labels and the instructions: minilm | gt_hash
    start_frames: int = 8  # initial ("sink") frames kept for good (upstream: start_size=8)
    recent_frames: int = 48  # sliding window of the latest frames (upstream: recent_size=48)
    grid: int = 4  # patches per side: a frame is 1 camera token + grid^2 patch tokens
    semantic_dim: int = 256  # the label channels are all heads but the last: 192 of 256
    spatial_dim: int = 64
    heads: int = 4
    layers: int = 2  # cached global attention layers per encoder
    mlp_ratio: float = 2.0
    lam: float = 0.2  # fusion: semantic + lam * spatial (upstream lam=0.2)
    read_layer: int = 0  # which semantic cache layer the query reads
    read_temperature: float = 8.0  # scales the read logits (sharper attention over the cache)
    seed: int = 0  # the untrained encoders' weights
    min_pixels: int = 20
    semantic_backbone: str = "builtin"  # builtin | hf:<model id or local path> (never downloaded)
    spatial_backbone: str = "builtin"  # builtin | hf:<model id or local path>
    device: str = "cpu"  # for a Hugging Face backbone
    torch_threads: int = 1
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


@dataclass
class KeptFrame:
    """What the memory keeps beside a frame's KV slices (and drops with them)."""

    record: FrameRecord  # pose, time, events, detections (label, centroid, pixels...)
    points: np.ndarray  # float32 [grid^2, 3]: each patch's mean back-projected world point
    share: np.ndarray  # float32 [views, grid^2]: the share of each kept detection's mask in each patch


class Janus:
    """Observe frames into two start + recent KV caches; recall by attention over them."""

    name = "janus"

    def __init__(self, config: JanusConfig) -> None:
        if config.start_frames < 0 or config.recent_frames < 1:
            raise ValueError(f"start_frames must be >= 0 and recent_frames >= 1, got {config.start_frames}, {config.recent_frames}")
        if not 0 <= config.read_layer < config.layers:
            raise ValueError(f"read_layer must be in [0, {config.layers}), got {config.read_layer}")
        self.config = config
        self.encoder = build_encoder(config.encoder)
        semantic = Shape(config.semantic_dim, config.heads, config.layers, config.grid, config.mlp_ratio)
        spatial = Shape(config.spatial_dim, config.heads, config.layers, config.grid, config.mlp_ratio)
        self.semantic_tokens = self._tokenizer(config.semantic_backbone, semantic, "semantic")
        self.spatial_tokens = self._tokenizer(config.spatial_backbone, spatial, "spatial")
        self.memory = DualImplicitMemory(semantic, spatial, config.start_frames, config.recent_frames, config.lam, config.seed)
        self.weights = weights_digest(self.semantic_tokens, self.spatial_tokens, *self.memory.nets.values(), self.memory.fusion)
        self._lock = ReadWriteLock()
        self._embed_lock = threading.Lock()  # the text encoder is not thread-safe
        self._deferred_lock = threading.Lock()  # one reader at a time rebuilds the tracks
        self._diary = ActionDiary()
        self.reset()

    def _tokenizer(self, backbone: str, shape: Shape, side: str):
        seed = self.config.seed + (10 if side == "semantic" else 20)
        if backbone == "builtin":
            image = None
        elif backbone.startswith("hf:") and len(backbone) > 3:
            image = HFImage(backbone[3:], shape.grid, self.config.device)
        else:
            raise ValueError(f"{side}_backbone must be 'builtin' or 'hf:<model>', got {backbone!r}")
        if side == "semantic":
            return SemanticTokenizer(shape, self.encoder.dim, seed, image)
        return GeometricTokenizer(shape, seed, image)

    # ------------------------------------------------------------------ protocol
    def reset(self) -> None:
        """Forget everything but the floor plan (upstream: ``past_key_values_vggt = None``)."""
        plan = self._diary.floor_plan
        self.gate = FrameGate()
        self.memory.reset()
        self.kept: list[KeptFrame] = []
        self.tracker = EntityTracker(self.config.tracker)
        self._diary = ActionDiary()
        self._diary.set_floor_plan(plan)
        self._dirty = False  # tracks and diary to rebuild from the kept frames
        self._index: Sightings | None = None
        self.last_output: dict[str, torch.Tensor] | None = None

    def set_floor_plan(self, plan: FloorPlan | None) -> None:
        with self._lock.writing():
            self._diary.set_floor_plan(plan)

    def _vectors(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.encoder.dim), np.float32)
        with self._embed_lock:
            return self.encoder.encode(texts)

    def observe(self, obs: Observation) -> None:
        obs.validate()
        if not self.gate.admit(obs):
            return
        with torch_threads(self.config.torch_threads):
            features = frame_features(obs, self.config.grid, self.config.min_pixels)
            vectors = self._vectors([describe(d.label, {**d.attributes, "kind": d.kind}) for d in obs.detections])
            semantic = self.semantic_tokens(features, vectors)
            spatial = self.spatial_tokens(features, vectors)
            kept = self._kept_frame(obs, features)
            with self._lock.writing():
                snapshot, frames, dirty = self.memory.snapshot(), list(self.kept), self._dirty
                try:
                    output = self.memory.step(semantic, spatial, int(obs.frame_id))
                    self.kept.append(kept)
                    ids = set(self.memory.frame_ids())
                    self.kept = [frame for frame in self.kept if frame.record.frame_id in ids]  # dropped with their slices
                    if [f.record.frame_id for f in self.kept] != self.memory.frame_ids():
                        raise RuntimeError("kept frames and cache slices disagree")
                    self._dirty, self._index = True, None
                    self.gate.commit(obs)
                except BaseException:
                    self.memory.restore(snapshot)
                    self.kept, self._dirty, self._index = frames, dirty, None
                    raise
                self.last_output = output

    def _kept_frame(self, obs: Observation, features: dict[str, np.ndarray]) -> KeptFrame:
        valid = obs.valid_depth()
        views = visible_instances(obs, self.config.min_pixels)
        # visible_instances keeps, in order, the detections with min_pixels of valid depth:
        rows = [n for n, d in enumerate(obs.detections) if int((d.mask & valid).sum()) >= self.config.min_pixels]
        order = sorted(range(len(views)), key=lambda n: -views[n].pixels)
        views = [views[n] for n in order]
        share = features["share"][[rows[n] for n in order]] if views else np.zeros((0, self.config.grid ** 2), np.float32)
        room = self._diary.room_at(obs.pose)
        words = ", ".join(v.description for v in views[:CAPTION_OBJECTS]) or "nothing in view"
        record = FrameRecord(
            frame_id=int(obs.frame_id), stamp=obs.stamp, day=int(obs.day), pose=obs.pose, room=room,
            caption=f"{(room or 'somewhere').replace('_', ' ')}: {words}.", embedding=None, parts=[],
            instance_ids=np.full(len(views), -1, dtype=np.int32),
            pixels=np.array([v.pixels for v in views], dtype=np.int32),
            centroids=np.array([v.centroid for v in views], dtype=np.float32).reshape(-1, 3),
            extents=np.array([np.concatenate([v.extent_min, v.extent_max]) for v in views], dtype=np.float32).reshape(-1, 6),
            fractions=np.array([v.mask_fraction for v in views], dtype=np.float32),
            labels=[v.category for v in views], attributes=[dict(v.attributes) for v in views],
            scores=np.array([v.score for v in views], dtype=np.float32),
            gt_ids=np.array([-1 if v.instance_id is None else v.instance_id for v in views], dtype=np.int32),
            events=list(obs.events),
        )
        return KeptFrame(record, features["points"].copy(), np.asarray(share, np.float32).reshape(len(views), self.config.grid ** 2))

    # ------------------------------------------------------------------ the kept frames' entities
    def _rebuild(self) -> None:
        """Association and the diary over the kept frames alone (what the caches still hold)."""
        if not self._dirty:
            return
        tracker, diary = EntityTracker(self.config.tracker), ActionDiary()
        diary.set_floor_plan(self._diary.floor_plan)
        for frame in self.kept:
            record = frame.record
            ids, inferences = tracker.frame(record.views(), record.events, record.stamp)
            record.instance_ids = np.array(ids, dtype=np.int32)
            diary.record(record.frame_id, record.stamp, record.day, record.pose, inferences, lambda i, t=tracker: self._label_of(i, t))
        self.tracker, self._diary, self._dirty, self._index = tracker, diary, False, None

    def _settle(self) -> None:
        with self._deferred_lock:
            self._rebuild()

    def _label_of(self, track_id: int, tracker: EntityTracker | None = None) -> tuple[str, dict[str, str]]:
        track = (tracker or self.tracker).tracks.get(int(track_id))
        return ("unknown", {}) if track is None else (track.category, track.attribute_values)

    @property
    def diary(self) -> ActionDiary:
        """The robot's grasps and releases, as far as the kept frames tell."""
        self._settle()
        return self._diary

    def _sightings(self) -> Sightings:
        if self._index is None:
            self._index = Sightings.build([f.record for f in self.kept])
        return self._index

    # ------------------------------------------------------------------ recall
    def recall(self, query: Query) -> Recall:
        started = time.perf_counter()
        query.validate()
        with self._lock.reading(), torch_threads(self.config.torch_threads):
            self._settle()
            if query.constraints is not None:
                hits = recall_structured(self, query)
            else:
                hits = self._recall_text(query)
        return Recall(hits, self.name, time.perf_counter() - started)

    def attention(self, text: str, time_range: tuple[float, float] | None = None) -> np.ndarray:
        """The instruction's attention over the semantic cache: ``[kept frames, tokens]``."""
        frames = self.kept
        mask = None
        if time_range is not None:
            mask = torch.tensor([time_range[0] <= f.record.stamp <= time_range[1] for f in frames], dtype=torch.bool)
        query = self.semantic_tokens.query(self._vectors([text])[0])
        return self.memory.read(query, self.config.read_layer, mask, self.config.read_temperature, self.semantic_tokens.read_heads).numpy()

    def _recall_text(self, query: Query) -> list[Hit]:
        if not self.kept:
            return []
        weights = self.attention(query.text, query.time_range)
        mass = weights.sum(axis=1)
        hits = []
        for row in np.argsort(-mass, kind="stable")[: query.k]:
            if mass[row] <= 0.0:
                break  # outside the time range
            frame = self.kept[int(row)]
            record = frame.record
            patches = weights[row, 1:]  # the camera token names no place
            target, object_id = None, None
            if record.centroids.shape[0]:
                best = int(np.argmax(frame.share @ patches))
                target, object_id = record.centroids[best].astype(np.float64), int(record.instance_ids[best])
            elif np.any(frame.points[int(np.argmax(patches))]):
                target = frame.points[int(np.argmax(patches))].astype(np.float64)
            evidence = {"attention_mass": float(mass[row]), "caption": record.caption, "cached_frames": len(self.kept)}
            hits.append(Hit(record.frame_id, record.stamp, record.pose, target, object_id, float(mass[row]), self.name, evidence))
        return hits

    # ------------------------------------------------------------------ the oracle track
    def catalog(self) -> list[Entity]:
        """Every confirmed track of the kept frames, where the kept frames last saw it."""
        self._settle()
        index = self._sightings()
        trusted = {t.track_id for t in self.tracker.confirmed()}
        entities = []
        for entity_id, rows in index.groups.items():
            if entity_id not in trusted:
                continue
            track = self.tracker.tracks[entity_id]
            latest = rows[-1]
            position = index.centroids[latest]
            here = rows[np.linalg.norm(index.centroids[rows] - position, axis=1) <= 0.5]
            box = (index.extents[here, :3].min(axis=0), index.extents[here, 3:].max(axis=0))
            if track.moved_at is not None and index.stamps[index.frame_rows[latest]] < track.moved_at:
                position, box = track.position.copy(), (track.box_min.copy(), track.box_max.copy())  # put down since
            category, attributes = self._label_of(entity_id)
            stamp = float(index.stamps[index.frame_rows[latest]])
            entities.append(Entity(entity_id, attributes.get("kind", "object"), category, attributes, position.copy(), stamp, box))
        return entities

    def distance_from(self, near: Pose):
        """Travel distance along the kept frames' route."""
        return trajectory_distance(self._sightings().positions, near.position)

    def locate(self, goal: ResolvedGoal, query: Query) -> list[Hit]:
        if goal.target == "room":
            return room_hits(goal, self.name)
        hits = [hit for hit in (self._best_view(entity_id, goal) for entity_id in goal.entity_ids) if hit is not None]
        hits.sort(key=lambda h: -h.score)
        return hits

    def _best_view(self, entity_id: int, goal: ResolvedGoal) -> Hit | None:
        """The kept frame that shows the entity where it is now, largest and most centred."""
        index = self._sightings()
        rows = index.groups.get(entity_id)
        if rows is None:
            return None
        track = self.tracker.tracks.get(entity_id)
        if track is not None and track.moved_at is not None:
            rows = rows[index.stamps[index.frame_rows[rows]] >= track.moved_at]
            if rows.size == 0:
                return self._release_view(entity_id, track)
        latest = index.centroids[rows[-1]]
        rows = rows[np.linalg.norm(index.centroids[rows] - latest, axis=1) <= 0.5]
        frames = index.frame_rows[rows]
        offset = index.centroids[rows, :2] - index.positions[frames]
        distance = np.linalg.norm(offset, axis=1)
        bearing = np.abs(np.angle(np.exp(1j * (np.arctan2(offset[:, 1], offset[:, 0]) - index.yaws[frames]))))
        score = view_score(index.fractions[rows], distance, bearing)
        best = len(score) - 1 - int(np.argmax(score[::-1]))  # ties: the most recent
        record = self.kept[int(frames[best])].record
        agent_pose, frame_id = record.pose, record.frame_id
        poses = goal.interaction_poses.get(entity_id)
        if poses:  # the robot stood there when it picked from / placed on it
            agent_pose, frame_id = poses[-1][0], poses[-1][1]
        return Hit(frame_id, record.stamp, agent_pose, index.centroids[rows[best]].copy(), entity_id, float(score[best]), self.name, {"sightings": int(len(rows))})

    def _release_view(self, entity_id: int, track) -> Hit | None:
        places = [e for e in self._diary.entries if e.kind == "place" and e.object_id == entity_id]
        if not places:
            return None
        place = places[-1]
        return Hit(place.frame_id, place.stamp, place.pose, track.position.copy(), entity_id, 0.01, self.name, {"from": "release"})

    # ------------------------------------------------------------------ numbers
    def stats(self) -> MemoryStats:
        with self._lock.reading():
            records = sum(f.record.nbytes() + f.points.nbytes + f.share.nbytes for f in self.kept)
            return MemoryStats(items=len(self.kept), bytes=int(self.memory.nbytes() + records), frames_seen=self.gate.frames_seen)

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory) -> None:
        with self._lock.reading():
            self._settle()
            records = [f.record for f in self.kept]

            def flat(name: str, empty: np.ndarray) -> np.ndarray:
                return np.concatenate([getattr(r, name) for r in records] or [empty])

            arrays = self.memory.to_arrays()
            arrays.update({
                "frame_ids": np.array([r.frame_id for r in records], dtype=np.int64),
                "stamps": np.array([r.stamp for r in records], dtype=np.float64),
                "days": np.array([r.day for r in records], dtype=np.int64),
                "poses": np.array([np.concatenate([r.pose.position, r.pose.orientation]) for r in records]).reshape(-1, 7),
                "points": np.array([f.points for f in self.kept], dtype=np.float32).reshape(-1, self.config.grid ** 2, 3),
                "share": np.concatenate([f.share for f in self.kept] or [np.zeros((0, self.config.grid ** 2), np.float32)]),
                "instance_frame": np.concatenate([np.full(r.pixels.size, n, np.int64) for n, r in enumerate(records)] or [np.zeros(0, np.int64)]),
                "pixels": flat("pixels", np.zeros(0, np.int32)),
                "centroids": flat("centroids", np.zeros((0, 3), np.float32)),
                "extents": flat("extents", np.zeros((0, 6), np.float32)),
                "fractions": flat("fractions", np.zeros(0, np.float32)),
                "scores": flat("scores", np.zeros(0, np.float32)),
                "gt_ids": flat("gt_ids", np.zeros(0, np.int32)),
            })
            state = {
                "weights_sha256": self.weights,
                "gate": self.gate.to_dict(),
                "floor_plan": None if self._diary.floor_plan is None else self._diary.floor_plan.to_dict(),
                "frames": [
                    {"room": r.room, "caption": r.caption, "labels": r.labels, "attributes": r.attributes, "events": [e.to_dict() for e in r.events]}
                    for r in records
                ],
            }
        save_manifest(directory, self.name, state, arrays, config=self.config)

    def load(self, directory) -> None:
        """Parse into fresh state, check it, swap it in only then."""
        state, arrays = load_manifest(Path(directory), self.name, config=self.config)
        patches = self.config.grid ** 2
        try:
            if state["weights_sha256"] != self.weights:
                raise ValueError("the checkpoint was made with other encoder weights")
            count = len(state["frames"])
            ids = finite_array(arrays, "frame_ids", "i", (), count)
            finite_array(arrays, "stamps", "f", (), count)
            finite_array(arrays, "days", "i", (), count)
            finite_array(arrays, "poses", "f", (7,), count)
            finite_array(arrays, "points", "f", (patches, 3), count)
            rows = len(finite_array(arrays, "instance_frame", "i"))
            for name, tail, kind in (("pixels", (), "i"), ("centroids", (3,), "f"), ("extents", (6,), "f"), ("fractions", (), "f"), ("scores", (), "f"), ("gt_ids", (), "i"), ("share", (patches,), "f")):
                finite_array(arrays, name, kind, tail, rows)
            slices = frame_slices(arrays["instance_frame"], count, "instance_frame")
            if np.any(np.diff(arrays["stamps"]) < 0):
                raise ValueError("frame stamps go back in time")
            caches = self.memory.caches_from_arrays(arrays)
            if caches["semantic"].frame_ids(0) != [int(i) for i in ids]:
                raise ValueError("the caches' frames are not the kept frames")
            kept = []
            for n, meta in enumerate(state["frames"]):
                mine = slices[n]
                detections = mine.stop - mine.start
                labels = [str(label) for label in meta["labels"]]
                if len(labels) != detections or len(meta["attributes"]) != len(labels):
                    raise ValueError(f"frame {n}: {len(labels)} labels for {detections} detections")
                record = FrameRecord(
                    frame_id=int(ids[n]), stamp=float(arrays["stamps"][n]), day=int(arrays["days"][n]),
                    pose=Pose(arrays["poses"][n][:3], arrays["poses"][n][3:]), room=meta["room"], caption=str(meta["caption"]),
                    embedding=None, parts=[], instance_ids=np.full(detections, -1, np.int32),
                    pixels=arrays["pixels"][mine].astype(np.int32), centroids=arrays["centroids"][mine].astype(np.float32),
                    extents=arrays["extents"][mine].astype(np.float32), fractions=arrays["fractions"][mine].astype(np.float32),
                    labels=labels, attributes=[{str(k): str(v) for k, v in a.items()} for a in meta["attributes"]],
                    scores=arrays["scores"][mine].astype(np.float32), gt_ids=arrays["gt_ids"][mine].astype(np.int32),
                    events=[Event.from_dict(e) for e in meta["events"]],
                )
                kept.append(KeptFrame(record, arrays["points"][n].astype(np.float32), arrays["share"][mine].astype(np.float32)))
            gate = FrameGate()
            gate.load_dict(state["gate"])
            plan = None if state["floor_plan"] is None else FloorPlan.from_dict(state["floor_plan"])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"corrupt {self.name} checkpoint {directory}: {error!r}") from error
        with self._lock.writing():
            self.memory.install(caches)
            self.kept, self.gate = kept, gate
            self.tracker, self._diary = EntityTracker(self.config.tracker), ActionDiary()
            self._diary.set_floor_plan(plan)
            self._dirty, self._index, self.last_output = True, None, None


@register("memory", "janus", JanusConfig)
def build_janus(config: JanusConfig) -> Janus:
    return Janus(config)
