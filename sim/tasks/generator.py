"""FindingDory-style tasks from a history: instruction, structured constraints, ground truth.

FindingDory's, as far as its code could be read (``reference/findingdory.md``):

- The categories: 3 high-level, 11 low-level, read from its evaluation code.
- Ground truth from the simulator's own record (``History``), not from the observation stream,
  as sets: a goal is satisfied by any of its valid entities (or rooms).
- Ground-truth answer frames, ``Task.keyframes``, as its ``oracle_keyframes`` sensor: at each
  history step, the entities whose success predicate holds (``success.py``; visibility from the
  step's instance mask, distance and angle from its true pose), an interacted object only from
  its last place onwards (where it is now). One sorted list of frame ids per goal, the union over
  the goal's valid entities. A task with a goal no frame answers is dropped.
- Revisit tasks keep a goal once per entity (first occurrence); ordered ones number the kept
  goals in their suffix "The order to revisit them is: second, first.".
- No task about a day the step cap cut short (``History.capped_days``): FindingDory discards a
  collection that does not finish.
- Verbatim pieces: clock times as ``H:MM`` with an unpadded hour, durations in whole seconds,
  the ordered suffix above, and "yesterday" for the day of the history.
- The entity properties the templates are written from: ``interaction_order``,
  ``start_receptacle``, ``goal_receptacle``, ``interacted``, interaction times, the five
  ``farthest_*`` flags (geodesic from the robot's final pose), room ``visited`` /
  ``initial_room`` / ``final_room`` / ``longest_time_spent`` / ``obj_idx_initial`` /
  ``obj_idx_final``, object attributes.

Ours:

- The instruction texts. The paper's 60 verbatim templates (its appendix Table 5) could not be
  read offline, so these are paraphrases of each category's tasks. There are 61: the 60, plus
  ``room_object_final`` ("the room where you put the ..."), because FindingDory's regions carry
  an object-room *final* property (``obj_idx_final``) besides the initial one.
- Earlier days ("2 days ago", "3 days ago"): FindingDory has one collection per episode.
- Re-drawing vacuous tasks (``vacuity``): a draw is rejected if a uniformly random entity of
  the target kind (a random room, for room goals) satisfies it with probability > 0.5, or, outside
  Object Recall, if a goal describes its target (category, attributes) and every entity so
  described in the home is an answer (knowing "a mug" then suffices). Each template is drawn
  up to ``MAX_DRAWS`` times (fresh choices, fresh day); ``TaskList.skipped`` says why a template
  gave no task.
- ``room_not_visited`` names only rooms the robot visited on another day: a room it never
  entered has no frame to answer with.
- Farthest tasks only where the farthest beats the runner-up by ``FARTHEST_MARGIN_M``.

``NOT_EXPRESSIBLE`` below lists what the embedded world cannot express and why.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from embodied_mem.perception import describe
from embodied_mem.sim.tasks.history import History, InteractionRecord
from embodied_mem.sim.tasks.success import DEFAULT as DEFAULT_THRESHOLDS
from embodied_mem.sim.tasks.success import SuccessOracle, TargetGoal, goal_satisfied
from embodied_mem.types import Pose

SPATIAL, TEMPORAL, MULTI = "Single-Goal Spatial Tasks", "Single-Goal Temporal Tasks", "Multi-Goal Tasks"
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]
DESCRIPTION_KEYS = ("size", "color", "material")
FARTHEST_MARGIN_M = 1.0  # farthest tasks only where the farthest beats the runner-up by this much

# What FindingDory has that this generator does not, and why.
NOT_EXPRESSIBLE = {
    "print_or_design attribute": "the embedded objects are untextured; 'size' takes its place among the five attribute templates",
    "receptacle aliasing": "every embedded receptacle is its own asset, so no two receptacles alias",
    "manipulation-mode heading offset (-pi/2)": "the embedded robot has one head camera looking forward",
}


class TaskScene(SuccessOracle, Protocol):
    """What the generator needs from a simulator besides the history."""

    def entity_ids(self) -> list[int]: ...

    def entity_kind(self, entity_id: int) -> str: ...

    def label(self, entity_id: int) -> str: ...

    def attributes(self, entity_id: int) -> dict[str, str]: ...

    def room_names(self) -> list[str]: ...

    def entity_position(self, entity_id: int) -> np.ndarray: ...


@dataclass
class Task:
    task_id: str
    high_level_category: str
    category: str
    instruction: str
    constraints: dict
    goals: list[TargetGoal]
    ordered: bool
    day: int | None
    # Ground-truth answer frames (``StepRecord.frame_id``), one sorted list per goal: the history
    # steps at which the goal's success predicate held (FindingDory's ``oracle_keyframes``).
    keyframes: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "task_id": self.task_id,
            "high_level_category": self.high_level_category,
            "category": self.category,
            "instruction": self.instruction,
            "constraints": self.constraints,
            "goals": [g.to_dict() for g in self.goals],
            "ordered": self.ordered,
            "day": self.day,
            "keyframes": [list(k) for k in self.keyframes],
        }


@dataclass
class Draft:
    instruction: str
    goals: list[dict]  # constraint goals, in the resolver's language
    targets: list[TargetGoal]
    ordered: bool = False


@dataclass
class Context:
    history: History
    scene: TaskScene
    rng: np.random.Generator
    final_pose: Pose
    last_day: int
    _descriptions: dict[int, dict] = field(default_factory=dict)
    _keyframes: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def when(self, day: int) -> str:
        back = self.last_day - day + 1
        return "yesterday" if back == 1 else f"{back} days ago"

    def interactions(self, day: int) -> list[InteractionRecord]:
        return sorted(self.history.interactions_of(day), key=lambda i: i.pick_stamp)

    def ref(self, entity_id: int) -> dict:
        """How an instruction refers to an entity: category plus describing attributes."""
        attributes = self.scene.attributes(entity_id)
        keys = DESCRIPTION_KEYS if self.scene.entity_kind(entity_id) == "object" else ()
        return {"category": self.scene.label(entity_id), "attributes": {k: attributes[k] for k in keys if k in attributes}}

    def text(self, entity_id: int) -> str:
        ref = self.ref(entity_id)
        return describe(ref["category"], ref["attributes"])

    def same_looking(self, entity_id: int, among: list[int]) -> list[int]:
        ref = self.ref(entity_id)
        return [i for i in among if self.ref(i) == ref]

    def pick(self, items: list):
        return items[int(self.rng.integers(len(items)))]

    def entity_keyframes(self, kind: str, entity_id: int) -> list[int]:
        """Frames at which ``robot_at_object`` / ``robot_at_receptacle`` held for the entity.

        As FindingDory's ``oracle_keyframes``: per step, visibility from the step's own mask
        (``StepRecord.visible``), angle and geodesic from its true pose, against where the
        entity is now; so an object counts only from its last place onwards (before that it
        stood elsewhere). Cheap checks first; geodesics come from cached distance fields.
        """
        key = (kind, entity_id)
        if key not in self._keyframes:
            t = DEFAULT_THRESHOLDS
            distance, angle = (t.object_distance, t.object_angle) if kind == "object" else (t.receptacle_distance, t.receptacle_angle)
            settled = max((i.place_frame for i in self.history.interactions if i.object_id == entity_id), default=-1)
            frames = []
            for step in self.history.steps:
                if step.frame_id < settled or self.history.visibility(step, entity_id) < t.min_visibility:
                    continue
                if self.scene.bearing(step.pose, entity_id) > angle:
                    continue
                if self.scene.geodesic_to_entity(step.pose.position[:2], entity_id) > distance:
                    continue
                frames.append(step.frame_id)
            self._keyframes[key] = frames
        return self._keyframes[key]

    def goal_keyframes(self, goal: TargetGoal) -> list[int]:
        """A goal's valid frames: the union over its valid entities (or steps in its rooms)."""
        if goal.kind == "room":
            return [s.frame_id for s in self.history.steps if s.room in goal.rooms]
        return sorted({f for entity_id in goal.entity_ids for f in self.entity_keyframes(goal.kind, entity_id)})


Builder = Callable[[Context, int], "Draft | None"]


@dataclass
class Template:
    task_id: str
    high_level_category: str
    category: str
    build: Builder


def _goal(target: str, day: int, **extra) -> dict:
    goal = {"target": target, "day": day}
    goal.update({k: v for k, v in extra.items() if v is not None})
    return goal


def _objects(ctx: Context) -> list[int]:
    return [i for i in ctx.scene.entity_ids() if ctx.scene.entity_kind(i) == "object"]


def _receptacles(ctx: Context) -> list[int]:
    return [i for i in ctx.scene.entity_ids() if ctx.scene.entity_kind(i) == "receptacle"]


def _touched(ctx: Context, day: int) -> set[int]:
    return {e for i in ctx.interactions(day) for e in (i.object_id, i.start_receptacle, i.goal_receptacle)}


def _single(text: str, goal: dict, kind: str, ids, rooms=()) -> Draft:
    return Draft(text, [goal], [TargetGoal(kind, sorted(set(ids)), sorted(set(rooms)))])


# ---------------------------------------------------------------------- Room Visitation
def _room_steps(ctx: Context, day: int):
    return [s for s in ctx.history.steps_of(day) if s.room]


def room_not_visited(ctx: Context, day: int) -> Draft | None:
    visited = {s.room for s in _room_steps(ctx, day)}
    known_elsewhere = {s.room for s in ctx.history.steps if s.room and s.day != day}
    if not (known_elsewhere - visited):  # no unvisited room the robot could know of
        return None
    rooms = [r for r in ctx.scene.room_names() if r not in visited]
    goal = _goal("room", day, select={"by": "room", "property": "not_visited"})
    return _single(f"Navigate to a room that you did not visit {ctx.when(day)}.", goal, "room", [], rooms)


def room_initial(ctx: Context, day: int) -> Draft | None:
    steps = _room_steps(ctx, day)
    goal = _goal("room", day, select={"by": "room", "property": "initial"})
    return _single(f"Navigate to the room where you started {ctx.when(day)}.", goal, "room", [], [steps[0].room]) if steps else None


def room_final(ctx: Context, day: int) -> Draft | None:
    steps = _room_steps(ctx, day)
    goal = _goal("room", day, select={"by": "room", "property": "final"})
    return _single(f"Navigate to the room where you finished {ctx.when(day)}.", goal, "room", [], [steps[-1].room]) if steps else None


def room_longest(ctx: Context, day: int) -> Draft | None:
    totals: dict[str, int] = {}
    for step in _room_steps(ctx, day):
        totals[step.room] = totals.get(step.room, 0) + 1
    if len(totals) < 2:
        return None
    ranked = sorted(totals.values(), reverse=True)
    if ranked[0] < 1.15 * ranked[1]:  # too close to call from a memory of stamps
        return None
    best = [room for room, count in totals.items() if count == ranked[0]]
    goal = _goal("room", day, select={"by": "room", "property": "longest_time"})
    return _single(f"Navigate to the room where you spent the most time {ctx.when(day)}.", goal, "room", [], best)


def room_object(when: str) -> Builder:
    """The room an object of the day's rearrangements was in before (``initial``) or after
    (``final``) it was moved: FindingDory's region properties ``obj_idx_initial`` / ``obj_idx_final``."""

    def build(ctx: Context, day: int) -> Draft | None:
        interactions = ctx.interactions(day)
        if not interactions:
            return None
        chosen = ctx.pick(interactions)
        same = ctx.same_looking(chosen.object_id, [i.object_id for i in interactions])
        rooms = [(i.start_room if when == "initial" else i.goal_room) for i in interactions if i.object_id in same]
        goal = _goal("room", day, select={"by": "object_room", "object": ctx.ref(chosen.object_id), "when": when})
        if when == "initial":
            text = f"Navigate to the room where the {ctx.text(chosen.object_id)} was before you moved it {ctx.when(day)}."
        else:
            text = f"Navigate to the room where you put the {ctx.text(chosen.object_id)} {ctx.when(day)}."
        return _single(text, goal, "room", [], rooms)

    return build


# ---------------------------------------------------------------------- Interaction
def object_not_interacted(ctx: Context, day: int) -> Draft | None:
    ids = [i for i in _objects(ctx) if i not in _touched(ctx, day)]
    goal = _goal("object", day, interacted=False)
    return _single(f"Navigate to any object that you did not rearrange {ctx.when(day)}.", goal, "object", ids) if ids else None


def category_not_interacted(ctx: Context, day: int) -> Draft | None:
    untouched = [i for i in _objects(ctx) if i not in _touched(ctx, day) and i in ctx.history.seen]
    if not untouched:
        return None
    category = ctx.scene.label(ctx.pick(untouched))
    ids = [i for i in _objects(ctx) if ctx.scene.label(i) == category and i not in _touched(ctx, day)]
    goal = _goal("object", day, interacted=False, category=category)
    return _single(f"Navigate to {article(category.replace('_', ' '))} that you did not rearrange {ctx.when(day)}.", goal, "object", ids)


def receptacle_not_interacted(ctx: Context, day: int) -> Draft | None:
    ids = [i for i in _receptacles(ctx) if i not in _touched(ctx, day)]
    goal = _goal("receptacle", day, interacted=False)
    return _single(f"Navigate to any receptacle that you did not interact with {ctx.when(day)}.", goal, "receptacle", ids) if ids else None


def object_interacted(ctx: Context, day: int) -> Draft | None:
    ids = [i.object_id for i in ctx.interactions(day)]
    goal = _goal("object", day, interacted=True)
    return _single(f"Navigate to any object that you rearranged {ctx.when(day)}.", goal, "object", ids) if ids else None


def receptacle_interacted(ctx: Context, day: int) -> Draft | None:
    ids = [r for i in ctx.interactions(day) for r in (i.start_receptacle, i.goal_receptacle)]
    goal = _goal("receptacle", day, interacted=True)
    text = f"Navigate to any receptacle that you picked an object from or placed an object on {ctx.when(day)}."
    return _single(text, goal, "receptacle", ids) if ids else None


def category_interacted(ctx: Context, day: int) -> Draft | None:
    interactions = ctx.interactions(day)
    if not interactions:
        return None
    category = ctx.scene.label(ctx.pick(interactions).object_id)
    ids = [i.object_id for i in interactions if ctx.scene.label(i.object_id) == category]
    goal = _goal("object", day, interacted=True, category=category)
    return _single(f"Navigate to the {category.replace('_', ' ')} that you rearranged {ctx.when(day)}.", goal, "object", ids)


# ---------------------------------------------------------------------- Object Recall
def object_category(ctx: Context, day: int) -> Draft | None:
    seen = [i for i in _objects(ctx) if i in ctx.history.seen]
    if not seen:
        return None
    category = ctx.scene.label(ctx.pick(seen))
    ids = [i for i in _objects(ctx) if ctx.scene.label(i) == category]
    return _single(f"Navigate to {article(category.replace('_', ' '))}.", _goal("object", None, category=category), "object", ids)


def receptacle_category(ctx: Context, day: int) -> Draft | None:
    seen = [i for i in _receptacles(ctx) if i in ctx.history.seen]
    if not seen:
        return None
    category = ctx.scene.label(ctx.pick(seen))
    ids = [i for i in _receptacles(ctx) if ctx.scene.label(i) == category]
    return _single(f"Navigate to {article(category.replace('_', ' '))}.", _goal("receptacle", None, category=category), "receptacle", ids)


# ---------------------------------------------------------------------- Conditional Interaction
def receptacle_by_role(role: str) -> Builder:
    def build(ctx: Context, day: int) -> Draft | None:
        interactions = ctx.interactions(day)
        ids = [i.start_receptacle if role == "start" else i.goal_receptacle for i in interactions]
        verb = "picked an object from" if role == "start" else "placed an object on"
        goal = _goal("receptacle", day, interacted=True, role=role)
        return _single(f"Navigate to a receptacle that you {verb} {ctx.when(day)}.", goal, "receptacle", ids) if ids else None

    return build


def receptacle_of_object(role: str) -> Builder:
    def build(ctx: Context, day: int) -> Draft | None:
        interactions = ctx.interactions(day)
        if not interactions:
            return None
        chosen = ctx.pick(interactions)
        same = ctx.same_looking(chosen.object_id, [i.object_id for i in interactions])
        ids = [(i.start_receptacle if role == "start" else i.goal_receptacle) for i in interactions if i.object_id in same]
        phrase = "from which you picked" if role == "start" else "on which you placed"
        goal = _goal("receptacle", day, role=role, related=ctx.ref(chosen.object_id))
        return _single(f"Navigate to the receptacle {phrase} the {ctx.text(chosen.object_id)} {ctx.when(day)}.", goal, "receptacle", ids)

    return build


def object_by_receptacle(role: str) -> Builder:
    def build(ctx: Context, day: int) -> Draft | None:
        interactions = ctx.interactions(day)
        if not interactions:
            return None
        chosen = ctx.pick(interactions)
        receptacle = chosen.start_receptacle if role == "start" else chosen.goal_receptacle
        category = ctx.scene.label(receptacle)
        ids = [
            i.object_id
            for i in interactions
            if ctx.scene.label(i.start_receptacle if role == "start" else i.goal_receptacle) == category
        ]
        phrase = "picked from" if role == "start" else "placed on"
        goal = _goal("object", day, role=role, related={"category": category, "attributes": {}})
        return _single(f"Navigate to an object that you {phrase} {article(category.replace('_', ' '))} {ctx.when(day)}.", goal, "object", ids)

    return build


def receptacle_by_object_category(ctx: Context, day: int) -> Draft | None:
    interactions = ctx.interactions(day)
    if not interactions:
        return None
    category = ctx.scene.label(ctx.pick(interactions).object_id)
    ids = [i.start_receptacle for i in interactions if ctx.scene.label(i.object_id) == category]
    goal = _goal("receptacle", day, role="start", related={"category": category, "attributes": {}})
    return _single(f"Navigate to a receptacle from which you picked {article(category.replace('_', ' '))} {ctx.when(day)}.", goal, "receptacle", ids)


# ---------------------------------------------------------------------- Spatial Relationship
def farthest(which: str) -> Builder:
    """FindingDory's farthest_* flags: geodesic from where the robot is now."""

    def build(ctx: Context, day: int) -> Draft | None:
        interactions = ctx.interactions(day)
        touched = _touched(ctx, day)
        kind, goal_extra = "receptacle", {}
        if which == "goal_receptacle":
            ids, phrase = [i.goal_receptacle for i in interactions], "receptacle you placed an object on"
            goal_extra = {"interacted": True, "role": "goal"}
        elif which == "start_receptacle":
            ids, phrase = [i.start_receptacle for i in interactions], "receptacle you picked an object from"
            goal_extra = {"interacted": True, "role": "start"}
        elif which == "interacted_receptacle":
            ids = [r for i in interactions for r in (i.start_receptacle, i.goal_receptacle)]
            phrase, goal_extra = "receptacle you interacted with", {"interacted": True}
        elif which == "noninteracted_receptacle":
            ids = [r for r in _receptacles(ctx) if r not in touched and r in ctx.history.seen]
            phrase, goal_extra = "receptacle you saw but did not interact with", {"interacted": False}
        else:
            ids, kind = [i.object_id for i in interactions], "object"
            phrase, goal_extra = "object you rearranged", {"interacted": True}
        ids = sorted(set(ids))
        if len(ids) < 2:
            return None
        xy = ctx.final_pose.position[:2]
        distance = {i: ctx.scene.geodesic_to_entity(xy, i) if kind == "receptacle" else _object_geodesic(ctx, i) for i in ids}
        finite = {i: d for i, d in distance.items() if math.isfinite(d)}
        if not finite:
            return None
        ranked = sorted(finite.values(), reverse=True)
        if len(ranked) > 1 and ranked[0] - ranked[1] < FARTHEST_MARGIN_M:
            return None  # too close to call: a memory's distance estimate is not a navmesh's
        valid = [i for i, d in finite.items() if d >= ranked[0] - 1e-6]
        goal = _goal(kind, day, select={"by": "farthest"}, **goal_extra)
        return _single(f"Navigate to the {phrase} {ctx.when(day)} that is farthest from where you are now.", goal, kind, valid)

    return build


def _object_geodesic(ctx: Context, object_id: int) -> float:
    return ctx.scene.geodesic_to_entity(ctx.final_pose.position[:2], object_id)


# ---------------------------------------------------------------------- Object Attributes
_ATTRIBUTE_PHRASES = {
    "color": "the {} object",
    "material": "the object made of {}",
    "size": "the {} object",
    "shape": "the {} object",
    "function": "the object used for {}",
}


def attribute(name: str) -> Builder:
    def build(ctx: Context, day: int) -> Draft | None:
        interactions = ctx.interactions(day)
        if not interactions:
            return None
        value = ctx.scene.attributes(ctx.pick(interactions).object_id)[name]
        ids = [i.object_id for i in interactions if ctx.scene.attributes(i.object_id).get(name) == value]
        phrase = _ATTRIBUTE_PHRASES[name].format(value)
        goal = _goal("object", day, interacted=True, attributes={name: value})
        return _single(f"Navigate to {phrase} that you rearranged {ctx.when(day)}.", goal, "object", ids)

    return build


# ---------------------------------------------------------------------- Interaction Order
def _plain_ordinal(index: int) -> str:
    return ORDINALS[index] if index < len(ORDINALS) else f"{index + 1}th"


def article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _ordinal(index: int, count: int) -> str:
    if index == -1 or index == count - 1:
        return "last"
    if index == -2:
        return "second to last"
    return ORDINALS[index] if index < len(ORDINALS) else f"{index + 1}th"


def by_order(target: str, role: str | None, index_choice: str) -> Builder:
    """The i-th rearrangement's object, or the receptacle it came from / went to."""

    def build(ctx: Context, day: int) -> Draft | None:
        interactions = ctx.interactions(day)
        count = len(interactions)
        if count < 2:
            return None
        index = {"first": 0, "last": -1, "penultimate": -2}.get(index_choice)
        if index is None:  # "nth": a middle one
            if count < 3:
                return None
            index = int(ctx.rng.integers(1, count - 1))
        chosen = interactions[index]
        ordinal = _ordinal(index, count)
        when = ctx.when(day)
        if target == "object":
            text = f"Navigate to the object that you rearranged {ordinal} {when}."
            ids = [chosen.object_id]
        elif role == "start":
            text = f"Navigate to the receptacle from which you picked the {ordinal} object you rearranged {when}."
            ids = [chosen.start_receptacle]
        else:
            text = f"Navigate to the receptacle on which you placed the {ordinal} object you rearranged {when}."
            ids = [chosen.goal_receptacle]
        goal = _goal(target, day, interacted=True, role=role, select={"by": "order", "index": index})
        return _single(text, goal, target, ids)

    return build


def by_neighbour(target: str, role: str | None, direction: str) -> Builder:
    """The rearrangement right after / before the one of a named object."""

    def build(ctx: Context, day: int) -> Draft | None:
        interactions = ctx.interactions(day)
        step = 1 if direction == "after" else -1
        anchors = [n for n in range(len(interactions)) if 0 <= n + step < len(interactions)]
        if not anchors:
            return None
        anchor = interactions[ctx.pick(anchors)]
        same = ctx.same_looking(anchor.object_id, [i.object_id for i in interactions])
        neighbours = [interactions[n + step] for n, i in enumerate(interactions) if i.object_id in same and 0 <= n + step < len(interactions)]
        word = "right after" if direction == "after" else "right before"
        when = ctx.when(day)
        if target == "object":
            ids = [i.object_id for i in neighbours]
            text = f"Navigate to the object that you rearranged {word} the {ctx.text(anchor.object_id)} {when}."
        elif role == "start":
            ids = [i.start_receptacle for i in neighbours]
            text = f"Navigate to the receptacle from which you picked the object you rearranged {word} the {ctx.text(anchor.object_id)} {when}."
        else:
            ids = [i.goal_receptacle for i in neighbours]
            text = f"Navigate to the receptacle on which you placed the object you rearranged {word} the {ctx.text(anchor.object_id)} {when}."
        goal = _goal(target, day, interacted=True, role=role, select={"by": direction, "object": ctx.ref(anchor.object_id)})
        return _single(text, goal, target, ids)

    return build


def first_from_receptacle_category(ctx: Context, day: int) -> Draft | None:
    interactions = ctx.interactions(day)
    if not interactions:
        return None
    category = ctx.scene.label(ctx.pick(interactions).start_receptacle)
    matching = [i for i in interactions if ctx.scene.label(i.start_receptacle) == category]
    goal = _goal("object", day, role="start", related={"category": category, "attributes": {}}, select={"by": "order", "index": 0})
    text = f"Navigate to the first object that you picked from {article(category.replace('_', ' '))} {ctx.when(day)}."
    return _single(text, goal, "object", [matching[0].object_id])


# ---------------------------------------------------------------------- Time-Based
def _clock(stamp: float) -> tuple[int, str]:
    minute = int((stamp % 86400.0) // 60)
    return minute, f"{minute // 60}:{minute % 60:02d}"


def object_at_time(ctx: Context, day: int) -> Draft | None:
    interactions = ctx.interactions(day)
    if not interactions:
        return None
    chosen = ctx.pick(interactions)
    minute, clock = _clock(ctx.rng.uniform(chosen.pick_stamp, chosen.place_stamp))
    start, end = minute * 60.0, minute * 60.0 + 60.0
    ids = [i.object_id for i in interactions if i.pick_stamp % 86400.0 < end and i.place_stamp % 86400.0 >= start]
    goal = _goal("object", day, interacted=True, select={"by": "time", "minute": minute})
    return _single(f"Navigate to the object that you were rearranging at {clock} {ctx.when(day)}.", goal, "object", ids)


def receptacle_at_time(ctx: Context, day: int) -> Draft | None:
    interactions = ctx.interactions(day)
    if not interactions:
        return None
    chosen = ctx.pick(interactions)
    stamp = chosen.pick_stamp if ctx.rng.random() < 0.5 else chosen.place_stamp
    minute, clock = _clock(stamp)
    ids = []
    for i in interactions:
        for event_stamp, receptacle in ((i.pick_stamp, i.start_receptacle), (i.place_stamp, i.goal_receptacle)):
            if minute * 60.0 <= event_stamp % 86400.0 < minute * 60.0 + 60.0:
                ids.append(receptacle)
    goal = _goal("receptacle", day, interacted=True, select={"by": "time", "minute": minute})
    return _single(f"Navigate to the receptacle that you interacted with at {clock} {ctx.when(day)}.", goal, "receptacle", ids)


# ---------------------------------------------------------------------- Duration Tracking
DURATION_TOLERANCE_S = 10.0


def duration_extreme(extreme: str) -> Builder:
    def build(ctx: Context, day: int) -> Draft | None:
        interactions = ctx.interactions(day)
        if len(interactions) < 2:
            return None
        pick = max if extreme == "longest" else min
        best = pick(i.duration for i in interactions)
        ids = [i.object_id for i in interactions if math.isclose(i.duration, best)]
        goal = _goal("object", day, interacted=True, select={"by": "duration", "extreme": extreme})
        return _single(f"Navigate to the object that took the {extreme} time to rearrange {ctx.when(day)}.", goal, "object", ids)

    return build


def duration_seconds(ctx: Context, day: int) -> Draft | None:
    interactions = ctx.interactions(day)
    if not interactions:
        return None
    seconds = int(round(ctx.pick(interactions).duration))
    ids = [i.object_id for i in interactions if abs(i.duration - seconds) <= DURATION_TOLERANCE_S]
    goal = _goal("object", day, interacted=True, select={"by": "duration", "seconds": seconds, "tolerance": DURATION_TOLERANCE_S})
    return _single(f"Navigate to an object which took {seconds} seconds to rearrange {ctx.when(day)}.", goal, "object", ids)


# ---------------------------------------------------------------------- Multi-goal
def revisit(target: str, role: str | None, ordered: bool, subset: str = "all") -> Builder:
    """Revisit the objects / start receptacles / goal receptacles of the day's rearrangements.

    As FindingDory, goals naming the same entity (a receptacle used twice) are kept once, at
    their first occurrence; an ordered task's ordinals number the kept goals.
    """

    def build(ctx: Context, day: int) -> Draft | None:
        interactions = ctx.interactions(day)
        indices = list(range(len(interactions)))
        if subset == "first_last":
            indices = [0, len(interactions) - 1]
        elif subset == "first_two":
            indices = [0, 1]
        if len(interactions) < 2 or len(set(indices)) < 2:
            return None
        kept: list[tuple[int, int]] = []  # (interaction index, entity), in interaction order
        for index in indices:
            chosen = interactions[index]
            entity = chosen.object_id if target == "object" else (chosen.start_receptacle if role == "start" else chosen.goal_receptacle)
            if entity not in {e for _, e in kept}:
                kept.append((index, entity))
        if len(kept) < 2:
            return None
        sequence = list(range(len(kept)))  # positions in ``kept``: what the ordinals name
        if ordered:
            sequence = [sequence[i] for i in ctx.rng.permutation(len(sequence))]
        goals, targets = [], []
        for position in sequence:
            index, entity = kept[position]
            goals.append(_goal(target, day, interacted=True, role=role, select={"by": "order", "index": index}))
            targets.append(TargetGoal(target, [entity]))
        what = {"object": "objects you rearranged", "start": "receptacles you picked objects from", "goal": "receptacles you placed objects on"}[
            "object" if target == "object" else role
        ]
        when = ctx.when(day)
        if subset == "first_last":
            text = f"Revisit the first and the last of the {what} {when}"
        elif subset == "first_two":
            text = f"Revisit the first two of the {what} {when}"
        else:
            text = f"Revisit all the {what} {when}"
        if ordered:  # FindingDory's suffix: ordinals of the kept goals
            text += f". The order to revisit them is: {', '.join(_plain_ordinal(p) for p in sequence)}."
        else:
            text += ", in any order."
        return Draft(text, goals, targets, ordered)

    return build


TEMPLATES: list[Template] = [
    # Single-Goal Spatial Tasks
    Template("room_not_visited", SPATIAL, "Room Visitation", room_not_visited),
    Template("room_initial", SPATIAL, "Room Visitation", room_initial),
    Template("room_final", SPATIAL, "Room Visitation", room_final),
    Template("room_longest_time", SPATIAL, "Room Visitation", room_longest),
    Template("room_object_initial", SPATIAL, "Room Visitation", room_object("initial")),
    Template("room_object_final", SPATIAL, "Room Visitation", room_object("final")),
    Template("object_not_interacted", SPATIAL, "Interaction", object_not_interacted),
    Template("category_not_interacted", SPATIAL, "Interaction", category_not_interacted),
    Template("receptacle_not_interacted", SPATIAL, "Interaction", receptacle_not_interacted),
    Template("object_interacted", SPATIAL, "Interaction", object_interacted),
    Template("receptacle_interacted", SPATIAL, "Interaction", receptacle_interacted),
    Template("category_interacted", SPATIAL, "Interaction", category_interacted),
    Template("object_category", SPATIAL, "Object Recall", object_category),
    Template("receptacle_category", SPATIAL, "Object Recall", receptacle_category),
    Template("receptacle_picked_from", SPATIAL, "Conditional Interaction", receptacle_by_role("start")),
    Template("receptacle_placed_on", SPATIAL, "Conditional Interaction", receptacle_by_role("goal")),
    Template("receptacle_of_object_start", SPATIAL, "Conditional Interaction", receptacle_of_object("start")),
    Template("receptacle_of_object_goal", SPATIAL, "Conditional Interaction", receptacle_of_object("goal")),
    Template("object_from_receptacle", SPATIAL, "Conditional Interaction", object_by_receptacle("start")),
    Template("object_to_receptacle", SPATIAL, "Conditional Interaction", object_by_receptacle("goal")),
    Template("receptacle_of_category", SPATIAL, "Conditional Interaction", receptacle_by_object_category),
    Template("farthest_goal_receptacle", SPATIAL, "Spatial Relationship", farthest("goal_receptacle")),
    Template("farthest_start_receptacle", SPATIAL, "Spatial Relationship", farthest("start_receptacle")),
    Template("farthest_interacted_receptacle", SPATIAL, "Spatial Relationship", farthest("interacted_receptacle")),
    Template("farthest_noninteracted_receptacle", SPATIAL, "Spatial Relationship", farthest("noninteracted_receptacle")),
    Template("farthest_interacted_object", SPATIAL, "Spatial Relationship", farthest("interacted_object")),
    Template("attribute_color", SPATIAL, "Object Attributes", attribute("color")),
    Template("attribute_material", SPATIAL, "Object Attributes", attribute("material")),
    Template("attribute_size", SPATIAL, "Object Attributes", attribute("size")),
    Template("attribute_shape", SPATIAL, "Object Attributes", attribute("shape")),
    Template("attribute_function", SPATIAL, "Object Attributes", attribute("function")),
    # Single-Goal Temporal Tasks
    Template("order_object_first", TEMPORAL, "Interaction Order", by_order("object", None, "first")),
    Template("order_object_last", TEMPORAL, "Interaction Order", by_order("object", None, "last")),
    Template("order_object_nth", TEMPORAL, "Interaction Order", by_order("object", None, "nth")),
    Template("order_object_penultimate", TEMPORAL, "Interaction Order", by_order("object", None, "penultimate")),
    Template("order_object_after", TEMPORAL, "Interaction Order", by_neighbour("object", None, "after")),
    Template("order_object_before", TEMPORAL, "Interaction Order", by_neighbour("object", None, "before")),
    Template("order_start_first", TEMPORAL, "Interaction Order", by_order("receptacle", "start", "first")),
    Template("order_start_last", TEMPORAL, "Interaction Order", by_order("receptacle", "start", "last")),
    Template("order_start_nth", TEMPORAL, "Interaction Order", by_order("receptacle", "start", "nth")),
    Template("order_goal_first", TEMPORAL, "Interaction Order", by_order("receptacle", "goal", "first")),
    Template("order_goal_last", TEMPORAL, "Interaction Order", by_order("receptacle", "goal", "last")),
    Template("order_goal_nth", TEMPORAL, "Interaction Order", by_order("receptacle", "goal", "nth")),
    Template("order_start_after", TEMPORAL, "Interaction Order", by_neighbour("receptacle", "start", "after")),
    Template("order_goal_after", TEMPORAL, "Interaction Order", by_neighbour("receptacle", "goal", "after")),
    Template("order_goal_before", TEMPORAL, "Interaction Order", by_neighbour("receptacle", "goal", "before")),
    Template("order_first_from_receptacle", TEMPORAL, "Interaction Order", first_from_receptacle_category),
    Template("time_object", TEMPORAL, "Time-Based", object_at_time),
    Template("time_receptacle", TEMPORAL, "Time-Based", receptacle_at_time),
    Template("duration_longest", TEMPORAL, "Duration Tracking", duration_extreme("longest")),
    Template("duration_shortest", TEMPORAL, "Duration Tracking", duration_extreme("shortest")),
    Template("duration_seconds", TEMPORAL, "Duration Tracking", duration_seconds),
    # Multi-Goal Tasks
    Template("revisit_objects", MULTI, "Unordered Revisitation", revisit("object", None, False)),
    Template("revisit_start_receptacles", MULTI, "Unordered Revisitation", revisit("receptacle", "start", False)),
    Template("revisit_goal_receptacles", MULTI, "Unordered Revisitation", revisit("receptacle", "goal", False)),
    Template("revisit_first_last_objects", MULTI, "Unordered Revisitation", revisit("object", None, False, "first_last")),
    Template("revisit_first_two_start", MULTI, "Unordered Revisitation", revisit("receptacle", "start", False, "first_two")),
    Template("revisit_first_last_goal", MULTI, "Unordered Revisitation", revisit("receptacle", "goal", False, "first_last")),
    Template("revisit_objects_ordered", MULTI, "Ordered Revisitation", revisit("object", None, True)),
    Template("revisit_start_receptacles_ordered", MULTI, "Ordered Revisitation", revisit("receptacle", "start", True)),
    Template("revisit_goal_receptacles_ordered", MULTI, "Ordered Revisitation", revisit("receptacle", "goal", True)),
]

CATEGORIES = sorted({t.category for t in TEMPLATES})


@dataclass
class TaskConfig:
    """Which tasks to draw from a history."""

    earlier_day_probability: float = 0.4  # with several days, how often a task asks about an earlier one
    templates: list[str] | None = None  # None: every template
    seed: int = 0
    day: int | None = None  # ask only about this history day (None: the last, or an earlier one at random)
    file: str | None = None  # a JSON-lines file of your own tasks instead (sim/tasks/taskfile.py)


# Why a draw of a template was rejected (``TaskList.skipped`` / ``TaskList.rejected``).
NOT_EXPRESSIBLE_HERE = "not expressible"  # the history has nothing this template can ask
VACUOUS_CHANCE = "vacuous: a random entity or room satisfies it with p > 0.5"
VACUOUS_DESCRIPTION = "vacuous: every entity so described in the home is an answer"
VACUOUS_STAY = "vacuous: it holds where the robot already stands"
NO_KEYFRAME = "a goal has no valid keyframe in the history"
NO_DAY = "no uncapped day to ask about"
MAX_DRAWS = 4  # draws of a template (fresh entity, fresh day) before it is skipped
VACUOUS_PROBABILITY = 0.5


class TaskList(list):
    """``generate_tasks``' result: the tasks, and why the other templates gave none.

    ``skipped``: template id -> the reason its last draw was rejected. ``rejected``: reason ->
    rejected draws, over all templates (accepted tasks' earlier draws included).
    """

    def __init__(self, tasks=()) -> None:
        super().__init__(tasks)
        self.skipped: dict[str, str] = {}
        self.rejected: Counter[str] = Counter()

    def skip_counts(self) -> Counter[str]:
        """Reason -> number of templates skipped for it."""
        return Counter(self.skipped.values())


def vacuity(scene: TaskScene, template: Template, draft: Draft) -> str | None:
    """Why a draft needs no memory, or None.

    Vacuous if a uniformly random entity of the target kind (a random room, for room goals)
    satisfies a goal with probability > 0.5; or, outside Object Recall, if a goal describes its
    target (category and / or attributes) and its answers are every such entity in the home:
    knowing "a mug" then suffices, whatever the robot did.
    """
    for spec, target in zip(draft.goals, draft.targets):
        if target.kind == "room":
            pool, valid = set(scene.room_names()), set(target.rooms)
        else:
            pool = {i for i in scene.entity_ids() if scene.entity_kind(i) == target.kind}
            valid = set(target.entity_ids)
        if pool and len(valid & pool) / len(pool) > VACUOUS_PROBABILITY:
            return VACUOUS_CHANCE
        described = spec.get("category") is not None or bool(spec.get("attributes"))
        if target.kind != "room" and described and template.category != "Object Recall":
            same = {i for i in pool if _fits(scene, i, spec.get("category"), spec.get("attributes") or {})}
            if same <= valid:
                return VACUOUS_DESCRIPTION
    return None


def _fits(scene: TaskScene, entity_id: int, category: str | None, attributes: dict) -> bool:
    if category is not None and scene.label(entity_id) != category:
        return False
    have = scene.attributes(entity_id)
    return all(have.get(k) == v for k, v in attributes.items())


def generate_tasks(history: History, scene: TaskScene, final_pose: Pose, config: TaskConfig | None = None) -> TaskList:
    """One task per template that the history can express and that needs a memory.

    Each template is drawn up to ``MAX_DRAWS`` times (fresh random choices, fresh day); a draw
    is rejected if the builder finds nothing to ask, if it is vacuous (``vacuity``), or if a goal
    has no valid keyframe (the history cannot answer it). No task asks about a capped day.
    Deterministic for the seed.
    """
    config = config or TaskConfig()
    rng = np.random.default_rng(config.seed)
    tasks = TaskList()
    recorded = sorted({s.day for s in history.steps})
    days = [d for d in recorded if d not in history.capped_days]
    wanted = set(config.templates) if config.templates is not None else None
    unknown = (wanted or set()) - {t.task_id for t in TEMPLATES}
    if unknown:
        raise ValueError(f"unknown task template(s) {sorted(unknown)}")
    chosen = [t for t in TEMPLATES if wanted is None or t.task_id in wanted]
    if not days:
        tasks.skipped.update({t.task_id: NO_DAY for t in chosen})
        return tasks
    ctx = Context(history, scene, rng, final_pose, recorded[-1])
    for template in chosen:
        reason = None
        for _ in range(MAX_DRAWS):
            day = days[-1]
            if config.day is not None:
                if config.day not in days:
                    raise ValueError(f"task.day={config.day} is not an uncapped day of this history (days: {days})")
                day = config.day
            elif len(days) > 1 and rng.random() < config.earlier_day_probability:
                day = int(rng.choice(days[:-1]))
            draft = template.build(ctx, day)
            if draft is None or any(not (g.entity_ids or g.rooms) for g in draft.targets):
                reason = NOT_EXPRESSIBLE_HERE
            else:
                reason = vacuity(scene, template, draft)
            # The day ends at the last place, so "the receptacle you placed the last object on"
            # holds before the robot moves: a memory that stays put would pass it.
            if reason is None and len(draft.targets) == 1 and goal_satisfied(scene, draft.targets[0], final_pose):
                reason = VACUOUS_STAY
            if reason is None:
                keyframes = [ctx.goal_keyframes(goal) for goal in draft.targets]
                if any(not frames for frames in keyframes):
                    reason = NO_KEYFRAME
            if reason is None:
                break
            tasks.rejected[reason] += 1
        if reason is not None:
            tasks.skipped[template.task_id] = reason
            continue
        tasks.append(
            Task(
                task_id=template.task_id,
                high_level_category=template.high_level_category,
                category=template.category,
                instruction=draft.instruction,
                constraints={"goals": draft.goals, "ordered": draft.ordered},
                goals=draft.targets,
                ordered=draft.ordered,
                day=day,
                keyframes=keyframes,
            )
        )
    return tasks
