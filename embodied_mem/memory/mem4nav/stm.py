"""Short-term memory (Mem4Nav): a small keyed cache of recent observations in node-relative coordinates.

Each entry holds a key, the entity (tracker track) id it came from, ``p_rel = p - p_{u_c}`` (relative to the
graph node current at write time), the embedding ``v``, the step of its last write and an
access frequency (1 on insertion). Writing an existing key overwrites ``v`` and ``p_rel``, sets
the step to now and bumps the frequency. Writing a new key into a full cache first evicts
``argmin_i lambda * freq_i - (1 - lambda) * (t_now - t_i)`` (rarely written and long ago).
Retrieval keeps entries with ``||p_rel - q_rel|| <= epsilon`` and ranks them by cosine.

Storage is fixed-size arrays of ``capacity`` rows (a slot per entry), so the cache never grows.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np


@dataclass
class StmMatch:
    key: Hashable
    object_id: int | None
    cosine: float
    p_rel: np.ndarray


class ShortTermMemory:
    def __init__(self, capacity: int, dim: int, lam: float) -> None:
        if capacity < 1:
            raise ValueError(f"STM capacity must be positive, got {capacity}")
        self.capacity, self.dim, self.lam = int(capacity), int(dim), float(lam)
        self.clear()

    def clear(self) -> None:
        self.vectors = np.zeros((self.capacity, self.dim), dtype=np.float32)
        self.p_rel = np.zeros((self.capacity, 3), dtype=np.float64)
        self.step = np.zeros(self.capacity, dtype=np.int64)  # step of the last write
        self.frequency = np.zeros(self.capacity, dtype=np.int64)
        self.object_ids = np.full(self.capacity, -1, dtype=np.int64)  # -1: none
        self.keys: list[Hashable | None] = [None] * self.capacity
        self.slot_of: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self.slot_of)

    def scores(self, now: int) -> np.ndarray:
        """Eviction scores of the occupied slots (+inf for free slots)."""
        score = self.lam * self.frequency - (1.0 - self.lam) * (now - self.step)
        occupied = np.array([k is not None for k in self.keys])
        return np.where(occupied, score.astype(np.float64), np.inf)

    def write(self, key: Hashable, vector: np.ndarray, p_rel: np.ndarray, now: int, object_id: int | None = None) -> Hashable | None:
        """Insert or refresh ``key``; returns the evicted key, if any."""
        evicted = None
        slot = self.slot_of.get(key)
        if slot is not None:
            self.frequency[slot] += 1
        else:
            if len(self.slot_of) >= self.capacity:
                slot = int(np.argmin(self.scores(now)))
                evicted = self.keys[slot]
                del self.slot_of[evicted]
            else:
                slot = self.keys.index(None)
            self.keys[slot] = key
            self.slot_of[key] = slot
            self.frequency[slot] = 1
        self.vectors[slot] = vector
        self.p_rel[slot] = p_rel
        self.step[slot] = now
        self.object_ids[slot] = -1 if object_id is None else int(object_id)
        return evicted

    def retrieve(self, query: np.ndarray, q_rel: np.ndarray, epsilon: float, k: int) -> list[StmMatch]:
        """Entries within ``epsilon`` of ``q_rel``, best cosine first, at most ``k``."""
        if not self.slot_of:
            return []
        slots = np.array(sorted(self.slot_of.values()), dtype=np.int64)
        near = np.linalg.norm(self.p_rel[slots] - np.asarray(q_rel, dtype=np.float64)[None, :], axis=1) <= epsilon
        slots = slots[near]
        if slots.size == 0:
            return []
        vectors = self.vectors[slots]
        norms = np.linalg.norm(vectors, axis=1) * max(float(np.linalg.norm(query)), 1e-12)
        cosine = (vectors @ query.astype(np.float32)) / np.maximum(norms, 1e-12)
        order = np.argsort(-cosine, kind="stable")[:k]
        return [
            StmMatch(self.keys[int(slots[i])], None if self.object_ids[slots[i]] < 0 else int(self.object_ids[slots[i]]), float(cosine[i]), self.p_rel[slots[i]].copy())
            for i in order
        ]

    @property
    def nbytes(self) -> int:
        return self.vectors.nbytes + self.p_rel.nbytes + self.step.nbytes + self.frequency.nbytes + self.object_ids.nbytes
