"""The structured query language of the ``oracle`` track, and the shared reasoner for it.

A task's ``constraints`` (``Query.constraints``) is::

    {"goals": [Goal, ...], "ordered": bool}

one goal for single-goal tasks; ``ordered`` says whether a multi-goal task must visit its
goals in the listed order. A ``Goal`` is a dict:

=============  ===================================================================
``target``     "object" | "receptacle" | "room"
``day``        the history day the instruction refers to, or None for any day
``category``   the target's category ("mug", "table"), or None
``attributes`` the target's attributes, e.g. {"color": "red"}
``interacted`` True / False: touched (picked or placed) on ``day``; None: either
``role``       receptacle targets: "start" (picked from) or "goal" (placed on);
               object targets with ``related``: the role of the related receptacle
``related``    {"category", "attributes"} of the other party of the interaction:
               the object, for receptacle targets; the receptacle, for object targets
``select``     how to pick among the interactions / entities (below), or None
=============  ===================================================================

``select`` is one of ``{"by": "order", "index": i}`` (i-th interaction, -1 = last),
``{"by": "after"|"before", "object": {...}}`` (the interaction right after / before the
one of that object), ``{"by": "time", "minute": m}`` (minute of the day inside an
interaction), ``{"by": "duration", "extreme": "longest"|"shortest"}`` or
``{"by": "duration", "seconds": s}``, ``{"by": "farthest"}`` (farthest from the robot now),
``{"by": "room", "property": "initial"|"final"|"longest_time"|"visited"|"not_visited"}``, and
``{"by": "object_room", "object": {...}, "when": "initial"|"final"}``.

The reasoner here is deterministic and the same for every system: it reads a system's
``diary`` (what the robot did) and ``catalog()`` (what the system believes exists, and
where), turns each goal into the set of entities or rooms that satisfy it, and asks the
system's ``locate`` for hits. A system that forgot an entity, or keeps it in the wrong
place, answers worse; that is the point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from embodied_mem.constraints import GOAL_KEYS, ROLES, ROOM_PROPERTIES, SELECTORS, TARGETS, validate_constraints  # noqa: F401 (re-exported)
from embodied_mem.memory.base import ActionDiary, Entity, Interaction, RoomStay, matches
from embodied_mem.types import Hit, Pose, Query


@dataclass
class ResolvedGoal:
    """The entities (or rooms) that satisfy one goal, as far as a memory can tell."""

    index: int
    target: str
    entity_ids: list[int] = field(default_factory=list)
    rooms: list[RoomStay] = field(default_factory=list)
    # Where the diary saw the robot interact with each entity (receptacle viewpoints).
    interaction_poses: dict[int, list[tuple[Pose, int, float]]] = field(default_factory=dict)
    spec: dict = field(default_factory=dict)


def room_hits(goal: ResolvedGoal, system: str) -> list[Hit]:
    """A room goal's answer, the same for every memory: the frame each matching room stay began
    with, ranked in the order the reasoner resolved them."""
    return [
        Hit(stay.frame_id, stay.start, stay.pose, None, None, 1.0 / (rank + 1), system, {"room": stay.room})
        for rank, stay in enumerate(goal.rooms)
    ]


class Structured(Protocol):
    """What the reasoner needs from a memory system."""

    name: str
    diary: ActionDiary

    def catalog(self) -> list[Entity]: ...

    def locate(self, goal: ResolvedGoal, query: Query) -> list[Hit]: ...

    # Optional: ``distance_from(near) -> f(xy) -> metres``, the system's own notion of travel
    # distance (for "farthest" tasks); straight-line distance when a system has none.


def recall_structured(system: Structured, query: Query, catalog: list[Entity] | None = None) -> list[Hit]:
    """Answer ``query.constraints`` from a system's diary, catalog and locate.

    ``catalog``: the system's entities as it keeps them, when it has them at hand (read, never
    changed here); else ``system.catalog()``, which hands out copies.
    """
    query.validate()
    goals = validate_constraints(query.constraints)
    catalog = system.catalog() if catalog is None else catalog
    # The free-space distance field is built once per query, and only when a goal asks for "farthest".
    wants_distance = any((goal.get("select") or {}).get("by") == "farthest" for goal in goals)
    distance = None
    if wants_distance and hasattr(system, "distance_from") and query.near is not None:
        distance = system.distance_from(query.near)
    hits: list[Hit] = []
    for index, spec in enumerate(goals):
        goal = resolve_goal(index, spec, system.diary, catalog, query.near, distance)
        for rank, hit in enumerate(system.locate(goal, query)[: query.k]):
            hit.evidence["goal_index"] = index
            hit.evidence.setdefault("rank", rank)
            hits.append(hit)
    return hits


def resolve_goal(index: int, spec: dict, diary: ActionDiary, catalog: list[Entity], near: Pose | None, distance=None) -> ResolvedGoal:
    if spec["target"] == "room":
        return ResolvedGoal(index, "room", rooms=_resolve_rooms(spec, diary), spec=spec)
    interactions = diary.interactions(spec.get("day"))
    goal = ResolvedGoal(index, spec["target"], spec=spec)
    uses_interactions = bool(spec.get("select")) and spec["select"]["by"] not in ("farthest",)
    if spec.get("interacted") or spec.get("role") or spec.get("related") or uses_interactions:
        chosen = _select_interactions(spec, interactions)
        goal.entity_ids = _entities_of(spec, chosen)
        select = spec.get("select") or {}
        if select.get("by") == "time" and spec["target"] == "receptacle":
            goal.entity_ids = _receptacles_at_minute(chosen, int(select["minute"]))
        goal.interaction_poses = _interaction_poses(spec, chosen)
    else:
        entities = [e for e in catalog if e.kind == spec["target"] and matches(e.category, e.attributes, spec)]
        if spec.get("interacted") is False:
            touched = diary.touched(spec.get("day"))
            entities = [e for e in entities if e.entity_id not in touched]
        goal.entity_ids = [e.entity_id for e in entities]
    select = spec.get("select") or {}
    if select.get("by") == "farthest":
        goal.entity_ids = _farthest(goal.entity_ids, catalog, goal.interaction_poses, near, distance)
    return goal


# ----------------------------------------------------------------------------------------
def _select_interactions(spec: dict, interactions: list[Interaction]) -> list[Interaction]:
    """The interactions a goal points at (before mapping them to objects or receptacles)."""
    target, role = spec["target"], spec.get("role")
    chosen = list(interactions)
    if target == "object":
        chosen = [i for i in chosen if matches(i.pick.object_category, i.pick.object_attributes, spec)]
        related = spec.get("related")
        if related:
            chosen = [i for i in chosen if _receptacle_matches(i, role or "start", related)]
    else:
        chosen = [i for i in chosen if _receptacle_of(i, role) is not None]
        chosen = [i for i in chosen if any(matches(c, a, spec) for c, a in _receptacle_labels(i, role))]
        related = spec.get("related")
        if related:
            chosen = [i for i in chosen if matches(i.pick.object_category, i.pick.object_attributes, related)]
    select = spec.get("select") or {}
    by = select.get("by")
    if by == "order":
        position = int(select["index"])
        return [chosen[position]] if -len(chosen) <= position < len(chosen) else []
    if by in ("after", "before"):
        anchor = [n for n, i in enumerate(interactions) if matches(i.pick.object_category, i.pick.object_attributes, select["object"])]
        step = 1 if by == "after" else -1
        picked = [interactions[n + step] for n in anchor if 0 <= n + step < len(interactions)]
        return [i for i in picked if i in chosen]
    if by == "time":
        return _at_minute(chosen, int(select["minute"]), target)
    if by == "duration":
        if not chosen:
            return []
        if "seconds" in select:
            tolerance = float(select.get("tolerance", 10.0))
            return [i for i in chosen if abs(i.duration - float(select["seconds"])) <= tolerance]
        pick = max if select["extreme"] == "longest" else min
        best = pick(i.duration for i in chosen)
        return [i for i in chosen if math.isclose(i.duration, best)]
    return chosen


def _at_minute(chosen: list[Interaction], minute: int, target: str) -> list[Interaction]:
    """Interactions going on during that minute of the day (objects: pick..place; receptacles: the event)."""
    start_s, end_s = minute * 60.0, minute * 60.0 + 60.0

    def second_of_day(stamp: float) -> float:
        return stamp % 86400.0

    if target == "object":
        return [i for i in chosen if second_of_day(i.pick.stamp) < end_s and second_of_day(i.place.stamp) >= start_s]
    return [i for i in chosen if any(start_s <= second_of_day(e.stamp) < end_s for e in (i.pick, i.place))]


def _receptacles_at_minute(chosen: list[Interaction], minute: int) -> list[int]:
    """Receptacles whose own pick or place happened during that minute."""
    start_s, end_s = minute * 60.0, minute * 60.0 + 60.0
    ids = [e.receptacle_id for i in chosen for e in (i.pick, i.place) if e.receptacle_id is not None and start_s <= e.stamp % 86400.0 < end_s]
    return list(dict.fromkeys(ids))


def _receptacle_of(interaction: Interaction, role: str | None) -> int | None:
    if role == "goal":
        return interaction.place.receptacle_id
    if role == "start":
        return interaction.pick.receptacle_id
    return interaction.pick.receptacle_id if interaction.pick.receptacle_id is not None else interaction.place.receptacle_id


def _receptacle_labels(interaction: Interaction, role: str | None):
    entries = {"start": [interaction.pick], "goal": [interaction.place]}.get(role, [interaction.pick, interaction.place])
    return [(e.receptacle_category, e.receptacle_attributes) for e in entries]


def _receptacle_matches(interaction: Interaction, role: str, wanted: dict) -> bool:
    entry = interaction.pick if role == "start" else interaction.place
    return matches(entry.receptacle_category, entry.receptacle_attributes, wanted)


def _entities_of(spec: dict, chosen: list[Interaction]) -> list[int]:
    if spec["target"] == "object":
        ids = [i.object_id for i in chosen if i.object_id is not None]  # None: the memory could not tell what it moved
    else:
        role = spec.get("role")
        ids = []
        for i in chosen:
            entries = {"start": [i.pick], "goal": [i.place]}.get(role, [i.pick, i.place])
            ids += [e.receptacle_id for e in entries if e.receptacle_id is not None and matches(e.receptacle_category, e.receptacle_attributes, spec)]
    return list(dict.fromkeys(ids))


def _interaction_poses(spec: dict, chosen: list[Interaction]) -> dict[int, list[tuple[Pose, int, float]]]:
    """Receptacle id -> poses the robot held while picking from / placing on it."""
    poses: dict[int, list[tuple[Pose, int, float]]] = {}
    for i in chosen:
        for entry in (i.pick, i.place):
            if entry.receptacle_id is not None:
                poses.setdefault(entry.receptacle_id, []).append((entry.pose, entry.frame_id, entry.stamp))
    return poses


def _farthest(ids: list[int], catalog: list[Entity], interaction_poses: dict, near: Pose | None, distance=None) -> list[int]:
    if near is None or not ids:
        return ids
    if distance is None:
        distance = lambda xy: float(np.linalg.norm(np.asarray(xy)[:2] - near.position[:2]))  # noqa: E731
    # FindingDory measures to an entity's nearest viewpoint, so measure to its nearest seen point.
    wanted = set(ids)  # (only the candidates: the catalog of a lifelong memory is long)
    positions = {e.entity_id: e.nearest_point(near.position) for e in catalog if e.entity_id in wanted}
    for entity_id, poses in interaction_poses.items():
        positions.setdefault(entity_id, poses[-1][0].position[:2])
    known = [i for i in ids if i in positions]
    if not known:
        return []
    distances = [distance(positions[i]) for i in known]
    return [known[int(np.argmax(distances))]]


# ----------------------------------------------------------------------------------------
def _resolve_rooms(spec: dict, diary: ActionDiary) -> list[RoomStay]:
    day = spec.get("day")
    stays = [s for s in diary.stays if day is None or s.day == day]
    select = spec.get("select") or {}
    by, prop = select.get("by"), select.get("property")
    if by == "object_room":
        return _object_room(diary, select, day)
    if prop == "initial":
        return stays[:1]
    if prop == "final":
        return stays[-1:]
    if prop == "longest_time":
        totals: dict[str, float] = {}
        for stay in stays:
            totals[stay.room] = totals.get(stay.room, 0.0) + (stay.end - stay.start)
        if not totals:
            return []
        best = max(totals.values())
        return _one_stay_per_room([s for s in stays if math.isclose(totals[s.room], best)])
    if prop == "not_visited":
        visited = {s.room for s in stays}
        others = [s for s in diary.stays if s.room not in visited]
        return _one_stay_per_room(others)
    return _one_stay_per_room(stays)


def _one_stay_per_room(stays: list[RoomStay]) -> list[RoomStay]:
    """The longest stay of each room, longest first."""
    best: dict[str, RoomStay] = {}
    for stay in stays:
        if stay.room not in best or (stay.end - stay.start) > (best[stay.room].end - best[stay.room].start):
            best[stay.room] = stay
    return sorted(best.values(), key=lambda s: s.start - s.end)


def _object_room(diary: ActionDiary, select: dict, day: int | None) -> list[RoomStay]:
    wanted = select.get("object") or {}
    entries = [
        i.pick if select.get("when", "initial") == "initial" else i.place
        for i in diary.interactions(day)
        if matches(i.pick.object_category, i.pick.object_attributes, wanted)
    ]
    rooms = {e.room for e in entries if e.room}
    stays = [s for s in diary.stays if s.room in rooms]
    return _one_stay_per_room(stays)
