"""FindingDory's ``goal_expr``: parsed into an AST, grounded on the episode's entities, evaluated.

The dataset stores each instruction's goal as habitat-lab's PDDL logical-expression dict
(``findingdory/task/pddl/pddl_domain.py::_parse_expr``)::

    {"expr_type": "AND" | "OR" | "NAND" | "NOR" | "AND_SEQUENTIAL" | "AND_SEQUENTIAL_ORDERED",
     "quantifier": null | "EXISTS" | "FORALL" | "FORALL_SEQUENTIAL_UNORDERED" | "FORALL_SEQUENTIAL_ORDERED",
     "inputs": [{"name": "obj", "expr_type": "movable_entity_type",
                 "properties": [{"_target_": "DiscPddlEntityProperty", "name": "interaction_order", "value": "first"}]}],
     "sub_exprs": ["robot_at_object(obj, robot_0)", {...nested...}]}

Grounding is FindingDory's ``expand_quantifiers``: a quantified expression becomes the combination
(EXISTS -> OR, FORALL -> AND, FORALL_SEQUENTIAL_UNORDERED -> AND_SEQUENTIAL,
FORALL_SEQUENTIAL_ORDERED -> AND_SEQUENTIAL_ORDERED) of one clone of itself per assignment of
distinct entities to its inputs, an entity qualifying when its type is the input's type or a
subtype and the input's properties are a subset of its own. Property equality is FindingDory's:
a single value equals a multi-valued property holding it (``MultiDiscPddlEntityProperty``).

Evaluation (``Evaluation``) is ``FindingDoryLogicalExpr._is_true`` with the task's
``is_goal_satisfied`` around it: the location predicates (``robot_at_object``,
``robot_at_receptacle``, ``robot_in_room``) hold only at a stop; a sequential expression locks at
most one new subgoal per stop, an ordered one in ``sub_expr_sequence`` order (a subgoal before its
predecessor makes it false for good); a stop that satisfies no new subgoal (or, single goal,
none) makes the whole expression false for good.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Union

EXPR_TYPES = ("AND", "NAND", "OR", "NOR", "AND_SEQUENTIAL", "AND_SEQUENTIAL_ORDERED")
QUANTIFIERS = {
    "EXISTS": "OR",
    "FORALL": "AND",
    "FORALL_SEQUENTIAL_UNORDERED": "AND_SEQUENTIAL",
    "FORALL_SEQUENTIAL_ORDERED": "AND_SEQUENTIAL_ORDERED",
}
SEQUENTIAL = ("AND_SEQUENTIAL", "AND_SEQUENTIAL_ORDERED")
LOCATION_PREDICATES = {"robot_at_object": "object", "robot_at_receptacle": "receptacle", "robot_in_room": "room"}
PROPERTY_CLASSES = {
    "DiscPddlEntityProperty": "disc",
    "ContPddlEntityProperty": "cont",
    "MultiDiscPddlEntityProperty": "multi_disc",
    "MultiContPddlEntityProperty": "multi_cont",
}
# The domain's type tree (``pddl_domain_fp.yaml`` types + the simulator's entity types).
TYPE_PARENTS = {
    "movable_entity_type": "obj_type",
    "goal_entity_type": "obj_type",
    "obj_type": "static_obj_type",
    "static_receptacle_entity_type": "static_obj_type",
    "art_receptacle_entity_type": "static_obj_type",
    "cab_type": "art_receptacle_entity_type",
    "fridge_type": "art_receptacle_entity_type",
    "static_obj_type": "base_entity",
    "robot_entity_type": "base_entity",
    "pos_entity_type": "base_entity",
    "room_region_entity": "base_entity",
}
_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*$")


def type_closure(base: str, category: str | None = None) -> frozenset[str]:
    """Every type an entity of type ``base`` (and, where given, of its category) belongs to."""
    types = {base} | ({category} if category else set())
    while base in TYPE_PARENTS:
        base = TYPE_PARENTS[base]
        types.add(base)
    return frozenset(types)


@dataclass(frozen=True)
class Prop:
    """One entity property: ``kind`` disc | cont | multi_disc | multi_cont."""

    kind: str
    name: str
    value: object  # bool | str | float, or a tuple of them for the multi kinds

    def holds(self, wanted: "Prop") -> bool:
        """Whether this (an entity's) property equals ``wanted`` (an input's), as FindingDory compares."""
        if self.name != wanted.name:
            return False
        if self.kind in ("disc", "cont") and wanted.kind == self.kind:
            return _same(self.value, wanted.value)
        if self.kind == "multi_disc" and wanted.kind == "disc" or self.kind == "multi_cont" and wanted.kind == "cont":
            return any(_same(v, wanted.value) for v in self.value)
        if self.kind == wanted.kind and self.kind.startswith("multi"):
            return len(self.value) == len(wanted.value) and all(_same(a, b) for a, b in zip(self.value, wanted.value))
        return False

    @staticmethod
    def parse(data) -> "Prop":
        if isinstance(data, Prop):
            return data
        if not isinstance(data, dict) or "name" not in data or "value" not in data:
            raise ValueError(f"goal_expr: a property must be {{'_target_', 'name', 'value'}}, got {data!r}")
        target = str(data.get("_target_", "DiscPddlEntityProperty")).rsplit(".", 1)[-1]
        if target not in PROPERTY_CLASSES:
            raise ValueError(f"goal_expr: unknown property class {target!r}; known: {sorted(PROPERTY_CLASSES)}")
        kind = PROPERTY_CLASSES[target]
        value = data["value"]
        if kind.startswith("multi"):
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"goal_expr: property {data['name']!r} ({target}) needs a list value, got {value!r}")
            value = tuple(value)
        return Prop(kind, str(data["name"]), value)


def _same(a, b) -> bool:
    # bools and strings never equal each other or numbers ("True" != True, True != 1).
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return float(a) == float(b)


@dataclass(frozen=True)
class Atom:
    """A predicate call such as ``robot_at_object(obj, robot_0)``."""

    name: str
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.name}({', '.join(self.args)})"


@dataclass(frozen=True)
class Input:
    name: str
    expr_type: str
    properties: tuple[Prop, ...] = ()


@dataclass
class Expr:
    op: str
    children: list["Node"]
    inputs: list[Input] = field(default_factory=list)
    quantifier: str | None = None

    def atoms(self) -> list[Atom]:
        out = []
        for child in self.children:
            out.extend([child] if isinstance(child, Atom) else child.atoms())
        return out


Node = Union[Expr, Atom]


def parse(data) -> Node:
    """A goal_expr (dict or predicate string) -> AST; ``ValueError`` names what is malformed."""
    if isinstance(data, str):
        match = _CALL.match(data)
        if not match:
            raise ValueError(f"goal_expr: {data!r} is not a predicate call like robot_at_object(obj, robot_0)")
        args = tuple(a.strip() for a in match.group(2).split(",") if a.strip())
        return Atom(match.group(1), args)
    if data is None:
        return Expr("AND", [])
    if not isinstance(data, dict):
        raise ValueError(f"goal_expr: expected a dict or a predicate string, got {type(data).__name__}")
    op = data.get("expr_type")
    if op not in EXPR_TYPES:
        raise ValueError(f"goal_expr: expr_type must be one of {EXPR_TYPES}, got {op!r}")
    quantifier = data.get("quantifier")
    if quantifier is not None and quantifier not in QUANTIFIERS:
        raise ValueError(f"goal_expr: quantifier must be one of {sorted(QUANTIFIERS)} or null, got {quantifier!r}")
    inputs = []
    for item in data.get("inputs") or []:
        if not isinstance(item, dict) or "name" not in item or "expr_type" not in item:
            raise ValueError(f"goal_expr: an input must have 'name' and 'expr_type', got {item!r}")
        inputs.append(Input(str(item["name"]), str(item["expr_type"]), tuple(Prop.parse(p) for p in item.get("properties") or [])))
    subs = data.get("sub_exprs")
    if not isinstance(subs, list):
        raise ValueError(f"goal_expr: sub_exprs must be a list, got {subs!r}")
    return Expr(op, [parse(s) for s in subs], inputs, quantifier)


@dataclass(frozen=True)
class Entity:
    """An entity the expression can be grounded on: its name, types and properties."""

    name: str
    types: frozenset[str]
    properties: frozenset[Prop] = frozenset()

    def has(self, wanted: Iterable[Prop]) -> bool:
        return all(any(p.holds(w) for p in self.properties) for w in wanted)


def candidates(entities: dict[str, Entity], spec: Input) -> list[Entity]:
    """Entities an input may take, in registration order (as FindingDory iterates them)."""
    return [e for e in entities.values() if spec.expr_type in e.types and e.has(spec.properties)]


def substitute(node: Node, mapping: dict[str, str]) -> Node:
    if isinstance(node, Atom):
        return Atom(node.name, tuple(mapping.get(a, a) for a in node.args))
    return Expr(node.op, [substitute(c, mapping) for c in node.children], [], None)


def ground(node: Node, entities: dict[str, Entity]) -> Node:
    """Expand every quantifier over ``entities`` (FindingDory's ``expand_quantifiers``)."""
    if isinstance(node, Atom):
        return node
    node = Expr(node.op, [ground(c, entities) for c in node.children], node.inputs, node.quantifier)
    if node.quantifier is None:
        return Expr(node.op, node.children)
    assigns: list[list[Entity]] = [[]]
    for spec in node.inputs:
        options = candidates(entities, spec)
        assigns = [a + [e] for a in assigns for e in options if e not in a]
    body = Expr(node.op, node.children)
    clones = [substitute(body, {spec.name: e.name for spec, e in zip(node.inputs, assign)}) for assign in assigns]
    return Expr(QUANTIFIERS[node.quantifier], clones)


def subgoal_entity(node: Node) -> tuple[str, str]:
    """(kind, entity name) of a grounded subgoal: its first location predicate's target."""
    for atom in [node] if isinstance(node, Atom) else node.atoms():
        if atom.name in LOCATION_PREDICATES and atom.args:
            return LOCATION_PREDICATES[atom.name], atom.args[0]
    raise ValueError(f"goal_expr: subgoal {node} names no robot_at_object / robot_at_receptacle / robot_in_room target")


def sub_expr_sequence(grounded: Expr, sequential_goals: dict, targets_of: Callable[[str], list[int]]) -> list[int]:
    """Which grounded subgoals an ordered task visits, in order.

    ``sub_expr_sequence`` when the file has it; otherwise from ``sequence`` (candidate object
    indices) as FindingDory derives it: ``targets_of(entity)`` gives the candidate indices a
    subgoal's entity stands for (the object itself; for a receptacle, the objects picked from /
    placed on it).
    """
    if "sub_expr_sequence" in sequential_goals:
        sequence = [int(i) for i in sequential_goals["sub_expr_sequence"]]
    else:
        index_of: dict[int, int] = {}
        for position, child in enumerate(grounded.children):
            for target in targets_of(subgoal_entity(child)[1]):
                index_of[int(target)] = position
        missing = [i for i in sequential_goals.get("sequence", []) if int(i) not in index_of]
        if missing:
            raise ValueError(f"goal_expr: sequential_goals.sequence names candidate(s) {missing} that no subgoal stands for")
        sequence = [index_of[int(i)] for i in sequential_goals.get("sequence", [])]
    if any(not 0 <= i < len(grounded.children) for i in sequence):
        raise ValueError(f"goal_expr: sub_expr_sequence {sequence} outside the {len(grounded.children)} subgoals")
    return sequence


class Evaluation:
    """One rollout's evaluation of a grounded expression, stop by stop.

    ``stop(truth)`` is a ``pddl_intermediate_stop`` (or the final stop) where ``truth(atom)`` says
    whether each predicate holds at the robot's pose; it returns the expression's value.
    """

    def __init__(self, grounded: Node, sequence: list[int] | None = None) -> None:
        self.root = grounded if isinstance(grounded, Expr) else Expr("AND", [grounded])
        self.sequence = sequence
        if self.root.op == "AND_SEQUENTIAL_ORDERED" and sequence is None:
            raise ValueError("goal_expr: an ordered sequential expression needs its sub_expr_sequence")
        self.locked: list[bool | None] = [None] * len(self.root.children)
        self.permanently_false = False
        self.satisfied = 0

    @property
    def sequential(self) -> bool:
        return self.root.op in SEQUENTIAL

    def stop(self, truth: Callable[[Atom], bool]) -> bool:
        if self.permanently_false:
            return False
        if self.root.op == "AND_SEQUENTIAL":
            result = self._unordered(truth)
        elif self.root.op == "AND_SEQUENTIAL_ORDERED":
            result = self._ordered(truth)
        else:
            result = _value(self.root, truth)
        if self.sequential:
            satisfied = sum(1 for v in self.locked if v)
            if satisfied == self.satisfied:  # a stop that reached no new subgoal
                self.permanently_false = True
            self.satisfied = satisfied
        elif not result:
            self.permanently_false = True  # a single-goal stop where no goal holds
        return bool(result) and not self.permanently_false

    def _unordered(self, truth) -> bool:
        marked = False
        for index, child in enumerate(self.root.children):
            if self.locked[index]:
                continue
            now = _value(child, truth)
            self.locked[index] = bool(now and not marked)
            marked = marked or bool(now)
        return all(self.locked)

    def _ordered(self, truth) -> bool:
        marked, result = False, True
        for position, index in enumerate(self.sequence):
            if self.locked[index]:
                continue
            now = _value(self.root.children[index], truth)
            if now and marked:
                now = False  # one new subgoal per stop
            elif now:
                marked = True
            if now and position > 0 and not self.locked[self.sequence[position - 1]]:
                self.permanently_false = True  # reached before its predecessor
                return False
            self.locked[index] = now
            result = result and now
        return all(self.locked[i] for i in self.sequence)


def _value(node: Node, truth: Callable[[Atom], bool]) -> bool:
    if isinstance(node, Atom):
        value = truth(node)
        if not isinstance(value, bool):
            raise ValueError(f"predicate {node} returned {value!r}, not a bool")
        return value
    if node.op in ("AND", "NAND"):
        result = all(_value(c, truth) for c in node.children)
    elif node.op in ("OR", "NOR"):
        result = any(_value(c, truth) for c in node.children)
    else:  # a nested sequential expression, evaluated statelessly
        result = all(_value(c, truth) for c in node.children)
    return not result if node.op in ("NAND", "NOR") else result


def count_goals(grounded: Node, sequence: list[int] | None) -> int:
    """FindingDory's number of targets (``SubGoalCount``): 1 for a single goal; one per subgoal
    unordered; the sequence's subgoals ordered."""
    if not isinstance(grounded, Expr) or grounded.op not in SEQUENTIAL:
        return 1
    if grounded.op == "AND_SEQUENTIAL_ORDERED":
        return len(set(sequence or []))
    return len(grounded.children)


def all_assignments(spec_inputs: list[Input], entities: dict[str, Entity]) -> Iterable[tuple[Entity, ...]]:
    """Every assignment of distinct entities to ``spec_inputs`` (for inspection and tests)."""
    pools = [candidates(entities, s) for s in spec_inputs]
    return (combo for combo in itertools.product(*pools) if len(set(e.name for e in combo)) == len(combo))
