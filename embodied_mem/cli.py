"""``embodied-mem <verb> [hydra overrides]``: evaluate, compare, visualise and benchmark memories.

Examples::

    embodied-mem eval memory=frame_bank sim=embedded track=oracle eval.episodes=2
    embodied-mem eval memory=mem4nav track=language encoder=gt_hash sim=embedded_small
    embodied-mem compare compare.memories=[frame_bank,mem4nav,snapshots3d] compare.docs=docs/results.md
    embodied-mem viz memory=snapshots3d
    embodied-mem bench --frames 1000 10000
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

VERBS = {
    "eval": "evaluate one memory in one track on FindingDory-style tasks; writes summary.json, tasks.csv, report.png",
    "compare": "evaluate several memories in both tracks on the same episodes; writes a comparison table and plot",
    "viz": "stream one episode into a memory and draw what it remembers over the floor plan",
    "bench": "benchmarks: simulator frames/s, ingest rate and recall latency at 1k/10k/100k observations",
    "ask": 'ask a saved memory in words: embodied-mem ask <checkpoint> "where did I leave the red mug?" (writes ask.png)',
    "report": "evaluate every registered memory, the stack and the floors, both tracks and perception modes; write docs/results.md with plots",
    "config": "print the composed config (with your overrides) and exit",
    "record": "live one embedded episode and write its observations to a rosbag2-compatible MCAP bag (ros extra)",
    "replay": "build any memory from a bag (recorded here or by the memory node on a robot) and save its checkpoint",
    "nodes": "start a ROS 2 graph (sim, memory, agent) as separate processes from a graph YAML, without a ROS install",
}

EVAL_HELP = """\
usage: embodied-mem {verb} [key=value ...]

Hydra overrides, e.g.:
  memory=<name>            memory system: {memories}
  track=oracle|language    oracle: the memory gets the structured task; language: text only
  sim=embedded|embedded_small   the default CPU simulator, full size or small and fast
  sim=habitat habitat.episodes=<episodes.json.gz>   FindingDory's own episodes in habitat-sim
                           (GPU machines with the conda set-up of docs/habitat.md)
  task.file=tasks.jsonl    your own tasks (instruction, goals, optional constraints); task.day=N one day
  eval.workers=N           episodes in parallel on Ray (eval.ray_address=... for a cluster)
  eval.agent.reasoner=offline|openai|text   how the language track understands instructions
  perception=detector|gt   detector (default): per-frame masks, no ids, noise and drift;
                           gt: the simulator's ids and exact pose (an UPPER BOUND, named so)
  encoder=minilm|gt_hash   override every memory's text encoder (default: the memory's own)
  eval.episodes=N          episodes (seed, seed+1, ...)     seed=S
  sim.history.days=N       days the robot lives before the tasks (FindingDory: 1)
  sim.env.width=W sim.env.height=H    camera resolution
  task.templates=[order_object_first,time_object]   only these task templates
  run_name=NAME output_dir=DIR        where results go (default outputs/<memory>-<track>-<time>)
  eval.progress=false      no progress bars
  compare.memories=[a,b] compare.tracks=[oracle] compare.docs=docs/results.md   (compare)
  compare.floors=[diary_only,stay,chance]   floors run beside the systems (default: all three)
  compare.perceptions=[detector,gt]          perception modes compared on the same seeds

Unknown keys are errors: `memory.foo=1` is refused by Hydra, `+memory.foo=1` by the memory.
Print the full config with: embodied-mem config [overrides]
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0] + "\n\nverbs:")
        for verb, text in VERBS.items():
            print(f"  {verb:<8} {text}")
        print("\n`embodied-mem <verb> --help` for the options of a verb.")
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"embodied-mem: unknown verb {verb!r}; choose one of {', '.join(VERBS)}", file=sys.stderr)
        return 2
    if verb == "bench":
        from embodied_mem.eval.bench import main as bench_main

        return bench_main(rest)
    if verb in ("record", "replay"):
        from embodied_mem.nodes.replay import main as replay_main

        return replay_main(verb, rest)
    if verb == "ask":
        from embodied_mem.eval.ask import main as ask_main

        return ask_main(rest)
    if verb == "nodes":
        from embodied_mem.nodes.graph import main as nodes_main

        return nodes_main(rest)
    if "-h" in rest or "--help" in rest:
        from embodied_mem.registry import names

        print(EVAL_HELP.format(verb=verb, memories=", ".join(names("memory"))))
        print(f"{verb}: {VERBS[verb]}")
        return 0
    _OVERRIDES[:] = rest
    try:
        cfg = compose(rest)
        if verb == "config":
            from omegaconf import OmegaConf

            print(OmegaConf.to_yaml(cfg))
            return 0
        return {"eval": cmd_eval, "compare": cmd_compare, "viz": cmd_viz, "report": cmd_report}[verb](cfg)
    except (ValueError, ImportError) as error:  # bad config, bad input, a missing simulator: a clear message, no traceback
        print(f"embodied-mem {verb}: error: {error}", file=sys.stderr)
        return 2


def compose(overrides: list[str]):
    """The Hydra config with the command-line overrides applied (strict: unknown keys fail)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    import embodied_mem.configs

    config_dir = str(Path(embodied_mem.configs.__file__).parent)
    try:
        with initialize_config_dir(config_dir=config_dir, version_base=None):
            return hydra_compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise ValueError(str(error).splitlines()[0]) from error


def memory_config(cfg, name: str | None = None) -> dict:
    """A memory's config as a dict, with the encoder override applied."""
    from omegaconf import OmegaConf

    if name is None:
        values = OmegaConf.to_container(cfg.memory, resolve=True)
    else:
        values = OmegaConf.to_container(OmegaConf.load(_configs_dir() / "memory" / f"{name}.yaml"), resolve=True)
    if cfg.encoder.name is not None and "encoder" in values:
        values["encoder"] = cfg.encoder.name
    return values


def _configs_dir() -> Path:
    import embodied_mem.configs

    return Path(embodied_mem.configs.__file__).parent


def run_spec(cfg, memories: list[dict], tracks: list[str]):
    from omegaconf import OmegaConf

    from embodied_mem.agent import TRACKS, AgentConfig
    from embodied_mem.eval.runner import RunSpec
    from embodied_mem.registry import make_config
    from embodied_mem.sim.embedded.env import EnvConfig
    from embodied_mem.sim.embedded.episode import EmbeddedSimConfig
    from embodied_mem.sim.embedded.oracle import HistoryConfig
    from embodied_mem.sim.embedded.perception import PerceptionConfig
    from embodied_mem.sim.embedded.world import WorldConfig
    from embodied_mem.sim.tasks.generator import TaskConfig

    for track in tracks:
        if track not in TRACKS:
            raise ValueError(f"track must be one of {TRACKS}, got {track!r}")
    from embodied_mem.sim.episodes import embedded_config, habitat_config

    sim = OmegaConf.to_container(cfg.sim, resolve=True)
    perception = OmegaConf.to_container(cfg.perception, resolve=True)
    if sim.get("name") == "habitat":  # FindingDory's own episodes (GPU machines; docs/habitat.md)
        sim_config = habitat_config(sim, perception)
    elif sim.get("name") == "embedded":
        sim_config = embedded_config(sim, perception)
    else:
        raise ValueError(f"sim must be embedded or habitat, got {sim.get('name')!r}")
    task = make_config(TaskConfig, OmegaConf.to_container(cfg.task, resolve=True), "task")
    agent = make_config(AgentConfig, OmegaConf.to_container(cfg.eval.agent, resolve=True), "eval.agent")
    if int(cfg.eval.episodes) < 1:
        raise ValueError(f"eval.episodes must be at least 1, got {cfg.eval.episodes}")
    return RunSpec(
        memories=memories,
        tracks=list(tracks),
        episodes=int(cfg.eval.episodes),
        seed=int(cfg.seed),
        sim=sim_config,
        tasks=task,
        agent=agent,
        progress=bool(cfg.eval.progress),
        workers=int(cfg.eval.workers),
        ray_address=cfg.eval.ray_address,
    )


def _check_memories(memories: list[dict]) -> None:
    """Fail on a bad memory config before minutes of simulation, not after."""
    from embodied_mem.registry import config_class, make_config

    for values in memories:
        values = dict(values)
        name = values.pop("name", None)
        make_config(config_class("memory", name), values, f"memory {name!r}")


def _output_dir(cfg, default_name: str) -> Path:
    name = cfg.run_name or f"{default_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.output_dir) / name


def cmd_eval(cfg) -> int:
    from omegaconf import OmegaConf

    from embodied_mem.eval.report import table, write_run
    from embodied_mem.eval.runner import run, summarize

    memory = memory_config(cfg)
    _check_memories([memory])
    spec = run_spec(cfg, [memory], [str(cfg.track)])
    out = _output_dir(cfg, f"{memory['name']}-{cfg.track}")
    results = run(spec)
    result = results[(memory["name"], str(cfg.track))]
    summary = summarize(result, spec, OmegaConf.to_container(cfg, resolve=True))
    write_run(out, result, summary)
    print(table([summary]))
    print(f"\nwrote {out}/summary.json, tasks.csv, report.png")
    return 0


def cmd_compare(cfg) -> int:
    from omegaconf import OmegaConf

    from embodied_mem.eval.report import plot_comparison, provenance, table, write_run
    from embodied_mem.eval.runner import run, summarize

    names = list(dict.fromkeys([str(n) for n in cfg.compare.memories] + [str(n) for n in cfg.compare.floors]))
    memories = [memory_config(cfg, name) for name in names]
    _check_memories(memories)
    tracks = [str(t) for t in cfg.compare.tracks]
    out = _output_dir(cfg, "compare")
    summaries, spec = [], None
    for mode in [str(m) for m in cfg.compare.perceptions]:
        # Each perception mode is its own stream of the same seeds: the group's YAML, as `perception=<mode>`.
        mode_cfg = compose(_overrides_without_perception() + [f"perception={mode}"])
        spec = run_spec(mode_cfg, memories, tracks)
        results = run(spec)
        config = OmegaConf.to_container(mode_cfg, resolve=True)
        for track in tracks:
            for memory in memories:
                result = results[(memory["name"], track)]
                summary = summarize(result, spec, config)
                write_run(out / f"{memory['name']}-{track}-{mode}", result, summary)
                summaries.append(summary)
    print(table(summaries))
    plot_comparison(out / "comparison.png", summaries)
    document = comparison_markdown(summaries, spec, cfg, provenance(), "comparison.png")
    (out / "comparison.md").write_text(document)
    if cfg.compare.docs:
        docs = Path(cfg.compare.docs)
        docs.parent.mkdir(parents=True, exist_ok=True)
        image = docs.with_suffix(".png")
        plot_comparison(image, summaries)
        docs.write_text(comparison_markdown(summaries, spec, cfg, provenance(), image.name))
        print(f"wrote {docs} and {image}")
    (out / "summaries.json").write_text(json.dumps(summaries, indent=1, default=str))
    print(f"\nwrote {out}/comparison.md, comparison.png and one folder per memory, track and perception")
    return 0


_OVERRIDES: list[str] = []  # the command line's overrides, kept for per-mode re-composition


def cmd_report(cfg) -> int:
    """``compare`` over every registered memory system plus the stack, both tracks and both
    perception modes, into ``docs/results.md`` (``compare.docs`` overrides where)."""
    from omegaconf import open_dict

    from embodied_mem.eval.report import FLOORS
    from embodied_mem.registry import names

    systems = [n for n in names("memory") if n not in FLOORS and n != "stack"] + ["stack"]
    with open_dict(cfg):
        cfg.compare.memories = systems
        cfg.compare.tracks = ["oracle", "language"]
        cfg.compare.perceptions = ["detector", "gt"]
        if not cfg.compare.docs:
            cfg.compare.docs = "docs/results.md"
    print(f"report: {', '.join(systems)} and the floors {', '.join(str(f) for f in cfg.compare.floors)}; "
          f"{cfg.eval.episodes} episode(s) from seed {cfg.seed}; writing {cfg.compare.docs}", file=sys.stderr)
    return cmd_compare(cfg)


def stack_versus_best(summaries: list[dict]) -> str:
    """How the stack stands against the best single system, per track and perception, per category."""
    from embodied_mem.eval.report import FLOORS

    lines = []
    for key in dict.fromkeys((s["track"], s.get("perception")) for s in summaries):
        runs = [s for s in summaries if (s["track"], s.get("perception")) == key]
        stack = next((s for s in runs if s["memory"] == "stack"), None)
        singles = [s for s in runs if s["memory"] not in FLOORS and s["memory"] != "stack"]
        if stack is None or not singles:
            continue
        best = max(singles, key=lambda s: s["success_rate"])
        gap = 100 * (stack["success_rate"] - best["success_rate"])
        verdict = "beats" if gap > 0 else ("ties" if gap == 0 else "falls short of")
        lines.append(f"- {key[0]} track, `{key[1]}`: the stack ({100 * stack['success_rate']:.0f} %) {verdict} the best single system, "
                     f"`{best['memory']}` ({100 * best['success_rate']:.0f} %), by {abs(gap):.0f} points.")
        worse = [(c, 100 * (stack["by_category"].get(c, 0) - v)) for c, v in best["by_category"].items() if stack["by_category"].get(c, 0) < v]
        if worse:
            lines.append("  Where it is behind: " + ", ".join(f"{c} ({d:+.0f})" for c, d in sorted(worse, key=lambda x: x[1])) + ".")
    return ("## The stack against the best single system\n\n" + "\n".join(lines) + "\n\n") if lines else ""


def _overrides_without_perception() -> list[str]:
    return [o for o in _OVERRIDES if not o.lstrip("+~").startswith("perception")]


def comparison_markdown(summaries, spec, cfg, where: dict, image: str) -> str:
    from embodied_mem.eval.report import markdown_table

    command = "embodied-mem compare " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "embodied-mem compare"
    if hasattr(spec.sim, "history"):
        simulator = "embedded simulator"
        setting = (f"{spec.sim.history.days} day(s) of history, {spec.sim.history.rearrangements_per_day} rearrangements a day, "
                   f"{spec.sim.env.width}x{spec.sim.env.height} images")
    else:
        simulator = "Habitat, FindingDory's episodes"
        setting = f"FindingDory episodes from `{spec.sim.episodes}` (split {spec.sim.split}), Stretch head camera {spec.sim.camera.width}x{spec.sim.camera.height}"
    return (
        f"# Memory systems compared on FindingDory-style tasks ({simulator})\n\n"
        f"Produced by `{command}` at commit `{where['commit']}` on {where['machine']}.\n"
        f"{spec.episodes} episode(s), seeds {spec.seed}..{spec.seed + spec.episodes - 1}; {setting}.\n\n"
        "- **success**: FindingDory's low-level predicate (objects: geodesic <= 2 m to the snapped position, "
        "|angle| <= pi/4, visible >= 0.1 %; receptacles: <= 0.1 m to a viewpoint that sees it) where the oracle "
        "navigator stopped, within 1000 actions; single-goal tasks checked at every action.\n"
        "- **high-level**: the memory names history frame ids; the robot is teleported to their true poses "
        "(invalid ids fail); `dtg` drops the visibility check, `sem_cov` the distance check.\n"
        "- **perception**: `detector` = per-frame masks without ids, misses, false positives, confusion, depth noise "
        "and pose drift (what a robot has); `gt` = the simulator's ids and exact pose, an **upper bound**.\n"
        "- **floors** (`diary_only`, `stay`, `chance`) sit beside every system: a number a floor also reaches "
        "measures nothing. Per-category cells are success rates.\n\n"
        + stack_versus_best(summaries)
        + markdown_table(summaries)
        + f"\n\n![success by category]({image})\n"
    )


def cmd_viz(cfg) -> int:
    from embodied_mem.eval.viz import visualize, visualize_side_by_side

    if cfg.viz.memories:
        memories = [memory_config(cfg, str(name)) for name in cfg.viz.memories]
        _check_memories(memories)
        spec = run_spec(cfg, memories, [str(cfg.track)])
        out = _output_dir(cfg, "viz") / "memories.png"
        print(f"wrote {visualize_side_by_side(spec, memories, out)}")
        return 0
    memory = memory_config(cfg)
    _check_memories([memory])
    spec = run_spec(cfg, [memory], [str(cfg.track)])
    out = _output_dir(cfg, f"viz-{memory['name']}")
    path = visualize(spec, memory, out, save_checkpoint=bool(cfg.viz.checkpoint))
    if cfg.viz.checkpoint:  # `embodied-mem ask` re-renders remembered frames from this
        (out / "episode.json").write_text(json.dumps({"overrides": list(_OVERRIDES), "seed": spec.seed}))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
