"""FindingDory's success predicates and multi-goal rules, over any simulator that can answer
four questions (``SuccessOracle``): geodesic distance to an entity's goal cells, the bearing of
an entity from a pose, the fraction of the image it covers from that pose, and the room of a point.

FindingDory's rules, as this module applies them (``findingdory/config/task/pddl_domain_fp.yaml``,
``findingdory/task/pddl/pddl.py::is_robot_at_position``; all conditions ANDed):

=================== ================================================ ============ ==============
predicate           distance                                         angle (abs)  visibility
=================== ================================================ ============ ==============
robot_at_object     geodesic <= 2.0 m to the object's snapped        <= pi/4      >= 0.001
                    position
robot_at_receptacle geodesic <= 0.1 m to one of the receptacle's     <= pi/2      >= 0.001
                    sparse viewpoints (``view_points``)
robot_in_room       region membership                                -            -
=================== ================================================ ============ ==============

Visibility is the entity's pixels over the image's pixels; the angle is the entity's bearing
in the robot's base frame, projected to the floor. ``DTG`` and ``SEM_COV`` are FindingDory's
ablations ``high_level_dtg_success`` (visibility threshold 0) and
``high_level_sem_cov_success`` (distance thresholds 10000). Multi-goal semantics
(``evaluate_stops``) are ``AND_SEQUENTIAL`` / ``AND_SEQUENTIAL_ORDERED``; SPL is
``findingdory_spl``.

Ours, not FindingDory's: what the distances are measured to comes from the simulator. In the
embedded one (``EmbeddedEnv``) an object's snapped position is snapped within the object's own
room, receptacle viewpoints are built from its navigation grid (``sim/embedded/viewpoints.py``),
and geodesics are 8-connected grid distances instead of navmesh distances. There is no
manipulation mode, so no -pi/2 heading offset.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Protocol, Sequence

from embodied_mem.types import Pose


@dataclass(frozen=True)
class Thresholds:
    """The numbers of FindingDory's predicates (``pddl_domain_fp.yaml``)."""

    object_distance: float = 2.0  # metres, geodesic
    object_angle: float = math.pi / 4  # radians, absolute bearing
    receptacle_distance: float = 0.1
    receptacle_angle: float = math.pi / 2
    min_visibility: float = 0.001  # entity pixels / image pixels


DEFAULT = Thresholds()
DTG = replace(DEFAULT, min_visibility=0.0)  # high_level_dtg_success: distance and angle only
SEM_COV = replace(DEFAULT, object_distance=10000.0, receptacle_distance=10000.0)  # high_level_sem_cov_success

# The defaults under their old names.
OBJECT_DISTANCE = DEFAULT.object_distance
OBJECT_ANGLE = DEFAULT.object_angle
RECEPTACLE_DISTANCE = DEFAULT.receptacle_distance
RECEPTACLE_ANGLE = DEFAULT.receptacle_angle
MIN_VISIBILITY = DEFAULT.min_visibility


class SuccessOracle(Protocol):
    def geodesic_to_entity(self, xy, entity_id: int) -> float: ...

    def bearing(self, pose: Pose, entity_id: int) -> float: ...

    def visible_fraction(self, pose: Pose, entity_id: int) -> float: ...

    def room_of(self, xy) -> str | None: ...


@dataclass
class TargetGoal:
    """One goal of a task: any of ``entity_ids`` (or of ``rooms``) satisfies it."""

    kind: str  # "object" | "receptacle" | "room"
    entity_ids: list[int] = field(default_factory=list)
    rooms: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "entity_ids": list(self.entity_ids), "rooms": list(self.rooms)}


def entity_satisfied(oracle: SuccessOracle, kind: str, entity_id: int, pose: Pose, thresholds: Thresholds = DEFAULT) -> bool:
    """``robot_at_object`` (kind "object") or ``robot_at_receptacle`` for one entity."""
    if kind == "object":
        distance, angle = thresholds.object_distance, thresholds.object_angle
    else:
        distance, angle = thresholds.receptacle_distance, thresholds.receptacle_angle
    # Cheapest checks first: the render is the expensive one.
    if oracle.bearing(pose, entity_id) > angle:
        return False
    if oracle.geodesic_to_entity(pose.position[:2], entity_id) > distance:
        return False
    if thresholds.min_visibility <= 0.0:  # DTG: any visibility passes, so do not render
        return True
    return oracle.visible_fraction(pose, entity_id) >= thresholds.min_visibility


def goal_satisfied(oracle: SuccessOracle, goal: TargetGoal, pose: Pose, thresholds: Thresholds = DEFAULT) -> bool:
    if goal.kind == "room":
        return oracle.room_of(pose.position[:2]) in goal.rooms
    return any(entity_satisfied(oracle, goal.kind, entity_id, pose, thresholds) for entity_id in goal.entity_ids)


def evaluate_stops(
    oracle: SuccessOracle, goals: Sequence[TargetGoal], ordered: bool, stops: Sequence[Pose], thresholds: Thresholds = DEFAULT
) -> bool:
    """FindingDory's sequential semantics over the agent's stops.

    Every stop must satisfy a goal not yet satisfied, else the episode fails for good; with
    ``ordered`` it must be the next goal in the list. Success: every goal satisfied.
    """
    done = [False] * len(goals)
    for pose in stops:
        satisfied = [not done[i] and goal_satisfied(oracle, goal, pose, thresholds) for i, goal in enumerate(goals)]
        if not any(satisfied):
            return False
        if ordered:
            following = done.index(False)
            if not satisfied[following]:
                return False  # a later goal first, or none: permanently false
            done[following] = True
        else:
            done[satisfied.index(True)] = True
        if all(done):
            return True
    return all(done)


def spl(success: bool, shortest: float, actual: float) -> float:
    """Success weighted by path length: S * shortest / max(shortest, actual)."""
    if not success or not math.isfinite(shortest):
        return 0.0
    if shortest <= 0:
        return 1.0
    return shortest / max(shortest, actual)


def shortest_multi_goal(distance_between, start, goal_points: Sequence[Sequence], ordered: bool) -> float:
    """Shortest tour visiting one point of each goal (in order if ``ordered``).

    ``goal_points[i]`` are candidate points of goal i; ``distance_between(a, b)`` is geodesic.
    Brute force over orders for up to 6 goals (as FindingDory), greedy beyond.
    """
    count = len(goal_points)
    if count == 0:
        return 0.0
    orders = [tuple(range(count))] if ordered else (itertools.permutations(range(count)) if count <= 6 else [None])
    best = math.inf
    for order in orders:
        if order is None:
            order = _greedy_order(distance_between, start, goal_points)
        best = min(best, _tour(distance_between, start, [goal_points[i] for i in order]))
    return best


def _tour(distance_between, start, sequence) -> float:
    # Dynamic programming over the candidate points of consecutive goals.
    previous = [start]
    cost_at = [0.0]
    for points in sequence:
        new_costs = []
        for point in points:
            new_costs.append(min(c + distance_between(p, point) for p, c in zip(previous, cost_at)))
        previous, cost_at = list(points), new_costs
    return min(cost_at) if cost_at else math.inf


def _greedy_order(distance_between, start, goal_points):
    remaining, order, here = set(range(len(goal_points))), [], start
    while remaining:
        nxt = min(remaining, key=lambda i: min(distance_between(here, p) for p in goal_points[i]))
        order.append(nxt)
        remaining.remove(nxt)
        here = goal_points[nxt][0]
    return tuple(order)
