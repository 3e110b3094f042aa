"""Floor plans of embedded homes for pictures (matplotlib, world x/y in metres)."""

from __future__ import annotations

import matplotlib.patches as patches
import numpy as np

from embodied_mem.sim.embedded.catalog import COLORS
from embodied_mem.sim.embedded.world import World, WorldState


def draw_floor_plan(ax, world: World, state: WorldState | None = None, labels: bool = True) -> None:
    """Rooms (named), walls, receptacles and, with ``state``, objects where they rest."""
    for room in world.rooms:
        ax.add_patch(patches.Rectangle((room.x0, room.y0), room.x1 - room.x0, room.y1 - room.y0, color="#f4f1ea", zorder=0))
        if labels:
            ax.text(room.x0 + 0.15, room.y1 - 0.2, room.name.replace("_", " "), fontsize=8, color="#777", va="top", zorder=1)
    for wall in world.walls:
        lo, size = wall.min_corner[:2], wall.size[:2]
        ax.add_patch(patches.Rectangle(lo, size[0], size[1], color="#333", zorder=2))
    for receptacle in world.receptacles.values():
        lo, size = receptacle.box.min_corner[:2], receptacle.box.size[:2]
        ax.add_patch(patches.Rectangle(lo, size[0], size[1], facecolor="#d9cbb3", edgecolor="#8a7a5c", linewidth=0.6, zorder=2))
        if labels:
            center = receptacle.box.center[:2]
            ax.text(center[0], center[1], receptacle.kind.replace("_", " "), fontsize=5, ha="center", va="center", color="#5a4a30", zorder=3)
    if state is not None:
        for entity_id, placement in state.placements.items():
            color = COLORS[world.objects[entity_id].color]
            ax.scatter(*placement.position[:2], s=12, color=color, edgecolors="k", linewidths=0.3, zorder=4)
    x0, y0, x1, y1 = world.bounds
    ax.set_xlim(x0 - 0.3, x1 + 0.3)
    ax.set_ylim(y0 - 0.3, y1 + 0.3)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")


def draw_trajectory(ax, poses: list, color: str = "#3b7dd8") -> None:
    if poses:
        xy = np.array([p.position[:2] for p in poses])
        ax.plot(xy[:, 0], xy[:, 1], color=color, linewidth=0.5, alpha=0.4, zorder=3)
