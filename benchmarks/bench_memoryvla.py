"""MemoryVLA against frame_bank in the same run: per-step latency and bytes at 1k and 10k steps.

    .venv/bin/python benchmarks/bench_memoryvla.py                 # 1000 and 10000 steps, MiniLM
    .venv/bin/python benchmarks/bench_memoryvla.py --frames 1000 --encoder gt_hash

The stream is one recorded embedded-simulator day replayed with fresh frame ids, one day later
each lap (``embodied_mem.eval.bench.replayed``). Printed per memory and length: ms per observe
step (mean and p95), recall p50 / p95 over the day's tasks (oracle constraints) and the raw
instruction texts (language track), bytes (``stats()``), and for memoryvla the bank's own bytes,
each with its ratio to frame_bank at the same length; then each memory's growth from the
shortest to the longest stream (memoryvla's banks stay the same size: that is the point).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from tqdm import tqdm

from embodied_mem.eval.bench import record, replayed
from embodied_mem.registry import build
from embodied_mem.types import Query


def measure(name: str, count: int, observations, tasks, final_pose, plan, encoder: str, progress: bool) -> dict:
    memory = build("memory", {"name": name, "encoder": encoder})
    memory.set_floor_plan(plan)
    steps = []
    for obs in tqdm(replayed(observations, count), total=count, desc=f"{name} x{count}", disable=not progress, leave=False):
        started = time.perf_counter()
        memory.observe(obs)
        steps.append(time.perf_counter() - started)
    if hasattr(memory, "flush"):  # frame_bank embeds in batches: its last batch counts too
        started = time.perf_counter()
        memory.flush()
        steps[-1] += time.perf_counter() - started
    oracle, text = [], []
    for task in tasks:
        for queries, query in ((oracle, Query(task.instruction, k=5, near=final_pose, constraints=task.constraints)), (text, Query(task.instruction, k=5, near=final_pose))):
            started = time.perf_counter()
            memory.recall(query)
            queries.append((time.perf_counter() - started) * 1000)
    stats = memory.stats()
    row = {
        "memory": name,
        "steps": count,
        "step_ms_mean": 1000 * float(np.mean(steps)),
        "step_ms_p95": 1000 * float(np.percentile(steps, 95)),
        "oracle_ms_p50": float(np.percentile(oracle, 50)),
        "oracle_ms_p95": float(np.percentile(oracle, 95)),
        "text_ms_p50": float(np.percentile(text, 50)),
        "text_ms_p95": float(np.percentile(text, 95)),
        "bytes": stats.bytes,
        "items": stats.items,
    }
    if name == "memoryvla":
        row["bank_bytes"] = memory.per_bank.nbytes() + memory.cog_bank.nbytes()
        row["kept_frames"] = len(memory.frames)
    return row


def report(rows: list[dict], baseline: str = "frame_bank") -> None:
    base = {r["steps"]: r for r in rows if r["memory"] == baseline}
    keys = ("step_ms_mean", "step_ms_p95", "oracle_ms_p50", "oracle_ms_p95", "text_ms_p50", "text_ms_p95", "bytes")
    print(f"\nratios against {baseline} at the same number of steps, same run (x = memory / {baseline})")
    print(f"{'memory':>11} {'steps':>6} " + " ".join(f"{k:>14} {'x':>6}" for k in keys))
    for row in rows:
        ref = base.get(row["steps"])
        cells = []
        for key in keys:
            value = row[key]
            shown = f"{value / 1e6:.3f}MB" if key == "bytes" else f"{value:.2f}"
            cells.append(f"{shown:>14} {(value / ref[key]) if ref and ref[key] else float('nan'):>6.2f}")
        print(f"{row['memory']:>11} {row['steps']:>6} " + " ".join(cells))
    for row in rows:
        if "bank_bytes" in row:
            print(f"memoryvla at {row['steps']} steps: banks {row['bank_bytes']} bytes, {row['kept_frames']} kept frames, {row['items']} entries")
    counts = sorted({r["steps"] for r in rows})
    if len(counts) > 1:
        print(f"\ngrowth from {counts[0]} to {counts[-1]} steps (x = bytes at {counts[-1]} / at {counts[0]})")
        for name in dict.fromkeys(r["memory"] for r in rows):
            first = next(r for r in rows if r["memory"] == name and r["steps"] == counts[0])
            last = next(r for r in rows if r["memory"] == name and r["steps"] == counts[-1])
            line = f"{name:>11}: bytes x{last['bytes'] / first['bytes']:.2f}"
            if "bank_bytes" in first:
                line += f", bank bytes x{last['bank_bytes'] / first['bank_bytes']:.2f}"
            print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[1000, 10000], help="stream lengths (steps)")
    parser.add_argument("--encoder", default="minilm", help="text encoder of both memories (minilm | gt_hash)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, default=[160, 120], metavar=("W", "H"))
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    progress = not args.no_progress
    episode, observations, tasks = record(args.seed, args.size[0], args.size[1], progress)
    plan, final_pose = episode.floor_plan(), episode.final_pose
    print(f"recorded day: {len(observations)} observations, {len(tasks)} tasks; encoder {args.encoder}")
    rows = [measure(name, count, observations, tasks, final_pose, plan, args.encoder, progress) for count in args.frames for name in ("frame_bank", "memoryvla")]
    report(rows)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
