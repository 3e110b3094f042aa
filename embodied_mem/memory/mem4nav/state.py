"""Checkpoint helpers shared by the Mem4Nav components (octree, graph, STM, LTM).

Each component saves itself as ``to_state() -> (state, arrays)``: a json-able dict and a dict of
numpy arrays, and restores with ``from_state(state, arrays, ...)``, which builds a *new*
component and raises ``ValueError`` (or ``KeyError`` / ``TypeError`` for a missing or mistyped
field, which the memory system turns into ``ValueError``) without touching anything else. The
memory system composes the components under prefixed array names (``octree.codes``, ...).

Keys of the STM / LTM are ``(kind, value)`` tuples (``("leaf", morton)`` / ``("node", id)``);
they are saved as a list of kind names in the state and two int64 arrays (kind index, value).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def shaped(arrays: dict[str, np.ndarray], name: str, shape: tuple[int, ...], kind: str | None = None, finite: bool = True) -> np.ndarray:
    """``arrays[name]`` if it has ``shape`` (and dtype kind ``kind``: "f", "i", "b"); float arrays
    must also be finite unless ``finite`` is False (then only NaN-free is not checked either)."""
    array = np.asarray(arrays[name])
    if array.shape != tuple(shape):
        raise ValueError(f"array {name} has shape {array.shape}, expected {tuple(shape)}")
    if kind is not None and array.dtype.kind != kind and not (kind == "f" and array.dtype.kind == "i"):
        raise ValueError(f"array {name} has dtype {array.dtype}, expected kind {kind!r}")
    if finite and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError(f"array {name} has non-finite values")
    return array


def keys_to_arrays(keys: Sequence[Hashable | None]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(kind names, kind index per key, value per key)``; ``None`` (a free slot) is (-1, -1)."""
    kinds: list[str] = []
    kind_index = np.full(len(keys), -1, dtype=np.int64)
    values = np.full(len(keys), -1, dtype=np.int64)
    for row, key in enumerate(keys):
        if key is None:
            continue
        kind, value = key
        if kind not in kinds:
            kinds.append(str(kind))
        kind_index[row], values[row] = kinds.index(kind), int(value)
    return kinds, kind_index, values


def keys_from_arrays(kinds: list[str], kind_index: np.ndarray, values: np.ndarray, allow_free: bool) -> list[tuple[str, int] | None]:
    """Inverse of ``keys_to_arrays``; ``ValueError`` for an unknown kind or a repeated key."""
    if not isinstance(kinds, list) or not all(isinstance(kind, str) for kind in kinds):
        raise ValueError(f"key kinds must be a list of names, got {kinds!r}")
    if kind_index.shape != values.shape or kind_index.dtype.kind != "i" or values.dtype.kind != "i":
        raise ValueError("key arrays must be two int arrays of one shape")
    keys: list[tuple[str, int] | None] = []
    for kind, value in zip(kind_index.tolist(), values.tolist()):
        if kind == -1 and allow_free:
            keys.append(None)
        elif 0 <= kind < len(kinds):
            keys.append((kinds[kind], int(value)))
        else:
            raise ValueError(f"key kind index {kind} is not one of {len(kinds)} kinds")
    live = [key for key in keys if key is not None]
    if len(set(live)) != len(live):
        raise ValueError("a key appears twice")
    return keys


def pose_rows(poses) -> np.ndarray:
    """Poses as (n, 7) rows [x y z | quaternion]; a missing pose (None) is a row of NaN."""
    rows = [np.full(7, np.nan) if pose is None else np.concatenate([pose.position, pose.orientation]) for pose in poses]
    return np.array(rows, dtype=np.float64).reshape(-1, 7)
