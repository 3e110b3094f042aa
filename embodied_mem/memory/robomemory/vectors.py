"""Episodic and semantic memory: vector stores updated by add / update / remove / no-op decisions.

A ``VectorStore`` holds entries (key, text, unit vector, metadata) and answers top-k by cosine
(ties broken by key, so answers are deterministic). Writing follows the paper's updater: the
new entry's most similar existing entries (top-``similar``) are retrieved and a decision is
made about them:

- **noop**: the entry is already there with the same content (the same frame seen twice);
- **update**: the same experience (same key, or a near-duplicate of the same entity: cosine >=
  ``merge_threshold``, e.g. a detector that called the mug a cup this time) with new content;
- **add**: nothing similar enough;
- **remove**: the memory's own rule says a belief no longer holds (semantic "where is X" when
  the robot picks X up), or the store is over ``capacity`` (the least recently updated goes).

The paper's updater is a VLM; these rules are its deterministic stand-in.

- ``EpisodicMemory``: one entry per rearrangement the robot did (its pick and its place: the
  paper's "task interaction history"), written when the place closes it.
- ``SemanticMemory``: experience summaries at the action level ("picked the red mug from the
  brown table in the kitchen", with how often), beliefs that follow from them ("the red mug is
  on the grey sofa in the living room"), and the task level (one summary per day).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

import numpy as np

from embodied_mem.memory.robomemory.summary import StepSummary


@dataclass
class Entry:
    key: str
    text: str
    vector: np.ndarray  # float32 (dim,), unit
    meta: dict = field(default_factory=dict)
    updated: float = 0.0  # stamp of the last write

    def same_content(self, other: "Entry") -> bool:
        return self.text == other.text and json.dumps(self.meta, sort_keys=True) == json.dumps(other.meta, sort_keys=True) and np.array_equal(self.vector, other.vector)


@dataclass
class Decision:
    op: str  # add | update | remove | noop
    key: str
    entry: Entry | None = None


def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


class VectorStore:
    def __init__(self, dim: int, capacity: int = 512, similar: int = 3, merge_threshold: float = 0.97) -> None:
        if capacity < 1 or similar < 1:
            raise ValueError(f"capacity and similar must be >= 1, got {capacity}, {similar}")
        self.dim, self.capacity, self.similar, self.merge_threshold = dim, capacity, similar, merge_threshold
        self.entries: dict[str, Entry] = {}
        self.decisions = {"add": 0, "update": 0, "remove": 0, "noop": 0}
        self._journal: list | None = None
        self._matrix: tuple[list[str], np.ndarray] | None = None

    # ------------------------------------------------------------------ reads
    def search(self, vector, k: int, where=None) -> list[tuple[float, Entry]]:
        """Top-min(k, |DB|) entries by cosine, best first, ties by key; ``where(entry)`` filters."""
        keys, matrix = self._rows()
        if not keys:
            return []
        scores = matrix @ _unit(vector)
        order = sorted(range(len(keys)), key=lambda i: (-float(scores[i]), keys[i]))
        found = []
        for i in order:
            entry = self.entries[keys[i]]
            if where is None or where(entry):
                found.append((float(scores[i]), entry))
                if len(found) == k:
                    break
        return found

    def _rows(self) -> tuple[list[str], np.ndarray]:
        cached = self._matrix
        if cached is None or len(cached[0]) != len(self.entries):
            keys = sorted(self.entries)
            matrix = np.stack([self.entries[k].vector for k in keys]) if keys else np.zeros((0, self.dim), np.float32)
            cached = self._matrix = (keys, matrix)
        return cached

    # ------------------------------------------------------------------ writes
    def decide(self, new: Entry, same_entity=None) -> Decision:
        """add / update / noop for ``new`` against its most similar entries."""
        old = self.entries.get(new.key)
        if old is not None:
            return Decision("noop" if old.same_content(new) else "update", new.key, new)
        for score, candidate in self.search(new.vector, self.similar):
            if score >= self.merge_threshold and same_entity is not None and same_entity(candidate, new):
                merged = Entry(candidate.key, new.text, new.vector, new.meta, new.updated)
                return Decision("noop" if candidate.same_content(merged) else "update", candidate.key, merged)
        return Decision("add", new.key, new)

    def apply(self, decision: Decision) -> None:
        self.decisions[decision.op] += 1
        if decision.op == "noop":
            return
        if decision.op == "remove":
            if decision.key in self.entries:
                self._set(decision.key, None)
            return
        self._set(decision.key, decision.entry)
        while len(self.entries) > self.capacity:
            oldest = min(self.entries.values(), key=lambda e: (e.updated, e.key))
            self.decisions["remove"] += 1
            self._set(oldest.key, None)

    def write(self, new: Entry, same_entity=None) -> Decision:
        decision = self.decide(new, same_entity)
        self.apply(decision)
        return decision

    def remove(self, key: str) -> Decision:
        decision = Decision("remove" if key in self.entries else "noop", key)
        self.apply(decision)
        return decision

    def _set(self, key: str, entry: Entry | None) -> None:
        if self._journal is not None:
            self._journal.append((key, self.entries.get(key)))
        if entry is None:
            self.entries.pop(key, None)
        else:
            if entry.vector.shape != (self.dim,):
                raise ValueError(f"vector of {key!r} has shape {entry.vector.shape}, expected ({self.dim},)")
            self.entries[key] = entry
        self._matrix = None

    # ------------------------------------------------------------------ all or nothing
    def begin(self) -> None:
        self._journal = []
        self._decisions_mark = dict(self.decisions)

    def commit(self) -> None:
        self._journal = None

    def rollback(self) -> None:
        journal, self._journal = self._journal, None
        if journal is None:
            return
        for key, entry in reversed(journal):
            if entry is None:
                self.entries.pop(key, None)
            else:
                self.entries[key] = entry
        self.entries = dict(sorted(self.entries.items()))
        self.decisions = self._decisions_mark
        self._matrix = None

    # ------------------------------------------------------------------ checkpoints
    def to_state(self) -> tuple[dict, np.ndarray]:
        keys = sorted(self.entries)
        state = {
            "keys": keys,
            "texts": [self.entries[k].text for k in keys],
            "meta": [self.entries[k].meta for k in keys],
            "updated": [self.entries[k].updated for k in keys],
            "decisions": dict(self.decisions),
            "capacity": self.capacity,
            "similar": self.similar,
            "merge_threshold": self.merge_threshold,
        }
        vectors = np.stack([self.entries[k].vector for k in keys]) if keys else np.zeros((0, self.dim), np.float32)
        return state, vectors.astype(np.float32)

    def load_state(self, state: dict, vectors: np.ndarray) -> None:
        keys = [str(k) for k in state["keys"]]
        if vectors.shape != (len(keys), self.dim) or len(state["texts"]) != len(keys) or len(state["meta"]) != len(keys):
            raise ValueError(f"vector store: {len(keys)} keys, {len(state['texts'])} texts for vectors of shape {vectors.shape}")
        if len(set(keys)) != len(keys):
            raise ValueError("vector store: duplicate keys")
        self.entries = {
            k: Entry(k, str(t), vectors[n].astype(np.float32), dict(m), float(u))
            for n, (k, t, m, u) in enumerate(zip(keys, state["texts"], state["meta"], state["updated"]))
        }
        self.decisions = {op: int(state["decisions"].get(op, 0)) for op in ("add", "update", "remove", "noop")}
        self.capacity, self.similar, self.merge_threshold = int(state["capacity"]), int(state["similar"]), float(state["merge_threshold"])
        self._matrix = None


def _pose(s: StepSummary) -> list[float]:
    return list(s.pose)


class EpisodicMemory(VectorStore):
    """One entry per rearrangement: written when a place closes the open pick."""

    def __init__(self, dim: int, capacity: int = 512, similar: int = 3, merge_threshold: float = 0.97) -> None:
        super().__init__(dim, capacity, similar, merge_threshold)
        self.open: dict | None = None  # the pick not yet closed by a place (own state)

    def update(self, s: StepSummary) -> list[Decision]:
        decisions = []
        for event in s.events:
            where = {"frame_id": s.frame_id, "stamp": event.stamp, "pose": _pose(s), "receptacle": event.receptacle, "room": event.room, "text": event.text}
            if event.kind == "pick":
                self._set_open({"object": event.object, "day": s.day, "vector": list(event.vector), **where})
                continue
            pick = self.open
            key = f"episode:{s.frame_id}"  # the place that closes it names an episode
            if pick is None and key in self.entries:
                continue  # this place was recorded already (the same step again)
            self._set_open(None)
            vector = _unit(np.asarray(event.vector, np.float32) + (np.asarray(pick["vector"], np.float32) if pick else 0.0))
            text = f"day {s.day}: " + (f"{pick['text']}, then {event.text}" if pick else event.text)
            meta = {
                "object": event.object if event.object is not None else (pick or {}).get("object"),
                "day": s.day,
                "pick": None if pick is None else {k: pick[k] for k in ("frame_id", "stamp", "pose", "receptacle", "room")},
                "place": {k: where[k] for k in ("frame_id", "stamp", "pose", "receptacle", "room")},
            }
            decisions.append(self.write(Entry(key, text, vector, meta, s.stamp)))
        return decisions

    def _set_open(self, value: dict | None) -> None:
        if self._journal is not None and self.open != value:
            self._journal.append(("__open__", copy.deepcopy(self.open)))
        self.open = copy.deepcopy(value)

    def rollback(self) -> None:
        journal = self._journal or []
        opens = [entry for key, entry in journal if key == "__open__"]
        self._journal = [(k, e) for k, e in journal if k != "__open__"]
        if opens:
            self.open = opens[0]
        super().rollback()

    def to_state(self) -> tuple[dict, np.ndarray]:
        state, vectors = super().to_state()
        state["open"] = self.open
        return state, vectors

    def load_state(self, state: dict, vectors: np.ndarray) -> None:
        super().load_state(state, vectors)
        self.open = state.get("open")


class SemanticMemory(VectorStore):
    """Action-level experience, the beliefs that follow from it, and a summary per day."""

    RECENT = 4  # frames of an experience remembered (idempotence, and where to go back to)
    DAY_ITEMS = 8  # actions named in a day's summary

    def update(self, s: StepSummary) -> list[Decision]:
        decisions = []
        for event in s.events:
            where = {"frame_id": s.frame_id, "stamp": event.stamp, "pose": _pose(s), "object": event.object, "receptacle": event.receptacle, "room": event.room}
            key = f"action:{event.plain}"
            old = self.entries.get(key)
            frames = list(old.meta["frames"]) if old else []
            if s.frame_id not in frames:
                frames = (frames + [s.frame_id])[-self.RECENT :]
            count = len(set(frames)) if not old else old.meta["count"] + (0 if s.frame_id in old.meta["frames"] else 1)
            meta = {"kind": "action", "action": event.kind, "count": count, "frames": frames, "last": where}
            decisions.append(self.write(Entry(key, event.plain, _unit(event.vector), meta, s.stamp), _same_subject))
            if event.object is not None:
                belief = f"where:{event.object}"
                if event.kind == "pick":  # it is in the gripper: the belief no longer holds
                    decisions.append(self.remove(belief))
                else:
                    text = event.plain.replace("placed the ", "the ", 1).replace(" on the ", " is on the ", 1)
                    decisions.append(self.write(Entry(belief, text, _unit(event.vector), {"kind": "belief", "last": where}, s.stamp)))
            if event.kind == "place":
                day_key = f"day:{s.day}"
                old = self.entries.get(day_key)
                items = [list(i) for i in old.meta["items"]] if old else []
                if old is not None and any(frame == s.frame_id for frame, _ in items):
                    vector, meta = old.vector, old.meta  # this frame is already in the day's summary
                else:
                    count = old.meta["count"] if old else 0
                    vector = _unit((old.vector * count if old else 0.0) + _unit(event.vector))  # running mean of the day's actions
                    items = (items + [[s.frame_id, event.plain]])[-self.DAY_ITEMS :]
                    meta = {"kind": "day", "day": s.day, "count": count + 1, "items": items, "last": where}
                text = f"day {s.day}: " + "; ".join(plain for _, plain in meta["items"])
                decisions.append(self.write(Entry(day_key, text, vector, meta, s.stamp)))
        return decisions


def _same_subject(candidate: Entry, new: Entry) -> bool:
    """Two action experiences about the same entity and the same action (a relabelled mug)."""
    a, b = candidate.meta.get("last") or {}, new.meta.get("last") or {}
    return (
        candidate.meta.get("kind") == new.meta.get("kind") == "action"
        and candidate.meta.get("action") == new.meta.get("action")
        and a.get("object") is not None
        and a.get("object") == b.get("object")
        and a.get("receptacle") == b.get("receptacle")
    )
