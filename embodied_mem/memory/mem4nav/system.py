"""The Mem4Nav memory system: sparse octree + semantic graph, short-term cache + long-term tokens.

See the package docstring (``embodied_mem.memory.mem4nav``) for what is implemented and every
substitution and departure from the paper and its public code.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from embodied_mem.encoders import build_encoder
from embodied_mem.geometry import bearing_in_body
from embodied_mem.memory.association import EntityTracker, TrackerConfig
from embodied_mem.memory.base import (
    ActionDiary,
    Entity,
    FrameGate,
    InstanceView,
    ReadWriteLock,
    describe,
    load_manifest,
    save_manifest,
    unique_by,
    view_score,
    visible_instances,
)
from embodied_mem.memory.mem4nav.graph import SemanticGraph
from embodied_mem.memory.mem4nav.journal import Journal, record
from embodied_mem.memory.mem4nav.ltm import LongTermMemory, ReversibleTransformer, TransformerSpec
from embodied_mem.memory.mem4nav.octree import MAX_DEPTH, Leaf, SparseOctree
from embodied_mem.memory.mem4nav.stm import ShortTermMemory
from embodied_mem.memory.resolve import ResolvedGoal, recall_structured, room_hits
from embodied_mem.registry import register
from embodied_mem.types import FloorPlan, Hit, MemoryStats, Observation, Pose, Query, Recall

LEAF, NODE = "leaf", "node"  # key namespaces: ("leaf", morton code) and ("node", node id)

# Rough CPython costs (bytes) of the Python objects around the numpy arrays, for stats().
PY_LEAF = 700  # Leaf object + its dict, centre array, dict slot in octree.leaves
PY_SIGHTING = 600  # a Sighting with its Pose, its dict slot, its slot in the track -> leaves index
PY_PREFIX = 60  # one entry of an octree level set
PY_NODE = 900  # networkx node, its attribute dict and position array, adjacency dicts
PY_EDGE = 250  # networkx edge: two adjacency entries and an attribute dict
PY_KEY = 180  # a (kind, value) key tuple and its dict / list slots (STM, LTM)
PY_TRACK = 1500  # tracker track: label / attribute vote dicts, three small arrays
PY_DIARY = 600  # diary entry or room stay, with its Pose
PY_FRAME_ID = 60  # one frame id in the FrameGate's seen set


@dataclass
class Mem4NavConfig:
    """Mem4Nav. Paper / code values unless noted; geometry is set for homes, not streets.

    The paper's octree is depth 16 over 100 m (1.5 mm leaves, for street-scale VLN). In a home an
    object is re-observed from many poses and its centroid jitters by centimetres, so the default
    here is depth 8 over 51.2 m from -25.6 m: 0.2 m leaves covering [-25.6, 25.6) m on each axis.
    """

    encoder: str = "minilm"  # "minilm" or "gt_hash": stands in for the paper's visual encoder
    min_pixels: int = 20
    # sparse octree
    octree_depth: int = 8
    world_size: float = 51.2
    origin_x: float = -25.6
    origin_y: float = -25.6
    origin_z: float = -25.6
    # semantic topology graph
    node_threshold: float = 0.7  # delta: L2 distance to the nearest node descriptor
    edge_alpha: float = 1.0
    edge_beta: float = 0.5
    instruction_cost: float = 0.1  # c_instr: the public code's constant placeholder
    # short-term memory
    stm_capacity: int = 128  # K
    stm_lambda: float = 0.5
    stm_radius: float = 3.0  # epsilon (m), on node-relative coordinates (entries re-anchored: stm.py)
    stm_top_k: int = 3
    stm_threshold: float = 0.7  # tau: best STM cosine needed to skip the LTM
    route_ends: int = 3  # graph nodes tried at each end of a route (distance_from)
    # long-term memory
    ltm_top_m: int = 3
    ltm_candidates: int = 32  # L2 candidates decoded and re-ranked by cosine
    ltm_theta_norm: float = 0.1  # theta_prev rescaled to this norm (0: carried raw); see ltm.py
    write_nodes_to_ltm: bool = True
    # reversible transformer R (untrained, fixed seed)
    rt_depth: int = 6
    rt_heads: int = 8
    rt_chunks: int = 8  # F attends over the d-vector cut into this many pieces
    rt_mlp_ratio: float = 4.0
    rt_dropout: float = 0.0
    rt_init_gain: float = 0.03  # residual output layers scaled at init: an untrained R near identity
    rt_seed: int = 0
    torch_threads: int = 1  # intra-op threads for R's small batches (0: leave torch's setting)
    # locate: leaves this close to a retrieved leaf count as retrieved (centroid jitter)
    locate_radius: float = 0.5
    # data association of detections into entities (the shared rule, memory/association.py)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.octree_depth <= MAX_DEPTH:
            raise ValueError(f"octree_depth must be in [1, {MAX_DEPTH}], got {self.octree_depth}")
        for name in ("world_size", "stm_radius", "locate_radius"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("route_ends", "stm_capacity", "stm_top_k", "ltm_top_m", "ltm_candidates", "rt_depth", "rt_heads", "rt_chunks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.stm_lambda <= 1.0:
            raise ValueError(f"stm_lambda must be in [0, 1], got {self.stm_lambda}")
        if self.ltm_candidates < self.ltm_top_m:
            raise ValueError(f"ltm_candidates ({self.ltm_candidates}) must be >= ltm_top_m ({self.ltm_top_m})")

    @property
    def origin(self) -> tuple[float, float, float]:
        return (self.origin_x, self.origin_y, self.origin_z)


@dataclass
class Retrieved:
    """One multi-level retrieval result: a memory key, its score and its position."""

    key: tuple[str, int]
    cosine: float
    source: str  # "stm" | "ltm"
    position: np.ndarray
    object_id: int | None = None


class Mem4Nav:
    """Mem4Nav over the embodied_mem protocol (observe / recall / save / load / stats / reset)."""

    def __init__(self, config: Mem4NavConfig) -> None:
        self.name = "mem4nav"
        self.config = config
        self.encoder = build_encoder(config.encoder)
        self.dim = int(self.encoder.dim)
        self.spec = TransformerSpec(
            dim=self.dim,
            depth=config.rt_depth,
            heads=config.rt_heads,
            chunks=config.rt_chunks,
            mlp_ratio=config.rt_mlp_ratio,
            dropout=config.rt_dropout,
            init_gain=config.rt_init_gain,
            seed=config.rt_seed,
        )
        self.transformer = ReversibleTransformer(self.spec)
        self.transformer.threads = config.torch_threads
        self._lock = ReadWriteLock()
        self._embed_lock = threading.Lock()
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        c = self.config
        plan = getattr(self, "_diary", None) and self._diary.floor_plan  # the map outlives a reset
        self.gate = FrameGate()
        self._diary = ActionDiary()
        self._diary.set_floor_plan(plan or None)
        self.tracker = EntityTracker(c.tracker)  # track ids are the entity ids everywhere below
        self.octree = SparseOctree(c.octree_depth, c.world_size, c.origin)
        self.graph = SemanticGraph(self.dim, c.node_threshold, c.edge_alpha, c.edge_beta)
        self.stm = ShortTermMemory(c.stm_capacity, self.dim, c.stm_lambda)
        self.ltm = LongTermMemory(self.transformer, c.ltm_theta_norm)
        self.track_leaves: dict[int, set[int]] = {}  # track id -> leaves that saw it (derived)
        self.step = 0  # frames that wrote geometry: the STM clock
        self.out_of_bounds = 0  # detections outside the octree's cube (skipped)
        self._changed()

    def _changed(self, entries: bool = True) -> None:
        """Drop what reads derive from the state (under the write lock, or before sharing).
        ``entries``: the per-track catalog entries too (not after a frame that went in whole:
        an entry is redone when its own track changed, see ``_build_catalog``)."""
        self._catalog: list[Entity] | None = None  # catalog() until the next write
        self._described: dict[int, np.ndarray] = {}  # track id -> embedding of its description
        if entries or not hasattr(self, "_entries"):
            self._entries: dict[int, tuple[tuple, Entity | None]] = {}  # track id -> (its state when made, entry)
            self._placements: dict[int, tuple[tuple, tuple]] = {}  # track id -> (its state, _placed)

    @property
    def diary(self) -> ActionDiary:
        return self._diary

    def flush(self) -> None:
        """Do now the work the next recall would otherwise do first: decode the LTM tokens
        written since the last read (R^-1, in chunks), build the catalog, and make the query
        tokens ``R([0 ; v_q])`` of the entities' descriptions (what a goal naming them asks the
        LTM; R is fixed, so they stay valid until a description changes)."""
        with self._lock.writing():
            self.ltm.settle()
            if self._catalog is None:
                self._catalog = self._build_catalog()
            entities = [entity.entity_id for entity in self._catalog]
            if entities:
                self.ltm.query_tokens(self._description_vectors(entities))

    def set_floor_plan(self, plan: FloorPlan | None) -> None:
        """The map the robot is deployed with: the diary's rooms (kept over ``reset``)."""
        with self._lock.writing():
            self._diary.set_floor_plan(plan)

    def label_of(self, track_id: int) -> tuple[str, dict[str, str]]:
        """What the memory believes an entity is: its track's majority label and attributes."""
        track = self.tracker.tracks.get(int(track_id))
        return ("unknown", {}) if track is None else (track.category, track.attribute_values)

    # ------------------------------------------------------------------ observe
    def observe(self, obs: Observation) -> None:
        """Write one frame: per detection a leaf + LTM + STM write, per frame a graph update."""
        obs.validate()  # fields may have changed since construction
        if not self.gate.admit(obs):
            return
        views = visible_instances(obs, self.config.min_pixels)
        vectors = self._embed([view.description for view in views]) if views else np.zeros((0, self.dim), np.float32)
        with self._lock.writing():
            self._changed(entries=False)
            # All or nothing, without copying the memory: the tracker and the diary keep their
            # own undo (begin / rollback, mark / rollback); every other change of this frame
            # records its inverse in ``journal`` (journal.py), undone newest first on any error.
            journal, diary_mark, clocks = Journal(), self._diary.mark(), (self.step, self.out_of_bounds)
            self.tracker.begin()
            try:
                ids, inferences = self.tracker.frame(views, obs.events, obs.stamp)  # releases first, grasps after
                self._forget(self.tracker.dropped, journal)
                if views:
                    self._write(obs, views, ids, vectors, journal)
                self._diary.record(obs.frame_id, obs.stamp, obs.day, obs.pose, inferences, self.label_of)
                self.gate.commit(obs)
            except BaseException:
                journal.rollback()
                self._diary.rollback(diary_mark)
                self.tracker.rollback()
                self.step, self.out_of_bounds = clocks
                self._changed()
                raise
            self.tracker.commit()

    def _forget(self, track_ids: list[int], journal: Journal) -> None:
        """The tracker dropped these unconfirmed tracks (association.py): their sightings go too."""
        for track_id in track_ids:
            codes = self.track_leaves.get(track_id)
            if codes is None:
                continue
            self.octree.forget(track_id, codes, journal)
            record(journal, lambda track_id=track_id, codes=codes: self.track_leaves.__setitem__(track_id, codes))
            del self.track_leaves[track_id]

    def _embed(self, texts: list[str]) -> np.ndarray:
        with self._embed_lock:
            return np.asarray(self.encoder.encode(texts), dtype=np.float32)

    def _write(self, obs: Observation, views: list[InstanceView], ids: list[int], vectors: np.ndarray, journal: Journal | None = None) -> None:
        """All of one frame's writes (each undoable through ``journal``); the torch work is one
        batched R call."""
        c = self.config
        self.step += 1
        descriptor = vectors.mean(axis=0)
        norm = float(np.linalg.norm(descriptor))
        if norm > 0:
            descriptor = descriptor / norm
        transition = self.graph.update(descriptor, obs.pose.position, obs.stamp, c.instruction_cost, journal)
        self.graph.note_frame(transition.node, obs.frame_id, obs.pose, journal)  # our bookkeeping: a frame that shows the node
        anchor = self.graph.position(transition.node).copy()  # the node's position now (a running mean: it moves later)
        placed = []
        for view, track_id, vector in zip(views, ids, vectors):
            code = self.octree.key(view.centroid)
            if code is None:
                self.out_of_bounds += 1
            else:
                placed.append((view, track_id, vector, code))
        keys = [(LEAF, code) for *_, code in placed]
        rows = [vector for _, _, vector, _ in placed]
        if c.write_nodes_to_ltm:
            keys.append((NODE, transition.node))
            rows.append(descriptor.astype(np.float32))
        if keys:
            self.ltm.write(keys, np.stack(rows), journal)
        for view, track_id, vector, code in placed:
            leaf = self.octree.insert_or_get(code, journal)
            self.octree.see(leaf, track_id, obs.stamp, obs.frame_id, obs.pose, view_quality(obs.pose, view), journal)
            self._note_leaf(track_id, code, journal)
            self.stm.write((LEAF, code), vector, view.centroid - anchor, self.step, track_id, anchor=anchor, journal=journal)

    def _note_leaf(self, track_id: int, code: int, journal: Journal | None) -> None:
        """``track_leaves[track_id]`` gains ``code`` (undo: the code, or the new entry, removed)."""
        codes = self.track_leaves.get(track_id)
        if codes is None:
            record(journal, lambda: self.track_leaves.pop(track_id, None))
            self.track_leaves[track_id] = {code}
        elif code not in codes:
            record(journal, lambda: codes.discard(code))
            codes.add(code)

    # ------------------------------------------------------------------ retrieval
    def key_position(self, key: tuple[str, int]) -> np.ndarray:
        """Leaf centre (Morton decode) or graph node position."""
        kind, value = key
        return self.octree.center_of(value) if kind == LEAF else self.graph.position(value).copy()

    def retrieve(self, vectors: np.ndarray, position: np.ndarray, stm_k: int | None = None, ltm_m: int | None = None, remember: bool = True) -> list[tuple[str, list[Retrieved]]]:
        """Multi-level retrieval for each query vector, all asked from ``position``.

        Short-term first: entries within epsilon of ``q_rel = position - p_{u_c}`` (each entry
        re-anchored on the current node ``u_c`` from the node position it was written against),
        ranked by cosine. The long-term memory answers when no entry passes the filter or the
        best cosine is below tau. ``remember``: the LTM keeps these query tokens (recurring
        queries: entity descriptions; not one-off texts).
        """
        c = self.config
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        # Equal vectors get equal answers: each distinct one is asked once (a goal such as "a
        # toolbox" names every toolbox track, most with the same description).
        rows_of: dict[bytes, int] = {}
        inverse = [rows_of.setdefault(vector.tobytes(), len(rows_of)) for vector in vectors]
        if len(rows_of) < len(vectors):
            distinct = vectors[[inverse.index(n) for n in range(len(rows_of))]]
            answered = self.retrieve(distinct, position, stm_k, ltm_m, remember)
            return [answered[n] for n in inverse]
        stm_k, ltm_m = stm_k or c.stm_top_k, ltm_m or c.ltm_top_m
        answers: list[tuple[str, list[Retrieved]] | None] = [None] * len(vectors)
        if self.graph.current is not None:
            anchor = self.graph.position(self.graph.current)
            q_rel = np.asarray(position, dtype=np.float64) - anchor
            for row, vector in enumerate(vectors):
                matches = self.stm.retrieve(vector, q_rel, c.stm_radius, stm_k, anchor=anchor)
                if matches and matches[0].cosine >= c.stm_threshold:
                    answers[row] = ("stm", [Retrieved(m.key, m.cosine, "stm", self.key_position(m.key), m.object_id) for m in matches])
        missing = [row for row, answer in enumerate(answers) if answer is None]
        if missing:
            results = self.ltm.retrieve(vectors[missing], max(c.ltm_candidates, ltm_m), ltm_m, remember)
            for row, matches in zip(missing, results):
                answers[row] = ("ltm", [Retrieved(m.key, m.cosine, "ltm", self.key_position(m.key)) for m in matches])
        return answers

    def _query_position(self, query: Query) -> np.ndarray:
        if query.near is not None:
            return query.near.position
        if self._diary.last_pose is not None:
            return self._diary.last_pose.position
        return np.zeros(3)

    # ------------------------------------------------------------------ recall
    def recall(self, query: Query) -> Recall:
        started = time.perf_counter()
        query.validate()  # a query changed after construction is caught here, on both paths
        with self._lock.reading():
            hits = recall_structured(self, query, self._kept_catalog()) if query.constraints is not None else self._recall_text(query)
        return Recall(hits, self.name, time.perf_counter() - started)

    def _kept_catalog(self) -> list[Entity]:
        """The catalog as kept (shared entries: read only; ``catalog()`` hands out copies)."""
        if self._catalog is None:
            self._catalog = self._build_catalog()
        return self._catalog

    def catalog(self) -> list[Entity]:
        """Every confirmed track at the leaf of its latest current sighting, boxed by the leaves
        around it; a track the robot moved and has not seen since, at its release point.

        The list is made once per state (until the next observe / load / reset), from entries
        kept per track and redone only for the tracks a frame changed (rebuilding all of them
        took 12 ms at 568 tracks, after every frame); handed out as copies."""
        return [
            Entity(e.entity_id, e.kind, e.category, dict(e.attributes), e.position.copy(), e.last_seen, (e.extent[0].copy(), e.extent[1].copy()))
            for e in self._kept_catalog()
        ]

    def _description_vectors(self, track_ids: list[int]) -> np.ndarray:
        """Embeddings of the tracks' descriptions (label and attribute votes), kept until the next write."""
        missing = [i for i in dict.fromkeys(track_ids) if i not in self._described]
        if missing:
            self._described.update(zip(missing, self._embed([describe(*self.label_of(i)) for i in missing])))
        return np.stack([self._described[i] for i in track_ids]) if track_ids else np.zeros((0, self.dim), np.float32)

    def _build_catalog(self) -> list[Entity]:
        """One entry per confirmed track, redone only for tracks whose state changed since it
        was made: an entry reads only its own track (label votes, held / moved_at) and its own
        leaves' sightings, and every change of those changes the track's counts or flags."""
        entities = []
        for track in self.tracker.confirmed():
            state = self._track_state(track)
            cached = self._entries.get(track.track_id)
            if cached is None or cached[0] != state:
                cached = self._entries[track.track_id] = (state, self._catalog_entry(track))
            if cached[1] is not None:
                entities.append(cached[1])
        return entities

    def _catalog_entry(self, track) -> Entity | None:
        half = 0.5 * self.octree.leaf_size
        track_id = track.track_id
        category, attributes = self.label_of(track_id)
        kind = attributes.get("kind", track.kind)
        leaf = self._latest_leaf(track_id)
        if leaf is None:
            if track.moved_at is None or track.held:
                return None  # never placed in the octree (out of bounds), or in the gripper now
            position = track.position.copy()
            return Entity(track_id, kind, category, attributes, position, track.moved_at, (position - half, position + half))
        # Furniture stays put: all its leaves outline it. Objects move: only the leaves here.
        if kind == "receptacle":
            here = self._current_leaves(track_id)
        else:
            here = self._leaves_near(track_id, leaf)
        corners = np.array([item.center for item in here])
        extent = (corners.min(axis=0) - half, corners.max(axis=0) + half)
        stamp = leaf.sightings[track_id].stamp
        return Entity(track_id, kind, category, attributes, leaf.center.copy(), stamp, extent)

    def distance_from(self, near: Pose):
        """Travel distance routed over the topology graph (the paper's Dijkstra routing).

        ``d(xy) = min ||near - p_s|| + D(s, t) + ||p_t - xy||`` over the ``route_ends`` nodes
        nearest ``near`` (s) and nearest ``xy`` (t), D = Dijkstra over the edge weights. The end
        legs stay short, so the route, not a straight line through walls, sets the distance.
        Straight-line distance when the graph is empty or no route joins the two ends.
        """
        start = np.asarray(near.position, dtype=np.float64)[:2]

        def straight(xy) -> float:
            return float(np.linalg.norm(np.asarray(xy, dtype=np.float64)[:2] - start))

        if len(self.graph) < 2:
            return straight
        positions = self.graph.positions()[:, :2]
        ends = min(self.config.route_ends, len(positions))
        sources = [int(n) for n in np.argsort(np.linalg.norm(positions - start, axis=1))[:ends]]
        lengths = self.graph.route_lengths(sources)
        # best[t] = shortest route from near to node t through any source
        best = np.full(len(positions), np.inf)
        for source, reached in lengths.items():
            first_leg = float(np.linalg.norm(positions[source] - start))
            for node, length in reached.items():
                best[node] = min(best[node], first_leg + length)

        def routed(xy) -> float:
            xy = np.asarray(xy, dtype=np.float64)[:2]
            last_legs = np.linalg.norm(positions - xy, axis=1)
            targets = np.argsort(last_legs)[:ends]
            total = float(np.min(best[targets] + last_legs[targets]))
            return total if np.isfinite(total) else straight(xy)

        return routed

    def _moved_at(self, track_id: int) -> float:
        """When the robot last put the entity down (-inf if it never did)."""
        track = self.tracker.tracks.get(track_id)
        return -np.inf if track is None or track.moved_at is None else track.moved_at

    def _current(self, track_id: int, leaf: Leaf) -> bool:
        """Did ``leaf`` see the entity since the robot last moved it? (Older sightings are stale.)"""
        sighting = leaf.sightings.get(track_id)
        return sighting is not None and sighting.stamp >= self._moved_at(track_id)

    def _current_leaves(self, track_id: int) -> list[Leaf]:
        """The leaves that saw the entity since it last moved, in code order."""
        return list(self._placed(track_id)[0])

    def _latest_leaf(self, track_id: int) -> Leaf | None:
        """The leaf of the entity's most recent sighting since it last moved (None: not seen since)."""
        return self._placed(track_id)[2]

    def _placed(self, track_id: int) -> tuple[list[Leaf], np.ndarray, Leaf | None]:
        """(current leaves in code order, their centres (n, 3), the latest of them).

        Kept per track until the track's state changes (the key of ``_build_catalog``: the
        leaves' sightings of a track change only with its own sightings, moves and leaves); a
        lifelong memory holds hundreds of tracks, and a goal naming a category asks for each."""
        track = self.tracker.tracks.get(track_id)
        state = None if track is None else self._track_state(track)
        cached = self._placements.get(track_id)
        if state is not None and cached is not None and cached[0] == state:
            return cached[1]
        leaves = [self.octree.leaves[code] for code in sorted(self.track_leaves.get(track_id, ()))]
        leaves = [leaf for leaf in leaves if self._current(track_id, leaf)]
        centres = np.array([leaf.center for leaf in leaves], dtype=np.float64).reshape(len(leaves), 3)
        latest = max(leaves, key=lambda item: (item.sightings[track_id].stamp, item.code)) if leaves else None
        placed = (leaves, centres, latest)
        if state is not None:
            self._placements[track_id] = (state, placed)
        return placed

    def _track_state(self, track) -> tuple:
        """What a track's derived entries (catalog entry, placed leaves) read, as one comparable key."""
        return (track.count, track.sightings, track.last_seen, track.held, track.moved_at, len(self.track_leaves.get(track.track_id, ())))

    def _leaves_near(self, track_id: int, leaf: Leaf) -> list[Leaf]:
        """Leaves within ``locate_radius`` of ``leaf`` that saw the entity since it last moved
        (centroid jitter), in code order. The entity's own leaves (``track_leaves``) are tested,
        with the octree radius query's test: the same leaves, without descending the tree."""
        return self._within(track_id, leaf.center, self.config.locate_radius) or [leaf]

    def _within(self, track_id: int, point: np.ndarray, radius: float) -> list[Leaf]:
        """Leaves that saw the entity since it last moved whose centre is within ``radius`` of
        ``point`` (``SparseOctree.radius_query``'s float test: dx^2 + dy^2 + dz^2 <= r^2,
        summed in that order), in code order."""
        leaves, centres, _ = self._placed(track_id)
        if not leaves:
            return []
        d = centres - np.asarray(point, dtype=np.float64)[None, :3]
        inside = np.flatnonzero(d[:, 0] ** 2 + d[:, 1] ** 2 + d[:, 2] ** 2 <= float(radius) ** 2)
        return [leaves[n] for n in inside]

    def locate(self, goal: ResolvedGoal, query: Query) -> list[Hit]:
        if goal.target == "room":
            return room_hits(goal, self.name)
        position = self._query_position(query)
        # An interaction whose object the memory could not tell has no entity (None): skipped.
        entity_ids = [int(i) for i in goal.entity_ids if i is not None]
        known = [i for i in entity_ids if i in self.tracker.tracks]
        retrieved = self.retrieve(self._description_vectors(known), position) if known else []
        by_entity = dict(zip(known, retrieved))
        places = self._diary.last_places()  # the last release of each object
        hits = []
        for entity_id in entity_ids:
            hit = self._entity_hit(entity_id, by_entity.get(entity_id), goal, position, places)
            if hit is not None:
                hits.append(hit)
        hits.sort(key=lambda hit: -hit.score)
        return hits

    def _entity_hit(self, entity_id: int, answer: tuple[str, list[Retrieved]] | None, goal: ResolvedGoal, position: np.ndarray, places: dict) -> Hit | None:
        """The leaf where the entity was last seen since it last moved, preferring one the
        retrieval returned."""
        interaction = goal.interaction_poses.get(entity_id)
        latest = self._latest_leaf(entity_id)
        if latest is None:  # never seen with depth, or not seen since the robot put it down
            return self._diary_hit(entity_id, interaction, places.get(entity_id))
        chosen, source = latest, "bookkeeping"
        candidates = self._retrieved_leaves(entity_id, answer[1] if answer else [])
        if candidates:
            best = max(candidates, key=lambda leaf: leaf.sightings[entity_id].stamp)
            # A retrieved leaf far from the latest sighting is where the entity used to be.
            if np.linalg.norm(best.center - latest.center) <= self.config.locate_radius:
                chosen, source = best, answer[0]
        # Where to stand: the best view of the entity from the leaves around the chosen one.
        view = max((leaf.sightings[entity_id] for leaf in self._leaves_near(entity_id, chosen)), key=lambda s: (s.quality, s.stamp))
        agent_pose, frame_id, stamp = view.view, view.frame_id, chosen.sightings[entity_id].stamp
        if interaction:  # the robot stood right there when it picked from / placed on it
            agent_pose, frame_id, stamp = interaction[-1]
        evidence = {"source": source, "leaf": chosen.code, "sightings": len(self.track_leaves[entity_id])}
        return Hit(frame_id, stamp, agent_pose, chosen.center.copy(), entity_id, view.quality, self.name, evidence)

    def _retrieved_leaves(self, entity_id: int, matches: list[Retrieved]) -> list[Leaf]:
        """Retrieved leaves, and leaves within ``locate_radius`` of them, that saw the entity."""
        found: dict[int, Leaf] = {}
        for match in matches:
            if match.key[0] != LEAF:
                continue
            for leaf in self._within(entity_id, match.position, self.config.locate_radius):  # holds the leaf itself
                found[leaf.code] = leaf
        return list(found.values())

    def _diary_hit(self, entity_id: int, interaction: list | None, place=None) -> Hit | None:
        """Not seen with depth (or not since the robot put it down): where the robot stood when
        it interacted with it; for an object it moved, the release frame and point."""
        track = self.tracker.tracks.get(entity_id)
        target = None if track is None or track.moved_at is None or track.held else track.position.copy()
        if interaction:
            pose, frame_id, stamp = interaction[-1]
            return Hit(frame_id, stamp, pose, target, entity_id, 0.1, self.name, {"source": "diary"})
        if place is not None:  # the last release of it the diary holds
            return Hit(place.frame_id, place.stamp, place.pose, target, entity_id, 0.1, self.name, {"source": "diary"})
        return None

    def _recall_text(self, query: Query) -> list[Hit]:
        if not self.octree.leaves and len(self.graph) == 0:
            return []
        vector = self._embed([query.text])[0]
        _, matches = self.retrieve(vector[None], self._query_position(query), max(self.config.stm_top_k, query.k), max(self.config.ltm_top_m, query.k), remember=False)[0]
        hits = [hit for hit in (self._text_hit(match, vector, query) for match in matches) if hit is not None]
        # Neighbouring leaves of one object (centroid jitter) would fill the list with one thing.
        return unique_by(hits, lambda hit: hit.object_id if hit.object_id is not None else tuple(hit.evidence["key"]))[: query.k]

    def _text_hit(self, match: Retrieved, vector: np.ndarray, query: Query) -> Hit | None:
        evidence = {"source": match.source, "key": list(match.key)}
        kind, value = match.key
        if kind == NODE:
            node = self.graph.graph.nodes[value]
            if query.time_range is not None and not query.time_range[0] <= node["last_stamp"] <= query.time_range[1]:
                return None
            # The node's position is a running mean of far-apart places: answer with the frame
            # that last updated it (a real pose, from which that landmark was seen).
            pose = node["pose"] if node["pose"] is not None else Pose(match.position)
            return Hit(node["frame_id"], node["last_stamp"], pose, None, None, match.cosine, self.name, evidence)
        leaf = self.octree.leaves[value]
        ids = [i for i in leaf.sightings if self._current(i, leaf)]  # not what the robot moved away since
        if query.time_range is not None:
            ids = [i for i in ids if query.time_range[0] <= leaf.sightings[i].stamp <= query.time_range[1]]
        if not ids:
            return None
        similarity = self._description_vectors(ids) @ vector
        best = max(range(len(ids)), key=lambda n: (round(float(similarity[n]), 6), leaf.sightings[ids[n]].stamp))
        object_id = ids[best]
        sighting = leaf.sightings[object_id]
        return Hit(sighting.frame_id, sighting.stamp, sighting.view, leaf.center.copy(), object_id, match.cosine, self.name, evidence)

    # ------------------------------------------------------------------ size
    def stats(self) -> MemoryStats:
        """Bytes of every array plus an estimate of the Python objects around them.

        R's weights (``self.transformer.nbytes``, ~29 MB at d = 384) are left out, as the text
        encoder is: they are a fixed model, regenerated from the seed, not remembered content.
        """
        with self._lock.reading():
            leaves = self.octree.leaves.values()
            sightings = sum(len(leaf.sightings) for leaf in leaves)
            prefixes = sum(len(level) for level in self.octree.levels[:-1])
            arrays = 8 * 3 * len(self.octree.leaves)  # leaf centres
            arrays += self.graph.descriptors.nbytes + 8 * 3 * len(self.graph) + self.stm.nbytes + self.ltm.nbytes
            python = (
                PY_LEAF * len(self.octree.leaves)
                + PY_SIGHTING * sightings
                + PY_PREFIX * prefixes
                + PY_NODE * len(self.graph)
                + PY_EDGE * self.graph.graph.number_of_edges()
                + PY_KEY * (len(self.stm) + len(self.ltm.index))
                + PY_TRACK * len(self.tracker.tracks)
                + PY_DIARY * (len(self._diary.entries) + len(self._diary.stays))
                + PY_FRAME_ID * len(self.gate.seen)
            )
            return MemoryStats(items=len(self.octree.leaves) + len(self.graph), bytes=int(arrays + python), frames_seen=self.gate.frames_seen)

    # ------------------------------------------------------------------ plot
    def plot(self, ax) -> None:
        """Octree leaves (squares, colour = when last seen) and the graph (nodes, directed edges)."""
        with self._lock.reading():
            self._plot(ax)

    def _plot(self, ax) -> None:
        leaves = list(self.octree.leaves.values())
        if leaves:
            centers = np.array([leaf.center for leaf in leaves])
            stamps = np.array([leaf.last_stamp for leaf in leaves])
            ax.scatter(centers[:, 0], centers[:, 1], c=stamps, cmap="viridis", marker="s", s=8, linewidths=0, label="octree leaves (colour: last seen)", zorder=2)
        if len(self.graph):
            positions = np.array([self.graph.position(n) for n in sorted(self.graph.graph.nodes)])
            edges = list(self.graph.graph.edges)
            if edges:
                start = np.array([positions[s] for s, _ in edges])
                delta = np.array([positions[t] - positions[s] for s, t in edges])
                ax.quiver(start[:, 0], start[:, 1], delta[:, 0], delta[:, 1], angles="xy", scale_units="xy", scale=1, width=0.0025, headwidth=5, headlength=7, headaxislength=6, color="tab:red", alpha=0.5, zorder=3)
            ax.scatter(positions[:, 0], positions[:, 1], s=25, c="tab:red", edgecolors="black", linewidths=0.5, label="graph nodes", zorder=4)

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory) -> None:
        with self._lock.reading():
            state, arrays = self._state()
        save_manifest(directory, self.name, state, arrays, config=self.config)

    COMPONENTS = ("octree", "graph", "stm", "ltm")

    def _state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The manifest: each component's own state (``to_state``), its arrays under the prefix
        ``<component>.``, plus the stream bookkeeping (gate, diary, tracker, clocks)."""
        state = {
            "config": asdict(self.config),
            "gate": self.gate.to_dict(),
            "diary": self._diary.to_dict(),
            "tracker": self.tracker.to_dict(),
            "step": self.step,
            "out_of_bounds": self.out_of_bounds,
        }
        arrays: dict[str, np.ndarray] = {}
        for name in self.COMPONENTS:
            state[name], parts = getattr(self, name).to_state()
            arrays.update({f"{name}.{key}": value for key, value in parts.items()})
        return state, arrays

    def load(self, directory) -> None:
        """Restore a checkpoint; ``ValueError`` (and nothing changed) if it is not a usable one."""
        state, arrays = load_manifest(Path(directory), self.name, config=self.config)  # another config: refused
        self.restore(state, arrays, str(directory))

    def restore(self, state: dict, arrays: dict[str, np.ndarray], source: str = "state") -> None:
        """Replace the memory by ``_state()``'s output; ``ValueError`` (and nothing changed) if it
        is not a usable one."""
        try:
            parsed = self._parse(state, arrays)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"corrupt {self.name} checkpoint {source}: {error!r}") from error
        with self._lock.writing():  # swap in only once everything parsed
            if parsed["_diary"].floor_plan is None:  # a checkpoint without a map keeps the one given
                parsed["_diary"].set_floor_plan(self._diary.floor_plan)
            for name, value in parsed.items():
                setattr(self, name, value)
            self._changed()

    def _parse(self, state: dict, arrays: dict[str, np.ndarray]) -> dict:
        """Every component built anew from the manifest (nothing of ``self`` is touched), then
        checked against this memory's config and against each other."""
        c, d = self.config, self.dim
        config = state["config"]
        geometry = ("octree_depth", "world_size", "origin_x", "origin_y", "origin_z", "encoder")
        if any(config[name] != getattr(c, name) for name in geometry):
            raise ValueError(f"the checkpoint's octree geometry / encoder differ from this memory's: {[(n, config[n]) for n in geometry]}")

        def part(name: str) -> dict[str, np.ndarray]:
            prefix = f"{name}."
            return {key[len(prefix) :]: value for key, value in arrays.items() if key.startswith(prefix)}

        ltm = LongTermMemory.from_state(self.transformer, state["ltm"], part("ltm"))  # refuses another R first
        octree = SparseOctree.from_state(state["octree"], part("octree"))
        graph = SemanticGraph.from_state(state["graph"], part("graph"))
        stm = ShortTermMemory.from_state(state["stm"], part("stm"))
        if (octree.depth, octree.world_size, tuple(octree.origin.tolist())) != (c.octree_depth, c.world_size, c.origin):
            raise ValueError("the checkpoint's octree geometry differs from this memory's")
        if graph.dim != d or (graph.delta, graph.alpha, graph.beta) != (c.node_threshold, c.edge_alpha, c.edge_beta):
            raise ValueError("the checkpoint's graph parameters differ from this memory's")
        if (stm.capacity, stm.dim, stm.lam) != (c.stm_capacity, d, c.stm_lambda):
            raise ValueError("the checkpoint's STM size / lambda differ from this memory's")
        if ltm.theta_norm != c.ltm_theta_norm:
            raise ValueError("the checkpoint's LTM theta norm differs from this memory's")
        for key in [*(k for k in stm.keys if k is not None), *ltm.index.slot_of]:
            kind, value = key
            if not ((kind == LEAF and value in octree.leaves) or (kind == NODE and 0 <= value < len(graph))):
                raise ValueError(f"memory key {key} names no leaf or node")

        gate = FrameGate()
        gate.load_dict(state["gate"])
        diary = ActionDiary()
        diary.load_dict(state["diary"])
        tracker = EntityTracker(c.tracker)
        tracker.load_dict(state["tracker"])
        for track in tracker.tracks.values():
            if track.kind not in ("object", "receptacle") or track.position.shape != (3,) or not np.all(np.isfinite(track.position)):
                raise ValueError(f"bad track {track.track_id}")
        track_leaves: dict[int, set[int]] = {}  # derived: rebuilt from the leaves' sightings
        for code, leaf in octree.leaves.items():
            for track_id in leaf.sightings:
                track_leaves.setdefault(track_id, set()).add(code)
        unknown = sorted(set(track_leaves) - set(tracker.tracks))
        if unknown:
            raise ValueError(f"sightings of entities {unknown[:5]} that the tracker does not hold")
        return {
            "gate": gate,
            "_diary": diary,
            "tracker": tracker,
            "octree": octree,
            "track_leaves": track_leaves,
            "graph": graph,
            "stm": stm,
            "ltm": ltm,
            "step": int(state["step"]),
            "out_of_bounds": int(state["out_of_bounds"]),
        }


def view_quality(pose: Pose, view: InstanceView) -> float:
    """How well a frame shows a detection: its mask fraction, x0.3 beyond 2.5 m, x0.3 beyond 35 deg
    off the heading (the same measure the frame_bank baseline ranks its frames by)."""
    distance = float(np.linalg.norm(view.centroid[:2] - pose.position[:2]))
    return float(view_score(view.mask_fraction, distance, bearing_in_body(pose, view.centroid)))


@register("memory", "mem4nav", Mem4NavConfig)
def build_mem4nav(config: Mem4NavConfig) -> Mem4Nav:
    return Mem4Nav(config)
