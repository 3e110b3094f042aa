"""The MemoryVLA memory system: working memory -> PCMB retrieval / fusion / consolidation -> recall.

See the package docstring for what the paper does, what we do and every departure.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from embodied_mem.encoders import build_encoder
from embodied_mem.memory.association import EntityTracker, TrackerConfig
from embodied_mem.memory.base import (
    ActionDiary,
    Entity,
    FrameGate,
    InstanceView,
    ReadWriteLock,
    describe,
    finite_array,
    frame_slices,
    load_manifest,
    save_manifest,
    view_score,
    visible_instances,
)
from embodied_mem.memory.memoryvla.bank import CONSOLIDATE, MemoryBank
from embodied_mem.memory.memoryvla.modules import MemoryVLAModules
from embodied_mem.memory.resolve import ResolvedGoal, recall_structured, room_hits
from embodied_mem.registry import register
from embodied_mem.runtime import torch_threads
from embodied_mem.types import FloorPlan, Hit, MemoryStats, Observation, Pose, Query, Recall

PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass
class MemoryVLAConfig:
    """MemoryVLA's PCMB over a robot's history (``configs/memory/memoryvla.yaml`` mirrors it)."""

    encoder: str = "minilm"  # text encoder of the step's perceived semantics and of the query
    weights: str | None = None  # null: the untrained mechanism (seeded init); "weights.safetensors": the shipped trained modules
    vlm: str | None = None  # a local Hugging Face VLM replacing both encoders; never downloaded
    capacity: int = 16  # L, entries per bank (paper: mem_length 16)
    frames_per_entry: int = 8  # frames a (merged) entry keeps naming (our addition, bounded)
    consolidate: str = "tome"  # "tome": merge the most similar adjacent pair; "fifo": drop the oldest
    fusion: str = "gate"  # "gate" or "add"
    use_timestep_pe: bool = True  # sinusoidal timestep encodings on the retrieval keys
    retrieval_layers: int = 2
    update_fused: bool = False  # vla: raw working tokens enter the bank; dexbotic: fused ones
    per_dim: int = 128  # d_p (paper 256)
    cog_dim: int = 128  # d_c (paper 4096, the LLM width)
    grid: int = 4  # perceptual tokens N_p = grid * grid (paper 256 patches)
    temperature: float = 0.1  # readout softmax temperature over bank entries (recall scores)
    seed: int = 0  # module initialisation when untrained
    min_pixels: int = 20
    caption_objects: int = 8  # detections (largest first) named in a step's perceived semantics
    torch_threads: int = 1
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


# ----------------------------------------------------------------------------------------
# What a step perceived, as text (shared with train.py)
# ----------------------------------------------------------------------------------------
def perceived_parts(views: list[InstanceView], room: str | None, events, caption_objects: int) -> list[str]:
    """The step's perceived semantics: its room (floor plan), detections (label + attribute
    guesses, largest first) and its own grasp / release."""
    parts = [(room or "somewhere").replace("_", " ")]
    parts += [v.description for v in views[:caption_objects]]
    for event in events:
        if event.kind == "grasp":
            parts.append("grasping something")
        elif event.kind == "release":
            parts.append("putting something down")
    return parts


def semantic_embeddings(encoder, part_lists: list[list[str]]) -> np.ndarray:
    """Each list of parts -> the normalised mean of its parts' embeddings (parts repeat across
    steps, so each distinct string is encoded once)."""
    texts = list(dict.fromkeys(p for parts in part_lists for p in parts))
    vectors = dict(zip(texts, encoder.encode(texts))) if texts else {}
    out = np.zeros((len(part_lists), encoder.dim), np.float32)
    for row, parts in enumerate(part_lists):
        mean = np.mean([vectors[p] for p in parts], axis=0)
        out[row] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return out


# ----------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------
def resolve_weights(path: str) -> Path:
    """A weights path as given, else relative to this package (where the shipped file lies)."""
    candidate = Path(path).expanduser()
    if candidate.is_file() or candidate.is_absolute():
        return candidate
    return PACKAGE_DIR / path


def load_weights(modules: torch.nn.Module, path: str) -> str:
    """Load a safetensors state dict into ``modules``; return its SHA-256. ``ValueError`` names
    what is wrong (missing file, corrupt file, wrong keys or shapes, NaN) and changes nothing."""
    from safetensors.torch import load_file

    file = resolve_weights(path)
    if not file.is_file():
        raise ValueError(f"memoryvla weights {path!r} not found (looked at {file})")
    try:
        tensors = load_file(str(file))
    except Exception as error:  # SafetensorError, OSError, ...: a corrupt file
        raise ValueError(f"corrupt memoryvla weights {file}: {error}") from error
    expected = modules.state_dict()
    missing, unknown = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unknown:
        raise ValueError(f"memoryvla weights {file} do not fit this config: missing {missing[:5]}, unknown {unknown[:5]}")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(f"memoryvla weights {file}: {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"memoryvla weights {file}: {name} holds NaN or inf")
    modules.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return hashlib.sha256(file.read_bytes()).hexdigest()


def build_modules(config: MemoryVLAConfig, text_dim: int, vision_dim: int | None = None) -> MemoryVLAModules:
    """The learned parts, seeded (the same untrained mechanism for the same seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        modules = MemoryVLAModules(
            config.per_dim, config.cog_dim, text_dim, config.grid, config.retrieval_layers, config.use_timestep_pe, config.fusion, vision_dim
        )
    return modules.eval()


# ----------------------------------------------------------------------------------------
# The frames the bank's entries still name
# ----------------------------------------------------------------------------------------
@dataclass
class KeptFrame:
    """One frame some bank entry names: its pose and its detections (the memory's track ids)."""

    frame_id: int
    stamp: float
    day: int
    pose: Pose
    room: str | None
    track_ids: np.ndarray  # int32 (n,)
    pixels: np.ndarray  # int32 (n,)
    centroids: np.ndarray  # float32 (n, 3)
    extents: np.ndarray  # float32 (n, 6)
    fractions: np.ndarray  # float32 (n,)
    scores: np.ndarray  # float32 (n,)
    gt_ids: np.ndarray  # int32 (n,), -1 without gt perception
    labels: list[str] = field(default_factory=list)
    attributes: list[dict[str, str]] = field(default_factory=list)  # "kind" included

    @staticmethod
    def from_views(obs: Observation, room: str | None, views: list[InstanceView]) -> "KeptFrame":
        return KeptFrame(
            frame_id=int(obs.frame_id),
            stamp=float(obs.stamp),
            day=int(obs.day),
            pose=obs.pose,
            room=room,
            track_ids=np.full(len(views), -1, np.int32),
            pixels=np.array([v.pixels for v in views], np.int32),
            centroids=np.array([v.centroid for v in views], np.float32).reshape(-1, 3),
            extents=np.array([np.concatenate([v.extent_min, v.extent_max]) for v in views], np.float32).reshape(-1, 6),
            fractions=np.array([v.mask_fraction for v in views], np.float32),
            scores=np.array([v.score for v in views], np.float32),
            gt_ids=np.array([-1 if v.instance_id is None else v.instance_id for v in views], np.int32),
            labels=[v.category for v in views],
            attributes=[dict(v.attributes) for v in views],
        )

    def nbytes(self) -> int:
        arrays = (self.track_ids, self.pixels, self.centroids, self.extents, self.fractions, self.scores, self.gt_ids)
        text = sum(len(label) + 16 * len(a) for label, a in zip(self.labels, self.attributes))
        return sum(a.nbytes for a in arrays) + 8 * 12 + text


class MemoryVLA:
    """Perceptual and cognitive banks of ``capacity`` entries each, over the whole history."""

    def __init__(self, config: MemoryVLAConfig, name: str = "memoryvla") -> None:
        self.name, self.config = name, config
        if config.consolidate not in CONSOLIDATE:
            raise ValueError(f"memoryvla consolidate must be one of {CONSOLIDATE}, got {config.consolidate!r}")
        if config.fusion not in ("gate", "add"):
            raise ValueError(f"memoryvla fusion must be 'gate' or 'add', got {config.fusion!r}")
        for key in ("capacity", "frames_per_entry", "per_dim", "cog_dim", "grid", "retrieval_layers"):
            if int(getattr(config, key)) < (2 if key == "capacity" else 1):
                raise ValueError(f"memoryvla {key} must be positive (capacity at least 2), got {getattr(config, key)!r}")
        if not config.temperature > 0:
            raise ValueError(f"memoryvla temperature must be positive, got {config.temperature!r}")
        self.encoder = build_encoder(config.encoder)
        self.vlm = None
        vision_dim, text_dim = None, self.encoder.dim
        if config.vlm:
            from embodied_mem.memory.memoryvla.vlm import HFVisionLanguage

            self.vlm = HFVisionLanguage(config.vlm)
            vision_dim, text_dim = self.vlm.vision_dim, self.vlm.text_dim
        self.modules = build_modules(config, text_dim, vision_dim)
        self.weights_sha256 = load_weights(self.modules, config.weights) if config.weights else None
        self._lock = ReadWriteLock()
        self._embed_lock = threading.Lock()  # the text encoder is not thread-safe
        self._diary = ActionDiary()
        self.reset()

    # ------------------------------------------------------------------ protocol
    def reset(self) -> None:
        plan = self._diary.floor_plan  # the map outlives a reset
        c = self.config
        self.gate = FrameGate()
        self.per_bank = MemoryBank(c.capacity, c.grid * c.grid, c.per_dim, c.frames_per_entry, c.consolidate)
        self.cog_bank = MemoryBank(c.capacity, 1, c.cog_dim, c.frames_per_entry, c.consolidate)
        self.frames: dict[int, KeptFrame] = {}
        self.tracker = EntityTracker(c.tracker)
        self._diary = ActionDiary()
        self._diary.set_floor_plan(plan)
        self.fused: dict[str, np.ndarray] = {}  # the last step's fused tokens (what an action head would take)
        self._index = None

    def set_floor_plan(self, plan: FloorPlan | None) -> None:
        with self._lock.writing():
            self._diary.set_floor_plan(plan)

    @property
    def diary(self) -> ActionDiary:
        return self._diary

    def observe(self, obs: Observation) -> None:
        obs.validate()  # fields may have changed since construction
        if not self.gate.admit(obs):
            return
        views = sorted(visible_instances(obs, self.config.min_pixels), key=lambda v: -v.pixels)
        room = self._diary.room_at(obs.pose)
        parts = perceived_parts(views, room, obs.events, self.config.caption_objects)
        per_x, cog_x = self.working_memory(obs.rgb, parts)
        record = KeptFrame.from_views(obs, room, views)
        with self._lock.writing():
            # All or nothing: what this frame changes is undone if anything below raises.
            undo = (self.per_bank.snapshot(), self.cog_bank.snapshot(), dict(self.frames), self._diary.mark(), self.fused)
            self.tracker.begin()
            try:
                ids, inferences = self.tracker.frame(views, obs.events, obs.stamp)
                record.track_ids = np.array(ids, np.int32)
                self._diary.record(obs.frame_id, obs.stamp, obs.day, obs.pose, inferences, self._label_of)
                self.fused = self._step(per_x, cog_x, obs)
                self.frames[record.frame_id] = record
                kept = self.per_bank.frame_ids() | self.cog_bank.frame_ids()
                for frame_id in [f for f in self.frames if f not in kept]:
                    del self.frames[frame_id]
                self._index = None
                self.gate.commit(obs)
            except BaseException:
                per, cog, frames, mark, fused = undo
                self.tracker.rollback()
                self._diary.rollback(mark)
                self.per_bank.restore(per)
                self.cog_bank.restore(cog)
                self.frames, self.fused, self._index = frames, fused, None
                raise
            self.tracker.commit()

    def working_memory(self, rgb: np.ndarray, parts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """This step's perceptual tokens (N_p, d_p) and cognitive token (1, d_c)."""
        with torch.inference_mode(), torch_threads(self.config.torch_threads):
            if self.vlm is not None:
                patches, hidden = self.vlm.encode(rgb, "; ".join(parts))
                per = self.modules.image(torch.from_numpy(patches)[None])
                cog = self.modules.cognitive(torch.from_numpy(hidden)[None])
            else:
                with self._embed_lock:
                    semantics = semantic_embeddings(self.encoder, [parts])
                per = self.modules.image(torch.from_numpy(np.ascontiguousarray(rgb))[None])
                cog = self.modules.cognitive(torch.from_numpy(semantics))
        return per[0].numpy().copy(), cog[0].numpy().copy()

    def _step(self, per_x: np.ndarray, cog_x: np.ndarray, obs: Observation) -> dict[str, np.ndarray]:
        """Retrieve (from earlier steps) -> fuse -> write -> consolidate, for each stream."""
        timestep = float(self.gate.frames_seen)  # the paper's step counter
        pose7 = np.concatenate([obs.pose.position, obs.pose.orientation])
        fused = {}
        with torch.inference_mode(), torch_threads(self.config.torch_threads):
            for key, stream, bank, x in (("per", self.modules.per, self.per_bank, per_x), ("cog", self.modules.cog, self.cog_bank, cog_x)):
                feats, times = bank.entries()
                out = stream(torch.from_numpy(x), torch.from_numpy(feats), torch.from_numpy(times))
                fused[key] = out.numpy().copy()
                bank.append(timestep, fused[key] if self.config.update_fused else x, obs.frame_id, obs.stamp, pose7)
        return fused

    def _label_of(self, track_id: int) -> tuple[str, dict[str, str]]:
        track = self.tracker.tracks.get(int(track_id))
        return ("unknown", {}) if track is None else (track.category, track.attribute_values)

    def recall(self, query: Query) -> Recall:
        started = time.perf_counter()
        query.validate()  # a query changed after construction is caught here
        with self._lock.reading():
            if query.constraints is not None:
                hits = recall_structured(self, query)
            else:
                hits = self._recall_text(query)
        return Recall(hits, self.name, time.perf_counter() - started)

    def stats(self) -> MemoryStats:
        with self._lock.reading():
            total = self.per_bank.nbytes() + self.cog_bank.nbytes() + sum(f.nbytes() for f in self.frames.values())
            total += 200 * len(self.tracker.tracks) + 200 * len(self._diary.entries)
            return MemoryStats(items=len(self.per_bank) + len(self.cog_bank), bytes=int(total), frames_seen=self.gate.frames_seen)

    # ------------------------------------------------------------------ oracle track
    def _sightings(self) -> dict:
        """The kept frames' sightings grouped by track id, in time order (rebuilt after a frame)."""
        if self._index is None:
            frames = sorted(self.frames.values(), key=lambda f: (f.stamp, f.frame_id))
            groups: dict[int, list[tuple[KeptFrame, int]]] = {}
            for frame in frames:
                for row, track_id in enumerate(frame.track_ids.tolist()):
                    groups.setdefault(int(track_id), []).append((frame, row))
            self._index = {"frames": frames, "groups": groups}
        return self._index

    def _kept_label(self, sightings: list[tuple[KeptFrame, int]]) -> tuple[str, dict[str, str]]:
        """Score-weighted majority label and attributes over the kept sightings alone."""
        labels: dict[str, float] = {}
        votes: dict[str, dict[str, float]] = {}
        for frame, row in sightings:
            score = float(frame.scores[row])
            labels[frame.labels[row]] = labels.get(frame.labels[row], 0.0) + score
            for key, value in frame.attributes[row].items():
                votes.setdefault(key, {})[value] = votes.setdefault(key, {}).get(value, 0.0) + score
        category = max(sorted(labels), key=lambda k: labels[k])
        return category, {key: max(sorted(v), key=lambda x: v[x]) for key, v in votes.items()}

    def _current(self, entity_id: int) -> list[tuple[KeptFrame, int]]:
        """Kept sightings of an entity where it is now: since the robot last moved it, near the latest."""
        rows = self._sightings()["groups"].get(entity_id, [])
        track = self.tracker.tracks.get(entity_id)
        if track is not None and track.moved_at is not None:
            rows = [(f, r) for f, r in rows if f.stamp >= track.moved_at]
        if not rows:
            return []
        latest = rows[-1][0].centroids[rows[-1][1]]
        return [(f, r) for f, r in rows if np.linalg.norm(f.centroids[r] - latest) <= 0.5]

    def catalog(self) -> list[Entity]:
        """What the bank's entries still name: confirmed tracks seen in a kept frame, where the
        kept frames last show them; plus objects the robot itself put down (the diary's releases)."""
        groups = self._sightings()["groups"]
        trusted = {t.track_id for t in self.tracker.confirmed()}
        entities = []
        for entity_id, rows in groups.items():
            if entity_id not in trusted:
                continue
            category, attributes = self._kept_label(rows)
            here = self._current(entity_id)
            track = self.tracker.tracks[entity_id]
            if not here:  # moved by the robot after every kept sighting: where it put it
                box = (track.position - 0.05, track.position + 0.05)
                entities.append(Entity(entity_id, track.kind, category, attributes, track.position.copy(), float(track.moved_at), box))
                continue
            extents = np.array([f.extents[r] for f, r in here], np.float64)
            position = here[-1][0].centroids[here[-1][1]].astype(np.float64)
            box = (extents[:, :3].min(axis=0), extents[:, 3:].max(axis=0))
            entities.append(Entity(entity_id, track.kind, category, attributes, position, here[-1][0].stamp, box))
        named = {e.entity_id for e in entities}
        for entry in self._diary.entries:  # the robot's own releases: it knows where it put them
            if entry.kind != "place" or entry.object_id is None or entry.object_id in named:
                continue
            track = self.tracker.tracks.get(entry.object_id)
            if track is None or track.moved_at is None:
                continue
            named.add(entry.object_id)
            box = (track.position - 0.05, track.position + 0.05)
            attributes = {k: v for k, v in entry.object_attributes.items()}
            entities.append(Entity(entry.object_id, track.kind, entry.object_category or "unknown", attributes, track.position.copy(), float(track.moved_at), box))
        return entities

    def locate(self, goal: ResolvedGoal, query: Query) -> list[Hit]:
        if goal.target == "room":
            return room_hits(goal, self.name)
        hits = []
        for entity_id in goal.entity_ids:
            hit = self._best_view(int(entity_id), goal)
            if hit is not None:
                hits.append(hit)
        hits.sort(key=lambda h: -h.score)
        return hits

    def _best_view(self, entity_id: int, goal: ResolvedGoal) -> Hit | None:
        """The kept frame that shows the entity where it is now, largest and most centred; the
        release frame for an object the robot put down and no kept frame shows since."""
        here = self._current(entity_id)
        if not here:
            return self._release_view(entity_id)
        scores = []
        for frame, row in here:
            offset = frame.centroids[row, :2].astype(np.float64) - frame.pose.position[:2]
            bearing = abs(float(np.angle(np.exp(1j * (np.arctan2(offset[1], offset[0]) - frame.pose.yaw)))))
            scores.append(float(view_score(frame.fractions[row], float(np.linalg.norm(offset)), bearing)))
        best = len(scores) - 1 - int(np.argmax(scores[::-1]))  # ties: the most recent
        frame, row = here[best]
        agent_pose, frame_id = frame.pose, frame.frame_id
        poses = goal.interaction_poses.get(entity_id)
        if poses:  # the robot stood right there when it picked from / placed on it
            agent_pose, frame_id = poses[-1][0], poses[-1][1]
        return Hit(frame_id, frame.stamp, agent_pose, frame.centroids[row].astype(np.float64), entity_id, scores[best], self.name, {"sightings": len(here)})

    def _release_view(self, entity_id: int) -> Hit | None:
        track = self.tracker.tracks.get(entity_id)
        places = [e for e in self._diary.entries if e.kind == "place" and e.object_id == entity_id]
        if track is None or track.moved_at is None or not places:
            return None
        place = places[-1]
        return Hit(place.frame_id, place.stamp, place.pose, track.position.copy(), entity_id, 0.01, self.name, {"from": "release"})

    # ------------------------------------------------------------------ language track
    def query_token(self, text: str) -> np.ndarray:
        """The cognitive query: the text through the same cognitive encoder as a step's semantics."""
        with torch.inference_mode(), torch_threads(self.config.torch_threads):
            if self.vlm is not None:
                _, hidden = self.vlm.encode(np.zeros((32, 32, 3), np.uint8), text)
                return self.modules.cognitive(torch.from_numpy(hidden)[None])[0].numpy().copy()
            with self._embed_lock:
                vector = self.encoder.encode([text])
            return self.modules.cognitive(torch.from_numpy(vector))[0].numpy().copy()

    def entry_attention(self, token: np.ndarray) -> np.ndarray:
        """Readout attention of the fused query token over the cognitive bank's entries:
        ``softmax_j(cos(f_q, m_j) / temperature)`` with ``f_q`` = gate(query, retrieved)."""
        feats, times = self.cog_bank.entries()
        if len(feats) == 0:
            return np.zeros(0)
        with torch.inference_mode(), torch_threads(self.config.torch_threads):
            fused = self.modules.cog(torch.from_numpy(token), torch.from_numpy(feats), torch.from_numpy(times))
            logits = torch.nn.functional.cosine_similarity(fused, torch.from_numpy(feats[:, 0, :]), dim=-1) / self.config.temperature
            return torch.softmax(logits, dim=0).numpy().astype(np.float64)

    def _recall_text(self, query: Query) -> list[Hit]:
        if len(self.cog_bank) == 0:
            return []
        attention = self.entry_attention(self.query_token(query.text))
        with self._embed_lock:
            vector = self.encoder.encode([query.text])[0]
        hits: list[Hit] = []
        for entry in np.argsort(-attention, kind="stable"):
            members = []
            for frame_id, stamp, _ in self.cog_bank.members(int(entry)):
                if query.time_range is not None and not query.time_range[0] <= stamp <= query.time_range[1]:
                    continue
                members.append(self._member_match(self.frames[frame_id], vector))
            members.sort(key=lambda m: -m[0])  # the entry's frame whose detections fit the text best
            for rank, (similarity, frame, target, object_id) in enumerate(members):
                score = float(attention[entry]) - 1e-6 * rank
                evidence = {"entry": int(entry), "attention": float(attention[entry]), "similarity": similarity}
                hits.append(Hit(frame.frame_id, frame.stamp, frame.pose, target, object_id, score, self.name, evidence))
                if len(hits) >= query.k:
                    return hits
        return hits

    def _member_match(self, frame: KeptFrame, vector: np.ndarray) -> tuple[float, KeptFrame, np.ndarray | None, int | None]:
        if not frame.labels:
            return -1.0, frame, None, None
        texts = [describe(label, attributes) for label, attributes in zip(frame.labels, frame.attributes)]
        with self._embed_lock:
            similarity = self.encoder.encode(texts) @ vector
        row = int(np.argmax(similarity))
        return float(similarity[row]), frame, frame.centroids[row].astype(np.float64), int(frame.track_ids[row])

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory) -> None:
        with self._lock.reading():
            frames = sorted(self.frames.values(), key=lambda f: (f.stamp, f.frame_id))

            def flat(name: str, empty: np.ndarray) -> np.ndarray:
                return np.concatenate([getattr(f, name) for f in frames] or [empty])

            per_state, per_arrays = self.per_bank.to_state("per_")
            cog_state, cog_arrays = self.cog_bank.to_state("cog_")
            arrays = {
                **per_arrays,
                **cog_arrays,
                "frame_ids": np.array([f.frame_id for f in frames], np.int64),
                "stamps": np.array([f.stamp for f in frames], np.float64),
                "days": np.array([f.day for f in frames], np.int64),
                "poses": np.array([np.concatenate([f.pose.position, f.pose.orientation]) for f in frames]).reshape(-1, 7),
                "detection_frame": np.concatenate([np.full(f.track_ids.size, n, np.int64) for n, f in enumerate(frames)] or [np.zeros(0, np.int64)]),
                "track_ids": flat("track_ids", np.zeros(0, np.int32)),
                "pixels": flat("pixels", np.zeros(0, np.int32)),
                "centroids": flat("centroids", np.zeros((0, 3), np.float32)),
                "extents": flat("extents", np.zeros((0, 6), np.float32)),
                "fractions": flat("fractions", np.zeros(0, np.float32)),
                "scores": flat("scores", np.zeros(0, np.float32)),
                "gt_ids": flat("gt_ids", np.zeros(0, np.int32)),
            }
            state = {
                "gate": self.gate.to_dict(),
                "tracker": self.tracker.to_dict(),
                "diary": self._diary.to_dict(),
                "per_bank": per_state,
                "cog_bank": cog_state,
                "weights_sha256": self.weights_sha256,
                "frames": [{"room": f.room, "labels": f.labels, "attributes": f.attributes} for f in frames],
            }
        save_manifest(directory, self.name, state, arrays, config=self.config)

    def load(self, directory) -> None:
        """Parse everything into fresh state, check it, and swap it in only then."""
        state, arrays = load_manifest(Path(directory), self.name, config=self.config)
        try:
            if state.get("weights_sha256") != self.weights_sha256:
                raise ValueError("the checkpoint was made with other module weights")
            per_bank = self.per_bank.from_state("per_", state["per_bank"], arrays)
            cog_bank = self.cog_bank.from_state("cog_", state["cog_bank"], arrays)
            count = len(state["frames"])
            finite_array(arrays, "frame_ids", "i", (), count)
            finite_array(arrays, "stamps", "f", (), count)
            finite_array(arrays, "days", "i", (), count)
            finite_array(arrays, "poses", "f", (7,), count)
            rows = len(finite_array(arrays, "detection_frame", "i"))
            for name, tail, kind in (("track_ids", (), "i"), ("pixels", (), "i"), ("centroids", (3,), "f"), ("extents", (6,), "f"), ("fractions", (), "f"), ("scores", (), "f"), ("gt_ids", (), "i")):
                finite_array(arrays, name, kind, tail, rows)
            slices = frame_slices(arrays["detection_frame"], count, "detection_frame")
            frames: dict[int, KeptFrame] = {}
            for n, meta in enumerate(state["frames"]):
                mine = slices[n]
                labels = [str(label) for label in meta["labels"]]
                if len(labels) != mine.stop - mine.start or len(meta["attributes"]) != len(labels):
                    raise ValueError(f"frame {n}: {len(labels)} labels for {mine.stop - mine.start} detections")
                frame_id = int(arrays["frame_ids"][n])
                frames[frame_id] = KeptFrame(
                    frame_id=frame_id,
                    stamp=float(arrays["stamps"][n]),
                    day=int(arrays["days"][n]),
                    pose=Pose(arrays["poses"][n][:3], arrays["poses"][n][3:]),
                    room=meta["room"],
                    track_ids=arrays["track_ids"][mine].astype(np.int32),
                    pixels=arrays["pixels"][mine].astype(np.int32),
                    centroids=arrays["centroids"][mine].astype(np.float32),
                    extents=arrays["extents"][mine].astype(np.float32),
                    fractions=arrays["fractions"][mine].astype(np.float32),
                    scores=arrays["scores"][mine].astype(np.float32),
                    gt_ids=arrays["gt_ids"][mine].astype(np.int32),
                    labels=labels,
                    attributes=[{str(k): str(v) for k, v in a.items()} for a in meta["attributes"]],
                )
            if set(frames) != per_bank.frame_ids() | cog_bank.frame_ids():
                raise ValueError("the kept frames are not the frames the bank entries name")
            gate = FrameGate()
            gate.load_dict(state["gate"])
            diary = ActionDiary()
            diary.load_dict(state["diary"])
            tracker = EntityTracker(self.config.tracker)
            tracker.load_dict(state["tracker"])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"corrupt {self.name} checkpoint {directory}: {error!r}") from error
        with self._lock.writing():  # swap in only once everything parsed
            self.per_bank, self.cog_bank, self.frames = per_bank, cog_bank, frames
            self.gate, self._diary, self.tracker = gate, diary, tracker
            self.fused, self._index = {}, None

    # ------------------------------------------------------------------ pictures
    def plot(self, ax) -> None:
        """Kept frames as heading ticks coloured by time; catalogued entities where believed."""
        with self._lock.reading():
            frames = sorted(self.frames.values(), key=lambda f: f.stamp)
            if not frames:
                return
            xy = np.array([f.pose.position[:2] for f in frames])
            yaw = np.array([f.pose.yaw for f in frames])
            ax.quiver(xy[:, 0], xy[:, 1], np.cos(yaw), np.sin(yaw), [f.stamp for f in frames], cmap="viridis", scale=40, width=0.002, zorder=5)
            for entity in self.catalog():
                marker = "s" if entity.kind == "receptacle" else "o"
                ax.scatter(*entity.position[:2], marker=marker, s=30, facecolors="none", edgecolors="#d62728", linewidths=0.8, zorder=6)


@register("memory", "memoryvla", MemoryVLAConfig)
def build_memoryvla(config: MemoryVLAConfig) -> MemoryVLA:
    return MemoryVLA(config, "memoryvla")
