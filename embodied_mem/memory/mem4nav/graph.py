"""Semantic topology graph (Mem4Nav): landmark nodes with descriptors, directed weighted edges.

- A descriptor ``v`` either joins the nearest node ``u* = argmin_u ||v - phi(u)||_2`` (when that
  L2 distance is at most ``delta``), whose descriptor and position become running means, or
  creates a new node (the first descriptor always does). ``delta`` is an L2 distance, as in
  the public code.
- When the current node changes from ``u_prev`` to ``u_c`` a directed edge is added with
  ``w = alpha * ||p_prev - p_c|| + beta * c_instr`` (clamped at 0); an existing edge's weight
  becomes the mean of old and new. No self-loops. Routing is Dijkstra over these weights.

Our bookkeeping on a node (not the paper's): ``frame_id`` / ``pose``, the frame that last
updated it and its observer pose (``note_frame``; None until noted), and ``last_stamp``.

Node ids are plain ints here; the memory system namespaces them (``("node", id)``) so they
never collide with octree Morton keys in the STM / LTM key space (the public code collides).
The public code never adds an edge (it passes node objects where ids are expected); this one does.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from embodied_mem.memory.mem4nav.journal import Journal, record
from embodied_mem.memory.mem4nav.state import pose_rows, shaped
from embodied_mem.types import Pose


@dataclass
class Transition:
    """What one ``update`` did."""

    node: int
    created: bool
    previous: int | None  # the node the robot came from when the node changed, else None
    weight: float | None  # the edge weight after the update, when an edge was touched


class SemanticGraph:
    """A DiGraph of landmark nodes; descriptors are also kept as rows of one matrix for speed."""

    def __init__(self, dim: int, delta: float, alpha: float, beta: float) -> None:
        self.dim, self.delta, self.alpha, self.beta = int(dim), float(delta), float(alpha), float(beta)
        self.graph = nx.DiGraph()
        self.descriptors = np.zeros((0, self.dim), dtype=np.float32)  # row = node id
        self.current: int | None = None

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def position(self, node: int) -> np.ndarray:
        return self.graph.nodes[node]["position"]

    def nearest(self, descriptor: np.ndarray) -> tuple[int | None, float]:
        """The node whose descriptor is nearest in L2, and that distance (None, inf when empty)."""
        if len(self) == 0:
            return None, float("inf")
        distances = np.linalg.norm(self.descriptors - descriptor[None, :], axis=1)
        best = int(np.argmin(distances))
        return best, float(distances[best])

    def update(self, descriptor: np.ndarray, position: np.ndarray, stamp: float, instruction_cost: float, journal: Journal | None = None) -> Transition:
        """Assign ``descriptor`` (seen at ``position``) to a node and record the transition
        (each change undoable through ``journal``)."""
        descriptor = np.asarray(descriptor, dtype=np.float32).reshape(self.dim)
        position = np.asarray(position, dtype=np.float64).reshape(3)
        node, distance = self.nearest(descriptor)
        created = node is None or distance > self.delta
        if created:
            node = self._add_node(descriptor, position, stamp, journal)
        else:
            self._merge(node, descriptor, position, stamp, journal)
        previous, weight = self.current, None
        if previous is not None and previous != node:
            weight = self.add_edge(previous, node, instruction_cost, journal)
        else:
            previous = None
        record(journal, lambda current=self.current: setattr(self, "current", current))
        self.current = node
        return Transition(node, created, previous, weight)

    def _add_node(self, descriptor: np.ndarray, position: np.ndarray, stamp: float, journal: Journal | None = None) -> int:
        node = len(self)
        record(journal, lambda descriptors=self.descriptors: self._drop_node(node, descriptors))
        self.graph.add_node(node, position=position.copy(), count=1, creation_time=float(stamp), last_stamp=float(stamp), visits=1, frame_id=None, pose=None)
        self.descriptors = np.vstack([self.descriptors, descriptor[None, :]])  # a new array: the old one is kept intact
        return node

    def _drop_node(self, node: int, descriptors: np.ndarray) -> None:
        """Undo of ``_add_node``: the node (the newest; its edges were undone first) and its row."""
        if self.graph.has_node(node):
            self.graph.remove_node(node)
        self.descriptors = descriptors

    def _merge(self, node: int, descriptor: np.ndarray, position: np.ndarray, stamp: float, journal: Journal | None = None) -> None:
        """Running means: phi <- (phi * n + v) / (n + 1), pos <- (pos * n + p) / (n + 1)."""
        attributes = self.graph.nodes[node]
        n = attributes["count"]
        if journal is not None:
            row = self.descriptors[node].copy()
            old = {name: attributes[name] for name in ("position", "count", "last_stamp", "visits")}  # position is replaced, never written in place

            def undo() -> None:
                self.descriptors[node] = row
                attributes.update(old)

            journal(undo)
        self.descriptors[node] = (self.descriptors[node] * n + descriptor) / (n + 1)
        attributes["position"] = (attributes["position"] * n + position) / (n + 1)
        attributes["count"] = n + 1
        attributes["last_stamp"] = float(stamp)
        if self.current != node:
            attributes["visits"] += 1

    def add_edge(self, source: int, target: int, instruction_cost: float, journal: Journal | None = None) -> float | None:
        """Add or smooth the edge ``source -> target``; returns its weight (None for a self-loop)."""
        if source == target:
            return None
        distance = float(np.linalg.norm(self.position(source) - self.position(target)))
        weight = max(0.0, self.alpha * distance + self.beta * float(instruction_cost))
        if self.graph.has_edge(source, target):
            old = self.graph.edges[source, target]["weight"]
            weight = 0.5 * (old + weight)
            record(journal, lambda: self.graph.edges[source, target].update(weight=old))
        else:
            record(journal, lambda: self.graph.remove_edge(source, target) if self.graph.has_edge(source, target) else None)
        self.graph.add_edge(source, target, weight=weight)
        return weight

    def shortest_path(self, source: int, target: int) -> tuple[list[int], float]:
        """Dijkstra route and its length; ([], inf) when ``target`` is unreachable."""
        try:
            length, path = nx.single_source_dijkstra(self.graph, source, target, weight="weight")
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return [], float("inf")
        return path, float(length)

    def positions(self) -> np.ndarray:
        """Node positions as rows (row = node id)."""
        return np.array([self.position(node) for node in range(len(self))]).reshape(-1, 3)

    def route_lengths(self, sources: list[int]) -> dict[int, dict[int, float]]:
        """Dijkstra lengths from each source to every node it reaches."""
        return {source: nx.single_source_dijkstra_path_length(self.graph, source, weight="weight") for source in sources}

    def note_frame(self, node: int, frame_id: int, pose: Pose, journal: Journal | None = None) -> None:
        """Our bookkeeping: the frame (and its observer pose) that last updated ``node``."""
        attributes = self.graph.nodes[node]
        record(journal, lambda old=(attributes["frame_id"], attributes["pose"]): attributes.update(frame_id=old[0], pose=old[1]))
        attributes["frame_id"], attributes["pose"] = int(frame_id), pose

    def clear(self) -> None:
        self.graph.clear()
        self.descriptors = np.zeros((0, self.dim), dtype=np.float32)
        self.current = None

    # ------------------------------------------------------------------ checkpoints
    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Parameters and the current node; per node (row = id) its fields, per edge one row."""
        nodes = [self.graph.nodes[n] for n in range(len(self))]
        edges = list(self.graph.edges(data="weight"))
        state = {"dim": self.dim, "delta": self.delta, "alpha": self.alpha, "beta": self.beta, "current": self.current}
        arrays = {
            "positions": np.array([node["position"] for node in nodes], dtype=np.float64).reshape(-1, 3),
            "descriptors": self.descriptors.copy(),
            "count": np.array([node["count"] for node in nodes], dtype=np.int64),
            "visits": np.array([node["visits"] for node in nodes], dtype=np.int64),
            "creation_time": np.array([node["creation_time"] for node in nodes], dtype=np.float64),
            "last_stamp": np.array([node["last_stamp"] for node in nodes], dtype=np.float64),
            "frame_id": np.array([-1 if node["frame_id"] is None else node["frame_id"] for node in nodes], dtype=np.int64),
            "pose": pose_rows([node["pose"] for node in nodes]),
            "edge_source": np.array([s for s, _, _ in edges], dtype=np.int64),
            "edge_target": np.array([t for _, t, _ in edges], dtype=np.int64),
            "edge_weight": np.array([w for _, _, w in edges], dtype=np.float64),
        }
        return state, arrays

    @classmethod
    def from_state(cls, state: dict, arrays: dict[str, np.ndarray]) -> SemanticGraph:
        """A new graph from ``to_state``'s output; ``ValueError`` if it is not consistent."""
        graph = cls(int(state["dim"]), float(state["delta"]), float(state["alpha"]), float(state["beta"]))
        n = len(arrays["positions"])
        positions = shaped(arrays, "positions", (n, 3), "f")
        graph.descriptors = shaped(arrays, "descriptors", (n, graph.dim), "f").astype(np.float32)
        count, visits = shaped(arrays, "count", (n,), "i"), shaped(arrays, "visits", (n,), "i")
        if np.any(count < 1) or np.any(visits < 1):
            raise ValueError("graph node counts and visits must be at least 1")
        creation, last = shaped(arrays, "creation_time", (n,), "f"), shaped(arrays, "last_stamp", (n,), "f")
        frames, poses = shaped(arrays, "frame_id", (n,), "i"), shaped(arrays, "pose", (n, 7), "f", finite=False)
        for node in range(n):
            pose = poses[node]
            if np.all(np.isnan(pose)) and frames[node] == -1:
                frame_id, pose = None, None
            else:
                frame_id, pose = int(frames[node]), Pose(pose[:3], pose[3:])  # Pose refuses NaN / a bad quaternion
            graph.graph.add_node(
                node,
                position=positions[node].astype(np.float64),
                count=int(count[node]),
                visits=int(visits[node]),
                creation_time=float(creation[node]),
                last_stamp=float(last[node]),
                frame_id=frame_id,
                pose=pose,
            )
        m = len(arrays["edge_source"])
        weights = shaped(arrays, "edge_weight", (m,), "f")
        edges = zip(shaped(arrays, "edge_source", (m,), "i").tolist(), shaped(arrays, "edge_target", (m,), "i").tolist(), weights.tolist())
        for source, target, weight in edges:
            if not (0 <= source < n and 0 <= target < n) or source == target or weight < 0 or graph.graph.has_edge(source, target):
                raise ValueError(f"bad graph edge {source} -> {target} ({weight})")
            graph.graph.add_edge(source, target, weight=float(weight))
        current = state["current"]
        if current is not None and not (isinstance(current, int) and 0 <= current < n):
            raise ValueError(f"current graph node {current!r} does not exist")
        graph.current = current
        return graph
