"""`embodied-mem viz`: what a memory remembers, drawn over the floor plan of the home it lived in."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from embodied_mem.eval.runner import RunSpec, deploy  # noqa: E402
from embodied_mem.registry import build  # noqa: E402
from embodied_mem.sim.embedded.episode import EmbeddedEpisode  # noqa: E402
from embodied_mem.sim.embedded.plot import draw_floor_plan, draw_trajectory  # noqa: E402


def _lived(spec: RunSpec, memory_configs: list[dict]):
    """One episode (seed ``spec.seed``) streamed into fresh memories: (episode, memories, last observation)."""
    episode = EmbeddedEpisode(spec.sim, spec.seed)
    memories = [build("memory", dict(config)) for config in memory_configs]
    for memory in memories:
        deploy(memory, episode)
    last = None
    names = ", ".join(memory.name for memory in memories)
    for obs in tqdm(episode.history(), desc=f"{names}: history", unit="frame", disable=not spec.progress):
        for memory in memories:
            memory.observe(obs)
        last = obs
    for memory in memories:
        if hasattr(memory, "flush"):  # deferred batched work
            memory.flush()
    return episode, memories, last


def visualize(spec: RunSpec, memory_config: dict, out: Path, save_checkpoint: bool = True) -> Path:
    """Stream one episode (seed ``spec.seed``) into the memory; write ``<name>.png`` (and its checkpoint)."""
    out.mkdir(parents=True, exist_ok=True)
    episode, (memory,), last = _lived(spec, [memory_config])
    figure, (plan, view) = plt.subplots(1, 2, figsize=(16, 7.5), gridspec_kw={"width_ratios": [2.2, 1]})
    draw_floor_plan(plan, episode.env.world, episode.env.state, labels=True)
    draw_trajectory(plan, [s.pose for s in episode.robot.history.steps])
    memory.plot(plan)
    stats = memory.stats()
    plan.set_title(f"{memory.name}: what it remembers after {stats.frames_seen} frames ({stats.items} items, {stats.bytes / 1e6:.2f} MB)")
    if last is not None:
        view.imshow(last.rgb)
        room = episode.floor_plan().room_at(last.pose.position)
        view.set_title(f"last camera frame ({room or '?'}, day {last.day}, perception {episode.perception})")
    view.axis("off")
    figure.tight_layout()
    path = out / f"{memory.name}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    if save_checkpoint:
        memory.save(out / f"{memory.name}-checkpoint")
    return path


def visualize_side_by_side(spec: RunSpec, memory_configs: list[dict], path: Path) -> Path:
    """Several memories fed the same episode, each drawn over the same floor plan, in one picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    episode, memories, _ = _lived(spec, memory_configs)
    figure, axes = plt.subplots(1, len(memories), figsize=(7.5 * len(memories), 6.2))
    for ax, memory in zip(np.atleast_1d(axes), memories):
        draw_floor_plan(ax, episode.env.world, episode.env.state, labels=False)
        memory.plot(ax)
        stats = memory.stats()
        ax.set_title(f"{memory.name}: {stats.items} items, {stats.bytes / 1e6:.2f} MB after {stats.frames_seen} frames", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
