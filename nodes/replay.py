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
  embodied-mem replay <bag A> <bag B> memory=<name> "replay.map_T_odom=[[0,0,0],[3.0,1.0,0.7]]"
      several robots' bags of one home into one memory: each robot's odometry frame (x, y, yaw)
      in the shared map frame; frame ids become robot * 1e9 + id (embodied_mem/store/merge.py)
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


def _alignment(text: str | None, count: int):
    from embodied_mem.types import Pose

    if text is None:
        return [Pose.from_xy_yaw(0.0, 0.0, 0.0)] * count
    try:
        rows = json.loads(text)
        poses = [Pose.from_xy_yaw(float(x), float(y), float(yaw)) for x, y, yaw in rows]
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"replay.map_T_odom must be [[x, y, yaw], ...] (one per bag), got {text!r}") from error
    if len(poses) != count:
        raise ValueError(f"replay.map_T_odom has {len(poses)} poses for {count} bag(s)")
    return poses


def replay(bag_dir: str, overrides: list[str]) -> int:
    from embodied_mem.cli import compose, memory_config
    from embodied_mem.nodes import convert
    from embodied_mem.nodes.bag import latest_floor_plan, read_observations
    from embodied_mem.registry import build
    from embodied_mem.store.merge import RobotStream, merged

    bags = [bag_dir] + [o for o in overrides if "=" not in o]
    overrides = [o for o in overrides if "=" in o]
    out = next((o.split("=", 1)[1] for o in overrides if o.startswith("replay.out=")), None)
    align = next((o.split("=", 1)[1] for o in overrides if o.startswith("replay.map_T_odom=")), None)
    cfg = compose([o for o in overrides if not o.startswith(("replay.out=", "replay.map_T_odom="))])
    memory = build("memory", memory_config(cfg))
    plan = latest_floor_plan(bags[0])
    if plan is not None and hasattr(memory, "set_floor_plan"):
        memory.set_floor_plan(convert.floor_plan_from_json(plan))
    started, frames, refused = time.perf_counter(), 0, 0
    if len(bags) == 1 and align is None:
        stream = read_observations(bag_dir)
    else:  # several robots: one stream in the map frame, in time order
        stream = merged([RobotStream(read_observations(b), t) for b, t in zip(bags, _alignment(align, len(bags)))])
    for obs in stream:
        try:
            memory.observe(obs)
            frames += 1
        except ValueError as error:  # a bad frame is reported and skipped, as the node does
            refused += 1
            print(f"skipped frame {obs.frame_id}: {error}", file=sys.stderr)
    if hasattr(memory, "flush"):
        memory.flush()
    stats = memory.stats()
    print(f"{memory.name}: {frames} observations replayed from {', '.join(bags)} ({refused} refused) in {time.perf_counter() - started:.1f} s; "
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
