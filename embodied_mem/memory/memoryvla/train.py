"""Fit MemoryVLA's cognitive stream on histories from the embedded simulator (CPU, minutes).

    python -m embodied_mem.memory.memoryvla.train --out embodied_mem/memory/memoryvla/weights.safetensors

Objective (contrastive recall). The paper trains its banks end to end through the action
head's diffusion loss; navigation has no action head, and what recall needs is that the fused
token of a query lands on the bank entry whose frames answer it. So, per sample:

1. Stream a prefix of a recorded history (a random length) through the system's own write path
   with the current weights and no gradient (the paper detaches stored entries too): cognitive
   tokens ``c_t = CognitiveEncoder(MiniLM(perceived semantics of step t))`` are appended to a
   ``MemoryBank`` of ``capacity`` entries, which consolidates exactly as at run time.
2. Build queries from what the bank's entries still name: a detection of some kept member frame
   gives a category with its attributes (the detector's guesses), phrased as the description
   ("small red ceramic mug"), the bare category, or "Navigate to the <description>.". The
   positives are the entries with a member frame whose detections match the query.
3. ``f_q = gate(c_q, retrieve(c_q, bank + PE))``; readout ``s_j = cos(f_q, m_j) / temperature``;
   loss = ``-log(sum_{j in P} softmax(s)_j)`` (multi-positive InfoNCE). This is the readout the
   language track ranks entries by, so it trains what recall uses: the cognitive encoder (query
   side), both retrieval blocks, the timestep embedder on the keys and the gate.

The perceptual stream (image encoder, BottleneckSE, its retrieval blocks and gate) has no
signal from this objective and keeps its seeded initialisation; it is saved as such, so the
file holds every module and ``weights: <file>`` loads it whole.

Training histories use seeds from ``--seed`` (default 1000) on, disjoint from the evaluation
seeds (0 onwards). ``--help`` lists every option; a progress bar shows the loss.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from embodied_mem.memory.base import describe, visible_instances
from embodied_mem.memory.memoryvla.bank import MemoryBank
from embodied_mem.memory.memoryvla.system import MemoryVLAConfig, build_modules, load_weights, perceived_parts, semantic_embeddings


@dataclass
class History:
    """One recorded history, reduced to what training needs."""

    semantics: np.ndarray  # (T, text_dim) MiniLM of each step's perceived semantics
    detections: list[list[tuple[str, str]]]  # per step: (category, description) of each detection
    stamps: np.ndarray
    poses: np.ndarray  # (T, 7)


def record_histories(seeds: list[int], days: int, encoder, config: MemoryVLAConfig, width: int = 160, height: int = 120, progress=None) -> list[History]:
    """Run the embedded simulator for each seed and keep each step's semantics."""
    from embodied_mem.sim.embedded.env import EnvConfig
    from embodied_mem.sim.embedded.episode import EmbeddedEpisode, EmbeddedSimConfig
    from embodied_mem.sim.embedded.oracle import HistoryConfig
    from embodied_mem.sim.embedded.world import WorldConfig

    histories = []
    for seed in seeds:
        sim = EmbeddedSimConfig(
            world=WorldConfig(rooms=4, objects_per_room=3, receptacles_per_room=(3, 3)),
            env=EnvConfig(width=width, height=height),
            history=HistoryConfig(days=days, rearrangements_per_day=3, wander_probability=0.3),
        )
        episode = EmbeddedEpisode(sim, seed)
        histories.append(history_from(episode.history(), episode.floor_plan(), encoder, config))
        if progress is not None:
            progress.update(1)
    return histories


def history_from(observations, plan, encoder, config: MemoryVLAConfig) -> History:
    """A stream of observations -> each step's semantics and detections (steps indexed 0..T-1)."""
    parts, detections, stamps, poses = [], [], [], []
    for obs in observations:
        views = sorted(visible_instances(obs, config.min_pixels), key=lambda v: -v.pixels)
        room = plan.room_at(obs.pose.position[:2]) if plan is not None else None
        parts.append(perceived_parts(views, room, obs.events, config.caption_objects))
        detections.append([(v.category, describe(v.category, {k: a for k, a in v.attributes.items() if k != "kind"})) for v in views])
        stamps.append(obs.stamp)
        poses.append(np.concatenate([obs.pose.position, obs.pose.orientation]))
    return History(semantic_embeddings(encoder, parts), detections, np.array(stamps), np.array(poses))


def build_bank(modules, history: History, end: int, config: MemoryVLAConfig) -> MemoryBank:
    """The cognitive bank after ``end`` steps, written as at run time (no gradient)."""
    bank = MemoryBank(config.capacity, 1, config.cog_dim, config.frames_per_entry, config.consolidate)
    with torch.no_grad():
        tokens = modules.cognitive(torch.from_numpy(history.semantics[:end]))  # (T, 1, d_c)
        for step in range(end):
            x = tokens[step]
            if config.update_fused:
                feats, times = bank.entries()
                x = modules.cog(x, torch.from_numpy(feats), torch.from_numpy(times))
            bank.append(float(step), x.numpy(), step, float(history.stamps[step]), history.poses[step])
    return bank


def sample_queries(bank: MemoryBank, history: History, count: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """(query text, positive-entry mask) pairs from what the bank's member frames detected."""
    seen: list[set[tuple[str, str]]] = []
    for entry in range(len(bank)):
        seen.append({d for frame_id, _, _ in bank.members(entry) for d in history.detections[frame_id]})
    pool = sorted(set().union(*seen)) if seen else []
    if not pool:
        return []
    out = []
    for _ in range(count):
        category, description = pool[int(rng.integers(len(pool)))]
        form = int(rng.integers(3))
        if form == 1:  # the bare category: every entry that saw one is right
            text, positive = category.replace("_", " "), np.array([any(c == category for c, _ in s) for s in seen])
        else:
            text = description if form == 0 else f"Navigate to the {description}."
            positive = np.array([any(d == description for _, d in s) for s in seen])
        out.append((text, positive))
    return out


def batch_loss(modules, bank: MemoryBank, queries: list[tuple[str, np.ndarray]], encoder, temperature: float, cache: dict) -> torch.Tensor:
    """Multi-positive InfoNCE of the fused query tokens' readout over the bank's entries."""
    texts = [t for t, _ in queries]
    missing = [t for t in dict.fromkeys(texts) if t not in cache]
    if missing:
        cache.update(zip(missing, encoder.encode(missing)))
    embeddings = torch.from_numpy(np.stack([cache[t] for t in texts]))
    feats, times = bank.entries()
    feats, times = torch.from_numpy(feats.copy()), torch.from_numpy(times.copy())
    query = modules.cognitive(embeddings)[:, 0, :]  # (Q, d_c): the queries as N = Q tokens
    fused = modules.cog(query, feats, times)  # tokens are independent through the blocks
    logits = torch.nn.functional.cosine_similarity(fused[:, None, :], feats[None, :, 0, :], dim=-1) / temperature
    positive = torch.from_numpy(np.stack([p for _, p in queries]))
    log_all = torch.logsumexp(logits, dim=1)
    log_pos = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)
    return (log_all - log_pos).mean()


@torch.no_grad()
def top1_accuracy(modules, histories: list[History], config: MemoryVLAConfig, encoder, rng: np.random.Generator, samples: int = 8) -> float:
    """Share of sampled queries whose highest-readout entry is a positive (held-out check)."""
    hits = total = 0
    cache: dict = {}
    for history in histories:
        for _ in range(samples):
            end = int(rng.integers(min(len(history.stamps), 2 * config.capacity), len(history.stamps) + 1))
            bank = build_bank(modules, history, end, config)
            queries = sample_queries(bank, history, 16, rng)
            if not queries:
                continue
            texts = [t for t, _ in queries]
            cache.update(zip([t for t in texts if t not in cache], encoder.encode([t for t in texts if t not in cache])))
            query = modules.cognitive(torch.from_numpy(np.stack([cache[t] for t in texts])))[:, 0, :]
            feats, times = bank.entries()
            fused = modules.cog(query, torch.from_numpy(feats.copy()), torch.from_numpy(times.copy()))
            best = torch.nn.functional.cosine_similarity(fused[:, None, :], torch.from_numpy(feats[None, :, 0, :].copy()), dim=-1).argmax(dim=1)
            hits += sum(bool(p[int(b)]) for (_, p), b in zip(queries, best))
            total += len(queries)
    return hits / max(total, 1)


def train(args: argparse.Namespace, config: MemoryVLAConfig, histories: tuple[list[History], list[History]] | None = None) -> dict:
    """Record the histories (unless given as (train, held-out)), fit, save; returns the report."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    from embodied_mem.encoders import build_encoder

    from embodied_mem.runtime import torch_threads

    with torch_threads(max(1, args.threads)):
        return _train(args, config, histories)


def _train(args: argparse.Namespace, config: MemoryVLAConfig, histories) -> dict:
    from safetensors.torch import save_file
    from tqdm import tqdm

    from embodied_mem.encoders import build_encoder

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    encoder = build_encoder(config.encoder)
    seeds = [args.seed + n for n in range(args.episodes + args.held_out)]
    if histories is None:
        with tqdm(total=len(seeds), desc="recording histories", disable=args.quiet, file=sys.stderr) as bar:
            recorded = record_histories(seeds, args.days, encoder, config, progress=bar)
        train_set, held_out = recorded[: args.episodes], recorded[args.episodes :]
    else:
        (train_set, held_out), seeds = histories, ["given"] * (len(histories[0]) + len(histories[1]))
    modules = build_modules(config, encoder.dim)
    if args.init:
        load_weights(modules, args.init)
    before = top1_accuracy(modules.eval(), held_out, config, encoder, np.random.default_rng(args.seed + 1)) if held_out else None
    optimiser = torch.optim.AdamW([p for n, p in modules.named_parameters() if n.startswith(("cognitive.", "cog."))], lr=args.lr, weight_decay=1e-4)
    losses, cache = [], {}
    started = time.time()
    modules.train()
    with tqdm(range(args.steps), desc="training", disable=args.quiet, file=sys.stderr) as bar:
        for _ in bar:
            optimiser.zero_grad()
            total = 0.0
            for _ in range(args.banks):
                history = train_set[int(rng.integers(len(train_set)))]
                length = len(history.stamps)
                end = int(rng.integers(min(length, 2 * config.capacity), length + 1))
                modules.eval()
                bank = build_bank(modules, history, end, config)
                modules.train()
                queries = sample_queries(bank, history, args.queries, rng)
                if not queries:
                    continue
                loss = batch_loss(modules, bank, queries, encoder, config.temperature, cache) / args.banks
                loss.backward()
                total += float(loss.detach())
            optimiser.step()
            losses.append(total)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    modules.eval()
    after = top1_accuracy(modules, held_out, config, encoder, np.random.default_rng(args.seed + 1)) if held_out else None
    report = {
        "objective": "multi-positive InfoNCE of the fused cognitive query token's readout over bank entries",
        "encoder": config.encoder,
        "train_seeds": seeds[: len(train_set)],
        "held_out_seeds": seeds[len(train_set) :],
        "days": args.days,
        "steps": args.steps,
        "banks_per_step": args.banks,
        "queries_per_bank": args.queries,
        "lr": args.lr,
        "first_loss": float(np.mean(losses[: max(1, min(10, len(losses)))])),
        "last_loss": float(np.mean(losses[-max(1, min(10, len(losses))) :])),
        "held_out_top1_before": before,
        "held_out_top1_after": after,
        "seconds": round(time.time() - started, 1),
        "config": {f.name: getattr(config, f.name) for f in fields(config) if f.name in MODULE_KEYS},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in modules.state_dict().items()}
    save_file(tensors, str(out), metadata={"memoryvla": json.dumps(report)})
    load_weights(build_modules(config, encoder.dim), str(out))  # the file round-trips
    report["losses"] = losses
    return report


# The config keys a weights file depends on (the others may change freely).
MODULE_KEYS = ("encoder", "per_dim", "cog_dim", "grid", "retrieval_layers", "use_timestep_pe", "fusion", "capacity", "frames_per_entry", "consolidate", "update_fused", "temperature", "seed")


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, MemoryVLAConfig]:
    parser = argparse.ArgumentParser(
        prog="python -m embodied_mem.memory.memoryvla.train",
        description=(
            "Fit MemoryVLA's cognitive stream (cognitive encoder, retrieval blocks, timestep "
            "embedder, gate) on embedded-simulator histories with a contrastive recall objective: "
            "the fused token of a query built from a detected category must land on a bank entry "
            "whose frames saw it. Writes a safetensors file loadable with memory.weights=<file>."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", default="memoryvla_weights.safetensors", help="where to write the weights (safetensors)")
    parser.add_argument("--episodes", type=int, default=6, help="training histories (seeds --seed, --seed+1, ...)")
    parser.add_argument("--held-out", type=int, default=2, help="histories after the training ones, for the top-1 check")
    parser.add_argument("--days", type=int, default=1, help="days per history")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps")
    parser.add_argument("--banks", type=int, default=4, help="bank prefixes per step")
    parser.add_argument("--queries", type=int, default=16, help="queries per bank")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1000, help="first simulator seed (evaluation uses 0 onwards) and torch seed")
    parser.add_argument("--init", default=None, help="start from these weights instead of the seeded initialisation")
    parser.add_argument("--encoder", default=None, help="text encoder (minilm | gt_hash); default: the config's")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small ops: more threads rarely help on CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--report", default=None, help="also write the training report (JSON) here")
    args = parser.parse_args(argv)
    config = MemoryVLAConfig(weights=None)
    if args.encoder:
        config = replace(config, encoder=args.encoder)
    return args, config


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args, config = parse(argv)
    report = train(args, config)
    summary = {k: v for k, v in report.items() if k != "losses"}
    print(json.dumps(summary, indent=1))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
