"""Checkpoint helpers for the 3D-Mem components.

Each component (``ObjectMap``, ``SnapshotMemory``, ``OccupancyMap``, ``FrontierMap``) owns its
fields: ``to_state() -> (state, arrays)`` gives a JSON-able dict and named numpy arrays, and
``from_state(state, arrays, ...)`` rebuilds it, raising ``ValueError`` on anything malformed
(nothing is changed until everything parsed: the caller swaps the new objects in). The
system composes them, prefixing each component's array names (``prefixed`` / ``unprefixed``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


@contextmanager
def refusing(what: str) -> Iterator[None]:
    """Turn the errors malformed state raises while parsing into ``ValueError``."""
    try:
        yield
    except ValueError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, OverflowError) as error:
        raise ValueError(f"corrupt {what} state: {error!r}") from error


def prefixed(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{prefix}.{name}": value for name, value in arrays.items()}


def unprefixed(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    head = prefix + "."
    return {name[len(head) :]: value for name, value in arrays.items() if name.startswith(head)}


def array(arrays: dict[str, np.ndarray], name: str, kind: str, ndim: int, columns: int | None = None) -> np.ndarray:
    """``arrays[name]`` checked: numpy kind ("i" integers, "f" floats, "b" bools), rank, column
    count; integers are accepted where floats are expected, and floats must be finite."""
    if name not in arrays:
        raise ValueError(f"array {name!r} is missing")
    value = np.asarray(arrays[name])
    allowed = {"i": "iu", "f": "fiu", "b": "b"}[kind]
    if value.dtype.kind not in allowed:
        raise ValueError(f"array {name!r} has dtype {value.dtype}, expected kind {kind!r}")
    if value.ndim != ndim or (columns is not None and value.shape[1] != columns):
        raise ValueError(f"array {name!r} has shape {value.shape}")
    if kind == "f" and value.size and not np.all(np.isfinite(value)):
        raise ValueError(f"array {name!r} holds non-finite values")
    return value


def integer(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"expected an integer, got {value!r}")  # noqa: TRY004 (corrupt data is a ValueError)
    return int(value)


def number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def flag(value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true / false, got {value!r}")  # noqa: TRY004
    return value


def integers(values) -> list[int]:
    if not isinstance(values, list):
        raise ValueError(f"expected a list of integers, got {values!r}")  # noqa: TRY004
    return [integer(v) for v in values]


def vector(value, size: int) -> np.ndarray:
    point = np.asarray(value, dtype=np.float64)
    if point.shape != (size,) or not np.all(np.isfinite(point)):
        raise ValueError(f"expected {size} finite numbers, got {value!r}")
    return point


def votes(value, key=str) -> dict:
    """A ``{label: count}`` dict of positive counts."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a dict of counts, got {value!r}")  # noqa: TRY004
    out = {key(k): integer(v) for k, v in value.items()}
    if any(v <= 0 for v in out.values()):
        raise ValueError(f"counts must be positive, got {value!r}")
    return out


# ----------------------------------------------------------------------------------------
# All or nothing per frame
# ----------------------------------------------------------------------------------------
_ABSENT = object()


class Journal:
    """What one frame changed, to be put back if the frame fails (``rollback``).

    It costs per change, not per size of the memory: components call it just before they
    change something (the memory's big parts, object clouds and grids, are never copied).

    - ``entry(d, key, copy)``: before the first change of ``d[key]`` in the frame (setting it,
      deleting it, or changing the value in place; then ``copy`` keeps a copy of the value as
      it was, and the live value is changed). A key absent before is removed on rollback.
    - ``removing(d, key, copy, order)``: before deleting ``d[key]``; removing a key changes the
      dict's order, so its key order is kept at the frame's first removal and put back on
      rollback (``order``: a sort key of the items that gives that order, instead of a copy of
      the keys, for a dict always kept in that order).
    - ``member(s, x)``: before adding or discarding ``x`` in the set ``s``.
    - ``undo(fn)``: a closure run on rollback (after the others, newest first).
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[int, object], tuple[dict, object, object]] = {}
        self._orders: dict[int, tuple[dict, object]] = {}  # id -> (dict, its keys, or a sort key of its items)
        self._members: dict[tuple[int, object], tuple[set, object, bool]] = {}
        self._undo: list = []

    def entry(self, d: dict, key, copy=None) -> None:
        token = (id(d), key)
        if token not in self._entries:
            value = d.get(key, _ABSENT)
            self._entries[token] = (d, key, value if value is _ABSENT or copy is None else copy(value))

    def removing(self, d: dict, key, copy=None, order=None) -> None:
        if key in d and id(d) not in self._orders:
            self._orders[id(d)] = (d, list(d) if order is None else order)
        self.entry(d, key, copy)

    def member(self, s: set, x) -> None:
        token = (id(s), x)
        if token not in self._members:
            self._members[token] = (s, x, x in s)

    def undo(self, fn) -> None:
        self._undo.append(fn)

    def rollback(self) -> None:
        for s, x, was in self._members.values():
            if was:
                s.add(x)
            else:
                s.discard(x)
        for d, key, value in self._entries.values():
            if value is _ABSENT:
                d.pop(key, None)
            else:
                d[key] = value
        for d, keys in self._orders.values():
            if callable(keys):
                items = sorted(d.items(), key=keys)
            else:
                known = set(keys)
                items = [(k, d[k]) for k in keys if k in d] + [(k, v) for k, v in d.items() if k not in known]
            d.clear()
            d.update(items)
        for fn in reversed(self._undo):
            fn()
