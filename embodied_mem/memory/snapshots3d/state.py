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
