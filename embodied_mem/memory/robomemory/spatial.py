"""Spatial memory: a dynamic knowledge graph updated by retrieval, local edits and write-back.

Vertices: objects and receptacles (``e<track id>``, named by the perception front-end), rooms
(``room:<name>``, from the floor plan) and the robot (``robot``, while it holds something).
Edges (directed, one per ordered pair; ``relation`` attribute):

- ``on``: object -> receptacle it rests on;  ``in``: receptacle -> room, or object -> room when
  no surface is known;  ``held_by``: object -> robot.  These are **exclusive** (``LOCATION``):
  a subject has at most one outgoing location edge (a thing is in one place at a time).
- ``near``: object -> object (stored once, from the smaller vertex name), not exclusive.

Per step (``update(s_t)``), the paper's cycle:

1. **retrieve**: the top-N (``seeds``, 3) vertices most similar to s_t. The tracker names
   entities exactly, so similarity is identity with s_t's salience ranking (what the robot
   acted on, the room it is in, what it sees best); see ``seed_nodes``.
2. **expand** K (``hops``, 2) hops, undirected, in the graph *plus the edges s_t asserts* (so
   that applying the same s_t again retrieves no more than the first time: idempotence).
3. **resolve**: a rule-based resolver (the VLM's stand-in) compares G_sub with s_t's facts and
   emits edit ops (add / modify / delete of vertices and edges). Ops that would touch a vertex
   outside G_sub are dropped and counted (``deferred``): they wait until a later step retrieves it
   (so does a location edit of a vertex on G_sub's rim whose location edge leaves G_sub).
4. **write back**: ops are applied, then vertices of G_sub left isolated are pruned.

Everything outside G_sub (vertices, their attributes, edges with an endpoint outside it) is
untouched by construction. ``begin`` / ``rollback`` undo a step (all-or-nothing observe).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

import networkx as nx

from embodied_mem.memory.robomemory.summary import ROBOT, StepSummary, node_entity, room_node

LOCATION = ("on", "in", "held_by")  # exclusive: one per subject
RELATIONS = LOCATION + ("near",)
MOVE_RADIUS = 0.5  # m: a view whose centroid is farther from the entity's estimate shows an old place


@dataclass
class Op:
    """One edit the resolver emits. ``kind``: add_node | modify_node | add_edge | modify_edge |
    delete_edge | delete_node."""

    kind: str
    node: str | None = None
    attrs: dict | None = None
    edge: tuple[str, str, str] | None = None  # (subject, relation, object)
    old: tuple[str, str, str] | None = None  # the edge a modify_edge replaces

    def touches(self) -> set[str]:
        nodes = {self.node} if self.node else set()
        for e in (self.edge, self.old):
            if e is not None:
                nodes |= {e[0], e[2]}
        return nodes


@dataclass
class UpdateReport:
    seeds: list[str] = field(default_factory=list)
    subgraph: set[str] = field(default_factory=set)
    ops: list[Op] = field(default_factory=list)
    deferred: int = 0
    pruned: list[str] = field(default_factory=list)


class RuleResolver:
    """Deterministic conflict resolution of s_t against G_sub (the offline VLM stand-in)."""

    def resolve(self, sub: nx.DiGraph, s: StepSummary) -> list[Op]:
        """Ops that make ``sub`` agree with ``s``, computed on a working copy of ``sub``."""
        work = sub.copy()
        ops: list[Op] = []
        for m in s.mentions:
            attrs = {
                "kind": m.kind,
                "category": m.category,
                "attributes": dict(m.attributes),
                "position": list(m.position),
                "box": list(m.box),
                "last_seen": s.stamp,
                "last_frame": s.frame_id,
            }
            view = {"frame_id": s.frame_id, "stamp": s.stamp, "pose": list(s.pose), "score": m.score, "xyz": list(m.view_xyz)}
            if m.node not in work:
                attrs.update(first_seen=s.stamp, moved_at=None, view=view)
                ops.append(Op("add_node", m.node, attrs))
                work.add_node(m.node, **copy.deepcopy(attrs))
                continue
            old = work.nodes[m.node]
            new = dict(old)
            new.update(attrs)
            if new.get("first_seen") is None:  # a vertex a fact named before anything showed it
                new["first_seen"] = s.stamp
            best = old.get("view")
            stale = best is None or (old.get("moved_at") is not None and best["stamp"] < old["moved_at"])
            far = best is not None and _distance(best["xyz"], m.position) > MOVE_RADIUS
            if stale or far or m.score >= best["score"]:  # ties: the most recent view
                new["view"] = view
            self._modify(work, ops, m.node, new)
        for room in {s.room} - {None}:
            node = room_node(room)
            attrs = {"kind": "room", "category": room, "last_seen": s.stamp, "last_frame": s.frame_id,
                     "view": {"frame_id": s.frame_id, "stamp": s.stamp, "pose": list(s.pose), "score": 1.0, "xyz": list(s.pose[:3])}}
            if node not in work:
                ops.append(Op("add_node", node, dict(attrs, first_seen=s.stamp)))
                work.add_node(node, **copy.deepcopy(dict(attrs, first_seen=s.stamp)))
            else:
                self._modify(work, ops, node, dict(work.nodes[node], **attrs))
        references = {m.node: m for m in s.references}
        for fact in s.facts:
            for node in (fact.subject, fact.object):
                if node not in work:
                    attrs = _reference(references[node]) if node in references else _stub(node, s)
                    ops.append(Op("add_node", node, attrs))
                    work.add_node(node, **copy.deepcopy(attrs))
            if fact.relation == "near":
                if not work.has_edge(fact.subject, fact.object):
                    self._add_edge(work, ops, (fact.subject, "near", fact.object))
                continue
            current = location_of(work, fact.subject)
            wanted = (fact.subject, fact.relation, fact.object)
            if current == wanted:
                continue
            if current is not None and not fact.strong and _consistent(work, current, wanted):
                continue  # "seen in the kitchen" agrees with "on the kitchen table"
            if current is None:
                self._add_edge(work, ops, wanted)
            else:
                ops.append(Op("modify_edge", edge=wanted, old=current))
                work.remove_edge(current[0], current[2])
                work.add_edge(wanted[0], wanted[2], relation=wanted[1])
            if fact.relation == "held_by":  # in the gripper: near nothing any more
                for a, b in list(work.out_edges(fact.subject)) + list(work.in_edges(fact.subject)):
                    if work.edges[a, b]["relation"] == "near":
                        ops.append(Op("delete_edge", edge=(a, "near", b)))
                        work.remove_edge(a, b)
        # Near edges between two objects seen this step that are no longer close.
        seen = {m.node: m for m in s.mentions}
        asserted = {(f.subject, f.object) for f in s.facts if f.relation == "near"}
        for a, b, data in list(work.edges(data=True)):
            if data["relation"] == "near" and a in seen and b in seen and (a, b) not in asserted:
                ops.append(Op("delete_edge", edge=(a, "near", b)))
                work.remove_edge(a, b)
        for event in s.events:  # a place starts a new "since it moved" for the object's views
            if event.kind == "place" and event.object in work and work.nodes[event.object].get("moved_at") != event.stamp:
                node = dict(work.nodes[event.object])
                node["moved_at"] = event.stamp
                mention = seen.get(event.object)
                xyz = list(mention.view_xyz) if mention else node.get("position") or list(s.pose[:3])
                node["view"] = {"frame_id": s.frame_id, "stamp": s.stamp, "pose": list(s.pose), "score": mention.score if mention else 0.0, "xyz": xyz}
                self._modify(work, ops, event.object, node)
        return ops

    @staticmethod
    def _modify(work: nx.DiGraph, ops: list[Op], node: str, new: dict) -> None:
        if _canon(new) != _canon(work.nodes[node]):
            ops.append(Op("modify_node", node, copy.deepcopy(new)))
            work.nodes[node].clear()
            work.nodes[node].update(copy.deepcopy(new))

    @staticmethod
    def _add_edge(work: nx.DiGraph, ops: list[Op], edge: tuple[str, str, str]) -> None:
        ops.append(Op("add_edge", edge=edge))
        work.add_edge(edge[0], edge[2], relation=edge[1])


def _reference(m) -> dict:
    """A vertex for an entity a fact names but this step does not show: no view yet."""
    return {"kind": m.kind, "category": m.category, "attributes": dict(m.attributes), "position": list(m.position), "box": list(m.box),
            "first_seen": None, "last_seen": None, "last_frame": None, "moved_at": None, "view": None}


def _stub(node: str, s: StepSummary) -> dict:
    """Attributes of a vertex a fact names before any mention did (a room, the robot, a
    receptacle the tracker inferred under the gripper)."""
    if node == ROBOT:
        return {"kind": "robot", "category": "robot"}
    if node.startswith("room:"):
        return {"kind": "room", "category": node[5:], "first_seen": s.stamp, "last_seen": s.stamp, "last_frame": s.frame_id,
                "view": {"frame_id": s.frame_id, "stamp": s.stamp, "pose": list(s.pose), "score": 1.0, "xyz": list(s.pose[:3])}}
    return {"kind": "receptacle", "category": "unknown", "attributes": {}, "position": list(s.pose[:3]), "box": list(s.pose[:3]) * 2,
            "first_seen": s.stamp, "last_seen": s.stamp, "last_frame": s.frame_id, "moved_at": None,
            "view": {"frame_id": s.frame_id, "stamp": s.stamp, "pose": list(s.pose), "score": 0.0, "xyz": list(s.pose[:3])}}


def _distance(a, b) -> float:
    return sum((float(x) - float(y)) ** 2 for x, y in zip(a, b)) ** 0.5


def _canon(data: dict) -> str:
    return json.dumps(data, sort_keys=True, default=float)


def _consistent(graph: nx.DiGraph, current: tuple, wanted: tuple) -> bool:
    """A weak "in room R" agrees with a current "on receptacle X" when X is in R."""
    if wanted[1] != "in" or current[1] != "on":
        return False
    return location_of(graph, current[2]) == (current[2], "in", wanted[2])


def location_of(graph: nx.DiGraph, node: str) -> tuple[str, str, str] | None:
    """The subject's one location edge (on / in / held_by), or None."""
    if node not in graph:
        return None
    for _, target, data in graph.out_edges(node, data=True):
        if data["relation"] in LOCATION:
            return (node, data["relation"], target)
    return None


class SpatialMemory:
    """The dynamic KG with retrieval-based incremental updates (see the module docstring)."""

    def __init__(self, seeds: int = 3, hops: int = 2, resolver: RuleResolver | None = None) -> None:
        if seeds < 1 or hops < 0:
            raise ValueError(f"seeds must be >= 1 and hops >= 0, got {seeds}, {hops}")
        self.seeds, self.hops = seeds, hops
        self.resolver = resolver or RuleResolver()
        self.graph = nx.DiGraph()
        self.deferred = 0  # ops dropped because they reached outside G_sub
        self._journal: list | None = None

    # ------------------------------------------------------------------ retrieval
    def seed_nodes(self, s: StepSummary) -> list[str]:
        """Top-N vertices most similar to s_t: its salience ranking (identity similarity)."""
        return list(s.salient[: self.seeds])

    def neighbourhood(self, seeds: list[str], extra_edges=(), hops: int | None = None) -> set[str]:
        """Vertices within ``hops`` (undirected) of the seeds, in G plus ``extra_edges``."""
        hops = self.hops if hops is None else hops
        frontier = {n for n in seeds}
        found = set(frontier)
        extra: dict[str, set[str]] = {}
        for a, b in extra_edges:
            extra.setdefault(a, set()).add(b)
            extra.setdefault(b, set()).add(a)
        for _ in range(hops):
            step = set()
            for node in frontier:
                if node in self.graph:
                    step |= set(self.graph.successors(node)) | set(self.graph.predecessors(node))
                step |= extra.get(node, set())
            frontier = step - found
            found |= frontier
        return found

    def retrieve(self, s: StepSummary) -> tuple[list[str], set[str]]:
        seeds = self.seed_nodes(s)
        return seeds, self.neighbourhood(seeds, [(f.subject, f.object) for f in s.facts])

    # ------------------------------------------------------------------ update
    def update(self, s: StepSummary) -> UpdateReport:
        """M_t = U(M_{t-1}, s_t): retrieve, resolve, apply inside G_sub, prune."""
        seeds, allowed = self.retrieve(s)
        sub = self.graph.subgraph([n for n in allowed if n in self.graph]).copy()
        ops = self.resolver.resolve(sub, s)
        report = UpdateReport(seeds, allowed)
        for op in ops:
            if not op.touches() <= allowed or self._hidden_location(op):
                report.deferred += 1
                continue
            self._apply(op)
            report.ops.append(op)
        for node in sorted(allowed):
            if node in self.graph and self.graph.degree(node) == 0:
                self._apply(Op("delete_node", node))
                report.pruned.append(node)
        self.deferred += report.deferred
        return report

    def _hidden_location(self, op: Op) -> bool:
        """A location edit whose subject's real location edge leaves G_sub: the resolver could
        not see it (a vertex at the subgraph's rim), so the edit waits (changing it would
        touch an edge outside G_sub; adding beside it would break exclusivity)."""
        if op.kind not in ("add_edge", "modify_edge") or op.edge[1] not in LOCATION:
            return False
        return location_of(self.graph, op.edge[0]) != op.old

    def _apply(self, op: Op) -> None:
        g, journal = self.graph, self._journal
        if op.kind == "add_node":
            if op.node in g:
                raise ValueError(f"KG: vertex {op.node} exists already")
            g.add_node(op.node, **copy.deepcopy(op.attrs))
            journal is not None and journal.append(("remove_node", op.node))
        elif op.kind == "modify_node":
            journal is not None and journal.append(("set_node", op.node, copy.deepcopy(dict(g.nodes[op.node]))))
            g.nodes[op.node].clear()
            g.nodes[op.node].update(copy.deepcopy(op.attrs))
        elif op.kind == "delete_node":
            journal is not None and journal.append(("add_node", op.node, copy.deepcopy(dict(g.nodes[op.node]))))
            g.remove_node(op.node)
        elif op.kind in ("add_edge", "modify_edge"):
            if op.old is not None:
                self._remove_edge(op.old)
            subject, relation, target = op.edge
            if relation in LOCATION and location_of(g, subject) is not None:
                raise ValueError(f"KG: {subject} would have two location edges")
            if g.has_edge(subject, target):
                raise ValueError(f"KG: edge {subject} -> {target} exists already")
            g.add_edge(subject, target, relation=relation)
            journal is not None and journal.append(("remove_edge", subject, target))
        elif op.kind == "delete_edge":
            self._remove_edge(op.edge)
        else:
            raise ValueError(f"KG: unknown op {op.kind!r}")

    def _remove_edge(self, edge: tuple[str, str, str]) -> None:
        subject, relation, target = edge
        if not self.graph.has_edge(subject, target) or self.graph.edges[subject, target]["relation"] != relation:
            raise ValueError(f"KG: no edge {edge}")
        self.graph.remove_edge(subject, target)
        if self._journal is not None:
            self._journal.append(("add_edge", subject, target, relation))

    # ------------------------------------------------------------------ all or nothing
    def begin(self) -> None:
        self._journal = []
        self._deferred_mark = self.deferred

    def commit(self) -> None:
        self._journal = None

    def rollback(self) -> None:
        journal, self._journal = self._journal, None
        if journal is None:
            return
        g = self.graph
        for entry in reversed(journal):
            kind = entry[0]
            if kind == "remove_node":
                g.remove_node(entry[1])
            elif kind == "set_node":
                g.nodes[entry[1]].clear()
                g.nodes[entry[1]].update(entry[2])
            elif kind == "add_node":
                g.add_node(entry[1], **entry[2])
            elif kind == "remove_edge":
                g.remove_edge(entry[1], entry[2])
            elif kind == "add_edge":
                g.add_edge(entry[1], entry[2], relation=entry[3])
        self.deferred = self._deferred_mark

    # ------------------------------------------------------------------ reads
    def check(self) -> None:
        """The KG invariants; ``AssertionError`` names the first broken one."""
        g = self.graph
        for node in g.nodes:
            located = [t for _, t, d in g.out_edges(node, data=True) if d["relation"] in LOCATION]
            assert len(located) <= 1, f"{node} has {len(located)} location edges: {located}"
            assert g.degree(node) > 0, f"{node} is isolated"
        for a, b, d in g.edges(data=True):
            assert d["relation"] in RELATIONS, f"unknown relation {d['relation']!r}"
            if d["relation"] == "near":
                assert a < b, f"near edge stored both ways or unsorted: {a} {b}"
                assert not g.has_edge(b, a), f"near edge stored twice: {a} {b}"

    def entities(self) -> list[tuple[str, dict]]:
        return [(n, d) for n, d in self.graph.nodes(data=True) if node_entity(n) is not None and d.get("kind") in ("object", "receptacle")]

    def relations(self, relation: str | None = None) -> list[tuple[str, str, str]]:
        return sorted((a, d["relation"], b) for a, b, d in self.graph.edges(data=True) if relation is None or d["relation"] == relation)

    def describe_subgraph(self, nodes) -> str:
        """G_sub as text (the paper serialises it into the planner's prompt)."""
        lines = []
        for a, b, d in sorted(self.graph.subgraph(nodes).edges(data=True)):
            lines.append(f"{_label(self.graph, a)} {d['relation']} {_label(self.graph, b)}")
        return "; ".join(lines)

    # ------------------------------------------------------------------ checkpoints
    def to_state(self) -> dict:
        return {"graph": nx.node_link_data(self.graph, edges="edges"), "deferred": self.deferred, "seeds": self.seeds, "hops": self.hops}

    @staticmethod
    def from_state(data: dict, resolver: RuleResolver | None = None) -> "SpatialMemory":
        memory = SpatialMemory(int(data["seeds"]), int(data["hops"]), resolver)
        graph = nx.node_link_graph(data["graph"], directed=True, multigraph=False, edges="edges")
        for a, b, d in graph.edges(data=True):
            if d.get("relation") not in RELATIONS:
                raise ValueError(f"KG edge {a} -> {b} has unknown relation {d.get('relation')!r}")
        memory.graph = nx.DiGraph(graph)
        memory.deferred = int(data["deferred"])
        try:
            memory.check()
        except AssertionError as error:
            raise ValueError(f"KG checkpoint breaks an invariant: {error}") from error
        return memory


def _label(graph: nx.DiGraph, node: str) -> str:
    data = graph.nodes[node]
    if data.get("kind") in ("object", "receptacle"):
        from embodied_mem.memory.base import describe

        return describe(data.get("category", "thing"), data.get("attributes") or {})
    return data.get("category", node).replace("_", " ")
