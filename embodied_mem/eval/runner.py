"""Evaluation: stream each episode's history into the memories, then run every task.

For each episode the history is rendered once and fed to every memory under test (each
observe() timed on its own), so systems compared in one run see exactly the same frames. Then,
per memory and per track, each task goes: recall -> goals -> drive -> FindingDory's success.

- high-level success (``high_level_accuracy``): FindingDory's HL check. The memory answers with
  **frame ids of the history**, one per goal; the robot is teleported to each named frame's
  true pose in turn and the goal predicates are checked. A missing or invalid id, or a wrong
  number of answers, fails. Its ablations are reported beside it: ``dtg`` (visibility threshold
  0) and ``sem_cov`` (distance threshold 10000).
- success (low level): the oracle navigator drives from where the history ended to the agent's
  stop for each hit (an approach of ``target_xyz`` when the hit has one), at most
  ``LOW_LEVEL_MAX_STEPS`` actions in all (FindingDory's ``low_level_policy_max_steps``); a
  single-goal task's goal is checked after every action, a multi-goal task's at each stop with
  FindingDory's sequential rules. SPL weighs success by shortest / travelled path.

Every memory also gets the floor plan the robot is deployed with (``set_floor_plan``), and
nothing else from the simulator: the observations carry what the robot perceives in the
configured perception mode (``detector``, or ``gt`` as an upper bound), named on every result.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from embodied_mem.agent import Agent, AgentConfig
from embodied_mem.reasoner import canonical
from embodied_mem.registry import build
from embodied_mem.sim.embedded.episode import EmbeddedEpisode, EmbeddedSimConfig
from embodied_mem.sim.episodes import make_episode
from embodied_mem.sim.tasks.generator import Task, TaskConfig
from embodied_mem.sim.tasks.success import DEFAULT, DTG, SEM_COV, evaluate_stops, goal_satisfied, spl

LOW_LEVEL_MAX_STEPS = 1000  # FindingDory: low_level_policy_max_steps


@dataclass
class RunSpec:
    memories: list[dict]  # memory configs: {"name": ..., options}
    tracks: list[str]
    episodes: int = 1
    seed: int = 0
    sim: Any = field(default_factory=EmbeddedSimConfig)  # EmbeddedSimConfig | HabitatSimConfig
    tasks: TaskConfig = field(default_factory=TaskConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    progress: bool = True
    size_every: int = 50  # frames between memory-size samples for the report
    workers: int = 1  # episodes run in parallel on Ray when > 1
    ray_address: str | None = None  # a Ray cluster's address; None: a local one


@dataclass
class TaskResult:
    episode: int
    seed: int
    memory: str
    track: str
    task_id: str
    high_level_category: str
    category: str
    instruction: str
    goals: int
    perception: str
    success: bool
    high_level_success: bool
    high_level_dtg: bool
    high_level_sem_cov: bool
    spl: float
    recall_ms: float
    hits: int
    steps: int
    travelled_m: float
    shortest_m: float
    # Why a task failed, and what the agent chose, so a failure can be read without re-running.
    failure: str = ""  # "" on success; else e.g. "not understood: ...", "no answer", "stopped outside the goal"
    parse_ok: bool | None = None  # language track: the reasoner's constraints equal the task's (None: not compared)
    parsed: str = ""  # language track: the reasoner's constraints (JSON)
    answer_frames: str = ""  # the history frame ids the memory named, one per goal ("12;408")
    answer_poses: str = ""  # where the agent stopped, x,y,yaw per stop ("1.20,3.40,1.57;...")
    evidence: str = ""  # the chosen hits' scores and memory evidence (JSON)


@dataclass
class SystemRun:
    """What one memory did in one episode's history."""

    frames: int = 0
    ingest_s: float = 0.0
    final_bytes: int = 0
    final_items: int = 0
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (frames seen, bytes)


@dataclass
class RunResult:
    memory: str
    track: str
    tasks: list[TaskResult] = field(default_factory=list)
    ingest: list[SystemRun] = field(default_factory=list)


def deploy(system, episode) -> None:
    """Give a memory what a deployed robot has besides its stream: the floor plan (named rooms)."""
    if hasattr(system, "set_floor_plan"):
        system.set_floor_plan(episode.floor_plan())


def memory_label(config: dict) -> str:
    return str(config["name"])


def run(spec: RunSpec, on_episode: Callable[[int], None] | None = None) -> dict[tuple[str, str], RunResult]:
    """Evaluate every memory of ``spec`` on ``spec.episodes`` episodes in every track.

    ``spec.workers`` > 1 runs the episodes in parallel on Ray (a local cluster, or
    ``spec.ray_address``); each episode is seeded on its own, so the results are those of the
    serial run (timings aside), gathered in episode order.
    """
    labels = [memory_label(m) for m in spec.memories]
    if len(set(labels)) != len(labels):
        raise ValueError(f"each memory may appear once per run, got {labels}")
    if spec.workers < 1:
        raise ValueError(f"eval.workers must be at least 1, got {spec.workers}")
    results = {(label, track): RunResult(label, track) for label in labels for track in spec.tracks}
    if spec.workers == 1 or spec.episodes == 1:
        outcomes = []
        for index in range(spec.episodes):
            outcomes.append(run_episode(spec, index))
            if on_episode is not None:
                on_episode(index)
    else:
        outcomes = _run_on_ray(spec, on_episode)
    for outcome in outcomes:
        for key, (tasks, ingest_run) in outcome.items():
            results[key].tasks.extend(tasks)
            results[key].ingest.append(ingest_run)
    return results


def run_episode(spec: RunSpec, index: int) -> dict[tuple[str, str], tuple[list[TaskResult], SystemRun]]:
    """One episode: stream its history into fresh memories, then every task in every track."""
    labels = [memory_label(m) for m in spec.memories]
    agent = Agent(spec.agent)
    seed = spec.seed + index
    episode = make_episode(spec.sim, seed, index=index)
    systems = {label: build("memory", dict(config)) for label, config in zip(labels, spec.memories)}
    for system in systems.values():
        deploy(system, episode)
    ingests = ingest(episode, systems, spec, index)
    tasks = episode.tasks(spec.tasks)
    outcome = {}
    for label, system in systems.items():
        for track in spec.tracks:
            bar = tqdm(tasks, desc=f"{label} {track} tasks", unit="task", disable=not spec.progress, leave=False)
            outcome[(label, track)] = ([run_task(episode, system, agent, task, track, index, seed, label) for task in bar], ingests[label])
    return outcome


def _run_on_ray(spec: RunSpec, on_episode: Callable[[int], None] | None):
    try:
        import ray
    except ImportError:
        raise ValueError("eval.workers > 1 runs episodes on Ray: pip install 'embodied-mem[ray]' (or ray)") from None
    started_here = not ray.is_initialized()
    if started_here:
        if spec.ray_address:
            ray.init(address=spec.ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=spec.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote = ray.remote(num_cpus=1)(run_episode)
        quiet = RunSpec(**{**spec.__dict__, "progress": False})  # workers' bars would interleave
        pending = {remote.remote(quiet, index): index for index in range(spec.episodes)}
        done: dict[int, dict] = {}
        bar = tqdm(total=spec.episodes, desc=f"episodes on {spec.workers} Ray workers", unit="episode", disable=not spec.progress)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ready[0])
            done[index] = ray.get(ready[0])
            bar.update(1)
            if on_episode is not None:
                on_episode(index)
        bar.close()
        return [done[i] for i in range(spec.episodes)]
    finally:
        if started_here:
            ray.shutdown()


def ingest(episode: EmbeddedEpisode, systems: dict, spec: RunSpec, index: int) -> dict[str, SystemRun]:
    runs = {label: SystemRun() for label in systems}
    bar = tqdm(episode.history(), desc=f"episode {index + 1}/{spec.episodes} history", unit="frame", disable=not spec.progress, leave=False)
    frames = 0
    for obs in bar:
        frames += 1
        episode.believed_pose = obs.pose  # where the robot thinks it is when the tasks start
        episode.today = obs.day  # the robot's clock: the language track's "yesterday"
        for label, system in systems.items():
            started = time.perf_counter()
            system.observe(obs)
            runs[label].ingest_s += time.perf_counter() - started
        if frames % spec.size_every == 0:
            for label, system in systems.items():
                runs[label].sizes.append((frames, system.stats().bytes))
    for label, system in systems.items():
        flush = getattr(system, "flush", None)
        if flush is not None:  # deferred work (batched embeddings) belongs to ingest time
            started = time.perf_counter()
            flush()
            runs[label].ingest_s += time.perf_counter() - started
        stats = system.stats()
        runs[label].frames = frames
        runs[label].final_bytes, runs[label].final_items = stats.bytes, stats.items
        runs[label].sizes.append((frames, stats.bytes))
    return runs


def run_task(episode: EmbeddedEpisode, system, agent: Agent, task: Task, track: str, index: int, seed: int, label: str) -> TaskResult:
    episode.reset_to_start()
    start = episode.final_pose
    parse, parse_ok, parsed = None, None, ""
    if track == "language" and agent.config.reasoner != "text":
        parse = agent.understand(task.instruction, system, today=getattr(episode, "today", None))
        parsed = json.dumps(parse.constraints, sort_keys=True) if parse.understood else ""
        if task.constraints is not None:
            parse_ok = parse.understood and canonical(parse.constraints) == canonical(task.constraints)
        if not parse.understood:
            return _failed(episode, task, track, index, seed, label, f"not understood: {parse.reason}", parse_ok)
    elif track == "oracle" and task.constraints is None:
        raise ValueError(f"task {task.task_id!r} has no constraints: it can run in the language track only")
    # The memory is asked from where the robot believes it is (its localisation may drift).
    query = agent.make_query(task.instruction, task.constraints, track, getattr(episode, "believed_pose", start), parse)
    started = time.perf_counter()
    recall = system.recall(query)
    recall_ms = (time.perf_counter() - started) * 1000.0
    hits = agent.choose(recall, len(task.goals), track)
    oracle = episode.oracle

    # High level: the named history frames, at their true poses.
    views = [episode.frame_pose(h.frame_id) for h in hits]
    answered = len(hits) == len(task.goals) and all(v is not None for v in views)

    def high_level(thresholds) -> bool:
        return answered and evaluate_stops(oracle, task.goals, task.ordered, views, thresholds=thresholds)

    # Low level: drive, within FindingDory's step budget.
    single = len(task.goals) == 1
    check = (lambda pose: goal_satisfied(oracle, task.goals[0], pose)) if single else None
    stops, travelled, steps, reached = [], 0.0, 0, False
    kinds = [g.get("target") for g in (query.constraints or {}).get("goals", [])]
    for hit in hits:
        kind = kinds[hit.goal_index] if hit.goal_index < len(kinds) else None
        goal = agent.stop_pose(hit, episode.navigator, episode.env.pose, kind)
        if goal is None or steps >= LOW_LEVEL_MAX_STEPS:
            break
        metres, used, reached = episode.navigator.drive_budget(goal, LOW_LEVEL_MAX_STEPS - steps, check)
        travelled, steps = travelled + metres, steps + used
        stops.append(episode.env.pose)
        if reached:
            break
    if single:
        success = reached or (bool(stops) and goal_satisfied(oracle, task.goals[0], stops[-1]))
    else:
        success = bool(stops) and len(stops) == len(hits) and evaluate_stops(oracle, task.goals, task.ordered, stops)
    shortest = episode.shortest_path(start, task.goals, task.ordered)
    if success:
        failure = ""
    elif not hits:
        failure = "no answer: the memory returned no hit"
    elif len(hits) != len(task.goals):
        failure = f"answered {len(hits)} goal(s) of {len(task.goals)}"
    elif len(stops) < len(hits):
        failure = "step budget spent before the last goal" if steps >= LOW_LEVEL_MAX_STEPS else "no way to a chosen goal"
    else:
        failure = "stopped outside the goal" if single else "a stop outside its goal, or out of order"
    return TaskResult(
        episode=index,
        seed=seed,
        memory=label,
        track=track,
        task_id=task.task_id,
        high_level_category=task.high_level_category,
        category=task.category,
        instruction=task.instruction,
        goals=len(task.goals),
        perception=episode.perception,
        success=bool(success),
        high_level_success=bool(high_level(DEFAULT)),
        high_level_dtg=bool(high_level(DTG)),
        high_level_sem_cov=bool(high_level(SEM_COV)),
        spl=spl(bool(success), shortest, travelled if math.isfinite(travelled) else math.inf),
        recall_ms=recall_ms,
        hits=len(recall.hits),
        steps=steps,
        travelled_m=travelled,
        shortest_m=shortest,
        failure=failure,
        parse_ok=parse_ok,
        parsed=parsed,
        answer_frames=";".join(str(h.frame_id) for h in hits),
        answer_poses=";".join(f"{p.position[0]:.2f},{p.position[1]:.2f},{p.yaw:.2f}" for p in stops),
        evidence=json.dumps([{"score": round(float(h.score), 4), **{k: v for k, v in h.evidence.items() if isinstance(v, (str, int, float, bool))}} for h in hits]),
    )


def _failed(episode, task: Task, track: str, index: int, seed: int, label: str, why: str, parse_ok: bool | None) -> TaskResult:
    """A task that failed before the memory was asked (an instruction not understood)."""
    return TaskResult(
        episode=index, seed=seed, memory=label, track=track, task_id=task.task_id,
        high_level_category=task.high_level_category, category=task.category, instruction=task.instruction,
        goals=len(task.goals), perception=episode.perception, success=False, high_level_success=False,
        high_level_dtg=False, high_level_sem_cov=False, spl=0.0, recall_ms=0.0, hits=0, steps=0,
        travelled_m=0.0, shortest_m=episode.shortest_path(episode.final_pose, task.goals, task.ordered),
        failure=why, parse_ok=parse_ok,
    )


def summarize(result: RunResult, spec: RunSpec, config: dict) -> dict:
    """The summary.json of one memory in one track."""
    tasks = result.tasks
    frames = sum(r.frames for r in result.ingest)
    ingest_s = sum(r.ingest_s for r in result.ingest)
    asked = [t.recall_ms for t in tasks if not t.failure.startswith("not understood")]  # the memory was asked
    latencies = np.array(asked) if asked else np.zeros(1)

    def rate(items: list[TaskResult], key: str = "success") -> float:
        return float(np.mean([getattr(t, key) for t in items])) if items else 0.0

    categories = sorted({t.category for t in tasks})
    high_levels = sorted({t.high_level_category for t in tasks})
    return {
        "memory": result.memory,
        "sim": "embedded" if isinstance(spec.sim, EmbeddedSimConfig) else "habitat",
        "perception": spec.sim.perception.mode,
        "upper_bound": spec.sim.perception.mode == "gt",
        "track": result.track,
        "episodes": spec.episodes,
        "tasks": len(tasks),
        "success_rate": rate(tasks),
        "high_level_accuracy": rate(tasks, "high_level_success"),
        "high_level_dtg": rate(tasks, "high_level_dtg"),
        "high_level_sem_cov": rate(tasks, "high_level_sem_cov"),
        "by_category": {c: rate([t for t in tasks if t.category == c]) for c in categories},
        "by_high_level_category": {c: rate([t for t in tasks if t.high_level_category == c]) for c in high_levels},
        "high_level_by_category": {c: rate([t for t in tasks if t.category == c], "high_level_success") for c in categories},
        "spl": rate(tasks, "spl"),
        # Language track: how often the reasoner's constraints equal the task's, apart from success.
        "parse_accuracy": rate(parsed, "parse_ok") if (parsed := [t for t in tasks if t.parse_ok is not None]) else None,
        "not_understood": sum(t.failure.startswith("not understood") for t in tasks),
        "ingest_fps": frames / ingest_s if ingest_s > 0 else 0.0,
        "recall_ms_p50": float(np.percentile(latencies, 50)),
        "recall_ms_p95": float(np.percentile(latencies, 95)),
        "memory_bytes": int(np.mean([r.final_bytes for r in result.ingest])) if result.ingest else 0,
        "frames": frames,
        "seed": spec.seed,
        "config": config,
    }


def task_rows(result: RunResult) -> list[dict]:
    return [asdict(t) for t in result.tasks]


