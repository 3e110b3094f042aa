"""Shared fixtures: one small embedded episode, rendered once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from embodied_mem.sim.embedded.env import EnvConfig  # noqa: E402
from embodied_mem.sim.embedded.episode import EmbeddedEpisode, EmbeddedSimConfig  # noqa: E402
from embodied_mem.sim.embedded.oracle import HistoryConfig  # noqa: E402
from embodied_mem.sim.embedded.world import WorldConfig  # noqa: E402


def small_sim(days: int = 1, rearrangements: int = 3, rooms: int = 4) -> EmbeddedSimConfig:
    return EmbeddedSimConfig(
        world=WorldConfig(rooms=rooms, objects_per_room=3, receptacles_per_room=(3, 3)),
        env=EnvConfig(width=160, height=120),
        history=HistoryConfig(days=days, rearrangements_per_day=rearrangements, wander_probability=0.3),
    )


class RecordedEpisode:
    """An episode whose history has been streamed once and kept (observations and tasks)."""

    def __init__(self, config: EmbeddedSimConfig, seed: int) -> None:
        self.episode = EmbeddedEpisode(config, seed)
        self.observations = list(self.episode.history())
        from embodied_mem.sim.tasks.generator import TaskConfig

        self.tasks = self.episode.tasks(TaskConfig())

    @property
    def env(self):
        return self.episode.env

    @property
    def history(self):
        return self.episode.robot.history


@pytest.fixture(scope="session")
def one_day() -> RecordedEpisode:
    return RecordedEpisode(small_sim(days=1, rearrangements=3), seed=3)


@pytest.fixture(scope="session")
def two_days() -> RecordedEpisode:
    return RecordedEpisode(small_sim(days=2, rearrangements=4, rooms=6), seed=5)


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip cleanly without CUDA; `ros` tests without the rclpy wheels."""
    import importlib.util

    import torch

    no_cuda = pytest.mark.skip(reason="needs CUDA")
    no_ros = pytest.mark.skip(reason="needs rclpy (pip install ros-kilted-rclpy)")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_cuda)
        if "ros" in item.keywords and importlib.util.find_spec("rclpy") is None:
            item.add_marker(no_ros)
