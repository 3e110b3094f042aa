"""The 3D-Mem memory system: object map + memory snapshots + frontiers (see the package README)."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from embodied_mem.encoders import build_encoder
from embodied_mem.geometry import free_space_distance
from embodied_mem.memory.association import EventInference
from embodied_mem.memory.base import (
    ActionDiary,
    Entity,
    FrameGate,
    ReadWriteLock,
    describe,
    load_manifest,
    save_manifest,
)
from embodied_mem.memory.resolve import ResolvedGoal, recall_structured, room_hits
from embodied_mem.memory.snapshots3d.clustering import (
    Frame,
    Snapshot,
    SnapshotMemory,
    pose_bin,
)
from embodied_mem.memory.snapshots3d.frontiers import (
    FrontierMap,
    OccupancyMap,
    ViewPoints,
)
from embodied_mem.memory.snapshots3d.goals import (
    observe_point_group,
    observe_point_single,
    stand_cells,
    standable,
)
from embodied_mem.memory.snapshots3d.objects import (
    DetectionFn,
    MapObject,
    ObjectMap,
    ProcessedDetection,
    observation_detections,
    representable,
)
from embodied_mem.memory.snapshots3d.state import (
    Journal,
    integer,
    integers,
    prefixed,
    unprefixed,
)
from embodied_mem.registry import register
from embodied_mem.types import (
    Event,
    FloorPlan,
    Hit,
    MemoryStats,
    Observation,
    Pose,
    Query,
    Recall,
)

NAME = "snapshots3d"
MAX_RAY_SLOPE = 100.0  # tan of the largest angle off the optical axis a pixel ray may have (89.4 degrees)
MAX_POSITION = 10_000.0  # metres: voxel keys span +-10 km (0.01 m voxels, 21 bits per axis)


KEPT_GOALS = 4096  # goal points kept per grid (a few KB each way: the dict is cleared when full)
_MISSING = object()


@dataclass
class Snapshots3DConfig:
    """3D-Mem's hyperparameters (paper / public code values unless noted in the README)."""

    encoder: str = "minilm"  # text encoder for the feature stand-in: minilm | gt_hash
    # detections (ConceptGraphs' filters, on the perception's masks and scores)
    det_conf_threshold: float = 0.4
    det_proximity_px: float = 20.0  # of two detections with box centres this close, keep the larger box...
    det_proximity_width: int = 1280  # ...in pixels of an image this wide (scaled to the frame's width)
    min_mask_fraction: float = 0.001  # of H * W
    min_mask_pixels: int = 25
    max_bbox_area_ratio: float = 0.5
    mask_iou_threshold: float = 0.9
    min_points: int = 16
    max_points: int = 5000
    voxel_size: float = 0.01
    dbscan_eps: float = 0.1
    dbscan_min_points: int = 10
    obj_include_dist: float = 3.5
    # matching, merging, periodic cleanup
    overlap_radius: float = 0.025
    phys_bias: float = 0.0
    sim_threshold: float = 1.2
    cleanup_interval: int = 12
    obj_min_detections: int = 2
    merge_overlap_thresh: float = 0.7
    merge_visual_sim_thresh: float = 0.7
    # memory snapshots
    min_detection: int = 1
    snapshot_update_margin: float = 0.5
    frame_cell: float = 0.5  # departure: one candidate frame per (cell, heading bin)
    frame_heading_deg: float = 30.0
    # occupancy / explored map and frontiers
    grid_resolution: float = 0.1
    floor_height: float = 0.05
    obstacle_max_height: float = 1.8
    max_integrate_depth: float = 3.0
    explored_depth: float = 1.7
    margin_h_ratio: float = 0.0  # explored window: the paper's config says 0.6 / 0.25, its integrate never reads them
    margin_w_ratio: float = 0.0
    surrounding_explored_radius: float = 0.7
    robot_radius: float = 0.2
    frontier_area_min: int = 8
    frontier_area_max: int = 9
    frontier_edge_area_min: int = 4
    frontier_edge_area_max: int = 6
    min_frontier_area: int = 20
    max_frontier_angle_deg: float = 150.0
    region_equal_threshold: float = 0.95
    track_frontiers: bool = False  # frontiers cost ~10 % of ingest and no recall reads them: off unless asked for
    frontier_interval: int = 3  # frontiers every 3rd processed frame: the paper updates them once per step of 3 views
    # retrieval
    top_k_categories: int = 10
    prefilter_threshold: float = 0.2
    final_observe_distance: float = 1.0
    goal_clearance: float = 0.3
    max_goal_distance: float = 1.5
    # the robot's own grasps / releases, inferred from the map (our bookkeeping, not in the paper)
    grasp_radius: float = 0.6  # a grasp takes the nearest map object whose box centre is this close to the gripper
    surface_margin: float = 0.25  # the receptacle under the gripper: its plan-view box within this
    surface_min_detections: int = 2  # receptacles seen fewer times are not trusted as surfaces

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("phys_bias",) or isinstance(value, str):
                continue
            if f.type in (bool, "bool"):
                if not isinstance(value, bool):
                    raise ValueError(f"Snapshots3DConfig.{f.name} must be true or false, got {value!r}")
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Snapshots3DConfig.{f.name} must be a non-negative number, got {value!r}")
        for name in ("voxel_size", "grid_resolution", "cleanup_interval", "frame_cell", "frame_heading_deg", "frontier_interval", "top_k_categories", "max_points", "det_proximity_width"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Snapshots3DConfig.{name} must be positive, got {getattr(self, name)!r}")
        if not -1.0 <= self.phys_bias <= 1.0:
            raise ValueError(f"Snapshots3DConfig.phys_bias must be in [-1, 1], got {self.phys_bias!r}")


class Snapshots3D:
    """3D-Mem: objects, co-visibility snapshots and frontiers, built from the observation stream.

    ``detector`` (default: the frame's own perception output, ``Observation.detections``) maps
    an Observation to a list of ``objects.Detection``; set it at construction or as an
    attribute before observing.
    """

    def __init__(self, config: Snapshots3DConfig | None = None, detector: DetectionFn | None = None) -> None:
        self.name = NAME
        self.config = config or Snapshots3DConfig()
        self.encoder = build_encoder(self.config.encoder)
        self.detector: DetectionFn = detector or observation_detections
        self._lock = ReadWriteLock()
        self._embed_lock = threading.Lock()
        self._texts = TextVectors(self._embed)  # a cache of embeddings by string: kept over reset / load
        self.reset()

    # ------------------------------------------------------------------ protocol
    def reset(self) -> None:
        with self._lock.writing():
            plan = self._diary.floor_plan if hasattr(self, "_diary") else None  # the map outlives a reset
            self.gate = FrameGate()
            self._diary = ActionDiary()
            self._diary.set_floor_plan(plan)
            self.map = ObjectMap(self.config)
            self.memory = SnapshotMemory(self.config.min_detection)
            self.grid = OccupancyMap(self.config.grid_resolution)
            self.frontiers = FrontierMap()
            self.processed = 0  # frames with usable depth (the cleanup clock)
            self.pending: set[int] = set()  # objects to re-cluster at the next update (merged, denoised)
            self._stand: tuple[int, np.ndarray, np.ndarray] | None = None
            self._journal: Journal | None = None  # open while a frame is being taken
            self._catalog: list[Entity] | None = None  # catalog() until the next write
            self._entries: dict[int, tuple[tuple, Entity]] = {}  # object id -> (its state when made, entry)

    @property
    def diary(self) -> ActionDiary:
        return self._diary

    def set_floor_plan(self, plan: FloorPlan | None) -> None:
        """The map the robot is deployed with: rooms for the diary (kept over ``reset``)."""
        with self._lock.writing():
            self._diary.set_floor_plan(plan)

    def observe(self, obs: Observation) -> None:
        obs.validate()  # fields may have changed since construction: check before anything is stored
        self._check_geometry(obs)
        if not self.gate.admit(obs):
            return
        # A frame without usable depth is skipped for geometry (the protocol's bad input); it
        # still counts as seen, and its events still go into the diary.
        view, detections = self._perceive(obs)  # pure: nothing stored yet
        with self._lock.writing():
            journal = self._begin_frame(obs)
            try:
                self._take(obs, view, detections)
            except BaseException:
                journal.rollback()  # all or nothing: the memory is exactly as before
                raise
            finally:
                self._journal = self.map.journal = self.memory.journal = None

    def _begin_frame(self, obs: Observation) -> Journal:
        """Open the frame's journal: each component notes what it is about to change, and the
        small things are kept as they are now. Nothing large is copied: a map object is copied
        (sharing its arrays) only before its own first change, and the grids are replaced by
        ``integrate``, never changed in place."""
        journal = Journal()
        self._journal = journal
        self._catalog = None  # (a rolled-back frame leaves it to be rebuilt: the entries' keys still hold)
        self.map.begin(journal)
        self.memory.begin(journal)
        grid, frontiers, gate, diary = self.grid.mark(), self.frontiers.mark(), _gate_mark(self.gate), self._diary.mark()
        processed, pending, texts, stand = self.processed, set(self.pending), self._texts.vectors, self._stand

        def restore() -> None:
            self.grid.rollback(grid)
            self.frontiers.rollback(frontiers)
            _gate_rollback(self.gate, gate, obs.frame_id)
            self._diary.rollback(diary)
            self.processed, self.pending, self._texts.vectors, self._stand = processed, pending, texts, stand

        journal.undo(restore)
        return journal

    def _take(self, obs: Observation, view: ViewPoints | None, detections: list[ProcessedDetection]) -> None:
        """The write phase of ``observe`` (under the write lock, journaled)."""
        inferences: dict[int, EventInference] = {}
        releases = [n for n, e in enumerate(obs.events) if e.kind == "release"]
        grasps = [n for n, e in enumerate(obs.events) if e.kind == "grasp"]
        # The frame of a release shows the object where it was put, so the map moves it
        # first and the frame's detection of it merges there; the frame of a grasp still
        # shows it where it stood, so it is merged before the gripper takes it.
        moved = set()
        for n in releases:
            inferences[n] = self._release(obs.events[n])
            if inferences[n].object_id is not None:
                moved.add(inferences[n].object_id)
        if view is not None:
            self._integrate(obs, view, detections, moved)
        for n in grasps:
            inferences[n] = self._grasp(obs.events[n])
        ordered = [inferences[n] for n in sorted(inferences)]
        self._diary.record(obs.frame_id, obs.stamp, obs.day, obs.pose, ordered, self._label_of)
        self.gate.commit(obs)

    def recall(self, query: Query) -> Recall:
        started = time.perf_counter()
        with self._lock.reading():
            hits = recall_structured(self, query, self._kept_catalog()) if query.constraints is not None else self._recall_text(query)
        return Recall(hits, self.name, time.perf_counter() - started)

    def stats(self) -> MemoryStats:
        with self._lock.reading():
            total = (
                self.map.nbytes()
                + self.memory.nbytes()
                + self.grid.nbytes()
                + self.frontiers.nbytes()
                + self._texts.nbytes(self._live_texts())
                + 200 * (len(self._diary.entries) + len(self._diary.stays))
            )
            return MemoryStats(items=len(self.memory.snapshots), bytes=int(total), frames_seen=self.gate.frames_seen)

    def counts(self) -> dict[str, int]:
        """Sizes of the native structures (for reports)."""
        with self._lock.reading():
            return {
                "objects": len(self.map.objects),
                "snapshots": len(self.memory.snapshots),
                "frames": len(self.memory.frames),
                "frontiers": len(self.frontiers.frontiers),
                "points": int(sum(len(o.points) for o in self.map.objects.values())),
            }

    @staticmethod
    def _check_geometry(obs: Observation) -> None:
        """Refuse (``ValueError`` naming the field) what back-projection cannot take: intrinsics
        that put the image's edge almost 90 degrees off the optical axis (a tiny ``fx``, or a
        principal point far outside the image), and a pose beyond the range of voxel keys."""
        camera = obs.camera
        for focal, centre, size in (("fx", "cx", camera.width), ("fy", "cy", camera.height)):
            f, c = getattr(camera, focal), getattr(camera, centre)
            slope = max(abs(c), abs(size - c)) / f
            if not slope <= MAX_RAY_SLOPE:
                raise ValueError(
                    f"Observation.camera.{focal} {f!r} with {centre} {c!r} and an image {size} px across puts its edge "
                    f"{math.degrees(math.atan(slope)):.2f} degrees off the optical axis (at most {math.degrees(math.atan(MAX_RAY_SLOPE)):.1f})"
                )
        for name, position in (("pose", obs.pose.position), ("camera.body_T_camera", camera.body_T_camera.position)):
            if not np.all(np.abs(position) <= MAX_POSITION):
                raise ValueError(f"Observation.{name}.position {np.asarray(position).tolist()} is beyond the +-{MAX_POSITION:.0f} m this map addresses")

    # ------------------------------------------------------------------ perception
    def _perceive(self, obs: Observation) -> tuple[ViewPoints | None, list[ProcessedDetection]]:
        """The frame's points for the occupancy map and its detections as voxel clouds.

        Pure (nothing is stored); None when the frame has no usable depth. Only the pixels
        that are used are back-projected: every ``width // 80``-th pixel of every such row
        for the occupancy map (< 0.1 m apart within 3 m) and at most ``max_points`` per mask.
        """
        c = self.config
        valid = obs.valid_depth()
        if not np.any(valid):
            return None, []
        height, width = valid.shape
        camera = obs.world_T_camera.matrix()
        stride = max(1, width // 80)
        rows, cols = np.nonzero(valid[::stride, ::stride])
        rows, cols = rows * stride, cols * stride
        world = _to_world(obs, camera, rows, cols)
        usable = representable(world, c.voxel_size)  # (an absurd depth return lands beyond the map's range)
        world, rows, cols = world[usable], rows[usable], cols[usable]
        view = ViewPoints(world, obs.depth[rows, cols].astype(np.float64), rows, cols, camera[:3, 3].copy(), height, width)
        agent_xy = obs.pose.position[:2]
        kept, clouds = [], []
        for det in self.map.filter_detections(list(self.detector(obs)), (height, width)):
            rows, cols = np.nonzero(det.mask & valid)
            if len(rows) < c.min_points:
                continue
            step = -(-len(rows) // c.max_points)  # ConceptGraphs' dynamic_downsample, rounded up: <= max_points
            world = _to_world(obs, camera, rows[::step], cols[::step])
            cloud = self.map.cloud_of(world[representable(world, c.voxel_size)], agent_xy)
            if cloud is not None:
                kept.append(det)
                clouds.append(cloud)
        features = self._embed([det.text() for det in kept])
        detections = []
        for det, (keys, points, counts), feature in zip(kept, clouds, features):
            half = c.voxel_size / 2
            detections.append(
                ProcessedDetection(
                    keys, points, counts, points.min(axis=0) - half, points.max(axis=0) + half, feature,
                    det.class_name, float(det.confidence), det.instance_id, det.kind, dict(det.attributes),
                )
            )
        return view, detections

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Unit text embeddings (the encoders normalise; MiniLM caches per string)."""
        if not texts:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        with self._embed_lock:
            return np.asarray(self.encoder.encode(texts), dtype=np.float32)

    def _live_texts(self) -> set[str]:
        """The strings recall may compare with a query now: class names and descriptions."""
        texts = set()
        for obj in self.map.objects.values():
            texts.add(obj.class_name.replace("_", " "))
            texts.add(self.description(obj))
        return texts

    def _index_texts(self, object_ids) -> None:
        """Embed the class names and descriptions recall will compare with a query as they
        appear (ingest time), so a recall encodes only its own text."""
        objects = self.map.objects
        texts = []
        for object_id in object_ids:
            obj = objects.get(object_id)
            if obj is not None:
                texts += [obj.class_name.replace("_", " "), self.description(obj)]
        self._texts.add(texts)
        if len(self._texts.vectors) > 2 * len(objects) + 64:  # labels and attributes drifted: forget stale strings
            self._texts.keep(self._live_texts())

    def _integrate(self, obs: Observation, view: ViewPoints, detections: list[ProcessedDetection], moved: set[int] = frozenset()) -> None:
        """One step of ``update_scene_graph`` + cleanup + TSDF + ``update_snapshots`` + frontiers.

        ``moved``: objects the robot put down in this frame; the frame is a view of them
        (the robot looks at where it puts a thing), detected or not.
        """
        c = self.config
        agent_xy = obs.pose.position[:2].copy()
        seen: dict[int, float] = {i: self.map.objects[i].conf for i in moved if i in self.map.objects}
        added = []
        for det, match in zip(detections, self.map.match(detections)):
            if match is None:
                object_id = self.map.add(det, obs.stamp)
                added.append(object_id)
            else:
                self.map.merge_detection(match, det, obs.stamp)
                object_id = match
            seen[object_id] = max(seen.get(object_id, 0.0), det.conf)
        if seen:
            self.memory.add_frame(obs.frame_id, obs.stamp, obs.pose, seen, pose_bin(obs.pose, c.frame_cell, c.frame_heading_deg))
        self.processed += 1
        if self.processed % c.cleanup_interval == 0:
            self._cleanup(agent_xy)
        self._index_texts(set(seen) | self.pending)
        self.grid.integrate(view, agent_xy, c)
        objects = self.map.objects
        near = {i for i, o in objects.items() if np.linalg.norm(o.center[:2] - agent_xy) < c.obj_include_dist + c.snapshot_update_margin}
        update = set(added) | near | self.pending
        self.pending = set()
        self.memory.update(update, {i: o.center for i, o in objects.items()}, {i: o.num_detections for i, o in objects.items()})
        self.memory.prune()
        if c.track_frontiers and (self.processed - 1) % c.frontier_interval == 0:
            self.frontiers.update(self.grid, agent_xy, obs.frame_id, obs.stamp, c)

    def _cleanup(self, agent_xy: np.ndarray) -> None:
        """``periodic_cleanup_objects``: denoise, filter, merge; then fix frames and snapshots."""
        denoised = self.map.denoise()
        removed = self.map.filter_far(agent_xy)
        merged = self.map.merge_overlapping()
        self.memory.remove_objects(removed)
        for absorbed, keeper in merged.items():
            self.memory.remap_object(absorbed, keeper)
            self._remap_diary(absorbed, keeper)
        self.pending |= (denoised | set(merged.values())) & set(self.map.objects)

    def _remap_diary(self, absorbed: int, keeper: int) -> None:
        """The diary names map objects: a merged one is now called by its keeper's id."""
        for entry in self._diary.entries:
            if absorbed not in (entry.object_id, entry.receptacle_id):
                continue
            if self._journal is not None:  # entries are changed in place: journal what they were
                self._journal.undo(lambda entry=entry, ids=(entry.object_id, entry.receptacle_id): _set_ids(entry, ids))
            if entry.object_id == absorbed:
                entry.object_id = keeper
            if entry.receptacle_id == absorbed:
                entry.receptacle_id = keeper

    # ------------------------------------------------------------------ the robot's own actions
    def _grasp(self, event: Event) -> EventInference:
        """The gripper closed: it took the nearest map object; the receptacle under it is where from."""
        c = self.config
        gripper = event.gripper_pose.position
        receptacle_id = self.map.surface_under(gripper, c.surface_margin, c.surface_min_detections)
        previous = self.map.held_id()
        if previous is not None:  # a release we never heard of: it stays where it was seen
            self.map.let_go(previous)
        object_id = self.map.nearest_object(gripper, c.grasp_radius)
        if object_id is not None:
            self.map.grasp(object_id, gripper)
        return EventInference("grasp", event.stamp, object_id, receptacle_id)

    def _release(self, event: Event) -> EventInference:
        """The gripper opened: the carried map object is now at the gripper, on the receptacle under it.

        Its old views are stale (it is no longer there), so it leaves every frame and snapshot
        and is re-clustered from the frames that see it at its new place (this one first).
        """
        c = self.config
        gripper = event.gripper_pose.position
        object_id = self.map.held_id()
        receptacle_id = self.map.surface_under(gripper, c.surface_margin, c.surface_min_detections)
        if object_id is not None:
            self.map.release(object_id, gripper, event.stamp)
            self.memory.remove_objects([object_id])
            self.pending.add(object_id)
        return EventInference("release", event.stamp, object_id, receptacle_id)

    def _label_of(self, object_id: int) -> tuple[str, dict[str, str]]:
        """What the memory believes an entity (a map object) is: its majority class and attributes."""
        obj = self.map.objects.get(int(object_id))
        return ("unknown", {}) if obj is None else (obj.class_name, obj.attributes)

    # ------------------------------------------------------------------ oracle track
    def catalog(self) -> list[Entity]:
        """Every map object a snapshot may hold (or the robot itself carried): its id, the
        majority kind, class and attributes of its detections, its box and when last seen.

        Made once per state (until the next frame / load / reset) from entries kept per object
        and redone only for objects whose state changed (the vote tallies cost 0.6 ms a recall
        at 10k frames); handed out as copies."""
        return [Entity(e.entity_id, e.kind, e.category, dict(e.attributes), e.position.copy(), e.last_seen, (e.extent[0].copy(), e.extent[1].copy())) for e in self._kept_catalog()]

    def _kept_catalog(self) -> list[Entity]:
        """The catalog as kept (shared entries: read only; ``catalog()`` hands out copies)."""
        entities = self._catalog
        if entities is None:
            entities = self._catalog = self._build_catalog()
        return entities

    def _build_catalog(self) -> list[Entity]:
        """One entry per listed object. An entry reads the object's votes, box, last_seen and
        the robot's flags; every change of the votes adds detections (``num_detections``), and
        merges, denoising and moves change the box, so those values are the entry's key."""
        entries: dict[int, tuple[tuple, Entity]] = {}
        entities = []
        for object_id in sorted(self.map.objects):
            obj = self.map.objects[object_id]
            if obj.num_detections < self.config.min_detection and not obj.robot_moved:
                continue
            key = (obj.num_detections, obj.last_seen, obj.held, obj.moved_at, obj.bbox_min.tobytes(), obj.bbox_max.tobytes())
            cached = self._entries.get(object_id)
            if cached is None or cached[0] != key:
                box = (obj.bbox_min.copy(), obj.bbox_max.copy())
                cached = (key, Entity(object_id, obj.kind, obj.class_name, obj.attributes, obj.center.copy(), obj.last_seen, box))
            entries[object_id] = cached
            entities.append(cached[1])
        self._entries = entries  # only the listed objects: a removed one leaves with its entry
        return entities

    def locate(self, goal: ResolvedGoal, query: Query) -> list[Hit]:
        if goal.target == "room":
            return room_hits(goal, self.name)
        owner = self.memory.owner()
        hits = []
        for entity_id in dict.fromkeys(goal.entity_ids):
            obj = self.map.objects.get(entity_id)
            poses = goal.interaction_poses.get(entity_id)
            score = 1.0 / (len(hits) + 1)
            if obj is None:
                if poses:  # not in the map (any more), but the diary knows where the robot stood
                    pose, frame_id, stamp = poses[-1]
                    hits.append(Hit(frame_id, stamp, pose, None, entity_id, score, self.name, {"from": "diary"}))
                continue
            hit = self._object_hit(entity_id, obj, owner.get(entity_id), query, score)
            if poses:  # the robot stood right there, looking at it, when it picked from / placed on it
                hit.agent_pose, hit.frame_id, hit.stamp = poses[-1]
                hit.evidence["from"] = "diary"
            hits.append(hit)
        return hits

    def _object_hit(self, entity_id: int, obj: MapObject, snapshot_id: int | None, query: Query, score: float) -> Hit:
        """The snapshot holding the object (its frame saw it), with the paper's goal pose.

        An object in no snapshot (fewer detections than ``min_detection``) is answered with the
        newest candidate frame that saw it; one the robot put down and no frame has seen since,
        with the frame of that release (the robot looked at where it put it).
        """
        target = obj.center.copy()
        frame = self.memory.frames.get(snapshot_id) if snapshot_id is not None else None
        if frame is None:
            holders = [self.memory.frames[f] for f in self.memory.object_frames.get(entity_id, ()) if f in self.memory.frames]
            frame = max(holders, key=lambda f: (f.stamp, f.frame_id), default=None)
        toward = query.near.position[:2] if query.near is not None else (frame.obs_point if frame is not None else target[:2])
        goal_xy = None
        if frame is not None and frame.frame_id in self.memory.snapshots:
            goal_xy = self._snapshot_goal(self.memory.snapshots[frame.frame_id], frame, toward)
        if goal_xy is None or np.linalg.norm(goal_xy - target[:2]) > self.config.max_goal_distance:
            goal_xy = self._single_goal(target[:2], toward)  # the snapshot's goal is too far from this object
        pose = self._facing(goal_xy, target) if goal_xy is not None else (frame.pose if frame is not None else None)
        frame_id, stamp = (frame.frame_id, frame.stamp) if frame is not None else (None, obj.last_seen)
        if frame is None and obj.moved_at is not None:
            place = self._diary.last_places().get(entity_id)
            if place is not None:
                frame_id, stamp = place.frame_id, place.stamp
                pose = pose if pose is not None else place.pose
        evidence = {"map_object": obj.object_id, "snapshot": snapshot_id, "last_seen": obj.last_seen, "detections": obj.num_detections}
        if obj.moved_at is not None:
            evidence["moved_at"] = obj.moved_at
        return Hit(frame_id, stamp, pose, target, entity_id, score, self.name, evidence)

    def distance_from(self, near: Pose):
        """Travel distance over this memory's own occupancy map (the paper plans on its TSDF map)."""
        with self._lock.reading():
            standable = self._standable() if self.grid.evidence.size else np.zeros((0, 0), bool)
            if standable.size == 0:
                return lambda xy: float(np.linalg.norm(np.asarray(xy)[:2] - near.position[:2]))
            kept = self._stand_cache()[3]
            centers = kept.get("centers")
            if centers is None:
                ii, jj = np.meshgrid(np.arange(standable.shape[0]), np.arange(standable.shape[1]), indexing="ij")
                centers = kept["centers"] = self.grid.center_of(np.stack([ii, jj], axis=-1))
            return free_space_distance(standable, centers, self.grid.resolution, near.position, kept=kept)

    # ------------------------------------------------------------------ goals
    def _standable(self) -> np.ndarray:
        return self._stand_cache()[1]

    def _stand_cache(self) -> tuple[int, np.ndarray, np.ndarray, dict]:
        """(grid version, standable cells mask, their centres, what reads derived from this
        grid: goal points, the route graph and routes), rebuilt when the grid changed.

        A frame that fails puts the tuple from before it back (``_begin_frame``), so what is kept
        in it always belongs to the grid its version names."""
        cached = self._stand
        if cached is None or cached[0] != self.grid.version:
            stand = standable(self.grid, self.config.goal_clearance)
            cached = (self.grid.version, stand, stand_cells(stand), {})
            self._stand = cached  # (one assignment: concurrent readers see the old or the new)
        return cached

    def _kept_goal(self, key: tuple, compute) -> np.ndarray | None:
        """A goal point of this grid, computed once per (grid, inputs): the goal rules read only
        the grid and their arguments, and recalls ask for the same objects again and again."""
        kept = self._stand_cache()[3]
        goal = kept.get(key, _MISSING)  # one lookup: another reader may clear the store meanwhile
        if goal is _MISSING:
            goal = compute()
            if len(kept) > KEPT_GOALS:
                kept.clear()
            kept[key] = goal
        return None if goal is None else goal.copy()

    def _single_goal(self, target_xy: np.ndarray, toward_xy: np.ndarray) -> np.ndarray | None:
        if self.grid.evidence.size == 0:
            return None
        target_xy, toward_xy = np.asarray(target_xy, dtype=np.float64), np.asarray(toward_xy, dtype=np.float64)
        _, stand, cells, _ = self._stand_cache()
        return self._kept_goal(
            ("single", target_xy.tobytes(), toward_xy.tobytes()),
            lambda: observe_point_single(self.grid, stand, target_xy, toward_xy, self.config.final_observe_distance, cells),
        )

    def _snapshot_goal(self, snapshot: Snapshot, frame: Frame, toward_xy: np.ndarray) -> np.ndarray | None:
        """``set_next_navigation_point`` for a snapshot: where to stand to see its objects."""
        if self.grid.evidence.size == 0:
            return None
        centres = [self.map.objects[o].center[:2] for o in snapshot.cluster if o in self.map.objects]
        if not centres:
            return None
        if len(centres) == 1:
            return self._single_goal(centres[0], toward_xy)
        _, stand, cells, _ = self._stand_cache()
        centres, seen_from = np.array(centres, dtype=np.float64), np.asarray(frame.obs_point, dtype=np.float64)
        return self._kept_goal(
            ("group", centres.tobytes(), seen_from.tobytes()),
            lambda: observe_point_group(self.grid, stand, centres, seen_from, self.config.final_observe_distance, cells),
        )

    @staticmethod
    def _facing(xy: np.ndarray, target: np.ndarray) -> Pose:
        return Pose.from_xy_yaw(float(xy[0]), float(xy[1]), math.atan2(target[1] - xy[1], target[0] - xy[0]))

    # ------------------------------------------------------------------ language track
    def description(self, obj: MapObject) -> str:
        return describe(obj.class_name, obj.attributes)

    def prefilter(self, text: str, classes: set[str]) -> list[str]:
        """Stand-in for the GPT-4o prefilter: the seen classes closest to the query, best first.

        At most ``top_k_categories`` classes with cosine >= ``prefilter_threshold``.
        """
        if not classes:
            return []
        return self._prefilter(self._embed([text])[0], classes)

    def _prefilter(self, vector: np.ndarray, classes: set[str]) -> list[str]:
        names = sorted(classes)
        scores = self._texts.matrix([n.replace("_", " ") for n in names]) @ vector
        order = sorted(range(len(names)), key=lambda i: (-scores[i], names[i]))
        return [names[i] for i in order if scores[i] >= self.config.prefilter_threshold][: self.config.top_k_categories]

    def _recall_text(self, query: Query) -> list[Hit]:
        objects = self.map.objects
        snapshots = [s for s in self.memory.snapshots.values() if s.frame_id in self.memory.frames]
        if query.time_range is not None:
            start, end = query.time_range
            snapshots = [s for s in snapshots if start <= self.memory.frames[s.frame_id].stamp <= end]
        classes = {s.frame_id: sorted({objects[o].class_name for o in s.cluster if o in objects}) for s in snapshots}
        seen = {c for names in classes.values() for c in names}
        if not seen:
            return []
        vector = self._embed([query.text])[0]  # the one encoder call of a recall
        selected = set(self._prefilter(vector, seen))
        kept = [s for s in snapshots if selected.intersection(classes[s.frame_id])]
        if not kept:
            return []
        ranked = []
        for snapshot in kept:
            members = [objects[o] for o in snapshot.cluster if o in objects and objects[o].class_name in selected]
            scores = self._texts.matrix([self.description(o) for o in members]) @ vector
            best = int(np.argmax(scores))
            ranked.append((float(scores[best]), snapshot, members[best]))
        # ties (the same description in several snapshots, e.g. where a moved object was and is):
        # the more recently seen object first
        ranked.sort(key=lambda item: (-item[0], -item[2].last_seen, -self.memory.frames[item[1].frame_id].stamp, item[1].frame_id))
        hits = []
        for score, snapshot, obj in ranked[: query.k]:
            frame = self.memory.frames[snapshot.frame_id]
            toward = query.near.position[:2] if query.near is not None else frame.obs_point
            goal_xy = self._snapshot_goal(snapshot, frame, toward)
            pose = self._facing(goal_xy, obj.center) if goal_xy is not None else frame.pose
            evidence = {"classes": sorted(selected.intersection(classes[snapshot.frame_id])), "map_object": obj.object_id, "description": self.description(obj)}
            hits.append(Hit(snapshot.frame_id, frame.stamp, pose, obj.center.copy(), obj.object_id, score, self.name, evidence))
        return hits

    # ------------------------------------------------------------------ pictures
    def plot(self, ax) -> None:
        """Occupancy / explored map faintly, objects coloured by snapshot, snapshot rays, frontiers."""
        import matplotlib.pyplot as plt

        with self._lock.reading():
            grid = self.grid
            if grid.evidence.size:
                x0, y0 = grid.origin * grid.resolution
                x1, y1 = (grid.origin + np.array(grid.shape)) * grid.resolution
                image = np.full(grid.shape, np.nan)
                image[grid.free] = 0.0
                image[grid.free & grid.explored] = 0.35
                image[grid.occupied] = 1.0
                ax.imshow(image.T, origin="lower", extent=(x0, x1, y0, y1), cmap="Greys", vmin=0, vmax=1.4, alpha=0.35, interpolation="nearest", zorder=1)
            colours = plt.get_cmap("tab20")
            owner = self.memory.owner()
            order = {frame_id: n for n, frame_id in enumerate(sorted(self.memory.snapshots))}
            for obj in self.map.objects.values():
                snapshot = owner.get(obj.object_id)
                colour = colours(order[snapshot] % 20) if snapshot is not None else (0.5, 0.5, 0.5, 1.0)
                step = max(1, len(obj.points) // 200)
                ax.scatter(obj.points[::step, 0], obj.points[::step, 1], s=1, color=colour, zorder=3)
                ax.add_patch(
                    plt.Rectangle(obj.bbox_min[:2], *(obj.bbox_max - obj.bbox_min)[:2], fill=False, edgecolor=colour, linewidth=0.6, zorder=3)
                )
            for frame_id, snapshot in self.memory.snapshots.items():
                frame = self.memory.frames.get(frame_id)
                if frame is None:
                    continue
                colour = colours(order[frame_id] % 20)
                ox, oy = frame.obs_point
                ax.scatter([ox], [oy], marker="*", s=40, color=colour, zorder=5)
                for object_id in snapshot.cluster:
                    cx, cy = self.map.objects[object_id].center[:2]
                    ax.plot([ox, cx], [oy, cy], color=colour, linewidth=0.5, alpha=0.7, zorder=4)
            frontier_colours = plt.get_cmap("autumn")
            for n, frontier in enumerate(self.frontiers.frontiers):
                colour = frontier_colours((n * 0.37) % 1.0)
                xy = (frontier.cells + 0.5) * grid.resolution
                ax.scatter(xy[:, 0], xy[:, 1], s=2, marker="s", color=colour, alpha=0.6, zorder=2)
                px, py = frontier.position
                ax.arrow(px, py, 0.5 * frontier.orientation[0], 0.5 * frontier.orientation[1], width=0.03, color=colour, zorder=6)

    # ------------------------------------------------------------------ checkpoints
    COMPONENTS = ("object_map", "snapshots", "grid", "frontiers")  # state keys and array-name prefixes

    def save(self, directory) -> None:
        """One checkpoint composed of each component's own ``to_state`` (arrays prefixed per component)."""
        with self._lock.reading():
            state = {
                "config": asdict(self.config),
                "gate": self.gate.to_dict(),
                "diary": self._diary.to_dict(),
                "processed": self.processed,
                "pending": sorted(self.pending),
            }
            arrays: dict[str, np.ndarray] = {}
            for name, component in zip(self.COMPONENTS, (self.map, self.memory, self.grid, self.frontiers)):
                state[name], part = component.to_state()
                arrays.update(prefixed(name, part))
        save_manifest(directory, self.name, state, arrays, config=self.config)

    def load(self, directory) -> None:
        """Restore a checkpoint; ``ValueError`` (and the memory unchanged) if anything is wrong."""
        state, arrays = load_manifest(Path(directory), self.name, config=self.config)  # another configuration is refused
        try:
            parsed = self._parse(state, arrays)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"corrupt {self.name} checkpoint {directory}: {error!r}") from error
        with self._lock.writing():  # swap in only once everything parsed
            (self.gate, self._diary, self.map, self.memory, self.grid, self.frontiers, self.processed, self.pending) = parsed
            self._stand, self._catalog, self._entries = None, None, {}
            self._index_texts(list(self.map.objects))

    def _parse(self, state: dict, arrays: dict[str, np.ndarray]):
        config = Snapshots3DConfig(**state["config"])
        if config.encoder != self.config.encoder:
            raise ValueError(f"checkpoint uses encoder {config.encoder!r}, this memory {self.config.encoder!r}")
        gate = FrameGate()
        gate.load_dict(state["gate"])
        diary = ActionDiary()
        diary.load_dict(state["diary"])
        object_map = ObjectMap.from_state(self.config, state["object_map"], unprefixed("object_map", arrays), dim=self.encoder.dim)
        memory = SnapshotMemory.from_state(state["snapshots"], unprefixed("snapshots", arrays), self.config.min_detection, set(object_map.objects))
        grid = OccupancyMap.from_state(state["grid"], unprefixed("grid", arrays), self.config.grid_resolution)
        frontier_map = FrontierMap.from_state(state["frontiers"], unprefixed("frontiers", arrays))
        pending = set(integers(state["pending"]))
        if not pending <= set(object_map.objects):
            raise ValueError("objects to re-cluster name no object")
        return gate, diary, object_map, memory, grid, frontier_map, integer(state["processed"]), pending


class TextVectors:
    """Unit embeddings of the strings recall compares with queries, by string.

    ``add`` embeds the strings not seen before (one encoder call for all of them); ``matrix``
    stacks the vectors of some strings (embedding any still missing). Strings are class names
    and object descriptions: a few hundred distinct ones in a house, so the cache is not bounded.
    """

    def __init__(self, embed) -> None:
        self._embed = embed
        self.vectors: dict[str, np.ndarray] = {}

    def add(self, texts) -> None:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:  # a new dict, not changed in place (rare: a frame that fails puts the old one back)
            self.vectors = {**self.vectors, **dict(zip(missing, self._embed(missing)))}

    def matrix(self, texts: list[str]) -> np.ndarray:
        self.add(texts)
        vectors = self.vectors
        return np.stack([vectors[t] for t in texts])

    def keep(self, texts: set[str]) -> None:
        self.vectors = {t: v for t, v in self.vectors.items() if t in texts}

    def nbytes(self, texts: set[str]) -> int:
        """Bytes of the vectors of ``texts`` (the ones in use; the rest is a bounded cache)."""
        return sum(v.nbytes + 50 + len(t) for t, v in self.vectors.items() if t in texts)


def _set_ids(entry, ids: tuple) -> None:
    entry.object_id, entry.receptacle_id = ids


def _gate_mark(gate: FrameGate) -> tuple:
    """What ``FrameGate.commit`` changes (it is the frame's last step, but may fail too)."""
    return gate.last_stamp, gate.frames_seen, len(gate._order), gate._order[0] if gate._order else None


def _gate_rollback(gate: FrameGate, token: tuple, frame_id: int) -> None:
    last_stamp, frames_seen, length, first = token
    if gate._order and gate._order[-1] == frame_id:  # (an admitted frame was in no window before)
        gate._order.pop()
    gate.seen.discard(frame_id)
    if first is not None and len(gate._order) < length:  # the window had moved on
        gate._order.appendleft(first)
        gate.seen.add(first)
    gate.last_stamp, gate.frames_seen = last_stamp, frames_seen


def _to_world(obs: Observation, world_T_camera: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """World points of pixels (rows, cols) with valid depth; element-wise, as a (n, 3) @ (3, 3)
    product goes through BLAS threads that cost more than the arithmetic here."""
    camera = obs.camera
    z = obs.depth[rows, cols].astype(np.float64)
    x = (cols + 0.5 - camera.cx) / camera.fx * z
    y = (rows + 0.5 - camera.cy) / camera.fy * z
    rotation, origin = world_T_camera[:3, :3], world_T_camera[:3, 3]
    return np.stack([rotation[i, 0] * x + rotation[i, 1] * y + rotation[i, 2] * z + origin[i] for i in range(3)], axis=1)


@register("memory", NAME, Snapshots3DConfig)
def build_snapshots3d(config: Snapshots3DConfig) -> Snapshots3D:
    return Snapshots3D(config)
