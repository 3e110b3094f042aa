"""The entities of a FindingDory episode and their PDDL properties, as its task registers them
after the history (``FindingDoryTask._setup_pddl_entities``, ``_update_goal_expr_for_room_task``,
``_update_goal_expr_for_distance_task``, ``_update_pddl_entity_with_shortest_longest_time``).

Static properties come from the episode file (interaction order, start / goal receptacles, the
object attributes CSV); the rest from what the history recorded (``HistoryFacts``: interaction
times in minutes of the day, rooms visited, where objects were before and after) and from
geodesics at the end of the history (the ``farthest_*`` flags). Property names and value types
are FindingDory's, so its ``goal_expr`` inputs match them unchanged.

Ours: only the episode's candidates (interacted and ``*_noninteracted`` objects and
receptacles, the ones with viewpoints) and the scene's regions are registered; FindingDory also
registers every other scene object of a known category, which no task of the dataset targets
through a viewpoint. Receptacle aliasing (every surface of one 3D asset counts as interacted)
is applied among the registered surfaces: single-goal tasks share the interacted surface's
properties with its siblings; multi-goal tasks keep the siblings non-interacted and list them
as ``connected`` (checked with the subgoal), as FindingDory does.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from embodied_mem.sim.habitat.dataset import FindingDoryEpisode
from embodied_mem.sim.habitat.goal_expr import Entity, Prop, type_closure

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")


def ordinal(index: int) -> str:
    """FindingDory's ``convert_to_ordinal``."""
    return ORDINALS[index] if 0 <= index < len(ORDINALS) else f"{index}th"


def asset_of(receptacle_name: str) -> str:
    """The 3D asset a receptacle surface belongs to (``name.split('|')[0]``)."""
    return receptacle_name.split("|")[0]


def strip_instance(handle: str) -> str:
    """FindingDory's ``_strip_instance_id``: the asset name of a rigid handle."""
    return "_".join(handle.split("_")[:-1])


@dataclass
class ObjectTimes:
    """Minutes of the day of one rearrangement's phases (FindingDory's interaction times)."""

    pick_start: float  # the pick policy starts
    nav_place_start: float  # driving to the goal receptacle starts
    place_start: float  # the place policy starts
    end: float  # the place is done


@dataclass
class HistoryFacts:
    """What the history recorded that entity properties need."""

    times: dict[int, ObjectTimes] = field(default_factory=dict)  # candidate object index -> times
    regions: list[str] = field(default_factory=list)  # every region id of the scene
    visited: set[str] = field(default_factory=set)
    start_room: str | None = None
    final_room: str | None = None
    time_in_region: dict[str, float] = field(default_factory=dict)  # steps spent per region
    object_room_initial: dict[int, str] = field(default_factory=dict)  # candidate index -> region
    object_room_final: dict[int, str] = field(default_factory=dict)


@dataclass
class EntityRecord:
    entity_id: int
    name: str
    kind: str  # object | receptacle | room
    category: str
    candidate: object = None  # dataset.Candidate, where there is one


class EntityTable:
    """Names <-> integer ids <-> kinds, and the PDDL entities for grounding."""

    def __init__(self) -> None:
        self.records: dict[int, EntityRecord] = {}
        self.by_name: dict[str, EntityRecord] = {}
        self.entities: dict[str, Entity] = {}  # registration order, as FindingDory's all_entities
        self.connected: dict[str, list[str]] = defaultdict(list)  # multi-goal aliasing

    def add(self, name: str, kind: str, category: str, candidate=None) -> EntityRecord:
        if name in self.by_name:
            return self.by_name[name]
        record = EntityRecord(len(self.records) + 1, name, kind, category, candidate)
        self.records[record.entity_id] = record
        self.by_name[name] = record
        return record

    def register(self, name: str, properties: list[Prop]) -> None:
        record = self.by_name[name]
        base = {"object": "movable_entity_type", "receptacle": "static_receptacle_entity_type", "room": "room_region_entity"}[record.kind]
        self.entities[name] = Entity(name, type_closure(base, record.category if record.kind != "room" else None), frozenset(properties))

    def add_property(self, name: str, prop: Prop) -> None:
        entity = self.entities[name]
        self.entities[name] = Entity(entity.name, entity.types, entity.properties | {prop})

    def id_of(self, name: str) -> int:
        return self.by_name[name].entity_id

    def kind(self, entity_id: int) -> str:
        return self.records[entity_id].kind


def _times_props(starts: list[float], ends: list[float]) -> list[Prop]:
    return [Prop("multi_cont", "interaction_start_time", tuple(float(s) for s in starts)), Prop("multi_cont", "interaction_end_time", tuple(float(e) for e in ends))]


def build_table(
    episode: FindingDoryEpisode,
    facts: HistoryFacts,
    attributes: dict[str, dict[str, str]] | None = None,
    multi_goal: bool = False,
    distance: Callable[[str], float] | None = None,
) -> EntityTable:
    """Every entity of the episode with its properties after the history.

    ``distance(name)`` is the geodesic from the robot's final pose to a receptacle's
    viewpoints or an object's snapped position (the ``farthest_*`` flags); without it those
    flags are left out. ``multi_goal``: the chosen instruction has ``sequential_goals``.
    """
    attributes = attributes or {}
    table = EntityTable()
    cands = episode.candidates
    objects = cands["candidate_objects"]

    # ------------------------------------------------------------------ objects
    durations: dict[str, float] = {}
    for index, candidate in enumerate(objects):
        handle = episode.candidate_handles[index]
        table.add(handle, "object", candidate.object_category, candidate)
        props = [Prop("disc", "interacted", True)]
        times = facts.times.get(index)
        if times is not None:
            props += _times_props([times.pick_start], [times.end])
            durations[handle] = times.end - times.pick_start
            props.append(Prop("cont", "total_interaction_time", float(times.end - times.pick_start)))
        for key, value in (attributes.get(strip_instance(handle)) or {}).items():
            props.append(Prop("disc", key, str(value)))
        start_name = episode.name_to_receptacle.get(handle, episode.target_receptacles[index] if episode.target_receptacles else "")
        start = next((c for c in cands["candidate_start_receps"] if c.object_name == start_name), None)
        if start is not None:
            props.append(Prop("disc", "start_receptacle", start.object_category))
        props.append(Prop("disc", "interaction_order", ordinal(index)))
        table.register(handle, props)
    for index, candidate in enumerate(cands["candidate_objects_noninteracted"]):
        handle = episode.noninteracted_handles[index]
        if handle in table.by_name:
            continue
        table.add(handle, "object", candidate.object_category, candidate)
        table.register(handle, [Prop("disc", "interacted", False)])
    # Shortest / longest rearrangement: strict comparisons, the first object wins a tie.
    if durations:
        shortest = min(durations, key=lambda h: (durations[h], list(durations).index(h)))
        longest = max(durations, key=lambda h: (durations[h], -list(durations).index(h)))
        table.add_property(shortest, Prop("disc", "shortest_interaction_time", True))
        table.add_property(longest, Prop("disc", "longest_interaction_time", True))

    # ------------------------------------------------------------------ receptacles
    start_orders: dict[str, list[str]] = defaultdict(list)
    goal_orders: dict[str, list[str]] = defaultdict(list)
    initial_objects: dict[str, list[str]] = defaultdict(list)
    start_times: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    goal_times: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for index, candidate in enumerate(objects):
        start_name = episode.target_receptacles[index] if episode.target_receptacles else episode.name_to_receptacle.get(episode.candidate_handles[index], "")
        goal_name = episode.goal_receptacles[index]
        start_orders[start_name].append(ordinal(index))
        goal_orders[goal_name].append(ordinal(index))
        initial_objects[start_name].append(candidate.object_category)
        times = facts.times.get(index)
        if times is not None:
            picked_from = episode.name_to_receptacle.get(episode.candidate_handles[index], start_name)
            start_times[picked_from][0].append(times.pick_start)
            start_times[picked_from][1].append(times.nav_place_start)
            goal_times[goal_name][0].append(times.place_start)
            goal_times[goal_name][1].append(times.end)
    interacted_names = [c.object_name for c in cands["candidate_start_receps"] + cands["candidate_goal_receps"]]
    interacted_by_asset = {asset_of(n): n for n in interacted_names}
    start_names = {c.object_name for c in cands["candidate_start_receps"]}
    goal_names = {c.object_name for c in cands["candidate_goal_receps"]}
    receptacles = [c for key in ("candidate_start_receps", "candidate_goal_receps", "candidate_start_receps_noninteracted", "candidate_goal_receps_noninteracted") for c in cands[key]]
    for candidate in receptacles:
        name = candidate.object_name
        if name in table.by_name:
            continue
        table.add(name, "receptacle", candidate.object_category, candidate)
        source = interacted_by_asset.get(asset_of(name))
        if source is None:
            table.register(name, [Prop("disc", "interacted", False)])
            continue
        if source != name and multi_goal:
            table.connected[source].append(name)
            table.register(name, [Prop("disc", "interacted", False)])
            continue
        props = [Prop("disc", "interacted", True)]
        starts, ends = [], []
        if source in start_names:
            starts += start_times[source][0]
            ends += start_times[source][1]
            props += [Prop("disc", "start_receptacle", True), Prop("multi_disc", "interaction_order", tuple(start_orders[source])), Prop("multi_disc", "initial_object", tuple(initial_objects[source]))]
        if source in goal_names:
            starts += goal_times[source][0]
            ends += goal_times[source][1]
            props += [Prop("disc", "goal_receptacle", True), Prop("multi_disc", "interaction_order", tuple(goal_orders[source]))]
        table.register(name, _times_props(starts, ends) + props)

    # ------------------------------------------------------------------ rooms
    longest_room = max(facts.time_in_region, key=facts.time_in_region.get) if facts.time_in_region else None
    for region in facts.regions:
        name = f"region_{region}"
        table.add(name, "room", region)
        initial = [ordinal(i) for i, r in sorted(facts.object_room_initial.items()) if r == region]
        final = [ordinal(i) for i, r in sorted(facts.object_room_final.items()) if r == region]
        table.register(
            name,
            [
                Prop("disc", "visited", region in facts.visited),
                Prop("disc", "initial_room", region == facts.start_room),
                Prop("disc", "final_room", region == facts.final_room),
                Prop("multi_disc", "obj_idx_initial", tuple(initial)),
                Prop("multi_disc", "obj_idx_final", tuple(final)),
                Prop("multi_disc", "obj_cat_initial", tuple(objects[i].object_category for i, r in sorted(facts.object_room_initial.items()) if r == region)),
                Prop("multi_disc", "obj_cat_final", tuple(objects[i].object_category for i, r in sorted(facts.object_room_final.items()) if r == region)),
                Prop("disc", "longest_time_spent", region == longest_room),
            ],
        )

    if distance is not None:
        _farthest(table, episode, distance)
    return table


def noninteracted_receptacles(episode: FindingDoryEpisode) -> list[str]:
    """FindingDory's ``_get_noninteracted_receps``: non-interacted surfaces on assets nobody touched."""
    cands = episode.candidates
    interacted = {c.object_name for c in cands["candidate_start_receps"] + cands["candidate_goal_receps"]}
    assets = {asset_of(n) for n in interacted}
    pool = cands["candidate_start_receps_noninteracted"] + cands["candidate_goal_receps_noninteracted"]
    return [c.object_name for c in pool if c.object_name not in interacted and asset_of(c.object_name) not in assets]


def _farthest(table: EntityTable, episode: FindingDoryEpisode, distance: Callable[[str], float]) -> None:
    """The five ``farthest_*`` flags: the first entity with the largest geodesic from the final pose."""
    cands = episode.candidates
    groups = {
        "farthest_goal_rec": [c.object_name for c in cands["candidate_goal_receps"]],
        "farthest_start_rec": [c.object_name for c in cands["candidate_start_receps"]],
        "farthest_rec_interacted": [c.object_name for c in cands["candidate_start_receps"] + cands["candidate_goal_receps"]],
        "farthest_rec_non_interacted": noninteracted_receptacles(episode),
        "farthest_obj_interacted": [episode.candidate_handles[i] for i in range(len(cands["candidate_objects"]))],
    }
    for key, names in groups.items():
        best, best_name = -math.inf, None
        for name in names:
            d = distance(name)
            if d > best:  # strict: the first of equals wins, as FindingDory
                best, best_name = d, name
        if best_name is not None and best_name in table.entities:
            table.add_property(best_name, Prop("disc", key, True))
