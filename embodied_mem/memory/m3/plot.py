"""A picture of what the field remembers: a keyframe's RGB beside its rendered RGB, the distilled
feature image and the rendered GMA feature map, the features shown by one PCA to RGB.

    python -m embodied_mem.memory.m3.plot docs/images/m3_feature_map.png [--seed 0] [--encoder minilm]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def pca_rgb(*maps: np.ndarray, mask: np.ndarray | None = None) -> list[np.ndarray]:
    """Project (h, w, D) feature maps onto the first three principal components of all their
    pixels together (one basis, so colours are comparable), scaled to [0, 1]."""
    flat = np.concatenate([m.reshape(-1, m.shape[-1]) for m in maps])
    rows = flat if mask is None else flat[np.tile(mask.reshape(-1), len(maps))]
    mean = rows.mean(axis=0)
    _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
    basis = vt[:3].T
    projected = (flat - mean) @ basis
    lo, hi = np.percentile(projected, 2, axis=0), np.percentile(projected, 98, axis=0)
    scaled = np.clip((projected - lo) / np.maximum(hi - lo, 1e-9), 0, 1)
    out, start = [], 0
    for m in maps:
        count = m.shape[0] * m.shape[1]
        out.append(scaled[start : start + count].reshape(m.shape[0], m.shape[1], 3))
        start += count
    return out


def feature_map_figure(memory, keyframe: int, path: str | Path) -> dict:
    """Write the four-panel picture of ``keyframe``; returns the masked feature cosine shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = memory.render_keyframe(keyframe)
    distilled, rendered = out["distilled"], out["features"]
    has = np.abs(distilled).sum(axis=-1) > 0
    cos = (distilled * rendered).sum(-1) / (np.linalg.norm(distilled, axis=-1) * np.linalg.norm(rendered, axis=-1) + 1e-9)
    target_rgb, rendered_rgb = pca_rgb(distilled, rendered, mask=np.tile(has, 1))
    target_rgb[~has] = 0.0
    panels = [
        (out["observed_rgb"] / 255.0, "keyframe RGB (observed)"),
        (out["rgb"], "rendered RGB (Gaussians)"),
        (target_rgb, "distilled features (PCA)"),
        (rendered_rgb, f"rendered GMA features (PCA)\nmean cos {cos[has].mean():.2f}"),
    ]
    figure, axes = plt.subplots(1, 4, figsize=(13, 2.9))
    for ax, (image, title) in zip(axes, panels):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    frame_id = memory.keyframes.frame_ids[keyframe]
    figure.suptitle(f"M3 on the embedded simulator: keyframe {keyframe} (frame {frame_id}), {len(memory.field)} Gaussians, bank {len(memory.psc.kept)} of {len(memory.psc.texts)} features", fontsize=10)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return {"keyframe": keyframe, "frame_id": frame_id, "feature_cos": float(cos[has].mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="docs/images/m3_feature_map.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder", default="minilm")
    args = parser.parse_args(argv)
    from embodied_mem.registry import build
    from embodied_mem.sim.embedded.env import EnvConfig
    from embodied_mem.sim.embedded.episode import EmbeddedEpisode, EmbeddedSimConfig
    from embodied_mem.sim.embedded.oracle import HistoryConfig
    from embodied_mem.sim.embedded.world import WorldConfig

    config = EmbeddedSimConfig(
        world=WorldConfig(rooms=4, objects_per_room=3, receptacles_per_room=(3, 3)),
        env=EnvConfig(width=160, height=120),
        history=HistoryConfig(days=1, rearrangements_per_day=3, wander_probability=0.3),
    )
    episode = EmbeddedEpisode(config, args.seed)
    memory = build("memory", {"name": "m3", "encoder": args.encoder})
    memory.set_floor_plan(episode.floor_plan())
    for obs in episode.history():
        memory.observe(obs)
    # The keyframe showing the most distinct detected things.
    counts = [len(set(np.unique(labels[labels >= 0]).tolist())) for labels in memory.keyframes.labels]
    best = int(np.argmax(counts))
    print(feature_map_figure(memory, best, args.path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
