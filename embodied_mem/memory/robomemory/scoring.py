"""Scoring the knowledge graph against a simulator's true placements (tests and benchmarks only).

The ground truth enters here and nowhere else, and only to score: nothing computed here is
fed back to the memory. ``env`` is duck-typed (the embedded simulator's ``EmbeddedEnv``: its
``world.receptacles`` with boxes and rooms, ``state.placements`` with where each object rests).

A KG vertex is matched to a true entity by position (the memory's ids are its own): an object
vertex to the nearest true object within ``radius`` (one-to-one, closest pairs first), a
receptacle vertex to the true receptacle whose box (grown by ``margin``) holds its position.
Then each ``on`` edge is right when the true object rests on that true receptacle, and each
receptacle ``in`` room edge when the true receptacle stands in that room.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embodied_mem.memory.robomemory.summary import node_entity


@dataclass
class RelationScore:
    predicted: int
    correct: int
    truth: int
    found: int  # true relations some correct edge names

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.found / self.truth if self.truth else 0.0


def match_vertices(spatial, env, radius: float = 0.5, margin: float = 0.15) -> dict[str, int]:
    """KG vertex -> true entity id, by position."""
    world, state = env.world, env.state
    matched: dict[str, int] = {}
    pairs = []
    for node, data in spatial.entities():
        position = np.asarray(data.get("position") or [np.nan] * 3, dtype=np.float64)
        if not np.all(np.isfinite(position)):
            continue
        if data["kind"] == "object":
            for object_id, placement in state.placements.items():
                gap = float(np.linalg.norm(np.asarray(placement.position)[:2] - position[:2]))
                if gap <= radius:
                    pairs.append((gap, node, object_id))
        else:
            best, best_gap = None, np.inf
            for receptacle_id, receptacle in world.receptacles.items():
                lo, hi = np.asarray(receptacle.box.min_corner)[:2] - margin, np.asarray(receptacle.box.max_corner)[:2] + margin
                if np.all(position[:2] >= lo) and np.all(position[:2] <= hi):
                    gap = float(np.linalg.norm(position[:2] - (lo + hi) / 2))
                    if gap < best_gap:
                        best, best_gap = receptacle_id, gap
            if best is not None:
                matched[node] = best
    taken: set[int] = set()
    for gap, node, object_id in sorted(pairs):
        if node not in matched and object_id not in taken:
            matched[node] = object_id
            taken.add(object_id)
    return matched


def score_relations(spatial, env) -> dict[str, RelationScore]:
    """Precision / recall of the KG's ``on`` (object -> receptacle) and ``in`` (receptacle ->
    room) edges against the simulator's current truth."""
    world, state = env.world, env.state
    matched = match_vertices(spatial, env)
    on_correct, on_found, on_predicted = 0, set(), 0
    in_correct, in_found, in_predicted = 0, set(), 0
    for subject, relation, target in spatial.relations():
        if relation == "on":
            on_predicted += 1
            obj, rec = matched.get(subject), matched.get(target)
            if obj is not None and rec is not None and obj in state.placements and state.placements[obj].receptacle_id == rec:
                on_correct += 1
                on_found.add(obj)
        elif relation == "in" and node_entity(subject) is not None and target.startswith("room:"):
            if spatial.graph.nodes[subject].get("kind") != "receptacle":
                continue
            in_predicted += 1
            rec = matched.get(subject)
            if rec is not None and world.receptacles[rec].room == target[5:]:
                in_correct += 1
                in_found.add(rec)
    return {
        "on": RelationScore(on_predicted, on_correct, len(state.placements), len(on_found)),
        "in": RelationScore(in_predicted, in_correct, len(world.receptacles), len(in_found)),
    }
