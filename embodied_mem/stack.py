"""The memory stack: several memory systems on one observation stream, answering as one.

``memory=stack memory.systems=[mem4nav,snapshots3d,frame_bank]`` builds each member from the
registry and runs them side by side:

- **observe**: the frame is validated once at the door (a refused frame reaches no member),
  then every member observes it, in parallel (a thread pool: the members' numpy / torch work
  releases the GIL) or one after another (``parallel: false``, the same result).
- **recall**: every member recalls in parallel; their ranked hits are **fused per goal** by
  reciprocal rank fusion (``fusion: rrf``, Cormack et al. 2009: score = sum over members of
  w / (k + rank)), after grouping hits that point at the same place (within ``merge_radius``).
  A **router** weighs the members by what each is good at: spatial questions (where a thing
  is, the farthest one, a room) to the spatial memories, order / time / duration questions to
  the episodic ones. A system may say what it is good at with a ``STRENGTHS`` class attribute
  (a set of "spatial" / "temporal"); otherwise ``DEFAULT_STRENGTHS`` below does.
- **save / load**: each member saves into its own folder; the stack's manifest, switched in
  last, names them, so a stack checkpoint is one atomic switch (a kill mid-save leaves the
  previous stack checkpoint whole).

A stack is itself a memory system, so the harness, the ROS 2 memory node and replay take it
like any other. ``catalog()`` and ``diary`` (what the language reasoner reads for its
vocabulary) are the members': the union of their catalogues (ids are per member) and the
first member's diary.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embodied_mem.memory.base import FrameGate, ReadWriteLock, load_manifest, save_manifest
from embodied_mem.registry import build, register
from embodied_mem.types import FloorPlan, Hit, MemoryStats, Observation, Query, Recall

SPATIAL, TEMPORAL = "spatial", "temporal"
# What each system is good at, where it does not say so itself (``STRENGTHS``).
DEFAULT_STRENGTHS = {
    "mem4nav": {SPATIAL},
    "snapshots3d": {SPATIAL},
    "m3": {SPATIAL},
    "robomemory": {SPATIAL, TEMPORAL},
    "frame_bank": {SPATIAL, TEMPORAL},
    "subsampled_frames": {TEMPORAL},
    "memoryvla": {TEMPORAL},
    "janus": {TEMPORAL},
}
TEMPORAL_SELECTORS = {"order", "after", "before", "time", "duration"}
FUSIONS = ("rrf", "best")
ROUTERS = ("rules", "none")


@dataclass
class StackConfig:
    """``systems``: member names or configs ({"name": ..., options}); ``weights``: a fixed
    weight per member name (default 1); ``router``: ``rules`` (weigh members by the query's
    kind) or ``none``; ``off_strength_weight``: a member's weight on a kind it is not good at;
    ``fusion``: ``rrf`` or ``best`` (the single highest-weighted member's answer);
    ``encoder``: passed to every member that has an encoder (None: each member's own)."""

    systems: list = field(default_factory=lambda: ["mem4nav", "snapshots3d", "frame_bank"])
    weights: dict = field(default_factory=dict)
    fusion: str = "rrf"
    rrf_k: float = 60.0
    router: str = "rules"
    off_strength_weight: float = 0.25
    merge_radius: float = 0.5
    parallel: bool = True
    encoder: str | None = None


def query_kind(query: Query) -> str | None:
    """"temporal" for order / time / duration questions, "spatial" for where-is / farthest /
    room questions, None when the query does not say (text without constraints)."""
    if query.constraints is None:
        text = (query.text or "").lower()
        if any(w in text for w in ("first", "last", "after", "before", "seconds", "longest", "shortest", " at ", "order")):
            return TEMPORAL
        return None
    kinds = set()
    for goal in query.constraints.get("goals", []):
        by = (goal.get("select") or {}).get("by")
        kinds.add(TEMPORAL if by in TEMPORAL_SELECTORS else SPATIAL)
    return kinds.pop() if len(kinds) == 1 else None


class MemoryStack:
    """Several memory systems observing one stream and answering as one (see the module docstring)."""

    def __init__(self, config: StackConfig) -> None:
        if config.fusion not in FUSIONS:
            raise ValueError(f"stack fusion must be one of {FUSIONS}, got {config.fusion!r}")
        if config.router not in ROUTERS:
            raise ValueError(f"stack router must be one of {ROUTERS}, got {config.router!r}")
        if not config.systems:
            raise ValueError("a stack needs at least one member in memory.systems")
        self.config = config
        self.name = "stack"
        self.members = []
        for entry in config.systems:
            options = {"name": entry} if isinstance(entry, str) else dict(entry)
            if options.get("name") == "stack":
                raise ValueError("a stack cannot hold a stack")
            if config.encoder is not None:
                from embodied_mem.registry import config_class

                if "encoder" in config_class("memory", options["name"]).__dataclass_fields__:
                    options.setdefault("encoder", config.encoder)
            self.members.append(build("memory", options))
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"each system may appear once in a stack, got {names}")
        unknown = set(config.weights) - set(names)
        if unknown:
            raise ValueError(f"stack weights name systems not in the stack: {sorted(unknown)}")
        self._pool = ThreadPoolExecutor(max_workers=len(self.members), thread_name_prefix="stack") if config.parallel else None
        self._lock = ReadWriteLock()
        self.gate = FrameGate()

    # ------------------------------------------------------------------ running the members
    def _each(self, function) -> list:
        """``function(member)`` for every member, in parallel or in order; results in member order."""
        if self._pool is None:
            return [function(m) for m in self.members]
        futures = [self._pool.submit(function, m) for m in self.members]
        return [f.result() for f in futures]

    def strengths(self, member) -> set[str]:
        return set(getattr(type(member), "STRENGTHS", None) or DEFAULT_STRENGTHS.get(member.name, {SPATIAL, TEMPORAL}))

    def weight(self, member, kind: str | None) -> float:
        base = float(self.config.weights.get(member.name, 1.0))
        if self.config.router == "none" or kind is None or kind in self.strengths(member):
            return base
        return base * self.config.off_strength_weight

    # ------------------------------------------------------------------ protocol
    def observe(self, obs: Observation) -> None:
        obs.validate()  # once, at the door: a refused frame reaches no member
        with self._lock.writing():
            if not self.gate.admit(obs):
                return
            self._each(lambda m: m.observe(obs))
            self.gate.commit(obs)

    def flush(self) -> None:
        self._each(lambda m: m.flush() if hasattr(m, "flush") else None)

    def recall(self, query: Query) -> Recall:
        started = time.perf_counter()
        query.validate()
        with self._lock.reading():
            recalls = self._each(lambda m: m.recall(query))
        hits = self.fuse(query, recalls)
        return Recall(hits, self.name, time.perf_counter() - started)

    def fuse(self, query: Query, recalls: list[Recall]) -> list[Hit]:
        """Reciprocal rank fusion per goal, hits pointing at one place grouped first."""
        kind = query_kind(query)
        weights = [self.weight(m, kind) for m in self.members]
        by_goal: dict[int, list[tuple[int, int, Hit]]] = {}
        for member, recall in enumerate(recalls):
            per_goal: dict[int, list[Hit]] = {}
            for hit in recall.hits:
                per_goal.setdefault(hit.goal_index, []).append(hit)
            for goal, hits in per_goal.items():
                for rank, hit in enumerate(sorted(hits, key=lambda h: -h.score)):
                    by_goal.setdefault(goal, []).append((member, rank, hit))
        fused: list[Hit] = []
        for goal in sorted(by_goal):
            entries = by_goal[goal]
            if self.config.fusion == "best":
                best = max(range(len(self.members)), key=lambda i: (weights[i], -i))
                entries = [e for e in entries if e[0] == best] or entries
            groups: list[dict] = []
            for member, rank, hit in sorted(entries, key=lambda e: (e[1], -weights[e[0]], e[0])):
                place = _place(hit)
                group = next((g for g in groups if place is not None and g["place"] is not None and np.linalg.norm(g["place"] - place) <= self.config.merge_radius), None)
                if group is None:
                    group = {"place": place, "ranks": {}, "hit": hit, "member": member}
                    groups.append(group)
                group["ranks"].setdefault(member, rank)  # a member counts once per group, its best rank
            for group in groups:
                score = sum(weights[m] / (self.config.rrf_k + r + 1) for m, r in group["ranks"].items())
                hit = group["hit"]
                evidence = dict(hit.evidence, goal_index=goal, systems=sorted(self.members[m].name for m in group["ranks"]), member=hit.system)
                fused.append(Hit(hit.frame_id, hit.stamp, hit.agent_pose, hit.target_xyz, hit.object_id, float(score), self.name, evidence))
        fused.sort(key=lambda h: (h.goal_index, -h.score))
        out, count = [], {}
        for hit in fused:
            count[hit.goal_index] = count.get(hit.goal_index, 0) + 1
            if count[hit.goal_index] <= query.k:
                out.append(hit)
        return out

    def stats(self) -> MemoryStats:
        with self._lock.reading():
            stats = [m.stats() for m in self.members]
        return MemoryStats(items=sum(s.items for s in stats), bytes=sum(s.bytes for s in stats), frames_seen=self.gate.frames_seen)

    def reset(self) -> None:
        with self._lock.writing():
            for member in self.members:
                member.reset()
            self.gate.reset()

    def set_floor_plan(self, plan: FloorPlan | None) -> None:
        for member in self.members:
            if hasattr(member, "set_floor_plan"):
                member.set_floor_plan(plan)

    # ------------------------------------------------------------------ what the reasoner reads
    @property
    def diary(self):
        return self.members[0].diary

    def catalog(self) -> list:
        return [e for m in self.members if hasattr(m, "catalog") for e in m.catalog()]

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory) -> None:
        """Each member into its own folder, then the stack's manifest switched in last."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        token = f"members-{uuid.uuid4().hex[:12]}"
        with self._lock.reading():
            for index, member in enumerate(self.members):
                member.save(directory / token / f"{index}-{member.name}")
            state = {"members": token, "names": [m.name for m in self.members], "gate": self.gate.to_dict()}
            previous = _current_members(directory)
            save_manifest(directory, self.name, state, {}, config=self.config)
        # Keep the previous members folder (the previous checkpoint's) until this one is current.
        for stale in directory.glob("members-*"):
            if stale.name not in (token, previous):
                shutil.rmtree(stale, ignore_errors=True)

    def load(self, directory) -> None:
        directory = Path(directory)
        state, _ = load_manifest(directory, self.name, config=self.config)
        names = state.get("names")
        if names != [m.name for m in self.members]:
            raise ValueError(f"stack checkpoint holds {names}, this stack is {[m.name for m in self.members]}")
        token = state.get("members")
        if not isinstance(token, str) or not (directory / token).is_dir():
            raise ValueError(f"stack checkpoint {directory}: members folder {token!r} is missing")
        # Load into fresh members and swap only when every one parsed.
        fresh = MemoryStack(StackConfig(**{**self.config.__dict__, "parallel": False}))
        for index, member in enumerate(fresh.members):
            member.load(directory / token / f"{index}-{member.name}")
        gate = FrameGate()
        try:
            gate.load_dict(state["gate"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"stack checkpoint {directory}: bad gate state ({error})") from None
        with self._lock.writing():
            self.members, self.gate = fresh.members, gate

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def _place(hit: Hit):
    if hit.target_xyz is not None:
        return np.asarray(hit.target_xyz, dtype=np.float64)[:2]
    if hit.agent_pose is not None:
        return np.asarray(hit.agent_pose.position, dtype=np.float64)[:2]
    return None


def _current_members(directory: Path) -> str | None:
    current = directory / "CURRENT"
    if not current.is_file():
        return None
    try:
        manifest = json.loads((directory / current.read_text().strip() / "manifest.json").read_text())
        return manifest["state"]["members"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None


@register("memory", "stack", StackConfig)
def build_stack(config: StackConfig) -> MemoryStack:
    return MemoryStack(config)

