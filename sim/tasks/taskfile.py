"""Your own tasks, given as data: one JSON object per line (``task.file=tasks.jsonl``).

Each line::

    {"instruction": "Go to the mug you moved right after the red bowl yesterday.",
     "goals": [{"kind": "object", "entity_ids": [12]}],          # the ground truth
     "constraints": {"goals": [...], "ordered": false},           # optional: the oracle track's query
     "ordered": false, "day": 1, "task_id": "my_mug", "category": "Interaction Order"}

``goals`` name the simulator's entity ids (``embodied-mem viz`` and ``summary.json`` of a run
show them) or rooms (``{"kind": "room", "rooms": ["kitchen"]}``). Without ``constraints`` a
task can only run in the language track (the oracle track has no structured query to give).
Every field is checked; a bad line is refused with its line number.
"""

from __future__ import annotations

import json
from pathlib import Path

from embodied_mem.sim.tasks.generator import Task
from embodied_mem.sim.tasks.success import TargetGoal

TASK_KEYS = {"instruction", "goals", "constraints", "ordered", "day", "task_id", "category", "high_level_category"}


def _goal(data, where: str) -> TargetGoal:
    if not isinstance(data, dict) or data.get("kind") not in ("object", "receptacle", "room"):
        raise ValueError(f"{where}: a goal is {{'kind': object|receptacle|room, 'entity_ids': [...]}} or rooms, got {data!r}")
    unknown = set(data) - {"kind", "entity_ids", "rooms"}
    if unknown:
        raise ValueError(f"{where}: unknown goal key(s) {sorted(unknown)}")
    ids, rooms = data.get("entity_ids", []), data.get("rooms", [])
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError(f"{where}: entity_ids must be a list of ints")
    if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
        raise ValueError(f"{where}: rooms must be a list of room names")
    if not (ids or rooms):
        raise ValueError(f"{where}: a goal needs entity_ids or rooms")
    return TargetGoal(data["kind"], ids, rooms)


def load_tasks(path: str | Path) -> list[Task]:
    """The tasks of a JSON-lines file (blank lines and lines starting with # are skipped)."""
    tasks = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not JSON ({error.msg})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{where}: each line is one JSON object")
        unknown = set(data) - TASK_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(TASK_KEYS)}")
        if not isinstance(data.get("instruction"), str) or not data["instruction"].strip():
            raise ValueError(f"{where}: 'instruction' must be a non-empty string")
        goals = data.get("goals")
        if not isinstance(goals, list) or not goals:
            raise ValueError(f"{where}: 'goals' must be a non-empty list")
        constraints = data.get("constraints")
        if constraints is not None:
            from embodied_mem.constraints import validate_constraints

            try:
                if len(validate_constraints(constraints)) != len(goals):
                    raise ValueError("constraints name a different number of goals than 'goals'")
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
        day = data.get("day")
        if day is not None and (not isinstance(day, int) or isinstance(day, bool) or day < 0):
            raise ValueError(f"{where}: 'day' must be a non-negative int or null")
        ordered = data.get("ordered", False)
        if not isinstance(ordered, bool):
            raise ValueError(f"{where}: 'ordered' must be true or false")
        tasks.append(Task(
            task_id=str(data.get("task_id", f"file_{number}")),
            high_level_category=str(data.get("high_level_category", "Given")),
            category=str(data.get("category", "Given")),
            instruction=data["instruction"],
            constraints=constraints,
            goals=[_goal(g, f"{where} goals[{i}]") for i, g in enumerate(goals)],
            ordered=ordered,
            day=day,
        ))
    if not tasks:
        raise ValueError(f"{path}: no tasks")
    return tasks
