"""Checkpoints survive kill -9: a process saving in a loop is killed at random moments, and
every time ``load()`` gives the previous or the new checkpoint, never a mix."""

import multiprocessing
import os
import random
import signal
import time

import numpy as np
import pytest

from embodied_mem.geometry import camera_mount, pinhole_camera
from embodied_mem.memory.frame_bank import FrameBank, FrameBankConfig, SubsampledFramesConfig
from embodied_mem.types import Detection, Observation, Pose

CAMERA = pinhole_camera(16, 12, 90.0, camera_mount(1.2, 0.3))


def frame(n: int) -> Observation:
    mask = np.zeros((12, 16), bool)
    mask[4:9, 5 + n % 6 : 9 + n % 6] = True
    return Observation(
        stamp=float(n), frame_id=n, rgb=np.full((12, 16, 3), n % 255, np.uint8), depth=np.full((12, 16), 2.0, np.float32),
        pose=Pose.from_xy_yaw(0.1 * n, 0.0, 0.0), camera=CAMERA, detections=[Detection("mug", mask)], day=0,
    )


def memory_of(name: str) -> FrameBank:
    if name == "subsampled_frames":  # decimation reorders what is kept: a mix would show
        return FrameBank(SubsampledFramesConfig(encoder="gt_hash", min_pixels=4, max_frames=8), name)
    return FrameBank(FrameBankConfig(encoder="gt_hash", min_pixels=4), name)


def reference(name: str, count: int) -> FrameBank:
    memory = memory_of(name)
    for n in range(count):
        memory.observe(frame(n))
    return memory


def _save_forever(name: str, directory: str, start: int, pipe) -> None:
    memory = memory_of(name)
    for n in range(start):
        memory.observe(frame(n))
    n = start
    while True:
        memory.observe(frame(n))
        memory.save(directory)
        pipe.send(memory.stats().frames_seen)  # this many frames are now on disk
        n += 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("name", ["frame_bank", "subsampled_frames"])
def test_kill_9_during_save_leaves_the_previous_or_the_new_checkpoint(tmp_path, name):
    context = multiprocessing.get_context("fork")
    rng = random.Random(0)
    directory = str(tmp_path / "ckpt")
    for attempt in range(20):
        parent, child = context.Pipe()
        process = context.Process(target=_save_forever, args=(name, directory, 5 + attempt, child), daemon=True)
        process.start()
        saved = [parent.recv()]  # at least one complete save of this run
        deadline = time.monotonic() + rng.uniform(0.0, 0.25)
        while time.monotonic() < deadline:
            if parent.poll(0.005):
                saved.append(parent.recv())
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        while parent.poll():
            saved.append(parent.recv())
        fresh = memory_of(name)
        fresh.load(directory)  # never a mix: a mix fails its checksums and raises
        frames = fresh.stats().frames_seen
        # the last reported save, or the one in flight if its switch had happened
        assert frames in (saved[-1], saved[-1] + 1), (attempt, frames, saved[-3:])
        truth = reference(name, frames)  # exactly the memory that saw that many frames
        assert [(f.frame_id, f.stamp) for f in fresh.frames] == [(f.frame_id, f.stamp) for f in truth.frames]
        assert fresh.stats() == truth.stats()
    versions = [p for p in os.listdir(directory) if p.startswith("v")]
    assert len(versions) <= 3  # old versions are cleaned up (the current, the previous, one in flight)
