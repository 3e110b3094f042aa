"""FindingDory's instructions as the project's tasks (``sim/tasks/generator.py`` ``Task``).

Per instruction: its ``goal_expr`` is parsed and grounded on the episode's entities after the
history (``goal_expr.ground`` over ``entities.build_table``); the grounded expression gives the
goals the shared success code checks (``sim/tasks/success.py``):

- no ``sequential_goals``: one goal, any of the grounded subgoals' entities (FindingDory's OR
  over the EXISTS assignments);
- ``sequential_goals`` unordered: one goal per subgoal (``AND_SEQUENTIAL``);
- ordered: the subgoals of ``sub_expr_sequence`` in that order (``AND_SEQUENTIAL_ORDERED``),
  derived from ``sequence`` when the file has only that, as FindingDory's ``expand_quantifiers``;
- a receptacle subgoal also holds at the surfaces of the same 3D asset (``connected``).

The text is the instruction's ``lang`` with FindingDory's placeholders filled from the history
as its task does: ``XX:XX`` (``task_type`` with "timestep") by a minute drawn inside one of the
target's interaction intervals, ``XX`` (``task_67``) by the target's rearrangement duration as
``int`` of its minutes (FindingDory's own units: its clock is minutes of the day, the template
says "seconds"). The structured ``constraints`` for the oracle track are read off the goal's
input properties (``constraints_for``); where a property has no counterpart in the resolver's
language the task carries what could be mapped, and ``build_tasks``' notes say what was left out.

Categories: FindingDory's official category table could not be read (reference section 2); a
task is filed under a category from its ``task_type`` and goals (``category_of``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from embodied_mem.sim.habitat.dataset import FindingDoryEpisode, Instruction
from embodied_mem.sim.habitat.entities import ORDINALS, EntityTable
from embodied_mem.sim.habitat.goal_expr import (
    SEQUENTIAL,
    TYPE_PARENTS,
    Atom,
    Evaluation,
    Expr,
    Input,
    ground,
    parse,
    sub_expr_sequence,
    subgoal_entity,
)
from embodied_mem.sim.tasks.generator import MULTI, SPATIAL, TEMPORAL, Task
from embodied_mem.sim.tasks.success import DEFAULT, TargetGoal, Thresholds, entity_satisfied

BASE_TYPES = set(TYPE_PARENTS) | {"base_entity"}
PROPERTY_NAMES = {
    "interacted", "interaction_order", "start_receptacle", "goal_receptacle", "initial_object",
    "interaction_start_time", "interaction_end_time", "total_interaction_time",
    "shortest_interaction_time", "longest_interaction_time", "visited", "initial_room", "final_room",
    "longest_time_spent", "obj_idx_initial", "obj_idx_final", "obj_cat_initial", "obj_cat_final",
    "farthest_goal_rec", "farthest_start_rec", "farthest_rec_interacted", "farthest_rec_non_interacted",
    "farthest_obj_interacted",
}  # everything else on an object input is one of its attributes (the CSV's columns)


@dataclass
class GroundedInstruction:
    instruction: Instruction
    root: Expr  # the grounded expression
    goals: list[TargetGoal]
    goal_names: list[list[str]]  # entity names per goal (connected surfaces included)
    ordered: bool
    sequence: list[int] | None
    inputs: list[Input]

    def evaluation(self) -> Evaluation:
        return Evaluation(self.root, self.sequence)


def _inputs(node) -> list[Input]:
    if isinstance(node, Atom):
        return []
    out = list(node.inputs)
    for child in node.children:
        out += _inputs(child)
    return out


def _targets_of(episode: FindingDoryEpisode, table: EntityTable, inputs: list[Input]):
    """Candidate object indices a subgoal's entity stands for (ordered tasks' ``sequence``)."""
    names = {p.name for spec in inputs for p in spec.properties}

    def targets(name: str) -> list[int]:
        record = table.by_name.get(name)
        if record is None:
            return []
        if record.kind == "object":
            return [i for i, h in episode.candidate_handles.items() if h == name]
        out = []
        if "goal_receptacle" in names or "start_receptacle" not in names:
            out += [i for i, g in enumerate(episode.goal_receptacles) if g == name]
        if "start_receptacle" in names or "goal_receptacle" not in names:
            out += [i for i, h in episode.candidate_handles.items() if episode.name_to_receptacle.get(h, episode.target_receptacles[i] if episode.target_receptacles else None) == name]
        return out

    return targets


def ground_instruction(instruction: Instruction, episode: FindingDoryEpisode, table: EntityTable) -> GroundedInstruction:
    """Parse and ground an instruction's goal_expr; ``ValueError`` if it grounds on nothing."""
    ast = parse(instruction.goal_expr)
    inputs = _inputs(ast)
    grounded = ground(ast, table.entities)
    root = grounded if isinstance(grounded, Expr) else Expr("AND", [grounded])
    if not root.children:
        raise ValueError(f"goal_expr of {instruction.task_id} grounds on no entity of episode {episode.episode_id}")
    sequential = isinstance(instruction.sequential_goals, dict)
    ordered = bool(sequential and instruction.sequential_goals.get("ordered"))
    if sequential and root.op not in SEQUENTIAL:
        raise ValueError(f"{instruction.task_id}: sequential_goals given but the goal_expr is {root.op}, not a sequential quantifier")
    sequence = sub_expr_sequence(root, instruction.sequential_goals, _targets_of(episode, table, inputs)) if root.op == "AND_SEQUENTIAL_ORDERED" else None
    subgoals = [subgoal_entity(child) for child in root.children]

    def goal_of(names: list[str], kind: str) -> TargetGoal:
        if kind == "room":
            return TargetGoal("room", [], sorted({table.by_name[n].category for n in names}))
        return TargetGoal(kind, sorted({table.id_of(n) for n in names}))

    if root.op not in SEQUENTIAL:
        kinds = {k for k, _ in subgoals}
        if len(kinds) != 1:
            raise ValueError(f"{instruction.task_id}: one goal cannot mix {sorted(kinds)} targets")
        names = [[n for _, n in subgoals]]
        goals = [goal_of(names[0], kinds.pop())]
    else:
        order = sequence if ordered else list(range(len(subgoals)))
        names, goals = [], []
        for index in order:
            kind, name = subgoals[index]
            group = [name] + list(table.connected.get(name, []))
            names.append(group)
            goals.append(goal_of(group, kind))
    return GroundedInstruction(instruction, root, goals, names, ordered, sequence, inputs)


def evaluate_goal_expr(grounded: GroundedInstruction, oracle, table: EntityTable, stops, thresholds: Thresholds = DEFAULT) -> bool:
    """FindingDory's own evaluation of the goal_expr over a list of stop poses, each predicate
    through the shared ``entity_satisfied`` (and the room oracle); connected surfaces count
    for their subgoal. It agrees with ``success.evaluate_stops`` over ``grounded.goals``."""
    evaluation = grounded.evaluation()
    for pose in stops:

        def truth(atom: Atom) -> bool:
            kind = {"robot_at_object": "object", "robot_at_receptacle": "receptacle", "robot_in_room": "room"}.get(atom.name)
            if kind is None:
                raise ValueError(f"predicate {atom.name} cannot be checked at a stop")
            name = atom.args[0]
            if kind == "room":
                return oracle.room_of(pose.position[:2]) == table.by_name[name].category
            names = [name] + list(table.connected.get(name, []))
            return any(entity_satisfied(oracle, kind, table.id_of(n), pose, thresholds) for n in names)

        if evaluation.stop(truth):
            return True  # FindingDory ends the episode on success (predicate_task_success)
    return False


def _clock(minute: int) -> str:
    return f"{minute // 60}:{minute % 60:02d}"


def fill_text(grounded: GroundedInstruction, table: EntityTable, rng: np.random.Generator) -> tuple[str, int | None]:
    """The instruction text with ``XX:XX`` / ``XX`` filled; also the sampled minute, if any."""
    instruction = grounded.instruction
    text = instruction.lang
    target = grounded.goal_names[0][0]
    props = {p.name: p for p in table.entities[target].properties}
    if instruction.task_id == "task_67" and "total_interaction_time" in props:
        return text.replace("XX", str(int(props["total_interaction_time"].value))), None
    if "timestep" in instruction.task_type and "XX:XX" in text:
        starts = props.get("interaction_start_time")
        ends = props.get("interaction_end_time")
        if starts is None or ends is None or not starts.value:
            raise ValueError(f"{instruction.task_id}: the temporal target {target} has no interaction times")
        interval = int(rng.integers(len(starts.value)))
        minute = int(rng.integers(int(starts.value[interval]), int(ends.value[interval]) + 1))
        return text.replace("XX:XX", _clock(minute)), minute
    return text, None


def constraints_for(grounded: GroundedInstruction, table: EntityTable, minute: int | None) -> tuple[dict, dict]:
    """The oracle track's structured form of a grounded instruction (``memory/resolve.py``),
    and the input properties it could not express (name -> value)."""
    spec = grounded.inputs[0] if grounded.inputs else Input("x", "base_entity")
    props = {p.name: p.value for p in spec.properties}
    kind = grounded.goals[0].kind
    goal: dict = {"target": kind, "day": 0}
    unmapped = {}
    if spec.expr_type not in BASE_TYPES and kind != "room":
        goal["category"] = spec.expr_type
    if isinstance(props.get("interacted"), bool):
        goal["interacted"] = props["interacted"]
    attributes = {k: str(v) for k, v in props.items() if k not in PROPERTY_NAMES and kind == "object"}
    if attributes:
        goal["attributes"] = attributes
    if props.get("start_receptacle") is True or props.get("initial_object") is not None:
        goal["role"] = "start"
    if props.get("goal_receptacle") is True:
        goal["role"] = "goal"
    if kind == "object" and isinstance(props.get("start_receptacle"), str):
        goal.update(role="start", related={"category": props["start_receptacle"], "attributes": {}})
    if kind == "receptacle" and isinstance(props.get("initial_object"), str):
        goal["related"] = {"category": props["initial_object"], "attributes": {}}
    order = props.get("interaction_order")
    if isinstance(order, str) and order in ORDINALS:
        goal["select"] = {"by": "order", "index": ORDINALS.index(order)}
    for key, role in (("farthest_goal_rec", "goal"), ("farthest_start_rec", "start"), ("farthest_rec_interacted", None), ("farthest_rec_non_interacted", None), ("farthest_obj_interacted", None)):
        if props.get(key) is True:
            goal["select"] = {"by": "farthest"}
            goal["interacted"] = key != "farthest_rec_non_interacted"
            if role:
                goal["role"] = role
    for key, extreme in (("shortest_interaction_time", "shortest"), ("longest_interaction_time", "longest")):
        if props.get(key) is True:
            goal["select"] = {"by": "duration", "extreme": extreme}
    if "total_interaction_time" in props:
        goal["select"] = {"by": "duration", "seconds": float(props["total_interaction_time"]) * 60.0}
    if minute is not None:
        goal["select"] = {"by": "time", "minute": int(minute)}
        goal["interacted"] = True
    if kind == "room":
        for key, value, prop in (("visited", False, "not_visited"), ("visited", True, "visited"), ("initial_room", True, "initial"), ("final_room", True, "final"), ("longest_time_spent", True, "longest_time")):
            if props.get(key) is value:
                goal["select"] = {"by": "room", "property": prop}
        for key, when in (("obj_cat_initial", "initial"), ("obj_cat_final", "final")):
            if isinstance(props.get(key), str):
                goal["select"] = {"by": "object_room", "object": {"category": props[key], "attributes": {}}, "when": when}
        for key, when in (("obj_idx_initial", "initial"), ("obj_idx_final", "final")):
            if isinstance(props.get(key), str):
                unmapped[key] = props[key]  # an object named by its order: the resolver names objects by category
    goals = [goal]
    if len(grounded.goals) > 1:
        goals = []
        targets = [grounded.goal_names[i][0] for i in range(len(grounded.goals))]
        for name in targets:
            one = {k: v for k, v in goal.items() if k != "select"}
            record = table.by_name[name]
            order = [p.value for p in table.entities[name].properties if p.name == "interaction_order"]
            first = order[0] if order else None
            first = first[0] if isinstance(first, tuple) and first else first
            if isinstance(first, str) and first in ORDINALS:
                one["select"] = {"by": "order", "index": ORDINALS.index(first)}
            one["target"] = record.kind
            goals.append(one)
    return {"goals": goals, "ordered": grounded.ordered}, unmapped


def category_of(instruction: Instruction, grounded: GroundedInstruction) -> tuple[str, str]:
    """(high-level, low-level) category from the task type (FindingDory's table unread)."""
    task_type = instruction.task_type.lower()
    if len(grounded.goals) > 1 or isinstance(instruction.sequential_goals, dict):
        return MULTI, "Ordered Revisitation" if grounded.ordered else "Unordered Revisitation"
    names = {p.name for spec in grounded.inputs for p in spec.properties}
    if "timestep" in task_type:
        return TEMPORAL, "Time-Based"
    if names & {"shortest_interaction_time", "longest_interaction_time", "total_interaction_time"} or "interaction_time" in task_type:
        return TEMPORAL, "Duration Tracking"
    if "interaction_order" in names:
        return TEMPORAL, "Interaction Order"
    if "room" in task_type or grounded.goals[0].kind == "room":
        return SPATIAL, "Room Visitation"
    if "farthest" in task_type:
        return SPATIAL, "Spatial Relationship"
    if names - PROPERTY_NAMES:
        return SPATIAL, "Object Attributes"
    if names & {"start_receptacle", "goal_receptacle", "initial_object"}:
        return SPATIAL, "Conditional Interaction"
    if "interacted" in names:
        return SPATIAL, "Interaction"
    return SPATIAL, "Object Recall"


def build_tasks(episode: FindingDoryEpisode, table: EntityTable, history, oracle, seed: int, which: list[str] | None = None):
    """One ``Task`` per chosen instruction (``which``: task ids or instruction keys; None: all).

    Returns (tasks, skipped: {task_id: reason}, notes: {task_id: what the constraints could not
    say}). The constraints use only the resolver's keys (``memory/resolve.py``; the simulator never
    imports the memories, so the tests validate them). Keyframes are the
    history steps where each goal's predicate held (the generator's ``oracle_keyframes`` rule,
    same code).
    """
    from embodied_mem.sim.tasks.generator import Context

    rng = np.random.default_rng([int(seed), 7727])
    context = Context(history, oracle, rng, history.final_pose, max((s.day for s in history.steps), default=0))
    tasks, skipped, notes = [], {}, {}
    for instruction in episode.instructions:
        if which is not None and instruction.task_id not in which and instruction.key not in which:
            continue
        try:
            grounded = ground_instruction(instruction, episode, table)
            text, minute = fill_text(grounded, table, rng)
            constraints, unmapped = constraints_for(grounded, table, minute)
            if unmapped:
                notes[instruction.task_id] = f"not in the constraints: {unmapped}"
        except ValueError as error:
            skipped[instruction.task_id] = str(error)
            continue
        high, low = category_of(instruction, grounded)
        keyframes = [context.goal_keyframes(goal) for goal in grounded.goals]
        tasks.append(
            Task(
                task_id=instruction.task_id,
                high_level_category=high,
                category=low,
                instruction=text,
                constraints=constraints,
                goals=grounded.goals,
                ordered=grounded.ordered,
                day=0,
                keyframes=keyframes,
            )
        )
    return tasks, skipped, notes


def finite(value: float) -> bool:
    return math.isfinite(value)
