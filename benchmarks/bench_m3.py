"""M3 per scene, as the paper's Table 1 reports: training time, bytes, and the cosine similarity
of the rendered (GMA) features to the distilled ones; with PSNR of the rendered RGB.

    python benchmarks/bench_m3.py --scenes 2 --encoder minilm [--iterations 5] [--width 160 --height 120]

Each scene is one embedded-simulator episode (seeds 0, 1, ...); its whole history is ingested
(keyframes fitted online), then every keyframe is rendered from the field and compared with
what was observed and distilled there (features: pixels with a distilled feature only).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np


def scene_row(seed: int, args) -> dict:
    from embodied_mem.sim.embedded.env import EnvConfig
    from embodied_mem.sim.embedded.episode import EmbeddedEpisode, EmbeddedSimConfig
    from embodied_mem.sim.embedded.oracle import HistoryConfig
    from embodied_mem.sim.embedded.world import WorldConfig

    from embodied_mem.registry import build

    config = EmbeddedSimConfig(
        world=WorldConfig(rooms=args.rooms, objects_per_room=3, receptacles_per_room=(3, 3)),
        env=EnvConfig(width=args.width, height=args.height),
        history=HistoryConfig(days=1, rearrangements_per_day=3, wander_probability=0.3),
    )
    observations = list(EmbeddedEpisode(config, seed).history())
    memory = build("memory", {"name": "m3", "encoder": args.encoder, "iterations": args.iterations})
    cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    wall = time.perf_counter()
    for obs in observations:
        memory.observe(obs)
    wall = time.perf_counter() - wall
    cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu
    report = memory.training_report()
    cosines, psnrs = [], []
    for n in range(len(memory.keyframes)):
        out = memory.render_keyframe(n)
        distilled, rendered = out["distilled"], out["features"]
        has = np.abs(distilled).sum(axis=-1) > 0
        if has.any():
            num = (distilled * rendered).sum(-1)[has]
            cosines.append(float(np.mean(num / (np.linalg.norm(distilled, axis=-1)[has] * np.linalg.norm(rendered, axis=-1)[has] + 1e-9))))
        mse = float(np.mean((out["rgb"] - out["observed_rgb"] / 255.0) ** 2))
        psnrs.append(10 * np.log10(1.0 / max(mse, 1e-10)))
    stats = memory.stats()
    return {
        "scene": seed, "frames": len(observations), "keyframes": report["keyframes"], "gaussians": report["gaussians"],
        "bank": f"{report['bank']}/{report['features']}", "train_s": report["fit_seconds"], "ingest_wall_s": wall,
        "ingest_cpu_s": cpu, "fps": len(observations) / wall, "bytes": stats.bytes, "field_bytes": memory.field.nbytes(),
        "feature_cos": float(np.mean(cosines)) if cosines else float("nan"), "psnr_db": float(np.mean(psnrs)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="M3 training time, bytes and feature cosine per scene")
    parser.add_argument("--scenes", type=int, default=1)
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--rooms", type=int, default=4)
    args = parser.parse_args(argv)
    rows = [scene_row(seed, args) for seed in range(args.scenes)]
    columns = ["scene", "frames", "keyframes", "gaussians", "bank", "train_s", "ingest_cpu_s", "fps", "bytes", "field_bytes", "feature_cos", "psnr_db"]
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    mean = {c: np.mean([r[c] for r in rows]) for c in ("train_s", "bytes", "feature_cos", "psnr_db", "fps")}
    print(f"mean: train {mean['train_s']:.1f} s/scene, {mean['bytes'] / 1e6:.2f} MB/scene, feature cos {mean['feature_cos']:.3f}, PSNR {mean['psnr_db']:.1f} dB, ingest {mean['fps']:.2f} frames/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
