"""``embodied-mem record`` and ``embodied-mem replay``: memories from a robot's own data.

``record <bag dir> [overrides]`` lives one embedded-simulator episode (the same Hydra config as
``eval``: ``sim=...``, ``perception=...``, ``seed=...``) and writes every observation to a
rosbag2-compatible MCAP bag (``nodes/bag.py``: the memory node's own input contract, CDR
messages, ``metadata.yaml``), with the floor plan. ``ros2 bag info`` / ``play``, Foxglove and the
pure-Python ``rosbags`` reader read it.

``replay <bag dir> memory=<name> [replay.out=<checkpoint dir>]`` builds any registered memory
from such a bag (one recorded by ``record`` or by the memory node on a robot), prints what it
holds and saves its checkpoint. Both need the ``ros`` extra (rclpy serialises the messages).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

USAGE = """usage:
  embodied-mem record <bag dir> [key=value ...]             e.g. sim=embedded_small perception=gt seed=3
  embodied-mem replay <bag dir> memory=<name> [replay.out=<checkpoint dir>] [encoder=gt_hash]
"""


def record(bag_dir: str, overrides: list[str]) -> int:
    from embodied_mem.cli import compose, run_spec
    from embodied_mem.nodes.bag import ObservationBag
    from embodied_mem.sim.embedded.episode import EmbeddedEpisode

    cfg = compose(overrides)
    spec = run_spec(cfg, [], [str(cfg.track)])
    if Path(bag_dir).exists() and any(Path(bag_dir).iterdir()):
        raise ValueError(f"{bag_dir} exists and is not empty: record writes a new bag")
    episode = EmbeddedEpisode(spec.sim, spec.seed)
    plan_json = json.dumps(episode.floor_plan().to_dict())
    bag = ObservationBag(bag_dir)
    started, frames = time.perf_counter(), 0
    try:
        for obs in episode.history():
            bag.append(obs, plan_json)
            frames += 1
    finally:
        bag.close()
    print(f"recorded {frames} observations ({spec.sim.perception.mode} perception, seed {spec.seed}) to {bag_dir} in {time.perf_counter() - started:.1f} s")
    return 0


def replay(bag_dir: str, overrides: list[str]) -> int:
    from embodied_mem.cli import compose, memory_config
    from embodied_mem.nodes import convert
    from embodied_mem.nodes.bag import latest_floor_plan, read_observations
    from embodied_mem.registry import build

    out = next((o.split("=", 1)[1] for o in overrides if o.startswith("replay.out=")), None)
    cfg = compose([o for o in overrides if not o.startswith("replay.out=")])
    memory = build("memory", memory_config(cfg))
    plan = latest_floor_plan(bag_dir)
    if plan is not None and hasattr(memory, "set_floor_plan"):
        memory.set_floor_plan(convert.floor_plan_from_json(plan))
    started, frames, refused = time.perf_counter(), 0, 0
    for obs in read_observations(bag_dir):
        try:
            memory.observe(obs)
            frames += 1
        except ValueError as error:  # a bad frame is reported and skipped, as the node does
            refused += 1
            print(f"skipped frame {obs.frame_id}: {error}", file=sys.stderr)
    if hasattr(memory, "flush"):
        memory.flush()
    stats = memory.stats()
    print(f"{memory.name}: {frames} observations replayed from {bag_dir} ({refused} refused) in {time.perf_counter() - started:.1f} s; "
          f"{stats.items} items, {stats.bytes / 1e6:.2f} MB")
    if out:
        memory.save(out)
        print(f"saved the checkpoint to {out}")
    return 0


def main(verb: str, argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + USAGE)
        return 0
    try:
        return (record if verb == "record" else replay)(argv[0], argv[1:])
    except ValueError as error:
        print(f"embodied-mem {verb}: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        print(f"embodied-mem {verb}: error: {error}; install the ros extra: pip install 'embodied-mem[ros]'", file=sys.stderr)
        return 2
