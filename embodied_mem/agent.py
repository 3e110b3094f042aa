"""The agent: instruction -> Query -> recall -> one goal per task goal.

Two tracks (always reported separately):

- ``oracle``: the query carries the task's structured ``constraints``; the memory's answer
  measures recall.
- ``language``: the agent gets only the instruction text and must understand it. Its reasoner
  (``reasoner``) turns the words into the same structured query, built from the memory's own
  vocabulary, so the track measures understanding plus the memory's contents:
  ``offline`` (default; ``embodied_mem/reasoner.py``, deterministic, no download), ``openai``
  (any OpenAI-compatible server, ``embodied_mem/llm.py``; falls back to ``offline`` on invalid
  output) or ``text`` (no understanding: the raw text goes to the memory's own text retrieval,
  the baseline the reasoner is measured against). An instruction the reasoner does not
  understand is not guessed: the task fails, saying so.

Turning a hit into somewhere to stand is the navigator's business: with a ``target_xyz`` the
agent stops ``standoff`` metres from it, facing it, on the near side of any wall; without one
it drives to the hit's ``agent_pose``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from embodied_mem.reasoner import InstructionReasoner, Lexicon, Parse, ReasonerConfig
from embodied_mem.types import Hit, Pose, Query, Recall

TRACKS = ("oracle", "language")
REASONERS = ("offline", "openai", "text")


@dataclass
class AgentConfig:
    k: int = 5  # hits asked for per goal
    standoff: float = 0.7  # metres between the robot and the target it approaches
    reasoner: str = "offline"  # language track: offline | openai | text (see the module docstring)
    synonym_encoder: str | None = "minilm"  # the offline reasoner's fallback for unknown nouns (None: off)


class Agent:
    def __init__(self, config: AgentConfig | None = None) -> None:
        self.config = config or AgentConfig()
        if self.config.reasoner not in REASONERS:
            raise ValueError(f"agent.reasoner must be one of {REASONERS}, got {self.config.reasoner!r}")
        self._offline = InstructionReasoner(ReasonerConfig(encoder=self.config.synonym_encoder))
        self._llm = None

    def understand(self, instruction: str, system: Any, vocabulary: Any = None, today: int | None = None) -> Parse:
        """The instruction as a structured query, from the memory's own vocabulary; ``today``
        is the day by the robot's clock ("yesterday" counts back from it)."""
        lexicon = Lexicon.from_memory(system, vocabulary, today)
        if self.config.reasoner == "openai":
            if self._llm is None:
                from embodied_mem.llm import LlmReasoner, client_from_env

                self._llm = LlmReasoner(client_from_env(), self._offline)
            return self._llm.parse(instruction, lexicon)
        return self._offline.parse(instruction, lexicon)

    def make_query(self, instruction: str, constraints: dict | None, track: str, near: Pose, parse: Parse | None = None) -> Query:
        """The query a memory gets: the task's constraints (oracle), the reasoner's (language),
        or only the text (language with ``reasoner=text``)."""
        if track not in TRACKS:
            raise ValueError(f"track must be one of {TRACKS}, got {track!r}")
        if track == "oracle":
            return Query(text=instruction, k=self.config.k, near=near, constraints=constraints)
        understood = parse.constraints if parse is not None and parse.understood else None
        return Query(text=instruction, k=self.config.k, near=near, constraints=understood)

    def choose(self, recall: Recall, goal_count: int, track: str) -> list[Hit]:
        """The best hit for each goal, in goal order.

        A memory says which goal a hit serves (``evidence["goal_index"]``, 0 by default), in
        either track: one that understands a multi-goal instruction can answer every goal. The
        count is what the memory answered; the harness checks it against the task.
        """
        if track not in TRACKS:
            raise ValueError(f"track must be one of {TRACKS}, got {track!r}")
        best: dict[int, Hit] = {}
        for hit in recall.hits:
            index = hit.goal_index
            if index not in best or hit.score > best[index].score:
                best[index] = hit
        return [best[i] for i in sorted(best)]

    def stop_pose(self, hit: Hit, navigator, start: Pose, kind: str | None = None) -> Pose | None:
        """Where to stop for a hit.

        A receptacle is judged from a few viewpoints 0.1 m wide (FindingDory), so the robot goes
        back to the pose the memory chose (where it stood to pick or place); an object is judged
        within 2 m facing it, so the robot approaches its target from the near side. ``kind``
        comes from the structured task where there is one, else from the hit's evidence.
        """
        kind = kind or hit.evidence.get("kind")
        if kind in ("receptacle", "room") and hit.agent_pose is not None:
            return hit.agent_pose
        if hit.target_xyz is not None:
            pose = navigator.approach_pose(hit.target_xyz, self.config.standoff, start)
            if pose is not None:
                return pose
        return hit.agent_pose
