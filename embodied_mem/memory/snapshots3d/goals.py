"""Where to stand to look at a snapshot's objects (``set_next_navigation_point`` of 3D-Mem).

- One object: ``get_proper_observe_point``: the free cells within ``distance`` of the object,
  their largest connected cluster gives the open side; the goal is ``distance`` from the
  object on that side (towards the agent when the object stands in the open).
- Two or more: ``get_proper_snapshot_observation_point``: along the short PCA axis of the
  object centres, on the side of the snapshot's observation point, a free cell at
  ``distance`` +- one cell with a clear line of sight to the objects; else the observation point.

"Free" is our own occupancy map's free cells with at least ``clearance`` to the nearest
occupied cell (the paper uses the bare TSDF "unoccupied" slice). Departure: for one object
the candidates near the ideal point are also checked for a line of sight, the same test the
paper applies to groups, so a goal never lands behind a wall.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from embodied_mem.memory.snapshots3d.frontiers import OccupancyMap

_FOUR = ndimage.generate_binary_structure(2, 1)
MAX_CANDIDATES = 60


def standable(grid: OccupancyMap, clearance: float) -> np.ndarray:
    """Free cells at least ``clearance`` metres from every occupied cell."""
    free = grid.free
    if not np.any(grid.occupied):
        return free
    distance = ndimage.distance_transform_edt(~grid.occupied) * grid.resolution
    return free & (distance >= clearance)


def stand_cells(stand: np.ndarray) -> np.ndarray:
    """Centres of the standable cells, in local cell units (cell i spans [i, i + 1))."""
    return np.argwhere(stand) + 0.5


def first_k(values: np.ndarray, k: int) -> np.ndarray:
    """``np.argsort(values, kind="stable")[:k]`` in O(n): the k smallest, ties by index."""
    if len(values) <= k:
        return np.argsort(values, kind="stable")
    threshold = np.partition(values, k - 1)[k - 1]
    index = np.flatnonzero(values <= threshold)
    return index[np.argsort(values[index], kind="stable")][:k]


def observe_point_single(
    grid: OccupancyMap, stand: np.ndarray, target_xy: np.ndarray, agent_xy: np.ndarray, distance: float, cells: np.ndarray | None = None
) -> np.ndarray | None:
    """World (x, y) from which to look at one object, or None when nothing around is free.

    ``cells``: ``stand_cells(stand)``, when the caller keeps it.
    """
    point = _to_local(grid, target_xy)
    dist = distance / grid.resolution
    cells = stand_cells(stand) if cells is None else cells
    if len(cells) == 0:
        return None
    offsets = np.linalg.norm(cells - point, axis=1)
    nearby = cells[offsets < dist]
    direction = None
    if len(nearby):
        index = nearby.astype(np.int64)
        low = index.min(axis=0)
        window = index - low  # label only the window holding them: the same components
        labels, _ = ndimage.label(_mask(tuple(window.max(axis=0) + 1), window), structure=_FOUR)
        own = labels[window[:, 0], window[:, 1]]
        sizes = np.bincount(own)
        sizes[0] = 0
        largest = nearby[own == int(np.argmax(sizes))]
        direction = largest.mean(axis=0) - point
    if direction is None or np.linalg.norm(direction) < 1e-3:
        direction = _to_local(grid, agent_xy) - point
    if np.linalg.norm(direction) < 1e-3:
        direction = np.array([1.0, 0.0])
    ideal = point + direction / np.linalg.norm(direction) * dist
    order = first_k(np.linalg.norm(cells - ideal, axis=1), MAX_CANDIDATES)
    for index in order:
        if line_of_sight(grid, cells[index], point, dist):
            return _to_world(grid, cells[index])
    return _to_world(grid, cells[order[0]])


def observe_point_group(
    grid: OccupancyMap, stand: np.ndarray, centres_xy: np.ndarray, obs_xy: np.ndarray, distance: float, cells: np.ndarray | None = None
) -> np.ndarray:
    """World (x, y) from which to look at a snapshot's objects (its observation point as fallback).

    ``cells``: ``stand_cells(stand)``, when the caller keeps it.
    """
    cells = stand_cells(stand) if cells is None else cells
    centres = np.array([_to_local(grid, c) for c in centres_xy])
    centres = np.unique(np.floor(centres), axis=0) + 0.5  # the paper deduplicates voxel centres
    if len(centres) == 1:
        single = observe_point_single(grid, stand, _to_world(grid, centres[0]), obs_xy, distance, cells)
        return np.asarray(obs_xy, dtype=np.float64)[:2] if single is None else single
    centre = centres.mean(axis=0)
    if len(centres) == 2:
        long_axis = centres[1] - centres[0]
        long_axis /= np.linalg.norm(long_axis)
        short_axis = np.array([-long_axis[1], long_axis[0]])
    else:
        values, vectors = np.linalg.eigh(np.cov((centres - centre).T))
        long_axis, short_axis = vectors[:, int(np.argmax(values))], vectors[:, int(np.argmin(values))]
        if values.min() < 1e-3:  # the centres are on a line
            short_axis = np.array([-long_axis[1], long_axis[0]])
        short_axis = short_axis / np.linalg.norm(short_axis)
    if np.dot(centre - _to_local(grid, obs_xy), short_axis) < 0:
        short_axis = -short_axis
    dist = distance / grid.resolution
    offsets = cells - centre
    norms = np.linalg.norm(offsets, axis=1)
    ring = (norms > dist - 1) & (norms < dist + 1)
    cells, offsets, norms = cells[ring], offsets[ring], norms[ring]
    # most opposite to the short axis first: the side the snapshot was taken from
    order = np.argsort((offsets @ short_axis) / np.maximum(norms, 1e-9), kind="stable")[:MAX_CANDIDATES]
    for index in order:
        if line_of_sight(grid, cells[index], centre, dist + 1):
            return _to_world(grid, cells[index])
    return np.asarray(obs_xy, dtype=np.float64)[:2]


def line_of_sight(grid: OccupancyMap, start: np.ndarray, target: np.ndarray, max_steps: float) -> bool:
    """Free cells all the way from ``start`` to ``target`` (local cells), after stepping back
    from the target towards ``start`` until free (objects sit on occupied furniture)."""
    free = grid.free
    direction = start - target
    length = float(np.linalg.norm(direction))
    if length < 1e-9:
        return True
    direction /= length
    end = target.copy()
    steps = 0
    while not _free_at(free, end):
        end = end + direction
        steps += 1
        if steps > 2 * max_steps or not _inside(free.shape, end):
            return False
    samples = math.ceil(np.linalg.norm(start - end) * 2) + 1
    for t in np.linspace(0.0, 1.0, samples):
        if not _free_at(free, end + (start - end) * t):
            return False
    return True


def _to_local(grid: OccupancyMap, xy: np.ndarray) -> np.ndarray:
    """World (x, y) -> continuous local cell coordinates (cell i spans [i, i + 1))."""
    return np.asarray(xy, dtype=np.float64)[:2] / grid.resolution - grid.origin


def _to_world(grid: OccupancyMap, local: np.ndarray) -> np.ndarray:
    return (np.asarray(local, dtype=np.float64) + grid.origin) * grid.resolution


def _inside(shape, point: np.ndarray) -> bool:
    return 0 <= point[0] < shape[0] and 0 <= point[1] < shape[1]


def _free_at(free: np.ndarray, point: np.ndarray) -> bool:
    return _inside(free.shape, point) and bool(free[int(point[0]), int(point[1])])


def _mask(shape, cells: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[cells[:, 0], cells[:, 1]] = True
    return mask
