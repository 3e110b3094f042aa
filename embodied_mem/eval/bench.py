"""Benchmarks: simulator frames/s; each memory's ingest rate, recall latency and size at scale.

Every number is printed next to its ratio against a baseline measured in the same run (the
``frame_bank`` memory for memories, 160x120 rendering for the simulator), so runs on different
machines compare by ratio. Long streams replay one recorded history with fresh frame ids and
later stamps: the robot revisiting the same rooms day after day, which is also where a memory
should stop growing.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embodied_mem.registry import build
from embodied_mem.sim.embedded.env import EnvConfig
from embodied_mem.sim.embedded.episode import EmbeddedEpisode, EmbeddedSimConfig
from embodied_mem.sim.embedded.oracle import HistoryConfig
from embodied_mem.sim.embedded.world import WorldConfig
from embodied_mem.sim.tasks.generator import TaskConfig
from embodied_mem.types import Observation, Query

DAY = 86400.0


def sim_fps(sizes: list[tuple[int, int]], seed: int, progress: bool) -> list[dict]:
    """Frames/s of a whole oracle day (render + plan + act), per image size."""
    rows = []
    for width, height in sizes:
        config = EmbeddedSimConfig(env=EnvConfig(width=width, height=height), history=HistoryConfig(days=1, rearrangements_per_day=4))
        episode = EmbeddedEpisode(config, seed)
        started = time.perf_counter()
        frames = sum(1 for _ in tqdm(episode.history(), desc=f"sim {width}x{height}", disable=not progress, leave=False))
        elapsed = time.perf_counter() - started
        pose = episode.final_pose
        started = time.perf_counter()
        for _ in range(50):
            episode.env.render(pose)
        render = 50 / (time.perf_counter() - started)
        rows.append({"size": f"{width}x{height}", "frames": frames, "episode_fps": frames / elapsed, "render_fps": render})
    return rows


def record(seed: int, width: int, height: int, progress: bool):
    config = EmbeddedSimConfig(world=WorldConfig(rooms=6), env=EnvConfig(width=width, height=height), history=HistoryConfig(days=1, rearrangements_per_day=5))
    episode = EmbeddedEpisode(config, seed)
    observations = list(tqdm(episode.history(), desc="recording a day", disable=not progress, leave=False))
    tasks = episode.tasks(TaskConfig(seed=seed))
    return episode, observations, tasks


def replayed(observations: list[Observation], count: int):
    """``count`` observations: the recorded day again and again, one day later each time."""
    n = len(observations)
    for index in range(count):
        lap, obs = divmod(index, n)
        source = observations[obs]
        yield replace_observation(source, frame_id=index, stamp=source.stamp + lap * DAY, day=source.day + lap)


def replace_observation(obs: Observation, **changes) -> Observation:
    """A copy of ``obs`` with ``changes`` (validated again); its events move to the new stamp."""
    events = [replace(e, stamp=changes.get("stamp", obs.stamp)) for e in obs.events]
    return replace(obs, events=events, **changes)


def memory_scaling(names: list[str], counts: list[int], observations, tasks, final_pose, encoder: str | None, progress: bool, floor_plan=None) -> list[dict]:
    """Ingest rate, recall latency and bytes per memory and stream length.

    Recall is timed as the harness asks: the oracle track's constraints, and the language
    track's instructions after the agent's offline reasoner turned them into constraints from
    the memory's own vocabulary (the parse is the agent's work, timed apart as ``parse_ms``).
    ``text_ms_p95``: the raw instruction text through the memory's own text retrieval
    (``eval.agent.reasoner=text``), the path where a scan over every frame costs most.
    ``recall_ms_*``: the first pass over the queries on the still memory (caches cold);
    ``warm_ms_*``: a second pass (what a still memory answers in its steady state);
    ``live_ms_*``: the same queries, each right after one more observation (what a robot that
    keeps seeing while it is asked pays: indexes and caches invalidated by that frame).
    """
    from embodied_mem.agent import Agent, AgentConfig

    rows = []
    agent = Agent(AgentConfig(synonym_encoder=None))
    oracle = [Query(t.instruction, k=5, near=final_pose, constraints=t.constraints) for t in tasks]
    texts = [Query(t.instruction, k=5, near=final_pose) for t in tasks]
    for name in names:
        for count in counts:
            options = {"name": name}
            if encoder:
                options["encoder"] = encoder
            memory = build("memory", options)
            if floor_plan is not None and hasattr(memory, "set_floor_plan"):
                memory.set_floor_plan(floor_plan)
            ingest = 0.0
            for obs in tqdm(replayed(observations, count), total=count, desc=f"{name} x{count}", disable=not progress, leave=False):
                started = time.perf_counter()
                memory.observe(obs)
                ingest += time.perf_counter() - started
            if hasattr(memory, "flush"):
                started = time.perf_counter()
                memory.flush()
                ingest += time.perf_counter() - started
            started = time.perf_counter()
            parses = [agent.understand(t.instruction, memory) for t in tasks]
            parse_ms = (time.perf_counter() - started) * 1000 / max(1, len(tasks))
            language = [Query(t.instruction, k=5, near=final_pose, constraints=p.constraints) for t, p in zip(tasks, parses) if p.understood]
            latencies = []
            for query in oracle + language:
                started = time.perf_counter()
                memory.recall(query)
                latencies.append((time.perf_counter() - started) * 1000)
            warm = []  # the same queries again: what the first pass computed once is now cached
            for query in oracle + language:
                started = time.perf_counter()
                memory.recall(query)
                warm.append((time.perf_counter() - started) * 1000)
            text_latencies = []
            for query in texts:
                started = time.perf_counter()
                memory.recall(query)
                text_latencies.append((time.perf_counter() - started) * 1000)
            stats = memory.stats()
            # Live: the robot keeps seeing between questions, so each recall follows one new
            # observation and pays for whatever that observation made the memory redo.
            live = []
            fresh = replayed(observations, count + len(oracle) + len(language))
            for _ in range(count):
                next(fresh)
            for query, obs in zip(oracle + language, fresh):
                memory.observe(obs)
                started = time.perf_counter()
                memory.recall(query)
                live.append((time.perf_counter() - started) * 1000)
            rows.append(
                {
                    "memory": name,
                    "observations": count,
                    "ingest_fps": count / ingest,
                    "recall_ms_p50": float(np.percentile(latencies, 50)),
                    "recall_ms_p95": float(np.percentile(latencies, 95)),
                    "text_ms_p95": float(np.percentile(text_latencies, 95)),
                    "warm_ms_p50": float(np.percentile(warm, 50)),
                    "warm_ms_p95": float(np.percentile(warm, 95)),
                    "live_ms_p50": float(np.percentile(live, 50)),
                    "live_ms_p95": float(np.percentile(live, 95)),
                    "parse_ms": parse_ms,
                    "bytes": stats.bytes,
                    "items": stats.items,
                }
            )
            del memory
    return rows


def concurrent_ingest(names: list[str], observations, tasks, final_pose, encoder: str | None, threads: int, floor_plan=None) -> list[dict]:
    """Ingest rate of each memory alone and with ``threads`` threads recalling back to back
    (the robot answering questions while it keeps seeing): the ratio shows whether observe
    is starved by recall."""
    import threading

    queries = [Query(t.instruction, k=5, near=final_pose, constraints=t.constraints) for t in tasks] or [Query("a table")]
    rows = []
    for name in names:
        row = {"memory": name, "threads": threads}
        for busy in (0, threads):
            options = {"name": name, **({"encoder": encoder} if encoder else {})}
            memory = build("memory", options)
            if floor_plan is not None and hasattr(memory, "set_floor_plan"):
                memory.set_floor_plan(floor_plan)
            for obs in observations[:50]:  # something to recall from
                memory.observe(obs)
            stop, answered = threading.Event(), [0]

            def ask(offset: int) -> None:
                n = offset
                while not stop.is_set():
                    memory.recall(queries[n % len(queries)])
                    answered[0] += 1
                    n += 1

            workers = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(busy)]
            for worker in workers:
                worker.start()
            started = time.perf_counter()
            for obs in observations[50:]:
                memory.observe(obs)
            elapsed = time.perf_counter() - started
            stop.set()
            for worker in workers:
                worker.join()
            row[f"ingest_fps_{busy}"] = (len(observations) - 50) / elapsed
            row[f"recalls_{busy}"] = answered[0]
        row["ratio"] = row[f"ingest_fps_{threads}"] / row["ingest_fps_0"]
        rows.append(row)
    return rows


def print_concurrent(rows: list[dict]) -> None:
    threads = rows[0]["threads"] if rows else 0
    print(f"\ningest while {threads} threads recall back to back (ratio: with / without, same run)")
    print(f"{'memory':>18} {'alone fps':>10} {'busy fps':>9} {'ratio':>6} {'recalls':>8}")
    for row in rows:
        print(f"{row['memory']:>18} {row['ingest_fps_0']:>10.1f} {row[f'ingest_fps_{threads}']:>9.1f} {row['ratio']:>6.2f} {row[f'recalls_{threads}']:>8}")


def print_sim(rows: list[dict]) -> None:
    base = rows[0]
    print("\nsimulator (one oracle day: render + plan + act)")
    print(f"{'size':>10} {'frames':>7} {'episode fps':>12} {'ratio':>7} {'render fps':>11} {'ratio':>7}")
    for row in rows:
        print(
            f"{row['size']:>10} {row['frames']:>7} {row['episode_fps']:>12.1f} {row['episode_fps'] / base['episode_fps']:>7.2f}"
            f" {row['render_fps']:>11.1f} {row['render_fps'] / base['render_fps']:>7.2f}"
        )


def print_memory(rows: list[dict], baseline: str) -> None:
    print(f"\nmemories (ratios against {baseline} at the same number of observations, same run)")
    print(f"{'memory':>18} {'obs':>7} {'ingest/s':>9} {'x':>6} {'recall p50':>11} {'x':>6} {'p95 ms':>8} {'x':>6} {'warm p95':>9} {'x':>6} {'live p95':>9} {'x':>6} {'text p95':>9} {'MB':>8} {'x':>6}")
    base = {r["observations"]: r for r in rows if r["memory"] == baseline}
    for row in rows:
        ref = base.get(row["observations"])
        def ratio(key):
            return f"{row[key] / ref[key]:.2f}" if ref and ref[key] else "-"
        print(
            f"{row['memory']:>18} {row['observations']:>7} {row['ingest_fps']:>9.1f} {ratio('ingest_fps'):>6}"
            f" {row['recall_ms_p50']:>9.2f}ms {ratio('recall_ms_p50'):>6} {row['recall_ms_p95']:>8.2f} {ratio('recall_ms_p95'):>6}"
            f" {row.get('warm_ms_p95', float('nan')):>9.2f} {ratio('warm_ms_p95') if 'warm_ms_p95' in row else '-':>6}"
            f" {row.get('live_ms_p95', float('nan')):>9.2f} {ratio('live_ms_p95') if 'live_ms_p95' in row else '-':>6}"
            f" {row.get('text_ms_p95', float('nan')):>9.2f} {row['bytes'] / 1e6:>8.2f} {ratio('bytes'):>6}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="embodied-mem bench", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[1000, 10000], help="stream lengths (observations), e.g. 1000 10000 100000")
    parser.add_argument("--memories", nargs="+", default=["frame_bank", "subsampled_frames", "mem4nav", "snapshots3d"], help="memories to measure; the first is the baseline")
    parser.add_argument("--encoder", default=None, help="override every memory's encoder (minilm | gt_hash)")
    parser.add_argument("--size", type=int, nargs=2, default=[160, 120], metavar=("W", "H"), help="image size of the recorded stream")
    parser.add_argument("--skip-sim", action="store_true", help="do not measure the simulator")
    parser.add_argument("--skip-memory", action="store_true", help="do not measure the memories")
    parser.add_argument("--recall-threads", type=int, default=4, help="threads recalling during the concurrent-ingest measure (0: skip it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"), help="folder for results.json")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    progress = not args.no_progress
    results: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    if not args.skip_sim:
        results["sim"] = sim_fps([(160, 120), (320, 240), (640, 480)], args.seed, progress)
        print_sim(results["sim"])
    if not args.skip_memory:
        episode, observations, tasks = record(args.seed, args.size[0], args.size[1], progress)
        print(f"\nrecorded {len(observations)} observations ({args.size[0]}x{args.size[1]}), {len(tasks)} tasks as queries (both tracks)")
        results["memory"] = memory_scaling(args.memories, sorted(args.frames), observations, tasks, episode.final_pose, args.encoder, progress, episode.floor_plan())
        print_memory(results["memory"], args.memories[0])
        if args.recall_threads > 0:
            results["concurrent"] = concurrent_ingest(args.memories, observations, tasks, episode.final_pose, args.encoder, args.recall_threads, episode.floor_plan())
            print_concurrent(results["concurrent"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {args.out / 'results.json'}")
    return 0
