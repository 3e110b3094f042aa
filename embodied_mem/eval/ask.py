"""``embodied-mem ask <checkpoint> "where did I leave the red mug?"``: ask a saved memory in words.

The checkpoint says which system made it and with what configuration; the memory is rebuilt
from that and loaded. The question goes through the agent's instruction reasoner (the same one
as the language track), the memory answers, and the answer is said in words: what, where (the
room from the floor plan the memory was deployed with), when it was last seen, and which frame.
``ask.png`` draws the answer on the floor plan, with the remembered frame beside it where an
image of it can be had: from the episode the checkpoint came from (``embodied-mem viz`` writes
``episode.json`` beside its checkpoint, and the frame is rendered again at the remembered pose),
or not at all (memories keep no images; the picture says so).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from embodied_mem.agent import Agent, AgentConfig  # noqa: E402
from embodied_mem.registry import build  # noqa: E402
from embodied_mem.types import Hit, Query  # noqa: E402


def open_checkpoint(directory: str | Path):
    """The memory a checkpoint was saved from, rebuilt with its configuration and loaded."""
    directory = Path(directory)
    current = directory / "CURRENT"
    if not current.is_file():
        raise ValueError(f"{directory} is not a checkpoint (no CURRENT file)")
    manifest_path = directory / current.read_text().strip() / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        system, config = manifest["system"], manifest.get("config") or {}
    except (OSError, json.JSONDecodeError, KeyError) as error:
        raise ValueError(f"{manifest_path}: unreadable checkpoint manifest ({error})") from None
    memory = build("memory", {"name": system, **{k: v for k, v in config.items() if k != "name"}})
    memory.load(directory)
    return memory


def _clock(stamp: float) -> str:
    minute = int((stamp % 86400.0) // 60)
    return f"{minute // 60}:{minute % 60:02d}"


def answer_in_words(memory, question: str, agent: Agent | None = None) -> tuple[str, Hit | None, dict | None]:
    """(the answer said in words, the hit it rests on, the constraints the question became)."""
    agent = agent or Agent(AgentConfig())
    parse = agent.understand(question, memory)
    if not parse.understood:
        return f"I did not understand the question ({parse.reason}).", None, None
    goals = parse.constraints["goals"]
    recall = memory.recall(Query(question, k=5, constraints=parse.constraints))
    hits = sorted(recall.hits, key=lambda h: -h.score)
    if not hits and goals[0]["target"] != "room" and goals[0].get("category"):
        # "where did I leave the mug?" when the mug was never moved: where it is, whatever was done
        plain = {"goals": [{"target": goals[0]["target"], "day": None, "category": goals[0]["category"], **({"attributes": goals[0]["attributes"]} if goals[0].get("attributes") else {})}], "ordered": False}
        hits = sorted(memory.recall(Query(question, k=5, constraints=plain)).hits, key=lambda h: -h.score)
    if not hits:
        return "I understood the question, but I remember nothing that answers it.", None, parse.constraints
    hit = hits[0]
    what = _what(memory, hit, goals[0])
    place = hit.target_xyz if hit.target_xyz is not None else hit.agent_pose.position
    plan = getattr(getattr(memory, "diary", None), "floor_plan", None)
    room = plan.room_at(place) if plan is not None else None
    where = f"at x={place[0]:.1f}, y={place[1]:.1f} m" + (f" in the {room.replace('_', ' ')}" if room else "")
    day = _day_of(memory, hit.frame_id)
    when = f"at {_clock(hit.stamp)}" + (f" on day {day}" if day is not None else "")
    return f"{what}: last seen {where}, {when} (frame {hit.frame_id}).", hit, parse.constraints


def _what(memory, hit: Hit, goal: dict) -> str:
    from embodied_mem.perception import describe

    if hit.object_id is not None and hasattr(memory, "catalog"):
        for entity in memory.catalog():
            if entity.entity_id == hit.object_id:
                return "The " + describe(entity.category, entity.attributes)
    if goal["target"] == "room":
        return f"The {(hit.evidence.get('room') or 'room').replace('_', ' ')}"
    return "The " + describe(goal.get("category") or goal["target"], goal.get("attributes") or {})


def _day_of(memory, frame_id: int) -> int | None:
    diary = getattr(memory, "diary", None)
    if diary is None:
        return None
    best = None
    for stay in diary.stays:
        if stay.frame_id <= frame_id:
            best = stay.day
    return best


def _frame_image(checkpoint: Path, hit: Hit):
    """The frame at the remembered pose, rendered again from the episode the checkpoint came from."""
    episode_file = checkpoint.parent / "episode.json"
    if not episode_file.is_file():
        return None
    from embodied_mem.cli import compose, run_spec
    from embodied_mem.sim.embedded.episode import EmbeddedEpisode

    recorded = json.loads(episode_file.read_text())
    cfg = compose(list(recorded.get("overrides", [])))
    spec = run_spec(cfg, [], [str(cfg.track)])
    episode = EmbeddedEpisode(spec.sim, int(recorded.get("seed", spec.seed)))
    return episode.env.render(hit.agent_pose).rgb


def ask(checkpoint: str | Path, question: str, out: str | Path | None = None) -> tuple[str, Path]:
    """Answer ``question`` from the memory saved at ``checkpoint``; write ``ask.png``."""
    checkpoint = Path(checkpoint)
    memory = open_checkpoint(checkpoint)
    text, hit, constraints = answer_in_words(memory, question)
    out = Path(out) if out is not None else checkpoint.parent / "ask.png"
    figure, (plan_ax, view) = plt.subplots(1, 2, figsize=(14, 6.5), gridspec_kw={"width_ratios": [1.6, 1]})
    plan = getattr(getattr(memory, "diary", None), "floor_plan", None)
    if plan is not None:
        for region in plan.regions:
            polygon = plt.Polygon(region.polygon, closed=True, fill=True, alpha=0.15, edgecolor="grey")
            plan_ax.add_patch(polygon)
            cx, cy = region.center()
            plan_ax.text(cx, cy, region.name.replace("_", " "), ha="center", va="center", fontsize=8, color="grey")
    if hasattr(memory, "plot"):
        memory.plot(plan_ax)
    if hit is not None:
        pose = hit.agent_pose
        plan_ax.annotate("", xy=(pose.position[0] + 0.6 * __import__("math").cos(pose.yaw), pose.position[1] + 0.6 * __import__("math").sin(pose.yaw)),
                         xytext=(pose.position[0], pose.position[1]), arrowprops={"arrowstyle": "->", "color": "black", "lw": 2})
        if hit.target_xyz is not None:
            plan_ax.scatter([hit.target_xyz[0]], [hit.target_xyz[1]], s=300, facecolors="none", edgecolors="red", linewidths=3, zorder=5)
    plan_ax.set_aspect("equal")
    plan_ax.autoscale()
    plan_ax.set_title(question, fontsize=11)
    image = _frame_image(checkpoint, hit) if hit is not None else None
    if image is not None:
        view.imshow(image)
        view.set_title(f"frame {hit.frame_id} (rendered again at the remembered pose)")
    else:
        view.text(0.5, 0.5, "no image of this frame\n(memories keep no images; checkpoints from\n`embodied-mem viz` can show it)", ha="center", va="center")
    view.axis("off")
    figure.suptitle(text, fontsize=11)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return text, out


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="embodied-mem ask", description=(
        "Ask a saved memory a question in words. The checkpoint (a folder written by a memory's save(), "
        "`embodied-mem viz`, `replay` or the ROS 2 memory node) is loaded with the configuration it was saved with; "
        "the question goes through the offline instruction reasoner; the answer is printed and drawn to ask.png."))
    parser.add_argument("checkpoint", help="the checkpoint folder (holds CURRENT)")
    parser.add_argument("question", help='e.g. "where did I leave the red mug?"')
    parser.add_argument("--out", default=None, help="where to write the picture (default: ask.png beside the checkpoint)")
    args = parser.parse_args(argv)
    try:
        text, path = ask(args.checkpoint, args.question, args.out)
    except ValueError as error:
        print(f"embodied-mem ask: error: {error}")
        return 2
    print(text)
    print(f"wrote {path}")
    return 0
