"""One stream's bank of the perceptual-cognitive memory bank (PCMB): fixed capacity, fixed bytes.

An entry is ``(timestep, tokens[N, D])`` plus the frames it came from (``members``: frame id,
stamp and pose of up to ``frames_per_entry`` frames). Entries are kept in insertion order, which
is time order. All storage is allocated once, for ``capacity + 1`` entries (the one extra slot
holds the new entry between the append and the merge), so the bank's byte count never changes.

Consolidation (vla ``_memory_consolidate`` / ``_consolidate_with_token_merge``), run after each
append while the bank holds more than ``capacity`` entries:

- ``tome``: ``s_i = mean_n cos(f_i[n], f_{i+1}[n])`` for adjacent pairs (cosine per token, then
  the mean over tokens); ``k = argmax_i s_i`` (ties: the lowest i); ``f_k <- 0.5 (f_k + f_{k+1})``;
  entry k+1 is deleted. The merged timestep is ``t_k`` (vla; dexbotic uses the mean). The merged
  entry's members are the union of both entries' members in time order; past
  ``frames_per_entry`` an evenly spaced subset of them (our addition: the paper keeps no frames).
- ``fifo``: the oldest entry is dropped (the paper's ablation option).
"""

from __future__ import annotations

import numpy as np

CONSOLIDATE = ("tome", "fifo")
COS_EPS = 1e-8  # as torch.nn.functional.cosine_similarity


def adjacent_similarity(feats: np.ndarray) -> np.ndarray:
    """(T, N, D) entries -> (T-1,) mean over tokens of the per-token cosine of neighbours."""
    a = feats[:-1].astype(np.float64)
    b = feats[1:].astype(np.float64)
    dots = np.sum(a * b, axis=-1)
    norms = np.maximum(np.linalg.norm(a, axis=-1), COS_EPS) * np.maximum(np.linalg.norm(b, axis=-1), COS_EPS)
    return np.mean(dots / norms, axis=-1)


def spaced(count: int, keep: int) -> np.ndarray:
    """Indices of ``keep`` of ``count`` items, evenly spaced, first and last included."""
    if count <= keep:
        return np.arange(count)
    return np.unique(np.round(np.linspace(0, count - 1, keep)).astype(np.int64))


class MemoryBank:
    """A fixed-capacity, time-ordered bank of token entries with the frames they came from."""

    def __init__(self, capacity: int, tokens: int, dim: int, frames_per_entry: int = 8, consolidate: str = "tome") -> None:
        if capacity < 2:
            raise ValueError(f"bank capacity must be at least 2, got {capacity}")
        if tokens < 1 or dim < 1 or frames_per_entry < 1:
            raise ValueError(f"bank tokens, dim and frames_per_entry must be positive, got {tokens}, {dim}, {frames_per_entry}")
        if consolidate not in CONSOLIDATE:
            raise ValueError(f"consolidate must be one of {CONSOLIDATE}, got {consolidate!r}")
        self.capacity, self.tokens, self.dim = capacity, tokens, dim
        self.frames_per_entry, self.consolidate = frames_per_entry, consolidate
        slots = capacity + 1
        self.feats = np.zeros((slots, tokens, dim), np.float32)
        self.times = np.zeros(slots, np.float64)
        self.member_ids = np.full((slots, frames_per_entry), -1, np.int64)
        self.member_stamps = np.zeros((slots, frames_per_entry), np.float64)
        self.member_poses = np.zeros((slots, frames_per_entry, 7), np.float64)
        self.member_counts = np.zeros(slots, np.int64)
        self.size = 0
        self.merges = 0  # consolidations so far (a diagnostic, saved with the bank)

    # ------------------------------------------------------------------ reading
    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        """Views of the live entries: tokens (T, N, D) and timesteps (T,)."""
        return self.feats[: self.size], self.times[: self.size]

    def members(self, entry: int) -> list[tuple[int, float, np.ndarray]]:
        """(frame_id, stamp, pose7) of the frames entry ``entry`` came from, in time order."""
        count = int(self.member_counts[entry])
        return [(int(self.member_ids[entry, m]), float(self.member_stamps[entry, m]), self.member_poses[entry, m].copy()) for m in range(count)]

    def frame_ids(self) -> set[int]:
        return {int(i) for i in self.member_ids[: self.size].reshape(-1) if i >= 0}

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self._arrays().values()))

    def __len__(self) -> int:
        return self.size

    # ------------------------------------------------------------------ writing
    def append(self, timestep: float, feat: np.ndarray, frame_id: int, stamp: float, pose7: np.ndarray) -> int | None:
        """Add one entry, then consolidate. Returns the merged index k (tome), 0 (fifo drop) or None.

        Refuses (``ValueError``, bank unchanged) tokens of the wrong shape or not finite, and a
        timestep older than the newest entry's.
        """
        feat = np.asarray(feat)
        if feat.shape != (self.tokens, self.dim):
            raise ValueError(f"bank tokens must have shape ({self.tokens}, {self.dim}), got {feat.shape}")
        if not np.all(np.isfinite(feat)):
            raise ValueError("bank tokens hold NaN or inf")
        timestep = float(timestep)
        if not np.isfinite(timestep) or (self.size and timestep < self.times[self.size - 1]):
            raise ValueError(f"bank timestep {timestep} is not finite or older than the newest entry's")
        pose7 = np.asarray(pose7, dtype=np.float64).reshape(-1)
        if pose7.shape != (7,) or not np.all(np.isfinite(pose7)):
            raise ValueError(f"bank member pose must be 7 finite numbers, got {pose7}")
        slot = self.size
        self.feats[slot] = feat
        self.times[slot] = timestep
        self.member_ids[slot] = -1
        self.member_ids[slot, 0] = int(frame_id)
        self.member_stamps[slot] = 0.0
        self.member_stamps[slot, 0] = float(stamp)
        self.member_poses[slot] = 0.0
        self.member_poses[slot, 0] = pose7
        self.member_counts[slot] = 1
        self.size += 1
        merged = None
        while self.size > self.capacity:  # one append: at most one merge
            merged = self._consolidate()
        return merged

    def _consolidate(self) -> int:
        if self.consolidate == "fifo":
            self._delete(0)
            return 0
        sims = adjacent_similarity(self.feats[: self.size])
        k = int(np.argmax(sims))  # first maximum: ties go to the lowest index
        self.merge(k)
        return k

    def merge(self, k: int) -> None:
        """Merge entries k and k+1 into k (mean of the pair; timestep t_k; union of members)."""
        if not 0 <= k < self.size - 1:
            raise ValueError(f"cannot merge entry {k} with its successor in a bank of {self.size}")
        self.feats[k] = 0.5 * (self.feats[k] + self.feats[k + 1])
        count_a, count_b = int(self.member_counts[k]), int(self.member_counts[k + 1])
        ids = np.concatenate([self.member_ids[k, :count_a], self.member_ids[k + 1, :count_b]])
        stamps = np.concatenate([self.member_stamps[k, :count_a], self.member_stamps[k + 1, :count_b]])
        poses = np.concatenate([self.member_poses[k, :count_a], self.member_poses[k + 1, :count_b]])
        keep = spaced(len(ids), self.frames_per_entry)
        self.member_ids[k] = -1
        self.member_stamps[k] = 0.0
        self.member_poses[k] = 0.0
        self.member_ids[k, : len(keep)] = ids[keep]
        self.member_stamps[k, : len(keep)] = stamps[keep]
        self.member_poses[k, : len(keep)] = poses[keep]
        self.member_counts[k] = len(keep)
        self._delete(k + 1)
        self.merges += 1

    def _delete(self, index: int) -> None:
        last = self.size - 1
        for array in self._arrays().values():
            array[index:last] = array[index + 1 : last + 1].copy()
        self._clear(last)
        self.size -= 1

    def _clear(self, slot: int) -> None:
        self.feats[slot] = 0.0
        self.times[slot] = 0.0
        self.member_ids[slot] = -1
        self.member_stamps[slot] = 0.0
        self.member_poses[slot] = 0.0
        self.member_counts[slot] = 0

    # ------------------------------------------------------------------ undo and checkpoints
    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "feats": self.feats,
            "times": self.times,
            "member_ids": self.member_ids,
            "member_stamps": self.member_stamps,
            "member_poses": self.member_poses,
            "member_counts": self.member_counts,
        }

    def snapshot(self) -> tuple:
        """A copy to ``restore`` if the frame that changes the bank fails later."""
        return {k: v.copy() for k, v in self._arrays().items()}, self.size, self.merges

    def restore(self, snapshot: tuple) -> None:
        arrays, self.size, self.merges = snapshot
        for name, array in self._arrays().items():
            array[...] = arrays[name]

    def to_state(self, prefix: str) -> tuple[dict, dict[str, np.ndarray]]:
        state = {"size": self.size, "merges": self.merges}
        return state, {f"{prefix}{name}": array.copy() for name, array in self._arrays().items()}

    def from_state(self, prefix: str, state: dict, arrays: dict[str, np.ndarray]) -> "MemoryBank":
        """A new bank like this one holding a checkpoint's content; ``ValueError`` when it does not fit."""
        bank = MemoryBank(self.capacity, self.tokens, self.dim, self.frames_per_entry, self.consolidate)
        size = int(state["size"])
        if not 0 <= size <= self.capacity:
            raise ValueError(f"bank {prefix!r} size {size} is outside [0, {self.capacity}]")
        for name, target in bank._arrays().items():
            key = f"{prefix}{name}"
            if key not in arrays:
                raise ValueError(f"array {key!r} is missing")
            array = arrays[key]
            if array.shape != target.shape or array.dtype.kind != target.dtype.kind:
                raise ValueError(f"array {key!r} has shape {array.shape} / dtype {array.dtype}, expected {target.shape} / {target.dtype}")
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise ValueError(f"array {key!r} holds NaN or inf")
            target[...] = array
        counts = bank.member_counts[:size]
        if size and (counts.min() < 1 or counts.max() > self.frames_per_entry):
            raise ValueError(f"bank {prefix!r} has an entry with no members or too many")
        if np.any(np.diff(bank.times[:size]) < 0):
            raise ValueError(f"bank {prefix!r} timesteps go back in time")
        bank.size, bank.merges = size, int(state["merges"])
        return bank
