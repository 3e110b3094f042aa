"""The memory stack observing and recalling in parallel against the same members run one after
another, in one run (ratios: parallel time / sequential time; below 1 is faster).

    python benchmarks/bench_stack.py --systems mem4nav snapshots3d frame_bank --frames 1000
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from embodied_mem.eval.bench import record, replayed
from embodied_mem.stack import MemoryStack, StackConfig
from embodied_mem.types import Query


def measure(systems: list[str], parallel: bool, observations, queries, encoder: str | None, plan) -> dict:
    stack = MemoryStack(StackConfig(systems=list(systems), parallel=parallel, encoder=encoder))
    stack.set_floor_plan(plan)
    started = time.perf_counter()
    for obs in observations:
        stack.observe(obs)
    stack.flush()
    ingest = time.perf_counter() - started
    latencies = []
    for query in queries:
        started = time.perf_counter()
        stack.recall(query)
        latencies.append((time.perf_counter() - started) * 1000)
    stack.close()
    return {"ingest_fps": len(observations) / ingest, "recall_ms_p50": float(np.percentile(latencies, 50)), "recall_ms_p95": float(np.percentile(latencies, 95))}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["mem4nav", "snapshots3d", "frame_bank"])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--encoder", default=None, help="every member's encoder (minilm | gt_hash); default: each member's own")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    episode, observations, tasks = record(args.seed, 160, 120, progress=False)
    stream = list(replayed(observations, args.frames))
    queries = [Query(t.instruction, k=5, near=episode.final_pose, constraints=t.constraints) for t in tasks]
    sequential = measure(args.systems, False, stream, queries, args.encoder, episode.floor_plan())
    parallel = measure(args.systems, True, stream, queries, args.encoder, episode.floor_plan())
    print(f"stack of {', '.join(args.systems)}: {args.frames} observations, {len(queries)} oracle queries")
    print(f"{'':>12} {'ingest/s':>10} {'recall p50 ms':>14} {'recall p95 ms':>14}")
    for name, row in (("sequential", sequential), ("parallel", parallel)):
        print(f"{name:>12} {row['ingest_fps']:>10.1f} {row['recall_ms_p50']:>14.2f} {row['recall_ms_p95']:>14.2f}")
    print(f"{'ratio':>12} {sequential['ingest_fps'] / parallel['ingest_fps']:>10.2f} {parallel['recall_ms_p50'] / sequential['recall_ms_p50']:>14.2f}"
          f" {parallel['recall_ms_p95'] / sequential['recall_ms_p95']:>14.2f}   (parallel time / sequential time)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
