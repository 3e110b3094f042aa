"""JanusVLN's dual KV memory: bytes and per-step latency stay flat with the episode's length.

    python benchmarks/bench_janus.py --steps 1000 10000 100000 --full-max 4000

Both cached encoders (semantic and spatial) run on synthetic frames reused from a small pool
(the cache path only: tokenizers, detections and the text encoder are not what grows). In the
same run a growing full-history cache (the same nets, nothing evicted: ``recent=None``) is
measured up to ``--full-max`` steps, where its per-step cost has already grown with t; its bytes
beyond that are exact arithmetic (every frame adds the same K / V bytes), its latency is not
extrapolated. Ratios: janus at N / janus at the first N (flat = 1.0), and full / janus at each N
both were measured at.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from embodied_mem.memory.janus.attention import Shape
from embodied_mem.memory.janus.dual import DualImplicitMemory


def run(memory: DualImplicitMemory, pool: tuple[torch.Tensor, torch.Tensor], checkpoints: list[int], window: int) -> dict[int, tuple[int, float]]:
    """Step to each checkpoint; at each, (bytes, median seconds per step over its last ``window`` steps)."""
    semantic, spatial = pool
    results, times, step = {}, [], 0
    for checkpoint in sorted(checkpoints):
        while step < checkpoint:
            row = step % len(semantic)
            started = time.perf_counter()
            memory.step(semantic[row], spatial[row], step)
            times.append(time.perf_counter() - started)
            step += 1
        results[checkpoint] = (memory.nbytes(), statistics.median(times[-window:]))
        times = times[-window:]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 10000, 100000], help="episode lengths to measure at")
    parser.add_argument("--full-max", type=int, default=4000, help="longest full-history run (its cost per step grows with t)")
    parser.add_argument("--window", type=int, default=200, help="steps whose median latency is reported at each checkpoint")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--grid", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    semantic = Shape(dim=args.dim, heads=2, layers=args.layers, grid=args.grid)
    spatial = Shape(dim=max(8, args.dim // 2), heads=2, layers=args.layers, grid=args.grid)
    generator = torch.Generator().manual_seed(0)
    pool = (torch.randn(64, semantic.tokens, semantic.dim, generator=generator), torch.randn(64, spatial.tokens, spatial.dim, generator=generator))
    steps = sorted(set(args.steps))

    started = time.perf_counter()
    janus = run(DualImplicitMemory(semantic, spatial, 8, 48), pool, steps, args.window)
    janus_s = time.perf_counter() - started
    full_points = sorted({n for n in steps if n <= args.full_max} | {max(args.full_max // 4, 1), max(args.full_max // 2, 1), args.full_max})
    started = time.perf_counter()
    full = run(DualImplicitMemory(semantic, spatial, 0, None), pool, full_points, args.window)
    full_s = time.perf_counter() - started
    per_frame = full[full_points[-1]][0] / full_points[-1]

    print(f"janus: 8 + 48 frames, {semantic.layers} layer(s), {semantic.tokens} tokens/frame, dims {semantic.dim}/{spatial.dim}; ran {max(steps)} steps in {janus_s:.1f} s")
    print(f"full history: nothing evicted; ran {args.full_max} steps in {full_s:.1f} s\n")
    first_bytes, first_latency = janus[steps[0]]
    print(f"{'steps':>8} {'janus KB':>9} {'janus ms/step':>14} {'bytes vs first':>15} {'latency vs first':>17} {'full KB':>10} {'full ms/step':>13} {'full/janus bytes':>17} {'full/janus latency':>19}")
    for n in steps:
        size, latency = janus[n]
        full_size, full_latency = full.get(n, (int(per_frame * n), None))
        ratio_latency = f"{full_latency / latency:19.2f}" if full_latency is not None else f"{'not run':>19}"
        full_ms = f"{full_latency * 1e3:13.3f}" if full_latency is not None else f"{'-':>13}"
        full_kb = f"{full_size / 1024:10.1f}" + ("" if n in full else "*")
        print(f"{n:8d} {size / 1024:9.1f} {latency * 1e3:14.3f} {size / first_bytes:15.2f} {latency / first_latency:17.2f} {full_kb:>10} {full_ms} {full_size / size:17.1f} {ratio_latency}")
    if any(n not in full for n in steps):
        print(f"* computed: {per_frame:.0f} bytes per frame, as measured at {full_points[-1]} steps (every frame adds the same K / V)")
    print("\nfull-history growth (measured):")
    for n in full_points:
        size, latency = full[n]
        print(f"{n:8d} steps: {size / 1024:10.1f} KB, {latency * 1e3:8.3f} ms/step")
    flat_bytes = janus[steps[-1]][0] == janus[steps[0]][0]
    flat_latency = janus[steps[-1]][1] / janus[steps[0]][1]
    print(f"\njanus bytes {steps[0]} -> {steps[-1]} steps: x{janus[steps[-1]][0] / first_bytes:.2f} ({'flat' if flat_bytes else 'NOT flat'}); latency x{flat_latency:.2f}")
    return 0 if flat_bytes else 1


if __name__ == "__main__":
    sys.exit(main())
