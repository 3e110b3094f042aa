"""The M3 memory system: a Gaussian feature field, its PSC bank, keyframes, tracker and diary."""

from __future__ import annotations

import math
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
    ReadWriteLock,
    describe,
    finite_array,
    load_manifest,
    save_manifest,
    trajectory_distance,
    view_score,
    visible_instances,
)
from embodied_mem.memory.m3.features import NO_FEATURE, feature_texts
from embodied_mem.memory.m3.gma import (
    attention,
    feature_loss,
    gaussian_memory_attention,
)
from embodied_mem.memory.m3.psc import PrincipalSceneComponents
from embodied_mem.memory.resolve import ResolvedGoal, recall_structured, room_hits
from embodied_mem.registry import register
from embodied_mem.runtime import torch_threads
from embodied_mem.splatting import (
    FitConfig,
    GaussianField,
    View,
    fit,
    seed_gaussians,
    view_matrix,
)
from embodied_mem.types import (
    FloorPlan,
    Hit,
    MemoryStats,
    Observation,
    Pose,
    Query,
    Recall,
)


@dataclass
class M3Config:
    """Every knob of the M3 memory (mirrored in ``configs/memory/m3.yaml``)."""

    encoder: str = "minilm"  # text encoder of the detections' label / attribute texts
    min_pixels: int = 20  # detections smaller than this (valid-depth pixels) are not tracked
    background_text: str | None = "background"  # feature of pixels no detection covers (None: none)
    # Gaussian memory attention / principal scene components (paper: c = 16 per model slice, T = 0.05)
    query_dim: int = 32  # the paper's slice for SigLIP / DINOv2 / LLaMA features (CLIP: 16)
    softmax_temp: float = 0.05
    psc_tau: float = 0.9  # the public fea2mem.py script's threshold
    projection_seed: int = 0  # P ~ N(0, 1), fixed (in no optimiser group, as the public code)
    # Keyframes and fitting budget
    downsample: int = 4  # render resolution = camera resolution / downsample
    keyframe_distance: float = 1.0  # metres moved since the last keyframe
    keyframe_angle_deg: float = 30.0  # or degrees turned
    keyframe_max_gap: int = 20  # or frames since it
    iterations: int = 5  # Adam steps per keyframe (the fitting budget; paper: 30k in all)
    replay_views: int = 1  # earlier keyframes replayed beside the new one
    replay_radius: float = 4.0  # replay keyframes whose camera is this close
    feature_points: int = 2000  # sampled pixels per view for the feature loss (paper: 2000)
    lambda_emb: float = 0.5
    lambda_dssim: float = 0.2
    lambda_depth: float = 1.0
    lr_means: float = 2e-3
    lr_scales: float = 5e-3
    lr_quats: float = 5e-3
    lr_opacity: float = 5e-2
    lr_colors: float = 1e-2
    lr_queries: float = 1e-2  # paper 5e-4 over 30k steps; ours starts from least squares
    max_new_points: int = 500  # Gaussians seeded per keyframe at most (subsampled)
    max_gaussians: int = 40000
    prune_opacity: float = 0.02
    backend: str = "auto"  # auto (gsplat on CUDA tensors) | torch | gsplat
    device: str = "cpu"
    seed: int = 0
    torch_threads: int = 1
    # Recall
    min_opacity: float = 0.3  # Gaussians fainter than this are not asked
    refine_margin: float = 0.2  # Gaussians within a track's box grown by this refine its position
    refine_min_gaussians: int = 5
    view_radius: float = 0.3  # a hit's point counts as seen in pixels this close to it
    cluster_radius: float = 0.5  # language recall: Gaussians this close to the best join its hit
    hit_separation: float = 1.0  # language recall: hits at least this far apart
    tracker: TrackerConfig = field(default_factory=TrackerConfig)

    def fit_config(self) -> FitConfig:
        return FitConfig(
            iterations=self.iterations, lr_means=self.lr_means, lr_scales=self.lr_scales, lr_quats=self.lr_quats,
            lr_opacity=self.lr_opacity, lr_colors=self.lr_colors, lr_queries=self.lr_queries,
            lambda_dssim=self.lambda_dssim, lambda_depth=self.lambda_depth, lambda_feature=self.lambda_emb,
            max_new_points=self.max_new_points, prune_opacity=self.prune_opacity, max_gaussians=self.max_gaussians,
            backend=self.backend,
        )

    def check(self) -> None:
        for name in ("query_dim", "downsample", "keyframe_max_gap", "feature_points", "max_gaussians"):
            if getattr(self, name) < 1:
                raise ValueError(f"m3 config {name} must be >= 1, got {getattr(self, name)}")
        if self.softmax_temp <= 0:
            raise ValueError(f"m3 config softmax_temp must be positive, got {self.softmax_temp}")
        if self.iterations < 0 or self.replay_views < 0:
            raise ValueError("m3 config iterations and replay_views must be >= 0")
        if self.backend not in ("auto", "torch", "gsplat"):
            raise ValueError(f"m3 config backend must be auto, torch or gsplat, got {self.backend!r}")


@dataclass
class Keyframes:
    """The remembered viewpoints at render resolution (images are small: 40x30 by default)."""

    frame_ids: list[int] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)
    poses: list[Pose] = field(default_factory=list)  # world_T_body
    cameras: list[np.ndarray] = field(default_factory=list)  # world_T_camera 4x4
    intrinsics: list[np.ndarray] = field(default_factory=list)  # fx, fy, cx, cy at render resolution
    rgb: list[np.ndarray] = field(default_factory=list)  # uint8 (h, w, 3)
    depth: list[np.ndarray] = field(default_factory=list)  # float32 (h, w), 0 = none
    labels: list[np.ndarray] = field(default_factory=list)  # int32 (h, w): PSC feature row, -1 none

    def __len__(self) -> int:
        return len(self.frame_ids)

    def copy(self) -> Keyframes:
        return Keyframes(*(list(getattr(self, name)) for name in self.__dataclass_fields__))

    def nbytes(self) -> int:
        images = sum(a.nbytes for a in self.rgb) + sum(a.nbytes for a in self.depth) + sum(a.nbytes for a in self.labels)
        return int(images + len(self) * (8 + 8 + 56 + 128 + 32))

    def view(self, n: int, features: torch.Tensor | None = None) -> View:
        fx, fy, cx, cy = self.intrinsics[n]
        K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)
        return View(
            torch.as_tensor(self.rgb[n], dtype=torch.float32) / 255.0,
            torch.as_tensor(self.depth[n], dtype=torch.float32),
            view_matrix(self.cameras[n]),
            K,
            target=torch.as_tensor(self.labels[n], dtype=torch.long),
        )


def _block_median_depth(depth: np.ndarray, s: int) -> np.ndarray:
    """Median of the valid depths of each s x s block (0 where a block has none)."""
    h, w = depth.shape[0] // s, depth.shape[1] // s
    blocks = depth[: h * s, : w * s].reshape(h, s, w, s).transpose(0, 2, 1, 3).reshape(h, w, s * s).astype(np.float64)
    blocks = np.where(np.isfinite(blocks) & (blocks > 0), blocks, np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(blocks, axis=-1)
    return np.nan_to_num(median, nan=0.0).astype(np.float32)


def _block_mean_rgb(rgb: np.ndarray, s: int) -> np.ndarray:
    h, w = rgb.shape[0] // s, rgb.shape[1] // s
    return np.round(rgb[: h * s, : w * s].reshape(h, s, w, s, 3).astype(np.float64).mean(axis=(1, 3))).astype(np.uint8)


class M3Memory:
    """M3 on a robot: see the package docstring (``embodied_mem.memory.m3``)."""

    name = "m3"

    def __init__(self, config: M3Config) -> None:
        config.check()
        self.config = config
        self.encoder = build_encoder(config.encoder)
        self.fit_config = config.fit_config()
        generator = torch.Generator().manual_seed(config.projection_seed)
        # P (c, D): the fixed random lift of the principal query to the feature space.
        self.projection = torch.randn((config.query_dim, self.encoder.dim), generator=generator)
        self._lift_inverse = torch.linalg.pinv(self.projection)  # (D, c): least-squares q for a feature
        self._lock = ReadWriteLock()
        self._observe_lock = threading.Lock()  # one observe at a time (the fit runs outside the RW lock)
        self._embed_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._diary = ActionDiary()
        self.reset()

    # ------------------------------------------------------------------ protocol
    def reset(self) -> None:
        plan = self._diary.floor_plan  # the map outlives a reset
        self.gate = FrameGate()
        self.tracker = EntityTracker(self.config.tracker)
        self._diary = ActionDiary()
        self._diary.set_floor_plan(plan)
        self.field = GaussianField(self.config.query_dim, self.config.device)
        self.psc = PrincipalSceneComponents(self.encoder.dim, self.config.psc_tau)
        self.keyframes = Keyframes()
        self.positions: list[tuple[float, float]] = []  # the robot's x, y at every frame (routes)
        self._since_keyframe = 0
        self._fit_steps = 0
        self._fit_seconds = 0.0
        self._generator = torch.Generator().manual_seed(self.config.seed)
        self._cache: dict = {}

    @property
    def diary(self) -> ActionDiary:
        return self._diary

    def set_floor_plan(self, plan: FloorPlan | None) -> None:
        with self._lock.writing():
            self._diary.set_floor_plan(plan)

    def observe(self, obs: Observation) -> None:
        obs.validate()  # fields may have changed since construction
        with self._observe_lock:
            if not self.gate.admit(obs):
                return
            views = visible_instances(obs, self.config.min_pixels)
            update = self._fit_keyframe(obs) if self._is_keyframe(obs) else None
            with self._lock.writing():
                # All or nothing: the field, bank and keyframes were built on copies (swapped in
                # last); the tracker and diary are rolled back if anything below raises.
                self.tracker.begin()
                mark = self._diary.mark()
                try:
                    _, inferences = self.tracker.frame(views, obs.events, obs.stamp)
                    self._diary.record(obs.frame_id, obs.stamp, obs.day, obs.pose, inferences, self._label_of)
                    self.gate.commit(obs)
                except BaseException:
                    self.tracker.rollback()
                    self._diary.rollback(mark)
                    raise
                self.tracker.commit()
                self.positions.append((float(obs.pose.position[0]), float(obs.pose.position[1])))
                if update is not None:
                    self.field, self.psc, self.keyframes, seconds, steps = update
                    self._fit_seconds += seconds
                    self._fit_steps += steps
                    self._since_keyframe = 0
                else:
                    self._since_keyframe += 1
                self._cache = {}

    def recall(self, query: Query) -> Recall:
        started = time.perf_counter()
        query.validate()
        with self._lock.reading():
            if query.constraints is not None:
                hits = recall_structured(self, query)
            else:
                hits = self._recall_text(query)
        return Recall(hits, self.name, time.perf_counter() - started)

    def stats(self) -> MemoryStats:
        with self._lock.reading():
            total = (
                self.field.nbytes() + self.keyframes.nbytes() + self.psc.nbytes() + self.projection.numel() * 4
                + 200 * len(self.tracker.tracks) + 200 * len(self._diary.entries) + 8 * len(self.positions)
            )
            return MemoryStats(items=len(self.field), bytes=int(total), frames_seen=self.gate.frames_seen)

    # ------------------------------------------------------------------ building the field
    def _is_keyframe(self, obs: Observation) -> bool:
        """A new viewpoint (moved or turned enough), a long gap, or a grasp / release (the scene changes)."""
        if int(obs.valid_depth().sum()) < 4 * self.config.downsample**2:
            return False
        if not len(self.keyframes):
            return True
        if any(e.kind in ("grasp", "release") for e in obs.events):
            return True
        last = self.keyframes.poses[-1]
        moved = float(np.linalg.norm(obs.pose.position - last.position))
        turned = abs(math.degrees(math.atan2(math.sin(obs.pose.yaw - last.yaw), math.cos(obs.pose.yaw - last.yaw))))
        return moved >= self.config.keyframe_distance or turned >= self.config.keyframe_angle_deg or self._since_keyframe + 1 >= self.config.keyframe_max_gap

    def _fit_keyframe(self, obs: Observation):
        """Seed and fit a copy of the field on this keyframe (nothing of the memory changes)."""
        started = time.perf_counter()
        config = self.config
        s = config.downsample
        texts, local = feature_texts(obs, s, config.background_text)
        with self._embed_lock:
            vectors = self.encoder.encode(texts) if texts else np.zeros((0, self.encoder.dim), np.float32)
        psc = self.psc.copy()
        rows = np.asarray(psc.add(texts, vectors), dtype=np.int32)
        labels = np.where(local >= 0, rows[np.maximum(local, 0)] if len(rows) else NO_FEATURE, NO_FEATURE).astype(np.int32)
        keyframes = self.keyframes.copy()
        camera = obs.camera
        keyframes.frame_ids.append(int(obs.frame_id))
        keyframes.stamps.append(float(obs.stamp))
        keyframes.poses.append(obs.pose)
        keyframes.cameras.append(obs.world_T_camera.matrix())
        keyframes.intrinsics.append(np.array([camera.fx / s, camera.fy / s, camera.cx / s, camera.cy / s]))
        keyframes.rgb.append(_block_mean_rgb(obs.rgb, s))
        keyframes.depth.append(_block_median_depth(obs.depth, s))
        keyframes.labels.append(labels)
        features = torch.as_tensor(psc.features, dtype=torch.float32)
        bank = torch.as_tensor(psc.bank, dtype=torch.float32)
        current = len(keyframes) - 1
        views = [keyframes.view(current)] + [keyframes.view(n) for n in self._replay(keyframes, current)]
        field_copy = self.field.clone()
        with torch_threads(config.torch_threads):

            def query_init(view: View, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
                # Least squares q with q P = f (the paper starts from N(0, 1); we fit few steps).
                target = self._targets(view.target[r, c], features)
                return target @ self._lift_inverse

            def loss(rendered: torch.Tensor, view: View) -> torch.Tensor:
                flat_rows = view.target.reshape(-1)
                pick = torch.randperm(flat_rows.numel(), generator=self._generator)[: config.feature_points]
                l_cos, l_l2 = feature_loss(
                    rendered.reshape(-1, rendered.shape[-1])[pick], self._targets(flat_rows[pick], features),
                    self.projection, bank, config.softmax_temp,
                )
                return l_cos + l_l2

            seed_gaussians(field_copy, views[0], self.fit_config, self._generator, query_init)
            history = fit(field_copy, views, self.fit_config, feature_loss=loss if len(bank) else None, generator=self._generator)
        return field_copy, psc, keyframes, time.perf_counter() - started, len(history)

    @staticmethod
    def _targets(rows: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The distilled feature of each pixel (zero where there is none)."""
        out = torch.zeros((rows.numel(), features.shape[1]))
        has = rows >= 0
        if bool(has.any()):
            out[has] = features[rows[has]]
        return out

    def _replay(self, keyframes: Keyframes, current: int) -> list[int]:
        """Earlier keyframes whose camera is near the new one (random, seeded)."""
        if self.config.replay_views == 0 or current == 0:
            return []
        here = keyframes.cameras[current][:3, 3]
        near = [n for n in range(current) if np.linalg.norm(keyframes.cameras[n][:3, 3] - here) <= self.config.replay_radius]
        if not near:
            return []
        order = torch.randperm(len(near), generator=self._generator).tolist()
        return [near[i] for i in order[: self.config.replay_views]]

    # ------------------------------------------------------------------ reading the field
    def _gaussian_features(self):
        """Per Gaussian: GMA attention over the bank, its reconstruction R = A M, and |R| (cached)."""
        with self._cache_lock:
            cached = self._cache.get("gaussians")
            if cached is None:
                bank = torch.as_tensor(self.psc.bank, dtype=torch.float32)
                if len(self.field) == 0 or len(bank) == 0:
                    cached = (np.zeros((0, len(bank)), np.float32), np.zeros((0, self.encoder.dim), np.float32))
                else:
                    with torch.no_grad(), torch_threads(self.config.torch_threads):
                        weights = attention(self.field.queries, self.projection, bank, self.config.softmax_temp)
                        recon = weights @ bank
                    cached = (weights.numpy(), recon.numpy())
                self._cache["gaussians"] = cached
            return cached

    def _keyframe_points(self):
        """(K, P, 3) world points of every keyframe pixel (NaN without depth) and (K, P) labels."""
        with self._cache_lock:
            cached = self._cache.get("points")
            if cached is None:
                points, labels = [], []
                for n in range(len(self.keyframes)):
                    fx, fy, cx, cy = self.keyframes.intrinsics[n]
                    depth = self.keyframes.depth[n].astype(np.float64)
                    h, w = depth.shape
                    v, u = np.mgrid[0:h, 0:w]
                    z = np.where(depth > 0, depth, np.nan)
                    camera = np.stack([(u + 0.5 - cx) / fx * z, (v + 0.5 - cy) / fy * z, z], axis=-1).reshape(-1, 3)
                    matrix = self.keyframes.cameras[n]
                    points.append(camera @ matrix[:3, :3].T + matrix[:3, 3])
                    labels.append(self.keyframes.labels[n].reshape(-1))
                cached = (np.array(points).reshape(len(points), -1, 3), np.array(labels).reshape(len(labels), -1))
                self._cache["points"] = cached
            return cached

    def bank_entry_of(self, vector: np.ndarray) -> int | None:
        """The PSC bank entry nearest (cosine) to a feature vector."""
        bank = self.psc.bank
        if len(bank) == 0:
            return None
        unit = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
        return int(np.argmax(unit @ vector))

    def _row_entries(self) -> np.ndarray:
        """For each PSC feature row, the bank entry nearest to it."""
        bank, features = self.psc.bank, self.psc.features
        if len(bank) == 0:
            return np.zeros(len(features), dtype=np.int64)
        unit_b = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
        unit_f = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        return np.argmax(unit_f @ unit_b.T, axis=1)

    def _embed(self, text: str) -> np.ndarray:
        with self._embed_lock:
            return self.encoder.encode([text])[0]

    def _refined(self, track) -> tuple[np.ndarray, int]:
        """A track's position refined by the field: the opacity-weighted mean of the Gaussians in
        its box (grown by ``refine_margin``) that attend most to its description's bank entry."""
        if len(self.field) == 0:
            return track.position.copy(), 0
        entry = self.bank_entry_of(self._embed(describe(track.category, track.attribute_values)))
        if entry is None:
            return track.position.copy(), 0
        means = self.field.means.numpy()
        margin = self.config.refine_margin
        inside = np.all((means >= track.box_min - margin) & (means <= track.box_max + margin), axis=1)
        opacity = self.field.opacities.numpy()
        inside &= opacity >= self.config.min_opacity
        if not inside.any():
            return track.position.copy(), 0
        weights, _ = self._gaussian_features()
        match = inside & (np.argmax(weights, axis=1) == entry)
        count = int(match.sum())
        if count < self.config.refine_min_gaussians:
            return track.position.copy(), count
        w = opacity[match]
        return (means[match] * w[:, None]).sum(axis=0) / w.sum(), count

    def _best_keyframe(self, point: np.ndarray, entry: int | None, box=None, since: float | None = None, time_range=None) -> tuple[int, float] | None:
        """The keyframe that best sees ``point``: most of its pixels near the point (inside
        ``box`` when given, and showing bank entry ``entry`` when given), as
        ``view_score`` weighs distance and bearing (a keyframe pixel at the point is itself
        the proof it was not occluded there). Returns (keyframe index, score)."""
        count = len(self.keyframes)
        if count == 0:
            return None
        points, labels = self._keyframe_points()
        if box is not None:
            lo, hi = box
            near = np.all((points >= lo) & (points <= hi), axis=-1)
        else:
            near = np.linalg.norm(points - point, axis=-1) <= self.config.view_radius
        if entry is not None:
            rows = self._row_entries()
            near &= (labels >= 0) & (rows[np.maximum(labels, 0)] == entry)
        fractions = near.sum(axis=1) / float(points.shape[1])
        stamps = np.array(self.keyframes.stamps)
        allowed = np.ones(count, dtype=bool)
        if since is not None:
            allowed &= stamps >= since
        if time_range is not None:
            allowed &= (stamps >= time_range[0]) & (stamps <= time_range[1])
        if not allowed.any():
            return None
        bodies = np.array([p.position[:2] for p in self.keyframes.poses])
        yaws = np.array([p.yaw for p in self.keyframes.poses])
        offset = point[:2] - bodies
        distance = np.linalg.norm(offset, axis=1)
        bearing = np.abs(np.angle(np.exp(1j * (np.arctan2(offset[:, 1], offset[:, 0]) - yaws))))
        score = view_score(fractions, distance, bearing)
        if not np.any(score[allowed] > 0):
            # No pixel shows it: the nearest allowed keyframe that faces it (an honest guess).
            score = np.where(allowed, 1e-3 / (1.0 + distance) * np.where(bearing < math.radians(45), 1.0, 0.3), -np.inf)
        score = np.where(allowed, score, -np.inf)
        best = count - 1 - int(np.argmax(score[::-1]))  # ties: the most recent
        return best, float(score[best])

    # ------------------------------------------------------------------ structured recall
    def _label_of(self, track_id: int) -> tuple[str, dict[str, str]]:
        track = self.tracker.tracks.get(int(track_id))
        return ("unknown", {}) if track is None else (track.category, track.attribute_values)

    def catalog(self) -> list[Entity]:
        """Confirmed tracks (identity from the shared tracker), positions refined by the field."""
        entities = []
        for track in self.tracker.confirmed():
            position, _ = self._refined(track) if not track.held else (track.position.copy(), 0)
            category, attributes = self._label_of(track.track_id)
            box = (np.minimum(track.box_min, position), np.maximum(track.box_max, position))
            entities.append(Entity(track.track_id, track.kind, category, attributes, np.asarray(position, np.float64), track.last_seen, box))
        return entities

    def distance_from(self, near: Pose):
        return trajectory_distance(np.array(self.positions, dtype=np.float64).reshape(-1, 2), near.position)

    def locate(self, goal: ResolvedGoal, query: Query) -> list[Hit]:
        if goal.target == "room":
            return room_hits(goal, self.name)
        hits = []
        for entity_id in goal.entity_ids:
            hit = self._entity_hit(entity_id, goal, query)
            if hit is not None:
                hits.append(hit)
        hits.sort(key=lambda h: -h.score)
        return hits

    def _entity_hit(self, entity_id: int, goal: ResolvedGoal, query: Query) -> Hit | None:
        track = self.tracker.tracks.get(entity_id)
        if track is None:
            return None
        point, support = self._refined(track)
        entry = self.bank_entry_of(self._embed(describe(track.category, track.attribute_values)))
        margin = 0.1
        box = (np.minimum(track.box_min, point) - margin, np.maximum(track.box_max, point) + margin)
        best = self._best_keyframe(point, entry, box=box, since=track.moved_at, time_range=query.time_range)
        if best is None:
            return self._release_hit(entity_id, track)
        n, score = best
        agent_pose, frame_id, stamp = self.keyframes.poses[n], self.keyframes.frame_ids[n], self.keyframes.stamps[n]
        poses = goal.interaction_poses.get(entity_id)
        if poses:  # the robot stood right there when it picked from / placed on it
            agent_pose, frame_id, stamp = poses[-1][0], poses[-1][1], poses[-1][2]
        return Hit(frame_id, stamp, agent_pose, np.asarray(point, np.float64), entity_id, score, self.name, {"gaussians": support, "keyframe": n})

    def _release_hit(self, entity_id: int, track) -> Hit | None:
        places = [e for e in self._diary.entries if e.kind == "place" and e.object_id == entity_id]
        if not places:
            return None
        place = places[-1]
        return Hit(place.frame_id, place.stamp, place.pose, track.position.copy(), entity_id, 0.01, self.name, {"from": "release"})

    # ------------------------------------------------------------------ language recall
    def _recall_text(self, query: Query) -> list[Hit]:
        """Ask the Gaussians directly: cos(R_i, text) of each Gaussian's GMA reconstruction,
        clustered into up to k places in 3D, each with the keyframe that best sees it."""
        if len(self.field) == 0 or len(self.psc.bank) == 0:
            return []
        vector = self._embed(query.text)
        weights, recon = self._gaussian_features()
        norms = np.maximum(np.linalg.norm(recon, axis=1), 1e-12)
        score = recon @ vector / norms
        opacity = self.field.opacities.numpy()
        means = self.field.means.numpy()
        score = np.where(opacity >= self.config.min_opacity, score, -np.inf)
        entries = np.argmax(weights, axis=1)
        hits = []
        open_ = np.isfinite(score)
        while len(hits) < query.k and open_.any():
            best = int(np.argmax(np.where(open_, score, -np.inf)))
            near = np.linalg.norm(means - means[best], axis=1)
            cluster = open_ & (near <= self.config.cluster_radius) & (entries == entries[best])
            w = opacity[cluster]
            point = (means[cluster] * w[:, None]).sum(axis=0) / w.sum()
            open_ &= near > self.config.hit_separation
            view = self._best_keyframe(point, int(entries[best]), time_range=query.time_range)
            if view is None:
                continue
            n, _ = view
            object_id = self._nearest_track(point)
            hits.append(
                Hit(
                    self.keyframes.frame_ids[n], self.keyframes.stamps[n], self.keyframes.poses[n], point.astype(np.float64),
                    object_id, float(score[best]), self.name,
                    {"bank_entry": self.psc.texts[int(self.psc.kept[entries[best]])], "gaussians": int(cluster.sum()), "keyframe": n},
                )
            )
        return hits

    def _nearest_track(self, point: np.ndarray, radius: float = 0.5) -> int | None:
        best, best_distance = None, radius
        for track in self.tracker.confirmed():
            distance = float(np.linalg.norm(track.position - point))
            if distance <= best_distance:
                best, best_distance = track.track_id, distance
        return best

    # ------------------------------------------------------------------ pictures and numbers
    def render_keyframe(self, n: int) -> dict[str, np.ndarray]:
        """Render keyframe ``n``'s viewpoint: RGB, depth, alpha, and the GMA feature map R(p)
        (h, w, D), with the keyframe's own images and distilled features beside them."""
        with self._lock.reading():
            view = self.keyframes.view(n)
            with torch.no_grad(), torch_threads(self.config.torch_threads):
                rendered = self.field.render(view.viewmat, view.K, view.width, view.height, backend=self.config.backend)
                bank = torch.as_tensor(self.psc.bank, dtype=torch.float32)
                queries = rendered.colors[..., 3:].reshape(-1, self.config.query_dim)
                features = gaussian_memory_attention(queries, self.projection, bank, self.config.softmax_temp) if len(bank) else torch.zeros((queries.shape[0], self.encoder.dim))
            target = self._targets(view.target.reshape(-1), torch.as_tensor(self.psc.features, dtype=torch.float32))
            h, w = view.height, view.width
            return {
                "rgb": rendered.colors[..., :3].clamp(0, 1).numpy(),
                "depth": rendered.depth.numpy(),
                "alpha": rendered.alpha.numpy(),
                "features": features.reshape(h, w, -1).numpy(),
                "observed_rgb": self.keyframes.rgb[n],
                "observed_depth": self.keyframes.depth[n],
                "distilled": target.reshape(h, w, -1).numpy(),
            }

    def training_report(self) -> dict:
        """What fitting cost: seconds, Adam steps, Gaussians, bank size."""
        with self._lock.reading():
            return {
                "fit_seconds": self._fit_seconds, "fit_steps": self._fit_steps, "keyframes": len(self.keyframes),
                "gaussians": len(self.field), "features": len(self.psc.texts), "bank": len(self.psc.kept),
            }

    def plot(self, ax) -> None:
        """Gaussians seen from above, coloured by their RGB; keyframes as heading ticks."""
        with self._lock.reading():
            if len(self.field):
                means = self.field.means.numpy()
                ax.scatter(means[:, 0], means[:, 1], s=0.5, c=self.field.colors.numpy(), zorder=4)
            if len(self.keyframes):
                xy = np.array([p.position[:2] for p in self.keyframes.poses])
                yaw = np.array([p.yaw for p in self.keyframes.poses])
                ax.quiver(xy[:, 0], xy[:, 1], np.cos(yaw), np.sin(yaw), color="#d62728", scale=40, width=0.002, zorder=5)

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory) -> None:
        with self._lock.reading():
            k = self.keyframes
            psc_state, psc_arrays = self.psc.to_state()
            arrays = {
                **self.field.to_arrays(),
                **psc_arrays,
                "projection": self.projection.numpy(),
                "kf_frame_ids": np.array(k.frame_ids, dtype=np.int64),
                "kf_stamps": np.array(k.stamps, dtype=np.float64),
                "kf_poses": np.array([np.concatenate([p.position, p.orientation]) for p in k.poses]).reshape(-1, 7),
                "kf_cameras": np.array(k.cameras).reshape(-1, 4, 4),
                "kf_intrinsics": np.array(k.intrinsics).reshape(-1, 4),
                "kf_rgb": np.array(k.rgb, dtype=np.uint8).reshape((len(k),) + self._image_shape() + (3,)),
                "kf_depth": np.array(k.depth, dtype=np.float32).reshape((len(k),) + self._image_shape()),
                "kf_labels": np.array(k.labels, dtype=np.int32).reshape((len(k),) + self._image_shape()),
                "positions": np.array(self.positions, dtype=np.float64).reshape(-1, 2),
            }
            state = {
                "gate": self.gate.to_dict(),
                "tracker": self.tracker.to_dict(),
                "diary": self._diary.to_dict(),
                "psc": psc_state,
                "since_keyframe": self._since_keyframe,
                "fit": [self._fit_steps, self._fit_seconds],
            }
        save_manifest(directory, self.name, state, arrays, config=self.config)

    def _image_shape(self) -> tuple[int, int]:
        if len(self.keyframes):
            return tuple(self.keyframes.depth[0].shape)
        return (0, 0)

    def load(self, directory) -> None:
        """Parse everything into fresh state, check it, and swap it in only then."""
        state, arrays = load_manifest(Path(directory), self.name, config=self.config)
        try:
            field_ = GaussianField.from_arrays(arrays, self.config.query_dim, device=self.config.device)
            psc = PrincipalSceneComponents.from_state(state["psc"], arrays, self.encoder.dim, self.config.psc_tau)
            projection = finite_array(arrays, "projection", "f", (self.encoder.dim,), self.config.query_dim)
            if not np.allclose(projection, self.projection.numpy()):
                raise ValueError("projection differs from the one this config makes")
            count = len(finite_array(arrays, "kf_frame_ids", "i"))
            finite_array(arrays, "kf_stamps", "f", (), count)
            finite_array(arrays, "kf_poses", "f", (7,), count)
            finite_array(arrays, "kf_cameras", "f", (4, 4), count)
            finite_array(arrays, "kf_intrinsics", "f", (4,), count)
            depth = finite_array(arrays, "kf_depth", "f", arrays["kf_depth"].shape[1:], count)
            shape = depth.shape[1:]
            labels = finite_array(arrays, "kf_labels", "i", shape, count)
            rgb = arrays["kf_rgb"]
            if rgb.dtype != np.uint8 or rgb.shape != (count,) + tuple(shape) + (3,):
                raise ValueError(f"kf_rgb has shape {rgb.shape} / dtype {rgb.dtype}")
            if labels.size and (labels.min() < NO_FEATURE or labels.max() >= len(psc.texts)):
                raise ValueError("kf_labels points outside the feature table")
            if np.any(depth < 0):
                raise ValueError("kf_depth has negative values")
            positions = finite_array(arrays, "positions", "f", (2,))
            keyframes = Keyframes(
                frame_ids=[int(i) for i in arrays["kf_frame_ids"]],
                stamps=[float(s) for s in arrays["kf_stamps"]],
                poses=[Pose(p[:3], p[3:]) for p in arrays["kf_poses"]],
                cameras=[c.astype(np.float64) for c in arrays["kf_cameras"]],
                intrinsics=[i.astype(np.float64) for i in arrays["kf_intrinsics"]],
                rgb=[r.copy() for r in rgb],
                depth=[d.astype(np.float32) for d in depth],
                labels=[l.astype(np.int32) for l in labels],
            )
            gate = FrameGate()
            gate.load_dict(state["gate"])
            tracker = EntityTracker(self.config.tracker)
            tracker.load_dict(state["tracker"])
            diary = ActionDiary()
            diary.load_dict(state["diary"])
            since = int(state["since_keyframe"])
            steps, seconds = int(state["fit"][0]), float(state["fit"][1])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"corrupt {self.name} checkpoint {directory}: {error!r}") from error
        with self._observe_lock, self._lock.writing():
            self.field, self.psc, self.keyframes = field_, psc, keyframes
            self.gate, self.tracker, self._diary = gate, tracker, diary
            self.positions = [(float(x), float(y)) for x, y in positions]
            self._since_keyframe, self._fit_steps, self._fit_seconds = since, steps, seconds
            self._cache = {}


@register("memory", "m3", M3Config)
def build_m3(config: M3Config) -> M3Memory:
    return M3Memory(config)


