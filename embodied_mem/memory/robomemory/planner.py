"""Closed-loop planning ("prefrontal"): a Planner proposes, a Critic checks, a bounded replan.

In this project a plan is the sequence of goals the robot drives to: one step per task goal,
each step a candidate hit (a remembered frame and a place to go) chosen from what the memories
retrieved for that goal. The loop (paper: Planner + Critic, the critic skipped at the first
step to avoid endless replanning, "infinite-loop mitigation"):

    plan = planner.plan(candidates)
    for step i = 2, 3, ...:                      # never at step 1
        while critic rejects step i and replans < max_replans:
            exclude step i's candidate; plan = planner.replan(...)   # steps before i are kept

The deterministic critic checks a step against memory: the hit names an observed frame; the
target is still believed where the hit says (the KG still has it, not in the gripper, within
``move_radius`` of the hit's target); the hit's frame was taken after the target last moved
(or is the frame of the release that put it there); and it is not the place an earlier step
already goes to (a multi-goal task visits distinct things). ``LLMPlanner`` / ``LLMCritic``
(``reasoner: llm``) ask a chat model instead, validate its JSON and fall back to the
deterministic rule on anything invalid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from embodied_mem.memory.robomemory.reasoning import ask_json
from embodied_mem.types import Hit


@dataclass
class Candidate:
    """A retrieved answer for one goal: the hit, the KG vertex it is about, which memory found it."""

    goal_index: int
    hit: Hit
    node: str | None = None
    source: str = "spatial"
    text: str = ""


@dataclass
class PlanStep:
    goal_index: int
    rank: int  # index into the goal's candidate list
    candidate: Candidate


@dataclass
class Verdict:
    ok: bool
    reason: str = ""


@dataclass
class PlanTrace:
    critic_calls: int = 0
    replans: int = 0
    rejected: list[tuple[int, int, str]] = field(default_factory=list)  # (goal, rank, reason)
    critic_steps: list[int] = field(default_factory=list)  # plan steps the critic was asked about


class DeterministicPlanner:
    """Each goal in order: its best candidate not excluded (candidates come sorted by score)."""

    def plan(self, goals: list[list[Candidate]], excluded: set[tuple[int, int]] = frozenset()) -> list[PlanStep | None]:
        steps: list[PlanStep | None] = []
        for index, candidates in enumerate(goals):
            choice = next((rank for rank in range(len(candidates)) if (index, rank) not in excluded), None)
            steps.append(None if choice is None else PlanStep(index, choice, candidates[choice]))
        return steps

    def replan(self, goals, plan, step: int, excluded) -> list[PlanStep | None]:
        """Keep the steps before ``step``; plan the rest again without the excluded candidates."""
        fresh = self.plan(goals, excluded)
        return list(plan[:step]) + fresh[step:]


class DeterministicCritic:
    """Checks a plan step against memory (``beliefs(node) -> KG vertex data or None``)."""

    def __init__(self, beliefs: Callable[[str], dict | None], holding: Callable[[str], bool], move_radius: float = 0.5) -> None:
        self.beliefs, self.holding, self.move_radius = beliefs, holding, move_radius

    def check(self, step: PlanStep, earlier: list[PlanStep]) -> Verdict:
        hit = step.candidate.hit
        if hit.frame_id is None or hit.agent_pose is None:
            return Verdict(False, "names no observed frame")
        node = step.candidate.node
        if node is not None and node.startswith("e"):
            data = self.beliefs(node)
            if data is None:
                return Verdict(False, f"{node} is no longer in memory")
            if self.holding(node):
                return Verdict(False, f"{node} is in the gripper")
            if hit.target_xyz is not None and data.get("position") is not None and data.get("kind") == "object":
                gap = float(np.linalg.norm(np.asarray(hit.target_xyz)[:2] - np.asarray(data["position"])[:2]))
                if gap > self.move_radius:
                    return Verdict(False, f"{node} is believed {gap:.2f} m from where the step goes")
            moved = data.get("moved_at")
            if data.get("kind") == "object" and moved is not None and hit.stamp is not None and hit.stamp < moved:
                return Verdict(False, f"{node} moved after frame {hit.frame_id}")
        for other in earlier:
            if other is not None and other.candidate.node is not None and other.candidate.node == node and other.goal_index != step.goal_index:
                return Verdict(False, f"{node} is already step {other.goal_index + 1}'s goal")
        return Verdict(True)


def closed_loop(planner, critic, goals: list[list[Candidate]], max_replans: int) -> tuple[list[PlanStep | None], PlanTrace]:
    """Plan, then check every step but the first, replanning at most ``max_replans`` times."""
    if max_replans < 0:
        raise ValueError(f"max_replans must be >= 0, got {max_replans}")
    trace = PlanTrace()
    excluded: set[tuple[int, int]] = set()
    plan = planner.plan(goals, excluded)
    for i in range(1, len(plan)):  # step 1 (i = 0) is never criticised
        while plan[i] is not None:
            trace.critic_calls += 1
            trace.critic_steps.append(i)
            verdict = critic.check(plan[i], plan[:i])
            if verdict.ok:
                break
            trace.rejected.append((plan[i].goal_index, plan[i].rank, verdict.reason))
            if trace.replans >= max_replans:
                break  # the bound: keep the step as it is
            excluded.add((plan[i].goal_index, plan[i].rank))
            replanned = planner.replan(goals, plan, i, excluded)
            trace.replans += 1
            if replanned[i] is None:  # nothing left for this goal: keep the rejected step
                break
            plan = replanned
    return plan, trace


# ----------------------------------------------------------------------------------------
def _describe(goals: list[list[Candidate]]) -> str:
    lines = []
    for index, candidates in enumerate(goals):
        for rank, c in enumerate(candidates):
            lines.append(f"goal {index} candidate {rank}: {c.text or c.node} (from {c.source}, score {c.hit.score:.3f}, frame {c.hit.frame_id})")
    return "\n".join(lines)


class LLMPlanner:
    """A chat model picks one candidate per goal: JSON ``{"plan": [{"goal": i, "candidate": j}]}``
    with every goal once and no excluded candidate; else the deterministic planner's plan."""

    def __init__(self, client, instruction: str = "") -> None:
        self.client, self.instruction = client, instruction
        self.base = DeterministicPlanner()
        self.fallbacks = 0

    def plan(self, goals, excluded=frozenset()):
        prompt = (
            f"Task: {self.instruction}\nChoose one candidate per goal (the place the robot should drive to). "
            f"Excluded (rejected by the critic): {sorted(excluded)}.\n{_describe(goals)}\n"
            'Reply {"plan": [{"goal": 0, "candidate": 0}, ...]}.'
        )
        reply = ask_json(self.client, prompt)
        try:
            chosen = {int(s["goal"]): int(s["candidate"]) for s in reply["plan"]}
            valid = sorted(chosen) == list(range(len(goals))) and len(reply["plan"]) == len(goals) and all(
                0 <= chosen[g] < len(goals[g]) and (g, chosen[g]) not in excluded for g in chosen
            )
        except (TypeError, KeyError, ValueError):
            valid = False
        if not valid:
            self.fallbacks += 1
            return self.base.plan(goals, excluded)
        return [PlanStep(g, chosen[g], goals[g][chosen[g]]) for g in range(len(goals))]

    def replan(self, goals, plan, step, excluded):
        return list(plan[:step]) + self.plan(goals, excluded)[step:]


class LLMCritic:
    """A chat model judges a step: JSON ``{"ok": bool, "reason": str}``; else the rule answers."""

    def __init__(self, client, base: DeterministicCritic, context: Callable[[PlanStep], str] | None = None) -> None:
        self.client, self.base, self.context = client, base, context
        self.fallbacks = 0

    def check(self, step: PlanStep, earlier: list[PlanStep]) -> Verdict:
        memory = self.context(step) if self.context else ""
        prompt = (
            f"A robot plans to go to: {step.candidate.text or step.candidate.node} (frame {step.candidate.hit.frame_id}). "
            f"Earlier steps: {json.dumps([s.candidate.node for s in earlier if s is not None])}. Memory: {memory}\n"
            'Is this step still valid? Reply {"ok": true|false, "reason": "..."}.'
        )
        reply = ask_json(self.client, prompt)
        if isinstance(reply, dict) and isinstance(reply.get("ok"), bool) and isinstance(reply.get("reason", ""), str):
            return Verdict(reply["ok"], reply.get("reason", ""))
        self.fallbacks += 1
        return self.base.check(step, earlier)

