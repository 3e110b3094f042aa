"""Checkpoints survive kill -9: a process saving in a loop is killed at random moments, and
every time ``load()`` gives the previous or the new checkpoint, never a mix."""

import json
import multiprocessing
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from embodied_mem.geometry import camera_mount, pinhole_camera
from embodied_mem.memory.frame_bank import FrameBank, FrameBankConfig, SubsampledFramesConfig
from embodied_mem.types import Detection, Observation, Pose

SMALL = pinhole_camera(16, 12, 90.0, camera_mount(1.2, 0.3))
LARGER = pinhole_camera(32, 24, 90.0, camera_mount(1.2, 0.3))  # 3D-Mem's point filters need more pixels

# The systems under test, built small and fast (``encoder: gt_hash``), and the camera they see with.
SYSTEMS = {
    "frame_bank": ({"name": "frame_bank", "encoder": "gt_hash", "min_pixels": 4}, SMALL),
    "subsampled_frames": ({"name": "subsampled_frames", "encoder": "gt_hash", "min_pixels": 4, "max_frames": 8}, SMALL),
    "mem4nav": ({"name": "mem4nav", "encoder": "gt_hash", "min_pixels": 4, "rt_depth": 2}, SMALL),
    "snapshots3d": ({"name": "snapshots3d", "encoder": "gt_hash", "min_mask_pixels": 4, "min_points": 4, "dbscan_min_points": 2, "min_mask_fraction": 0.0}, LARGER),
}


def frame(n: int, camera=SMALL) -> Observation:
    h, w = camera.height, camera.width
    scale = w // 16
    mask = np.zeros((h, w), bool)
    mask[4 * scale : 9 * scale, (5 + n % 6) * scale : (9 + n % 6) * scale] = True
    return Observation(
        stamp=float(n), frame_id=n, rgb=np.full((h, w, 3), n % 255, np.uint8), depth=np.full((h, w), 2.0, np.float32),
        pose=Pose.from_xy_yaw(0.1 * n, 0.0, 0.0), camera=camera, detections=[Detection("mug", mask)], day=0,
    )


def memory_of(name: str):
    if name == "subsampled_frames":  # decimation reorders what is kept: a mix would show
        return FrameBank(SubsampledFramesConfig(encoder="gt_hash", min_pixels=4, max_frames=8), name)
    if name == "frame_bank":
        return FrameBank(FrameBankConfig(encoder="gt_hash", min_pixels=4), name)
    from embodied_mem.registry import build

    return build("memory", SYSTEMS[name][0])


def replay(memory, name: str, count: int):
    """``memory`` fed the first ``count`` frames: the memory that saw that many (reset first
    unless it saw fewer: then it only takes the frames it lacks)."""
    seen = memory.stats().frames_seen
    if seen > count:
        memory.reset()
        seen = 0
    for n in range(seen, count):
        memory.observe(frame(n, SYSTEMS[name][1]))
    return memory


def checkpoint_content(directory: Path, memory=None) -> tuple[dict, dict]:
    """What the checkpoint ``CURRENT`` names holds (manifest state and array bytes); with
    ``memory``, saved from it first."""
    if memory is not None:
        if directory.exists():
            shutil.rmtree(directory)
        memory.save(directory)
    folder = directory / (directory / "CURRENT").read_text().strip()
    state = json.loads((folder / "manifest.json").read_text())["state"]
    with np.load(folder / "arrays.npz") as npz:
        return state, {key: (npz[key].dtype.str, npz[key].shape, npz[key].tobytes()) for key in npz.files}


def _save_forever(memory, name: str, directory: str, start: int, pipe) -> None:
    replay(memory, name, start)  # the parent's memory, copied by fork: it goes on from where it is
    n = start
    while True:
        memory.observe(frame(n, SYSTEMS[name][1]))
        memory.save(directory)
        pipe.send(memory.stats().frames_seen)  # this many frames are now on disk
        n += 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("name", list(SYSTEMS))
def test_kill_9_during_save_leaves_the_previous_or_the_new_checkpoint(tmp_path, name):
    context = multiprocessing.get_context("fork")
    rng = random.Random(0)
    directory = str(tmp_path / "ckpt")
    fresh, truth = memory_of(name), memory_of(name)  # built once: load() / reset() reuse them
    for attempt in range(20):
        parent, child = context.Pipe()
        process = context.Process(target=_save_forever, args=(truth, name, directory, 5 + attempt, child), daemon=True)
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
        fresh.load(directory)  # never a mix: a mix fails its checksums and raises
        frames = fresh.stats().frames_seen
        # the last reported save, or the one in flight if its switch had happened
        assert frames in (saved[-1], saved[-1] + 1), (attempt, frames, saved[-3:])
        replay(truth, name, frames)  # exactly the memory that saw that many frames
        if isinstance(fresh, FrameBank):
            assert [(f.frame_id, f.stamp) for f in fresh.frames] == [(f.frame_id, f.stamp) for f in truth.frames]
        else:  # the checkpoint on disk is exactly what the memory that saw those frames saves
            assert checkpoint_content(Path(directory)) == checkpoint_content(tmp_path / "truth", truth), (attempt, frames)
        assert fresh.stats() == truth.stats(), (attempt, frames)
    versions = [p for p in os.listdir(directory) if p.startswith("v")]
    assert len(versions) <= 3  # old versions are cleaned up (the current, the previous, one in flight)
