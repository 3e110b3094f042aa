"""`embodied-mem record` writes a rosbag2 bag that an independent reader (rosbags) reads back,
and `embodied-mem replay` builds a memory from it."""

import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.ros

SMALL = ["sim=embedded_small", "sim.history.rearrangements_per_day=1", "seed=3"]


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "embodied_mem.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_a_recorded_bag_reads_back_with_rosbags_and_replays_into_a_memory(tmp_path):
    pytest.importorskip("rosbags")
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from embodied_mem.cli import compose, run_spec
    from embodied_mem.sim.embedded.episode import EmbeddedEpisode

    bag = tmp_path / "day"
    run = cli("record", str(bag), *SMALL)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (bag / "metadata.yaml").is_file()

    cfg = compose(SMALL)
    observations = list(EmbeddedEpisode(run_spec(cfg, [], ["oracle"]).sim, 3).history())
    typestore = get_typestore(Stores.ROS2_JAZZY)
    with Reader(bag) as reader:  # an independent reader: rosbag2's own metadata and CDR
        rgb = [c for c in reader.connections if c.topic == "/camera/rgb/image_raw"]
        assert rgb and rgb[0].msgtype == "sensor_msgs/msg/Image"
        messages = list(reader.messages(connections=rgb))
        assert len(messages) == len(observations)
        first = typestore.deserialize_cdr(messages[0][2], rgb[0].msgtype)
        image = np.frombuffer(first.data, np.uint8).reshape(first.height, first.width, 3)
        assert first.encoding == "rgb8" and np.array_equal(image, observations[0].rgb)
        grasps = [c for c in reader.connections if c.topic == "/grasp"]
        assert sum(1 for _ in reader.messages(connections=grasps)) == sum(e.kind == "grasp" for o in observations for e in o.events)

    checkpoint = tmp_path / "memory"
    run = cli("replay", str(bag), "memory=frame_bank", "encoder=gt_hash", f"replay.out={checkpoint}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"{len(observations)} observations replayed" in run.stdout and "(0 refused)" in run.stdout
    from embodied_mem.registry import build

    memory = build("memory", {"name": "frame_bank", "encoder": "gt_hash"})
    memory.load(checkpoint)
    assert memory.stats().frames_seen == len(observations)
    assert len(memory.diary.interactions()) == 1  # the one rearrangement, inferred from the bag alone


def test_record_refuses_to_overwrite_a_bag(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "x.mcap").write_bytes(b"")
    run = cli("record", str(tmp_path / "old"), *SMALL)
    assert run.returncode == 2 and "not empty" in run.stderr
