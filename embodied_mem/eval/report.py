"""Result files and pictures: summary.json, tasks.csv, report.png, and comparison tables."""

from __future__ import annotations

import csv
import json
import platform
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from embodied_mem.eval.runner import RunResult, task_rows  # noqa: E402
from embodied_mem.sim.tasks.generator import CATEGORIES  # noqa: E402


def write_run(directory: Path, result: RunResult, summary: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    rows = task_rows(result)
    with open(directory / "tasks.csv", "w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    plot_run(directory / "report.png", result, summary)


def plot_run(path: Path, result: RunResult, summary: dict) -> None:
    """Four panels: success by category, recall latency, memory over the history, overview."""
    figure, axes = plt.subplots(2, 2, figsize=(13, 9))
    mode = summary.get("perception", "?")
    bound = " (UPPER BOUND)" if mode == "gt" else ""
    title = f"{summary['memory']} | {summary['track']} track | perception {mode}{bound} | {summary['episodes']} episode(s), {summary['tasks']} tasks"
    figure.suptitle(title, fontsize=13)

    ax = axes[0, 0]
    categories = [c for c in CATEGORIES if c in summary["by_category"]]
    y = np.arange(len(categories))
    ax.barh(y - 0.2, [summary["by_category"][c] for c in categories], height=0.4, label="success", color="#3b7dd8")
    ax.barh(y + 0.2, [summary["high_level_by_category"][c] for c in categories], height=0.4, label="high-level", color="#f0a030")
    counts = {c: sum(1 for t in result.tasks if t.category == c) for c in categories}
    ax.set_yticks(y, [f"{c} ({counts[c]})" for c in categories])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("rate")
    ax.set_title("Success by FindingDory category (tasks)")
    ax.legend(loc="lower right")

    ax = axes[0, 1]
    latencies = [t.recall_ms for t in result.tasks]
    if latencies:
        ax.hist(latencies, bins=30, color="#5a9e6f")
        ax.axvline(summary["recall_ms_p50"], color="k", linestyle="--", label=f"p50 {summary['recall_ms_p50']:.1f} ms")
        ax.axvline(summary["recall_ms_p95"], color="r", linestyle=":", label=f"p95 {summary['recall_ms_p95']:.1f} ms")
        ax.legend()
    ax.set_xlabel("recall latency (ms)")
    ax.set_ylabel("tasks")
    ax.set_title("Recall latency")

    ax = axes[1, 0]
    for number, run in enumerate(result.ingest):
        if run.sizes:
            frames, sizes = zip(*run.sizes)
            ax.plot(frames, np.array(sizes) / 1e6, label=f"episode {number + 1}")
    ax.set_xlabel("frames observed")
    ax.set_ylabel("memory (MB)")
    ax.set_title("Memory size over the history")
    if result.ingest:
        ax.legend()

    ax = axes[1, 1]
    ax.axis("off")
    lines = [
        f"success rate         {summary['success_rate']:.3f}",
        f"high-level accuracy  {summary['high_level_accuracy']:.3f}",
        f"SPL                  {summary['spl']:.3f}",
        f"ingest               {summary['ingest_fps']:.1f} frames/s",
        f"recall p50 / p95     {summary['recall_ms_p50']:.1f} / {summary['recall_ms_p95']:.1f} ms",
        f"memory               {summary['memory_bytes'] / 1e6:.2f} MB",
        f"frames               {summary['frames']}",
        "",
    ] + [f"{name:<28} {value:.3f}" for name, value in summary["by_high_level_category"].items()]
    ax.text(0.0, 1.0, "\n".join(lines), va="top", family="monospace", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


FLOORS = ("diary_only", "stay", "chance")


def _label(summary: dict) -> str:
    """A run's name in a table, its perception mode always in it (gt is an upper bound)."""
    mode = summary.get("perception", "?")
    return f"{summary['memory']}/{summary['track']}/{mode}" + (" (UB)" if mode == "gt" else "")


def table(summaries: list[dict]) -> str:
    """A plain-text table: one column per run, one row per category and metric."""
    headers = [_label(s) for s in summaries]
    width = max([12] + [len(h) for h in headers]) + 2
    categories = [c for c in CATEGORIES if any(c in s["by_category"] for s in summaries)]
    rows = [("category", headers)]
    for category in categories:
        rows.append((category, [_percent(s["by_category"].get(category)) for s in summaries]))
    rows.append(("-" * 24, ["-" * (width - 2)] * len(summaries)))
    metrics = [
        ("success rate", lambda s: _percent(s["success_rate"])),
        ("high-level accuracy", lambda s: _percent(s["high_level_accuracy"])),
        ("  HL dtg / sem_cov", lambda s: f"{_percent(s.get('high_level_dtg'))} / {_percent(s.get('high_level_sem_cov'))}"),
        ("SPL", lambda s: f"{s['spl']:.3f}"),
        ("parse accuracy", lambda s: _percent(s.get("parse_accuracy")) if s.get("parse_accuracy") is not None else "-"),
        ("ingest frames/s", lambda s: f"{s['ingest_fps']:.1f}"),
        ("recall p50 ms", lambda s: f"{s['recall_ms_p50']:.2f}"),
        ("recall p95 ms", lambda s: f"{s['recall_ms_p95']:.2f}"),
        ("memory MB", lambda s: f"{s['memory_bytes'] / 1e6:.2f}"),
        ("tasks", lambda s: str(s["tasks"])),
    ]
    rows += [(name, [fn(s) for s in summaries]) for name, fn in metrics]
    return "\n".join(f"{name:<26}" + "".join(f"{cell:>{width}}" for cell in cells) for name, cells in rows)


def markdown_table(summaries: list[dict]) -> str:
    """One table per perception mode and track: systems, then the floors beside them."""
    blocks = []
    groups = list(dict.fromkeys((s.get("perception", "?"), s["track"]) for s in summaries))
    for mode, track in groups:
        runs = [s for s in summaries if s.get("perception", "?") == mode and s["track"] == track]
        runs.sort(key=lambda s: s["memory"] in FLOORS)  # systems first, floors last (stable)
        title = f"### {track} track, perception `{mode}`" + (" (upper bound)" if mode == "gt" else "")
        headers = [s["memory"] + (" *(floor)*" if s["memory"] in FLOORS else "") for s in runs]
        categories = [c for c in CATEGORIES if any(c in s["by_category"] for s in runs)]
        lines = [title, "", "| | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(runs)]
        for category in categories:
            lines.append(f"| {category} | " + " | ".join(_percent(s["by_category"].get(category)) for s in runs) + " |")
        lines.append("| **success rate** | " + " | ".join(f"**{_percent(s['success_rate'])}**" for s in runs) + " |")
        lines.append("| high-level accuracy | " + " | ".join(_percent(s["high_level_accuracy"]) for s in runs) + " |")
        lines.append("| HL dtg / sem_cov | " + " | ".join(f"{_percent(s.get('high_level_dtg'))} / {_percent(s.get('high_level_sem_cov'))}" for s in runs) + " |")
        lines.append("| SPL | " + " | ".join(f"{s['spl']:.3f}" for s in runs) + " |")
        if track == "language":  # understanding, apart from success: constraints equal to the task's
            lines.append("| parse accuracy | " + " | ".join(_percent(s.get("parse_accuracy")) if s.get("parse_accuracy") is not None else "-" for s in runs) + " |")
        lines.append("| ingest (frames/s) | " + " | ".join(f"{s['ingest_fps']:.0f}" for s in runs) + " |")
        lines.append("| recall p50 / p95 (ms) | " + " | ".join(f"{s['recall_ms_p50']:.1f} / {s['recall_ms_p95']:.1f}" for s in runs) + " |")
        lines.append("| memory (MB) | " + " | ".join(f"{s['memory_bytes'] / 1e6:.2f}" for s in runs) + " |")
        lines.append("| tasks | " + " | ".join(str(s["tasks"]) for s in runs) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def plot_comparison(path: Path, summaries: list[dict]) -> None:
    """Success by category, one panel per track and perception mode, one bar per memory
    (floors hatched)."""
    categories = [c for c in CATEGORIES if any(c in s["by_category"] for s in summaries)]
    panels = list(dict.fromkeys((s["track"], s.get("perception", "?")) for s in summaries))
    memories = list(dict.fromkeys(s["memory"] for s in summaries))
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(memories)}
    figure, axes = plt.subplots(len(panels), 1, figsize=(15, 4.2 * len(panels)), squeeze=False)
    width = 0.8 / max(1, len(memories))
    x = np.arange(len(categories) + 1)
    for ax, (track, mode) in zip(axes[:, 0], panels):
        for number, memory in enumerate(memories):
            summary = next((s for s in summaries if s["track"] == track and s.get("perception", "?") == mode and s["memory"] == memory), None)
            if summary is None:
                continue
            values = [summary["by_category"].get(c, 0.0) for c in categories] + [summary["success_rate"]]
            floor = memory in FLOORS
            ax.bar(
                x + number * width - 0.4 + width / 2, values, width, color=colors[memory], hatch="//" if floor else None,
                edgecolor="white" if floor else None, label=f"{memory}{' (floor)' if floor else ''} ({_percent(summary['success_rate'])})",
            )
        ax.set_xticks(x, categories + ["ALL"], rotation=25, ha="right")
        ax.axvline(len(categories) - 0.5, color="#999", linewidth=0.8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("success rate")
        ax.set_title(f"{track} track, perception {mode}" + (" (upper bound)" if mode == "gt" else ""))
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def provenance() -> dict:
    """Commit and machine, noted next to published numbers."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        import os

        cores = os.cpu_count()
    except Exception:  # pragma: no cover
        cores = None
    return {"commit": commit or "unknown", "machine": f"{platform.machine()}, {cores} cores, Python {platform.python_version()}"}


def _percent(value: float | None) -> str:
    """A rate as a whole percentage; "-" where there is none."""
    return "-" if value is None else f"{100 * value:.0f}%"
