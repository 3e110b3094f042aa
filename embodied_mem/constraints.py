"""The schema of the structured query (``Query.constraints``), checked in full.

Below both the memories and the simulator: ``memory/resolve.py`` (the reasoner that answers
it), the instruction reasoner that writes it, and the task-file loader of ``sim/tasks`` that
reads it all use this one check. ``memory/resolve.py``'s docstring describes the language.
"""

from __future__ import annotations

import math

import numpy as np

TARGETS = ("object", "receptacle", "room")
GOAL_KEYS = {"target", "day", "category", "attributes", "interacted", "role", "related", "select"}
SELECTORS = ("order", "after", "before", "time", "duration", "farthest", "room", "object_room")
ROLES = ("start", "goal")
ROOM_PROPERTIES = ("initial", "final", "longest_time", "visited", "not_visited")
# select.by -> {key: (required, check)}; every other key is refused.
_SELECT_KEYS = {
    "order": {"index": True},
    "after": {"object": True},
    "before": {"object": True},
    "time": {"minute": True},
    "duration": {"extreme": False, "seconds": False, "tolerance": False},
    "farthest": {},
    "room": {"property": True},
    "object_room": {"object": True, "when": False},
}


def _fail(path: str, message: str) -> None:
    raise ValueError(f"constraints{path}: {message}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(float(value))


def _check_ref(ref, path: str) -> None:
    """{"category": str | None, "attributes": {str: str}}: how a task names an entity."""
    if not isinstance(ref, dict):
        _fail(path, f"must be a dict with 'category' / 'attributes', got {type(ref).__name__}")
    unknown = set(ref) - {"category", "attributes"}
    if unknown:
        _fail(path, f"unknown key(s) {sorted(unknown)}; known: ['attributes', 'category']")
    if ref.get("category") is not None and not isinstance(ref["category"], str):
        _fail(f"{path}.category", f"must be a str or None, got {ref['category']!r}")
    attributes = ref.get("attributes")
    if attributes is not None:
        if not isinstance(attributes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()):
            _fail(f"{path}.attributes", f"must map str to str, got {attributes!r}")


def _check_select(select, target: str, path: str) -> None:
    if not isinstance(select, dict):
        _fail(path, f"must be a dict like {{'by': 'order', 'index': 0}}, got {select!r}")
    by = select.get("by")
    if by not in SELECTORS:
        _fail(f"{path}.by", f"must be one of {SELECTORS}, got {by!r}")
    allowed = _SELECT_KEYS[by]
    unknown = set(select) - set(allowed) - {"by"}
    if unknown:
        _fail(path, f"unknown key(s) {sorted(unknown)} for by={by!r}; known: {sorted(allowed)}")
    for key, required in allowed.items():
        if required and key not in select:
            _fail(path, f"by={by!r} needs {key!r}")
    if by == "order" and not _is_int(select["index"]):
        _fail(f"{path}.index", f"must be an int, got {select['index']!r}")
    if by in ("after", "before", "object_room"):
        _check_ref(select["object"], f"{path}.object")
    if by == "time" and not (_is_int(select["minute"]) and 0 <= select["minute"] < 1440):
        _fail(f"{path}.minute", f"must be an int minute of the day in [0, 1440), got {select['minute']!r}")
    if by == "duration":
        if ("extreme" in select) == ("seconds" in select):
            _fail(path, "by='duration' needs exactly one of 'extreme' and 'seconds'")
        if "extreme" in select and select["extreme"] not in ("longest", "shortest"):
            _fail(f"{path}.extreme", f"must be 'longest' or 'shortest', got {select['extreme']!r}")
        for key in ("seconds", "tolerance"):
            if key in select and not (_is_number(select[key]) and float(select[key]) >= 0):
                _fail(f"{path}.{key}", f"must be a non-negative number, got {select[key]!r}")
    if by == "room" and select["property"] not in ROOM_PROPERTIES:
        _fail(f"{path}.property", f"must be one of {ROOM_PROPERTIES}, got {select['property']!r}")
    if by == "object_room" and select.get("when", "initial") not in ("initial", "final"):
        _fail(f"{path}.when", f"must be 'initial' or 'final', got {select.get('when')!r}")
    if (by in ("room", "object_room")) != (target == "room"):
        _fail(f"{path}.by", f"{by!r} does not select a {target}")


def validate_constraints(constraints: dict) -> list[dict]:
    """Check the whole structure (types, enums, unknown keys at every level); return the goals.

    ``ValueError`` names the path of what is wrong, e.g. ``constraints.goals[0].select.by``.
    """
    if not isinstance(constraints, dict):
        _fail("", f"must be a dict with 'goals' and 'ordered', got {type(constraints).__name__}")
    unknown = set(constraints) - {"goals", "ordered"}
    if unknown:
        _fail("", f"unknown key(s) {sorted(unknown)}; known: ['goals', 'ordered']")
    goals = constraints.get("goals")
    if not isinstance(goals, list) or not goals:
        _fail(".goals", "must be a non-empty list")
    if not isinstance(constraints.get("ordered", False), bool):
        _fail(".ordered", f"must be true or false, got {constraints.get('ordered')!r}")
    for index, goal in enumerate(goals):
        path = f".goals[{index}]"
        if not isinstance(goal, dict):
            _fail(path, f"must be a dict, got {type(goal).__name__}")
        unknown = set(goal) - GOAL_KEYS
        if unknown:
            _fail(path, f"unknown goal key(s) {sorted(unknown)}; known: {sorted(GOAL_KEYS)}")
        target = goal.get("target")
        if target not in TARGETS:
            _fail(f"{path}.target", f"must be one of {TARGETS}, got {target!r}")
        if goal.get("day") is not None and not (_is_int(goal["day"]) and goal["day"] >= 0):
            _fail(f"{path}.day", f"must be a non-negative int or None, got {goal['day']!r}")
        if goal.get("interacted") is not None and not isinstance(goal["interacted"], bool):
            _fail(f"{path}.interacted", f"must be true, false or None, got {goal['interacted']!r}")
        if goal.get("role") is not None and goal["role"] not in ROLES:
            _fail(f"{path}.role", f"must be one of {ROLES} or None, got {goal['role']!r}")
        _check_ref({k: goal[k] for k in ("category", "attributes") if k in goal}, path)
        if goal.get("related") is not None:
            _check_ref(goal["related"], f"{path}.related")
        if goal.get("select") is not None:
            _check_select(goal["select"], target, f"{path}.select")
    return goals
