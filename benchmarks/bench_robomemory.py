"""RoboMemory: parallel vs sequential update and recall latency of its four memories, in one run.

    python benchmarks/bench_robomemory.py [--days 2] [--seed 5] [--encoder gt_hash] [--vlm-ms 20]

The same recorded step summaries are applied to fresh memories twice: on the thread pool (the
paper's parallel update) and one memory after another; then the same text queries are
answered with the four retrievals on the pool and one after another. Ratios are
sequential / parallel (> 1: parallel is faster). The deterministic updates are pure Python,
so the GIL serialises them and the pool only adds overhead; the paper's claim (parallel update
latency ~ one module's) is about VLM calls, which wait on I/O. ``--vlm-ms`` adds that wait to
each memory's update (a sleep standing in for one model call per memory) to measure it.
Also printed: the KG's on / in edges against the simulator's true placements (ground truth
used only to score), and the size of the action diary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from embodied_mem.memory.robomemory.scoring import score_relations
from embodied_mem.memory.robomemory.system import SUBMODULES
from embodied_mem.registry import build
from embodied_mem.sim.embedded.env import EnvConfig
from embodied_mem.sim.embedded.episode import EmbeddedEpisode, EmbeddedSimConfig
from embodied_mem.sim.embedded.oracle import HistoryConfig
from embodied_mem.sim.embedded.world import WorldConfig
from embodied_mem.sim.tasks.generator import TaskConfig
from embodied_mem.types import Query


def percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return statistics.fmean(ordered) * 1e3, ordered[len(ordered) // 2] * 1e3, ordered[int(0.95 * (len(ordered) - 1))] * 1e3


def make(encoder: str, parallel: bool, plan):
    memory = build("memory", {"name": "robomemory", "encoder": encoder, "parallel": parallel})
    memory.set_floor_plan(plan)
    return memory


def with_latency(memory, seconds: float) -> None:
    """Each memory's update first waits ``seconds`` (a stand-in for one VLM call)."""
    for name in SUBMODULES:
        module = memory.modules[name]
        original = module.update

        def update(s, original=original):
            time.sleep(seconds)
            return original(s)

        module.update = update


def time_updates(memory, summaries, order=None) -> list[float]:
    times = []
    for s in summaries:
        started = time.perf_counter()
        memory.update_memories(s, order)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--encoder", default="gt_hash")
    parser.add_argument("--vlm-ms", type=float, default=20.0, help="simulated model latency per memory update (0: off)")
    parser.add_argument("--vlm-steps", type=int, default=100, help="summaries timed with the simulated latency")
    args = parser.parse_args()

    config = EmbeddedSimConfig(
        world=WorldConfig(rooms=6, objects_per_room=3, receptacles_per_room=(3, 3)),
        env=EnvConfig(width=160, height=120),
        history=HistoryConfig(days=args.days, rearrangements_per_day=4, wander_probability=0.3),
    )
    episode = EmbeddedEpisode(config, args.seed)
    observations = list(episode.history())
    plan = episode.floor_plan()
    tasks = episode.tasks(TaskConfig())
    print(f"episode: seed {args.seed}, {args.days} day(s), {len(observations)} frames, {len(tasks)} tasks, perception {episode.perception}")

    # The step summaries, as the system makes them (recorded once, replayed into fresh memories).
    recorder = make(args.encoder, False, plan)
    summaries = []
    original = recorder.update_memories
    recorder.update_memories = lambda s, order=None: (summaries.append(s), original(s, order))[1]
    started = time.perf_counter()
    for obs in observations:
        recorder.observe(obs)
    ingest = len(observations) / (time.perf_counter() - started)

    rows = []
    parallel = time_updates(make(args.encoder, True, plan), summaries)
    sequential = time_updates(make(args.encoder, False, plan), summaries, SUBMODULES)
    rows.append(("update (deterministic)", parallel, sequential))
    if args.vlm_ms > 0:
        subset = summaries[: args.vlm_steps]
        fast, slow = make(args.encoder, True, plan), make(args.encoder, False, plan)
        with_latency(fast, args.vlm_ms / 1e3)
        with_latency(slow, args.vlm_ms / 1e3)
        rows.append((f"update (+{args.vlm_ms:g} ms per memory)", time_updates(fast, subset), time_updates(slow, subset, SUBMODULES)))

    # Recall: the four retrievals of each language query, on the pool and one after another.
    memory = recorder
    memory.update_memories = original
    queries = [memory.parse(t.instruction) for t in tasks]
    vectors = memory._vectors([t.instruction for t in tasks])
    for q, v in zip(queries, vectors):  # warm the vertex-text embedding cache
        memory.retrieve(q, v)
    timed = {}
    pool = memory._pool
    from concurrent.futures import ThreadPoolExecutor

    memory._pool = ThreadPoolExecutor(max_workers=4)
    for mode in ("parallel", "sequential"):
        if mode == "sequential":
            memory._pool.shutdown()
            memory._pool = None
        times = []
        for _ in range(3):
            for q, v in zip(queries, vectors):
                started = time.perf_counter()
                memory.retrieve(q, v)
                times.append(time.perf_counter() - started)
        timed[mode] = times
    memory._pool = pool
    rows.append(("retrieve (4 memories)", timed["parallel"], timed["sequential"]))
    recall_times = []
    for task in tasks:
        started = time.perf_counter()
        memory.recall(Query(task.instruction, near=episode.final_pose))
        recall_times.append(time.perf_counter() - started)

    print(f"\n{'':34s} {'parallel mean / p50 / p95 ms':>30s} {'sequential mean / p50 / p95 ms':>32s} {'ratio seq/par mean / p50':>26s}")
    for name, par, seq in rows:
        p, s = percentiles(par), percentiles(seq)
        print(f"{name:34s} {p[0]:10.3f} {p[1]:8.3f} {p[2]:8.3f}   {s[0]:10.3f} {s[1]:8.3f} {s[2]:8.3f}   {s[0] / p[0]:14.2f} / {s[1] / p[1]:5.2f}")
    r = percentiles(recall_times)
    print(f"{'recall, language (whole)':34s} {r[0]:10.3f} {r[1]:8.3f} {r[2]:8.3f}")
    print(f"ingest: {ingest:.1f} frames/s (sequential updates, encoder {args.encoder})")

    print("\nKG against the simulator's true placements (ground truth used only to score):")
    for relation, score in score_relations(memory.spatial, episode.env).items():
        print(f"  {relation:3s} precision {score.precision:.2f} ({score.correct}/{score.predicted})   recall {score.recall:.2f} ({score.found}/{score.truth})")
    g = memory.spatial.graph
    print(f"KG: {g.number_of_nodes()} vertices, {g.number_of_edges()} edges, {memory.spatial.deferred} edits deferred (outside G_sub)")
    print(f"episodic {len(memory.episodic.entries)} entries {memory.episodic.decisions}; semantic {len(memory.semantic.entries)} entries {memory.semantic.decisions}")
    print(f"action diary: {len(json.dumps(memory.diary.to_dict()))} bytes of JSON after {args.days} day(s); stats {memory.stats()}")
    memory.close()


if __name__ == "__main__":
    main()
