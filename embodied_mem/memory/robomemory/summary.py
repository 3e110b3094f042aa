"""The Information Preprocessor ("thalamus"): one step of perception -> a step summary s_t.

The paper runs two VLM calls per step in parallel: a Step Summarizer (text summary s_t) and a
Query Generator (the queries q_t for each memory). Here the perception front-end is the shared
``EntityTracker`` (it names objects, as the paper's VLM names "the red mug"), and the
summariser turns what the tracker says this frame shows into a ``StepSummary``: the entities
in view (with the tracker's position and box, this frame's view of them), the spatial facts
the frame supports (object on receptacle, receptacle in room, object near object), and what
the robot's own grasp / release were about. Its ``text`` is the s_t every memory reads; its
``queries`` say what each memory retrieves with (the spatial memory's seeds, for instance).

Everything in a summary is plain, immutable data, so the four memories can read it at the same
time without locks. Embeddings of the event texts are computed here (the encoder is not
thread-safe), so no memory update calls the encoder.

``DeterministicSummariser`` is the offline default. ``LLMSummariser`` (``reasoner: llm``)
asks a chat model to rewrite the text and choose the salient entities; its answer is
validated and the deterministic summary is kept where it is invalid.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

import numpy as np

from embodied_mem.memory.base import describe, view_score

ROBOT = "robot"  # the KG vertex of the robot itself (what it holds)


def entity_node(entity_id: int) -> str:
    """KG vertex name of a tracker entity."""
    return f"e{int(entity_id)}"


def room_node(room: str) -> str:
    return f"room:{room}"


def node_entity(node: str) -> int | None:
    """The tracker id a vertex names, or None for rooms and the robot."""
    return int(node[1:]) if node.startswith("e") and node[1:].isdigit() else None


@dataclass(frozen=True)
class Mention:
    """One entity in view this step, as the perception front-end names and places it."""

    node: str
    kind: str  # "object" | "receptacle"
    category: str
    attributes: tuple[tuple[str, str], ...]
    position: tuple[float, float, float]  # the tracker's estimate (mean of sightings since it moved)
    box: tuple[float, ...]  # min xyz, max xyz of what has been seen of it
    view_xyz: tuple[float, float, float]  # this frame's centroid of it
    fraction: float  # mask fraction in this frame
    score: float  # view_score of this frame's view (how well this frame shows it)
    room: str | None

    @property
    def text(self) -> str:
        return describe(self.category, dict(self.attributes))


@dataclass(frozen=True)
class Fact:
    """A spatial relation the step supports. ``strong``: from the robot's own action (it put the
    thing there), which overrides what a glance suggests; weak facts never move a belief that is
    consistent with them (an object seen "in the kitchen" stays on the kitchen table)."""

    subject: str
    relation: str  # "on" | "in" | "near" | "held_by"
    object: str
    strong: bool = False


@dataclass(frozen=True)
class StepEvent:
    """A grasp ("pick") or release ("place"), with what the tracker inferred it was about."""

    kind: str  # "pick" | "place"
    stamp: float
    object: str | None
    receptacle: str | None
    room: str | None
    text: str
    vector: tuple[float, ...]  # embedding of ``text`` (unit), for the long-term memories
    plain: str = ""  # ``text`` without the time of day (the semantic memory's experience)


@dataclass(frozen=True)
class StepSummary:
    """s_t: what one step showed and did, plus the queries for each memory."""

    frame_id: int
    stamp: float
    day: int
    pose: tuple[float, ...]  # x, y, z, qx, qy, qz, qw (the robot's believed pose)
    room: str | None
    mentions: tuple[Mention, ...]
    references: tuple[Mention, ...]  # named by a fact but not in view (score -1)
    facts: tuple[Fact, ...]
    events: tuple[StepEvent, ...]
    day_start: bool
    text: str
    salient: tuple[str, ...]  # vertices ranked by salience: the spatial memory's seed query
    queries: tuple[tuple[str, str], ...] = ()  # memory -> query text (q_t)

    def query(self, memory: str) -> str:
        return dict(self.queries).get(memory, self.text)


def clock(stamp: float) -> str:
    seconds = int(stamp % 86400.0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class SummaryConfig:
    support_margin: float = 0.1  # m: an object's plan-view point may lie this far outside a surface's box
    support_below: float = 0.3  # m: an object's centre may be this far below the top of the surface's box
    support_above: float = 0.5  # m: ... and this far above it
    near_radius: float = 0.5  # m: two objects this close are "near"
    max_mentions: int = 12  # most salient entities named per step


class DeterministicSummariser:
    """Rules over the tracker's output: the offline stand-in for the paper's VLM summariser."""

    def __init__(self, config: SummaryConfig | None = None) -> None:
        self.config = config or SummaryConfig()

    def summarise(self, frame, tracker, views, ids, inferences, room_at, embed) -> StepSummary:
        """``frame``: the Observation; ``views`` / ``ids``: its visible instances and their
        track ids; ``inferences``: the tracker's reading of the frame's events; ``room_at(xy)``
        the floor plan; ``embed(texts)`` the text encoder (unit rows)."""
        c = self.config
        pose = frame.pose
        room = room_at(pose.position[:2])
        confirmed = {t.track_id for t in tracker.confirmed()}
        mentions: dict[str, Mention] = {}
        for view, track_id in zip(views, ids):
            track = tracker.tracks.get(int(track_id))
            if track is None or track.held or track.track_id not in confirmed:
                continue  # seen once: maybe a false detection (the tracker's own trust rule)
            offset = view.centroid[:2] - pose.position[:2]
            distance = float(np.linalg.norm(offset))
            bearing = abs(math.remainder(math.atan2(offset[1], offset[0]) - pose.yaw, 2 * math.pi))
            node = entity_node(track.track_id)
            score = float(view_score(view.mask_fraction, distance, bearing))
            if node in mentions and mentions[node].score >= score:
                continue
            mentions[node] = Mention(
                node=node,
                kind=track.kind,
                category=track.category,
                attributes=tuple(sorted((k, v) for k, v in track.attribute_values.items() if k != "kind")),
                position=tuple(float(v) for v in track.position),
                box=tuple(float(v) for v in np.concatenate([track.box_min, track.box_max])),
                view_xyz=tuple(float(v) for v in view.centroid),
                fraction=float(view.mask_fraction),
                score=score,
                room=room_at(track.position[:2]),
            )
        ranked = sorted(mentions.values(), key=lambda m: (-m.score, m.node))[: c.max_mentions]
        mentions = {m.node: m for m in ranked}
        facts = self._facts(mentions, tracker, confirmed)
        events = []
        for inference in inferences:
            if inference is None:
                continue
            events.append(self._event(inference, tracker, room, facts))
        # Entities a fact names that are not in view (the surface under the gripper, a table
        # whose mask was too small): what the tracker believes of them, without a view.
        references = []
        for node in dict.fromkeys(n for f in facts for n in (f.subject, f.object)):
            entity = node_entity(node)
            if entity is None or node in mentions or entity not in tracker.tracks:
                continue
            references.append(self._reference(tracker.tracks[entity], room_at))
        texts = [e.text for e in events]
        if texts:
            vectors = embed(texts)
            events = [replace(e, vector=tuple(float(v) for v in vector)) for e, vector in zip(events, vectors)]
        day_start = any(e.kind == "day_start" for e in frame.events)
        # Salience: what the robot acted on, then where it is, then what it sees best.
        salient = [n for e in events for n in (e.object, e.receptacle) if n is not None]
        if room is not None:
            salient.append(room_node(room))
        salient += [m.node for m in ranked]
        salient = list(dict.fromkeys(salient))
        text = self._text(frame, room, ranked, facts, events)
        queries = (("spatial", " ".join(salient)), ("temporal", text), ("episodic", " ".join(texts) or text), ("semantic", " ".join(texts) or text))
        return StepSummary(
            frame_id=int(frame.frame_id),
            stamp=float(frame.stamp),
            day=int(frame.day),
            pose=tuple(float(v) for v in np.concatenate([pose.position, pose.orientation])),
            room=room,
            mentions=tuple(ranked),
            references=tuple(references),
            facts=tuple(facts),
            events=tuple(events),
            day_start=day_start,
            text=text,
            salient=tuple(salient),
            queries=queries,
        )

    @staticmethod
    def _reference(track, room_at) -> Mention:
        return Mention(
            node=entity_node(track.track_id),
            kind=track.kind,
            category=track.category,
            attributes=tuple(sorted((k, v) for k, v in track.attribute_values.items() if k != "kind")),
            position=tuple(float(v) for v in track.position),
            box=tuple(float(v) for v in np.concatenate([track.box_min, track.box_max])),
            view_xyz=tuple(float(v) for v in track.position),
            fraction=0.0,
            score=-1.0,
            room=room_at(track.position[:2]),
        )

    def _support(self, position, tracker, confirmed) -> int | None:
        """The receptacle an object rests on: its seen box holds the object's plan-view point
        (within ``support_margin``) and its top is just below the object's centre."""
        c = self.config
        best, best_gap = None, math.inf
        for track in tracker.tracks.values():
            if track.kind != "receptacle" or track.track_id not in confirmed:
                continue
            nearest = np.clip(position[:2], track.box_min[:2], track.box_max[:2])
            gap = float(np.linalg.norm(nearest - position[:2]))
            top = float(track.box_max[2])
            if gap <= c.support_margin and top - c.support_below <= position[2] <= top + c.support_above and gap < best_gap:
                best, best_gap = track.track_id, gap
        return best

    def _facts(self, mentions: dict[str, Mention], tracker, confirmed) -> list[Fact]:
        facts: list[Fact] = []
        # Receptacles first: the objects' weak room facts are judged against them.
        for m in mentions.values():
            if m.kind == "receptacle" and m.room is not None:
                facts.append(Fact(m.node, "in", room_node(m.room)))
        objects = [m for m in mentions.values() if m.kind == "object"]
        for m in objects:
            support = self._support(np.asarray(m.position), tracker, confirmed)
            if support is not None:
                facts.append(Fact(m.node, "on", entity_node(support)))
            elif m.room is not None:
                facts.append(Fact(m.node, "in", room_node(m.room)))
        for i, a in enumerate(objects):
            for b in objects[i + 1 :]:
                if float(np.linalg.norm(np.subtract(a.position, b.position))) <= self.config.near_radius:
                    first, second = sorted((a.node, b.node))
                    facts.append(Fact(first, "near", second))
        return facts

    def _event(self, inference, tracker, room, facts: list[Fact]) -> StepEvent:
        kind = "pick" if inference.kind == "grasp" else "place"
        obj = None if inference.object_id is None else entity_node(inference.object_id)
        recep = None if inference.receptacle_id is None else entity_node(inference.receptacle_id)

        def name(entity_id) -> str:
            track = tracker.tracks.get(int(entity_id)) if entity_id is not None else None
            return "something" if track is None else describe(track.category, track.attribute_values)

        where = f" in the {room.replace('_', ' ')}" if room else ""
        if kind == "pick":
            plain = f"picked the {name(inference.object_id)} from the {name(inference.receptacle_id)}{where}"
            if obj is not None:
                facts.append(Fact(obj, "held_by", ROBOT, strong=True))
        else:
            plain = f"placed the {name(inference.object_id)} on the {name(inference.receptacle_id)}{where}"
            if obj is not None and recep is not None:
                facts.append(Fact(obj, "on", recep, strong=True))
            elif obj is not None and room is not None:
                facts.append(Fact(obj, "in", room_node(room), strong=True))
        return StepEvent(kind, float(inference.stamp), obj, recep, room, f"{plain} at {clock(inference.stamp)}", (), plain)

    def _text(self, frame, room, mentions, facts, events) -> str:
        where = room.replace("_", " ") if room else "somewhere"
        names = {m.node: m.text for m in mentions}
        seen = []
        for m in mentions:
            support = next((f.object for f in facts if f.subject == m.node and f.relation == "on"), None)
            seen.append(f"{m.text} ({m.node})" + (f" on {names.get(support, support)}" if support else ""))
        parts = [f"day {frame.day} {clock(frame.stamp)}, {where}"]
        if seen:
            parts.append("saw " + ", ".join(seen))
        parts += [e.text for e in events]
        return "; ".join(parts) + "."


class LLMSummariser:
    """A chat model rewrites s_t's text and ranks what is salient (the spatial memory's seeds).

    The structured part (mentions, facts, events) stays the deterministic one: the knowledge
    graph is grounded in the tracker's ids, which a language model must not invent. The reply
    must be JSON ``{"summary": str, "salient": [vertex, ...]}`` with vertices the step names;
    anything else (bad JSON, unknown vertices, an exception from the client) keeps the
    deterministic summary, and ``fallbacks`` counts how often that happened.
    """

    def __init__(self, client, base: DeterministicSummariser | None = None, max_chars: int = 600) -> None:
        self.client = client
        self.base = base or DeterministicSummariser()
        self.max_chars = max_chars
        self.fallbacks = 0

    def summarise(self, frame, tracker, views, ids, inferences, room_at, embed) -> StepSummary:
        summary = self.base.summarise(frame, tracker, views, ids, inferences, room_at, embed)
        from embodied_mem.memory.robomemory.reasoning import ask_json

        prompt = (
            "You are a robot's step summarizer. Rewrite this step as one short sentence and rank the "
            "salient vertices (most important first, only from the given list). Reply with JSON "
            '{"summary": "...", "salient": ["..."]}.\n'
            f"Step: {summary.text}\nVertices: {json.dumps(list(summary.salient))}"
        )
        reply = ask_json(self.client, prompt)
        valid = (
            isinstance(reply, dict)
            and isinstance(reply.get("summary"), str)
            and 0 < len(reply["summary"].strip()) <= self.max_chars
            and isinstance(reply.get("salient"), list)
            and all(isinstance(n, str) and n in summary.salient for n in reply["salient"])
        )
        if not valid:
            self.fallbacks += 1
            return summary
        salient = list(dict.fromkeys(reply["salient"] + list(summary.salient)))
        queries = tuple((k, reply["summary"].strip() if k == "temporal" else v) for k, v in summary.queries)
        return replace(summary, text=reply["summary"].strip(), salient=tuple(salient), queries=queries)


__all__ = [
    "DeterministicSummariser",
    "Fact",
    "LLMSummariser",
    "Mention",
    "ROBOT",
    "StepEvent",
    "StepSummary",
    "SummaryConfig",
    "entity_node",
    "node_entity",
    "room_node",
]
