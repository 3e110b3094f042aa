"""Sparse receptacle viewpoints, as FindingDory's episodes carry them.

A FindingDory receptacle goal lists ``view_points``: rows of (position, quaternion, iou), poses
near the receptacle from which it is visible. ``robot_at_receptacle`` holds within 0.1 m
(geodesic) of one of them, so the set must be *sparse*: a dense band of cells around the
furniture would let any stop near it pass.

Here a receptacle's viewpoints are built from the navigation grid:

1. candidates: navigable cells in the receptacle's own room (no viewpoint looks through a
   wall) whose gap to the receptacle's footprint is ``MIN_GAP``..``MAX_GAP``;
2. thinned by farthest-point sampling to at most ``MAX_CANDIDATES`` cells at least
   ``SPACING`` apart, so they spread around the receptacle like a lattice;
3. each faces the receptacle's centre and is kept only if a render from there shows at least
   ``MIN_PIXELS`` pixels of the receptacle, and never fewer than ``robot_at_receptacle``'s
   visibility needs, so the predicate holds at every viewpoint facing its receptacle
   (FindingDory's iou column plays this role); until ``MAX_VIEWPOINTS`` are kept.

The render is of the home without its small objects, so a receptacle's viewpoints do not
depend on where the objects happen to be when they are first asked for (FindingDory's are
precomputed with the dataset, also independent of the rearrangements).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from embodied_mem.sim.embedded.render import Renderer
from embodied_mem.sim.embedded.world import WorldState
from embodied_mem.sim.tasks.success import MIN_VISIBILITY
from embodied_mem.types import Pose

if TYPE_CHECKING:
    from embodied_mem.sim.embedded.env import EmbeddedEnv

MIN_GAP = 0.3  # metres from the footprint: closer than this the head camera sees little of it
MAX_GAP = 1.0
PREFERRED_GAP = 0.6  # where the thinning starts: a comfortable manipulation standoff
SPACING = 0.3  # metres between viewpoints
MAX_CANDIDATES = 24  # renders tried per receptacle
MAX_VIEWPOINTS = 16
MIN_PIXELS = 50  # receptacle pixels in the env camera's image for a viewpoint to count


@dataclass(frozen=True)
class Viewpoint:
    cell: tuple[int, int]  # navigation-grid cell; the pose stands on its centre
    pose: Pose  # facing the receptacle's centre
    pixels: int  # receptacle pixels seen from ``pose``


def compute_viewpoints(env: "EmbeddedEnv", receptacle_id: int, renderer: Renderer) -> list[Viewpoint]:
    """The sparse viewpoints of one receptacle (``renderer`` draws the home without objects)."""
    receptacle = env.world.receptacles[receptacle_id]
    box = receptacle.box
    grid = env.grid
    cells = grid.cells_near_box(box, MAX_GAP)
    if len(cells) == 0:
        return []
    centers = grid.spec.centers(cells)
    lo, hi = box.min_corner[:2], box.max_corner[:2]
    gap = np.linalg.norm(np.maximum(0.0, np.maximum(lo - centers, centers - hi)), axis=1)
    room = [r.name for r in env.world.rooms].index(receptacle.room)
    keep = (gap >= MIN_GAP) & (env.room_grid[cells[:, 0], cells[:, 1]] == room)
    cells, centers, gap = cells[keep], centers[keep], gap[keep]
    target = box.center[:2]
    needed = max(MIN_PIXELS, math.ceil(MIN_VISIBILITY * env.camera.width * env.camera.height))
    empty = WorldState({})
    viewpoints = []
    for index in _spread(centers, gap):
        xy = centers[index]
        yaw = math.atan2(float(target[1] - xy[1]), float(target[0] - xy[0]))
        pose = Pose.from_xy_yaw(float(xy[0]), float(xy[1]), yaw)
        pixels = int(np.count_nonzero(renderer.render(empty, pose).instances == receptacle_id))
        if pixels >= needed:
            viewpoints.append(Viewpoint((int(cells[index][0]), int(cells[index][1])), pose, pixels))
            if len(viewpoints) == MAX_VIEWPOINTS:
                break
    return viewpoints


def _spread(centers: np.ndarray, gap: np.ndarray) -> list[int]:
    """Farthest-point sampling: indices of at most ``MAX_CANDIDATES`` points >= ``SPACING`` apart.

    Starts from the point nearest the preferred standoff (the first such in grid order, so it
    is deterministic), then repeatedly adds the point farthest from all chosen ones.
    """
    if len(centers) == 0:
        return []
    chosen = [int(np.argmin(np.abs(gap - PREFERRED_GAP)))]
    nearest = np.linalg.norm(centers - centers[chosen[0]], axis=1)
    while len(chosen) < MAX_CANDIDATES:
        candidate = int(np.argmax(nearest))
        if nearest[candidate] < SPACING:
            break
        chosen.append(candidate)
        nearest = np.minimum(nearest, np.linalg.norm(centers - centers[candidate], axis=1))
    return chosen
