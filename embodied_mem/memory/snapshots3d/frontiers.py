"""A 2D occupancy / explored map and 3D-Mem's frontier detection on it.

The paper integrates every view into a TSDF (0.1 m voxels) and reads two slices of it: a
cell is *unoccupied* when the TSDF is free at 0.4 m and there is floor below, and *explored*
when a voxel above it was seen within ``explored_depth`` (1.7 m) through the lower middle
of the image. Our stand-in keeps the same two notions on a 2D grid of 0.1 m cells:

- occupancy evidence per cell, once per view: +3 when points between ``floor_height`` (0.05 m)
  and ``obstacle_max_height`` (1.8 m) land in it, else -1 when floor points land in it or a
  ray passes over it, clipped to [-8, 8]; occupied = evidence > 0, free = seen and not occupied.
  Rays run per image column from the camera to the farthest floor point before the column's
  nearest obstacle, and to that obstacle stopping a cell short;
- explored: cells such rays cross (or floor points land in) within ``explored_depth`` of the
  camera, plus cells within ``surrounding_explored_radius`` of the agent (``agent_step``). The
  public code's ``integrate`` takes image margins but never reads them, so by default every
  pixel counts; ``margin_h_ratio`` / ``margin_w_ratio`` > 0 keep only pixels below
  ``margin_h_ratio * H`` and at least ``margin_w_ratio * W`` from both sides (the config's window);
- only points within ``max_integrate_depth`` (3 m, the TSDF's ``max_dist``) are integrated,
  and of those only the ones within ``PLAN_REACH`` times that distance of the camera in plan
  (as points outside a TSDF volume: only a ray more than 60 degrees off the optical axis gets
  that far, so for ordinary cameras nothing is dropped); the grid grows to hold all of them.

Frontier cells follow ``update_frontier_map``: free cells on the agent's connected island
(the paper also adds the islands holding existing frontiers; we do not)
whose 8-neighbour count of unexplored cells is within [frontier_area_min, frontier_area_max]
(8..9: all neighbours unexplored); clusters are DBSCAN(eps 1 cell, min 2) components, i.e.
4-connected components of at least 2 cells (computed exactly with ``ndimage.label``); those
under ``min_frontier_area`` cells are dropped and those spanning more than
``max_frontier_angle_deg`` seen from the agent are split by k-means on the angle.

Cells are addressed by absolute integer indices ``floor(xy / resolution)``; the arrays grow
as the robot sees more, so nothing depends on knowing the house in advance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from embodied_mem.memory.snapshots3d.clustering import kmeans
from embodied_mem.memory.snapshots3d.state import (
    array,
    integer,
    number,
    refusing,
    vector,
)
from embodied_mem.types import Pose

EVIDENCE_HIT, EVIDENCE_PASS, EVIDENCE_LIMIT = 3, 1, 8
PLAN_REACH = 2.0  # points farther than this times max_integrate_depth from the camera (in plan) are not integrated
_FOUR = ndimage.generate_binary_structure(2, 1)
_EIGHT_NEIGHBOURS = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]])


class OccupancyMap:
    """Occupancy evidence, seen and explored flags on a growable grid of square cells."""

    def __init__(self, resolution: float = 0.1) -> None:
        self.resolution = resolution
        self.origin = np.zeros(2, dtype=np.int64)  # absolute cell index of array element [0, 0]
        self.evidence = np.zeros((0, 0), dtype=np.int8)
        self.known = np.zeros((0, 0), dtype=bool)
        self.explored = np.zeros((0, 0), dtype=bool)
        self.version = 0

    # ---------------------------------------------------------------- addressing
    @property
    def shape(self) -> tuple[int, int]:
        return self.evidence.shape

    def cell_of(self, xy: np.ndarray) -> np.ndarray:
        """Absolute integer cell(s) of world (x, y)."""
        return np.floor(np.asarray(xy, dtype=np.float64)[..., :2] / self.resolution).astype(np.int64)

    def local(self, cells: np.ndarray) -> np.ndarray:
        return np.asarray(cells, dtype=np.int64) - self.origin

    def center_of(self, local_cells: np.ndarray) -> np.ndarray:
        """World (x, y) of the centres of local cells (float cells allowed)."""
        return (np.asarray(local_cells, dtype=np.float64) + self.origin + 0.5) * self.resolution

    def inside(self, local_cells: np.ndarray) -> np.ndarray:
        local_cells = np.asarray(local_cells)
        return np.all((local_cells >= 0) & (local_cells < np.array(self.shape)), axis=-1)

    def ensure(self, low: np.ndarray, high: np.ndarray, pad: int = 20) -> None:
        """Grow the arrays so absolute cells ``low..high`` fit, with ``pad`` cells to spare."""
        low, high = np.asarray(low, dtype=np.int64), np.asarray(high, dtype=np.int64)
        if self.evidence.size == 0:
            new_low, new_high = low - pad, high + pad
        else:
            top = self.origin + np.array(self.shape) - 1
            if np.all(low >= self.origin) and np.all(high <= top):
                return
            new_low, new_high = np.minimum(self.origin, low - pad), np.maximum(top, high + pad)
        shape = tuple(int(v) for v in new_high - new_low + 1)
        offset = self.origin - new_low
        grids = []
        for old, dtype in ((self.evidence, np.int8), (self.known, bool), (self.explored, bool)):
            grid = np.zeros(shape, dtype=dtype)
            if old.size:
                grid[offset[0] : offset[0] + old.shape[0], offset[1] : offset[1] + old.shape[1]] = old
            grids.append(grid)
        self.evidence, self.known, self.explored = grids
        self.origin = new_low

    # ---------------------------------------------------------------- derived maps
    @property
    def occupied(self) -> np.ndarray:
        return self.evidence > 0

    @property
    def free(self) -> np.ndarray:
        return self.known & (self.evidence <= 0)

    def nbytes(self) -> int:
        return self.evidence.nbytes + self.known.nbytes + self.explored.nbytes

    # ---------------------------------------------------------------- all or nothing
    def mark(self) -> tuple:
        """A token for ``rollback``. ``integrate`` replaces the arrays rather than changing
        them in place, so the token holds the arrays themselves (no copy)."""
        return self.origin, self.evidence, self.known, self.explored, self.version

    def rollback(self, token: tuple) -> None:
        self.origin, self.evidence, self.known, self.explored, self.version = token

    # ---------------------------------------------------------------- checkpoints
    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        state = {"resolution": self.resolution, "version": self.version}
        return state, {"evidence": self.evidence, "known": self.known, "explored": self.explored, "origin": self.origin}

    @classmethod
    def from_state(cls, state: dict, arrays: dict[str, np.ndarray], resolution: float | None = None) -> OccupancyMap:
        """The map ``to_state`` described; ``ValueError`` on malformed data or another ``resolution``."""
        with refusing("occupancy map"):
            grid = cls(number(state["resolution"]))
            if grid.resolution <= 0 or (resolution is not None and not math.isclose(grid.resolution, resolution)):
                raise ValueError(f"grid resolution {grid.resolution} does not match {resolution}")
            evidence = array(arrays, "evidence", "i", 2)
            known, explored = array(arrays, "known", "b", 2), array(arrays, "explored", "b", 2)
            origin = array(arrays, "origin", "i", 1)
            if known.shape != evidence.shape or explored.shape != evidence.shape or origin.shape != (2,):
                raise ValueError("occupancy grids disagree in shape")
            if evidence.size and (evidence.min() < -EVIDENCE_LIMIT or evidence.max() > EVIDENCE_LIMIT):
                raise ValueError("occupancy evidence out of range")
            grid.evidence, grid.known, grid.explored = evidence.astype(np.int8), known.astype(bool), explored.astype(bool)
            grid.origin = origin.astype(np.int64)
            grid.version = integer(state["version"])
            return grid

    # ---------------------------------------------------------------- integration
    def integrate(self, view: ViewPoints, agent_xy: np.ndarray, config) -> None:
        """Fold one view into the map (see the module docstring for the rules)."""
        c = config
        res = self.resolution
        camera_xy = view.camera[:2]
        near = (view.depth <= c.max_integrate_depth) & (
            np.hypot(view.points[:, 0] - camera_xy[0], view.points[:, 1] - camera_xy[1]) <= PLAN_REACH * c.max_integrate_depth
        )
        points, rows, cols = view.points[near], view.rows[near], view.cols[near]
        reach = c.max_integrate_depth + 1.0
        low, high = np.minimum(camera_xy, agent_xy) - reach, np.maximum(camera_xy, agent_xy) + reach
        if len(points):  # every point and every ray (camera to point) falls inside the arrays
            low, high = np.minimum(low, points[:, :2].min(axis=0)), np.maximum(high, points[:, :2].max(axis=0))
        self.ensure(self.cell_of(low), self.cell_of(high))
        flat_size = self.evidence.size

        def flat(xy: np.ndarray) -> np.ndarray:
            local = self.local(self.cell_of(xy))
            return local[:, 0] * self.shape[1] + local[:, 1]

        z = points[:, 2]
        floor = z < c.floor_height
        obstacle = (z >= c.floor_height) & (z <= c.obstacle_max_height)
        hit = np.zeros(flat_size, dtype=bool)
        hit[flat(points[obstacle])] = True
        passed = np.zeros(flat_size, dtype=bool)
        passed[flat(points[floor])] = True
        explored = np.zeros(flat_size, dtype=bool)
        distance = np.hypot(points[:, 0] - camera_xy[0], points[:, 1] - camera_xy[1])
        margin_w = int(c.margin_w_ratio * view.width)
        window = (rows >= int(c.margin_h_ratio * view.height)) & (cols >= margin_w) & (cols < view.width - margin_w)
        explored[flat(points[floor & window & (distance <= c.explored_depth)])] = True

        # Rays over the floor, per image column: to the farthest floor point before the
        # column's nearest obstacle, and to that obstacle stopping a cell short (free); the
        # same two among the window's pixels, truncated at explored_depth (explored).
        stop = np.full(view.width, np.inf)
        np.minimum.at(stop, cols[obstacle], distance[obstacle])
        open_floor = floor & (distance < stop[cols])
        ends, carve, seen = [], [], []
        for subset, explores in ((np.ones(len(points), dtype=bool), False), (window, True)):
            for index, short in (
                (_column_extreme(cols, distance, open_floor & subset, view.width, largest=True), 0.0),
                (_column_extreme(cols, distance, obstacle & subset, view.width, largest=False), res),
            ):
                length = np.maximum(distance[index] - short, 0.0)
                ends.append(points[index, :2])
                carve.append(np.full(len(index), -1.0) if explores else length)
                seen.append(np.minimum(length, c.explored_depth) if explores else np.full(len(index), -1.0))
        ends, carve, seen = np.concatenate(ends), np.concatenate(carve), np.concatenate(seen)
        if len(ends):
            step = res / 2.0
            steps = np.arange(0.0, float(max(carve.max(), seen.max(), 0.0)) + step, step)
            direction = (ends - camera_xy) / np.maximum(np.linalg.norm(ends - camera_xy, axis=1), 1e-9)[:, None]
            samples = camera_xy + direction[:, None, :] * steps[None, :, None]  # (rays, steps, 2)
            cells = flat(samples.reshape(-1, 2)).reshape(len(ends), len(steps))
            passed[cells[steps[None, :] <= carve[:, None]]] = True
            explored[cells[steps[None, :] <= seen[:, None]]] = True
        # (new arrays, not changed in place: a frame that fails later puts the old ones back)
        self.explored = self.explored | explored.reshape(self.shape)

        evidence = self.evidence.astype(np.int16).ravel()
        evidence[hit] += EVIDENCE_HIT
        evidence[passed & ~hit] -= EVIDENCE_PASS
        self.evidence = np.clip(evidence, -EVIDENCE_LIMIT, EVIDENCE_LIMIT).astype(np.int8).reshape(self.shape)
        self.known = self.known | (hit | passed).reshape(self.shape)
        # Where the robot stands is free (the paper's init_points), and what is around it explored.
        self._disk(agent_xy, c.robot_radius, free=True)
        self._disk(agent_xy, c.surrounding_explored_radius, explored=True)
        self.version += 1

    def _disk(self, xy: np.ndarray, radius: float, free: bool = False, explored: bool = False) -> None:
        centre = self.local(self.cell_of(xy))
        span = math.ceil(radius / self.resolution)
        ii, jj = np.mgrid[-span : span + 1, -span : span + 1]
        inside = (ii**2 + jj**2) * self.resolution**2 <= radius**2
        cells = np.stack([ii[inside], jj[inside]], axis=1) + centre
        cells = cells[self.inside(cells)]
        if free:
            self.evidence[cells[:, 0], cells[:, 1]] = np.minimum(self.evidence[cells[:, 0], cells[:, 1]], -1)
            self.known[cells[:, 0], cells[:, 1]] = True
        if explored:
            self.explored[cells[:, 0], cells[:, 1]] = True

    def island(self, agent_xy: np.ndarray) -> np.ndarray:
        """Free cells 4-connected to the agent (or to the nearest free component), as the paper."""
        free = self.free
        labels, count = ndimage.label(free, structure=_FOUR)
        if count == 0:
            return np.zeros(self.shape, dtype=bool)
        here = self.local(self.cell_of(agent_xy))
        if self.inside(here) and labels[here[0], here[1]] > 0:
            return labels == labels[here[0], here[1]]
        cells = np.argwhere(labels > 0)
        nearest = cells[np.argmin(np.linalg.norm(cells - here, axis=1))]
        return labels == labels[nearest[0], nearest[1]]


def _column_extreme(cols: np.ndarray, values: np.ndarray, mask: np.ndarray, width: int, largest: bool) -> np.ndarray:
    """Index of the point with the largest (smallest) value in each image column, among ``mask``."""
    index = np.flatnonzero(mask)
    if len(index) == 0:
        return index
    best = np.full(width, -np.inf if largest else np.inf)
    (np.maximum if largest else np.minimum).at(best, cols[index], values[index])
    index = index[values[index] == best[cols[index]]]
    _, first = np.unique(cols[index], return_index=True)
    return index[first]


@dataclass
class ViewPoints:
    """The world points of one view's valid depth pixels, with their pixel coordinates."""

    points: np.ndarray  # (n, 3) world
    depth: np.ndarray  # (n,) metres along the optical axis
    rows: np.ndarray
    cols: np.ndarray
    camera: np.ndarray  # camera position (3,)
    height: int
    width: int


# ----------------------------------------------------------------------------------------
# Frontiers
# ----------------------------------------------------------------------------------------
@dataclass
class Frontier:
    """A frontier: a region of free, unexplored cells and the view that looked towards it."""

    frontier_id: int
    position: np.ndarray  # world (x, y) of the cell to head for
    orientation: np.ndarray  # unit (x, y): from the agent into the frontier
    cells: np.ndarray  # (n, 2) int64 absolute cells of the region
    frame_id: int  # frontier snapshot: the frame whose pose looked towards it
    pose: Pose  # the agent's position at that frame, turned to face the frontier
    stamp: float

    def nbytes(self) -> int:
        return self.cells.nbytes + 120


def angle_span(angles: np.ndarray) -> float:
    """Angular extent of a set of directions: 2 pi minus the largest gap (``get_angle_span``)."""
    ordered = np.sort(np.mod(angles, 2 * np.pi))
    gaps = np.diff(np.append(ordered, ordered[0] + 2 * np.pi))
    return float(2 * np.pi - gaps.max())


def unwrap_angles(angles: np.ndarray) -> np.ndarray:
    """Angles shifted so the largest gap sits at the +-pi seam (a deterministic ``get_warping_gap``)."""
    ordered = np.sort(np.mod(angles, 2 * np.pi))
    gaps = np.diff(np.append(ordered, ordered[0] + 2 * np.pi))
    start = ordered[(int(np.argmax(gaps)) + 1) % len(ordered)]  # first angle after the largest gap
    return start + np.mod(np.mod(angles, 2 * np.pi) - start, 2 * np.pi)


def frontier_regions(grid: OccupancyMap, agent_xy: np.ndarray, config) -> tuple[list[tuple[float, np.ndarray]], np.ndarray, np.ndarray]:
    """Frontier regions as (mean angle, local cells), plus the frontier and edge cell masks."""
    c = config
    island = grid.island(agent_xy)
    unexplored = (~grid.explored).astype(np.int32)
    neighbours = ndimage.convolve(unexplored, _EIGHT_NEIGHBOURS, mode="constant", cval=0)
    frontier = island & (neighbours >= c.frontier_area_min) & (neighbours <= c.frontier_area_max)
    edges = island & (neighbours >= c.frontier_edge_area_min) & (neighbours <= c.frontier_edge_area_max)
    labels, count = ndimage.label(frontier, structure=_FOUR)
    here = grid.local(grid.cell_of(agent_xy)).astype(np.float64)
    max_span = math.radians(c.max_frontier_angle_deg)
    regions: list[tuple[float, np.ndarray]] = []
    if count == 0:
        return regions, frontier, edges
    sizes = np.bincount(labels.ravel())
    cells_by_label = np.split(np.argwhere(labels > 0)[np.argsort(labels[labels > 0], kind="stable")], np.cumsum(sizes[1:])[:-1])
    for cells in cells_by_label:
        if len(cells) < max(2, c.min_frontier_area):  # DBSCAN noise (size 1) and small frontiers
            continue
        angles = np.arctan2(cells[:, 1] - here[1], cells[:, 0] - here[0])
        regions += _split_by_angle(cells, angles, max_span, c.min_frontier_area)
    return regions, frontier, edges


def _split_by_angle(cells: np.ndarray, angles: np.ndarray, max_span: float, min_area: int) -> list[tuple[float, np.ndarray]]:
    """Split a cluster seen over more than ``max_span`` into floor(span / max) + 1 angle groups.

    Departure: parts that still span too much are split again and parts under ``min_area``
    cells are dropped, so every kept frontier satisfies both limits.
    """
    span = angle_span(angles)
    unwrapped = unwrap_angles(angles)
    if span <= max_span:
        return [(float(np.angle(np.exp(1j * unwrapped.mean()))), cells)]
    parts = int(span / max_span) + 1
    labels = kmeans(unwrapped[:, None], parts, n_init=10, seed=0)
    out = []
    for label in range(parts):
        member = labels == label
        if np.count_nonzero(member) < min_area:
            continue
        if angle_span(angles[member]) > max_span and np.count_nonzero(member) < len(cells):
            out += _split_by_angle(cells[member], angles[member], max_span, min_area)
        elif angle_span(angles[member]) <= max_span:
            out.append((float(np.angle(np.exp(1j * unwrapped[member].mean()))), cells[member]))
    return out


class FrontierMap:
    """The current frontiers, kept across updates while their regions stay (almost) the same."""

    def __init__(self) -> None:
        self.frontiers: list[Frontier] = []
        self.next_id = 0

    def update(self, grid: OccupancyMap, agent_xy: np.ndarray, frame_id: int, stamp: float, config) -> None:
        regions, _, edges = frontier_regions(grid, agent_xy, config)
        here = grid.local(grid.cell_of(agent_xy)).astype(np.float64)
        region_of = np.zeros(grid.shape, dtype=np.int32)  # 1 + index of the new region holding a cell
        for index, (_, cells) in enumerate(regions):
            region_of[cells[:, 0], cells[:, 1]] = index + 1
        kept: list[Frontier] = []
        taken = set()
        for old in self.frontiers:  # the paper's "region unchanged" test: IoU > 0.95 and < 75 cells differ, or <= 3 differ
            local = grid.local(old.cells)
            local = local[grid.inside(local)]
            shared = np.bincount(region_of[local[:, 0], local[:, 1]], minlength=len(regions) + 1)[1:]
            if len(shared) == 0:
                continue
            index = int(np.argmax(shared))
            union = len(old.cells) + len(regions[index][1]) - shared[index]
            differ = union - shared[index]
            if index not in taken and ((shared[index] / union > config.region_equal_threshold and differ < 75) or differ <= 3):
                kept.append(old)
                taken.add(index)
        edge_cells = np.argwhere(edges)
        agent = np.asarray(agent_xy, dtype=np.float64)
        for index, (angle, cells) in enumerate(regions):
            if index in taken:
                continue
            direction = np.array([math.cos(angle), math.sin(angle)])
            xy = grid.center_of(_frontier_position(cells, edge_cells, here, direction))
            yaw = math.atan2(xy[1] - agent[1], xy[0] - agent[0])
            kept.append(
                Frontier(self.next_id, xy, direction, (grid.origin + cells).astype(np.int64), frame_id, Pose.from_xy_yaw(agent[0], agent[1], yaw), stamp)
            )
            self.next_id += 1
        self.frontiers = kept

    def nbytes(self) -> int:
        return sum(f.nbytes() for f in self.frontiers)

    def mark(self) -> tuple:
        """A token for ``rollback`` (``update`` replaces the list and never changes a frontier)."""
        return self.frontiers, self.next_id

    def rollback(self, token: tuple) -> None:
        self.frontiers, self.next_id = token

    # ---------------------------------------------------------------- checkpoints
    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        frontiers = self.frontiers
        state = {
            "frontiers": [
                {"id": f.frontier_id, "position": f.position.tolist(), "orientation": f.orientation.tolist(), "frame_id": f.frame_id, "pose": f.pose.to_dict(), "stamp": f.stamp}
                for f in frontiers
            ],
            "next_id": self.next_id,
        }
        arrays = {
            "sizes": np.array([len(f.cells) for f in frontiers], dtype=np.int64),
            "cells": np.concatenate([f.cells for f in frontiers] or [np.zeros((0, 2), np.int64)]).astype(np.int64),
        }
        return state, arrays

    @classmethod
    def from_state(cls, state: dict, arrays: dict[str, np.ndarray]) -> FrontierMap:
        """The frontiers ``to_state`` described; ``ValueError`` on malformed data."""
        with refusing("frontier map"):
            frontier_map = cls()
            sizes, cells = array(arrays, "sizes", "i", 1), array(arrays, "cells", "i", 2, 2)
            records = state["frontiers"]
            if not isinstance(records, list) or len(sizes) != len(records) or np.any(sizes <= 0) or int(sizes.sum()) != len(cells):
                raise ValueError("frontier arrays and records disagree in length")
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            for n, f in enumerate(records):
                orientation = vector(f["orientation"], 2)
                if not math.isclose(float(np.linalg.norm(orientation)), 1.0, abs_tol=1e-6):
                    raise ValueError("a frontier orientation is not a unit vector")
                frontier_map.frontiers.append(
                    Frontier(
                        integer(f["id"]), vector(f["position"], 2), orientation, cells[offsets[n] : offsets[n + 1]].astype(np.int64),
                        integer(f["frame_id"]), Pose.from_dict(f["pose"]), number(f["stamp"]),
                    )
                )
            ids = [f.frontier_id for f in frontier_map.frontiers]
            frontier_map.next_id = integer(state["next_id"])
            if len(set(ids)) != len(ids) or (ids and frontier_map.next_id <= max(ids)):
                raise ValueError("frontier ids repeat or reach the next id")
            return frontier_map


def _frontier_position(cells: np.ndarray, edge_cells: np.ndarray, here: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """``create_frontier``: among the edge cells with 2..12 region cells in their 5x5 block, the
    top 5 aligned with the frontier's direction, the one nearest the agent (all edge cells when
    none qualifies, the region's own cells when there is no edge cell)."""
    low = cells.min(axis=0) - 2
    region = np.zeros(tuple(cells.max(axis=0) - low + 3), dtype=np.int32)
    region[cells[:, 0] - low[0], cells[:, 1] - low[1]] = 1
    around = ndimage.convolve(region, np.ones((5, 5), dtype=np.int32), mode="constant")
    candidates = edge_cells
    if len(edge_cells):
        local = edge_cells - low
        inside = np.all((local >= 0) & (local < np.array(region.shape)), axis=1)
        counts = np.zeros(len(edge_cells), dtype=np.int32)
        counts[inside] = around[local[inside, 0], local[inside, 1]]
        touching = edge_cells[(counts >= 2) & (counts <= 12)]
        if len(touching):
            candidates = touching
    if len(candidates) == 0:
        candidates = cells
    offsets = candidates - here
    norms = np.linalg.norm(offsets, axis=1)
    cosines = (offsets @ direction) / np.where(norms == 0, np.inf, norms)
    top = candidates[np.argsort(-cosines, kind="stable")[:5]]
    return top[np.argmin(np.linalg.norm(top - here, axis=1))]
