"""The agent: instruction -> Query -> recall -> one goal per task goal.

Two tracks (always reported separately):

- ``oracle``: the query carries the task's structured ``constraints``; the memory's answer
  measures recall.
- ``language``: the query carries only the instruction text; the memory must also understand
  it. The built-in reasoner is deterministic and offline: it hands the text over unchanged, so
  what is measured is the memory's own text retrieval (MiniLM or label-word embeddings).

Turning a hit into somewhere to stand is the navigator's business: with a ``target_xyz`` the
agent stops ``standoff`` metres from it, facing it, on the near side of any wall; without one
it drives to the hit's ``agent_pose``.
"""

from __future__ import annotations

from dataclasses import dataclass

from embodied_mem.types import Hit, Pose, Query, Recall

TRACKS = ("oracle", "language")


@dataclass
class AgentConfig:
    k: int = 5  # hits asked for per goal
    standoff: float = 0.7  # metres between the robot and the target it approaches


class Agent:
    def __init__(self, config: AgentConfig | None = None) -> None:
        self.config = config or AgentConfig()

    def make_query(self, instruction: str, constraints: dict | None, track: str, near: Pose) -> Query:
        if track not in TRACKS:
            raise ValueError(f"track must be one of {TRACKS}, got {track!r}")
        return Query(text=instruction, k=self.config.k, near=near, constraints=constraints if track == "oracle" else None)

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
