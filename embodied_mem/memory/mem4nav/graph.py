"""Semantic topology graph (Mem4Nav): landmark nodes with descriptors, directed weighted edges.

- A descriptor ``v`` either joins the nearest node ``u* = argmin_u ||v - phi(u)||_2`` (when that
  L2 distance is at most ``delta``), whose descriptor and position become running means, or
  creates a new node (the first descriptor always does). ``delta`` is an L2 distance, as in
  the public code.
- When the current node changes from ``u_prev`` to ``u_c`` a directed edge is added with
  ``w = alpha * ||p_prev - p_c|| + beta * c_instr`` (clamped at 0); an existing edge's weight
  becomes the mean of old and new. No self-loops. Routing is Dijkstra over these weights.

Node ids are plain ints here; the memory system namespaces them (``("node", id)``) so they
never collide with octree Morton keys in the STM / LTM key space (the public code collides).
The public code never adds an edge (it passes node objects where ids are expected); this one does.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np


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

    def update(self, descriptor: np.ndarray, position: np.ndarray, stamp: float, instruction_cost: float) -> Transition:
        """Assign ``descriptor`` (seen at ``position``) to a node and record the transition."""
        descriptor = np.asarray(descriptor, dtype=np.float32).reshape(self.dim)
        position = np.asarray(position, dtype=np.float64).reshape(3)
        node, distance = self.nearest(descriptor)
        created = node is None or distance > self.delta
        if created:
            node = self._add_node(descriptor, position, stamp)
        else:
            self._merge(node, descriptor, position, stamp)
        previous, weight = self.current, None
        if previous is not None and previous != node:
            weight = self.add_edge(previous, node, instruction_cost)
        else:
            previous = None
        self.current = node
        return Transition(node, created, previous, weight)

    def _add_node(self, descriptor: np.ndarray, position: np.ndarray, stamp: float) -> int:
        node = len(self)
        self.graph.add_node(node, position=position.copy(), count=1, creation_time=float(stamp), last_stamp=float(stamp), visits=1)
        self.descriptors = np.vstack([self.descriptors, descriptor[None, :]])
        return node

    def _merge(self, node: int, descriptor: np.ndarray, position: np.ndarray, stamp: float) -> None:
        """Running means: phi <- (phi * n + v) / (n + 1), pos <- (pos * n + p) / (n + 1)."""
        attributes = self.graph.nodes[node]
        n = attributes["count"]
        self.descriptors[node] = (self.descriptors[node] * n + descriptor) / (n + 1)
        attributes["position"] = (attributes["position"] * n + position) / (n + 1)
        attributes["count"] = n + 1
        attributes["last_stamp"] = float(stamp)
        if self.current != node:
            attributes["visits"] += 1

    def add_edge(self, source: int, target: int, instruction_cost: float) -> float | None:
        """Add or smooth the edge ``source -> target``; returns its weight (None for a self-loop)."""
        if source == target:
            return None
        distance = float(np.linalg.norm(self.position(source) - self.position(target)))
        weight = max(0.0, self.alpha * distance + self.beta * float(instruction_cost))
        if self.graph.has_edge(source, target):
            weight = 0.5 * (self.graph.edges[source, target]["weight"] + weight)
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

    def clear(self) -> None:
        self.graph.clear()
        self.descriptors = np.zeros((0, self.dim), dtype=np.float32)
        self.current = None
