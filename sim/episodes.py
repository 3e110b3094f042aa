"""``make_episode(sim_config, seed)``: the episode of the configured simulator.

``name: embedded`` (the default CPU simulator) gives an ``EmbeddedEpisode``; ``name: habitat``
a ``HabitatEpisode`` over FindingDory's own episodes (``sim/habitat``), which needs habitat-sim
and is imported only then. Both offer the interface the runner uses: ``history()``,
``tasks(config)``, ``floor_plan()``, ``frame_pose(frame_id)``, ``reset_to_start()``,
``final_pose`` / ``believed_pose``, ``oracle``, ``navigator`` (``drive_budget``,
``approach_pose``), ``env.pose``, ``shortest_path``, ``perception``.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

HABITAT_SETUP = """\
sim=habitat needs habitat-sim 0.3.1, which ships through conda only. On a GPU machine:

  mamba create -n findingdory python=3.9 cmake=3.14.0 -y
  mamba install -n findingdory habitat-sim=0.3.1 withbullet headless -c conda-forge -c aihabitat -y
  mamba activate findingdory
  pip install -e <findingdory-habitat>/third_party/habitat-lab/habitat-lab   # FindingDory's fork, habitat-lab 0.3.1
  pip install -e <embodied_mem>

and FindingDory's data (its findingdory/scripts/download_data.sh). See docs/habitat.md."""


def _habitat_available() -> None:
    try:
        import habitat_sim  # noqa: F401
    except ImportError as error:
        raise ImportError(f"{HABITAT_SETUP}\n(import habitat_sim failed: {error})") from error


def _as_dict(config: Any) -> dict:
    if isinstance(config, dict):
        return dict(config)
    if is_dataclass(config):
        return {f.name: getattr(config, f.name) for f in fields(config)}
    try:  # an OmegaConf node
        from omegaconf import OmegaConf

        return dict(OmegaConf.to_container(config, resolve=True))
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"sim config must be a dict or a dataclass, got {type(config).__name__}") from error


def embedded_config(values: dict, perception=None):
    """An ``EmbeddedSimConfig`` from the ``sim`` group's keys (as ``embodied-mem`` composes them)."""
    from embodied_mem.registry import make_config
    from embodied_mem.sim.embedded.env import EnvConfig
    from embodied_mem.sim.embedded.episode import EmbeddedSimConfig
    from embodied_mem.sim.embedded.oracle import HistoryConfig
    from embodied_mem.sim.embedded.perception import PerceptionConfig
    from embodied_mem.sim.embedded.world import WorldConfig

    values = dict(values)
    values.pop("name", None)
    if isinstance(perception, dict):
        perception = make_config(PerceptionConfig, perception, "perception")
    world = dict(values.get("world", {}))
    for key in ("room_size", "receptacles_per_room"):
        if key in world:
            world[key] = tuple(world[key])
    return EmbeddedSimConfig(
        world=make_config(WorldConfig, world, "sim.world"),
        env=make_config(EnvConfig, dict(values.get("env", {})), "sim.env"),
        history=make_config(HistoryConfig, dict(values.get("history", {})), "sim.history"),
        perception=perception or PerceptionConfig(),
    )


def habitat_config(values: dict, perception=None):
    """A ``HabitatSimConfig`` from the ``sim=habitat`` group's keys (no habitat import)."""
    from embodied_mem.registry import make_config
    from embodied_mem.sim.embedded.perception import PerceptionConfig
    from embodied_mem.sim.habitat.episode import HabitatSimConfig
    from embodied_mem.sim.habitat.perception import HeadCamera
    from embodied_mem.sim.habitat.robot import CollectionConfig

    values = dict(values)
    values.pop("name", None)
    if isinstance(perception, dict):
        perception = make_config(PerceptionConfig, perception, "perception")
    values["camera"] = make_config(HeadCamera, dict(values.get("camera") or {}), "sim.camera")
    values["collection"] = make_config(CollectionConfig, dict(values.get("collection") or {}), "sim.collection")
    values["perception"] = perception or PerceptionConfig()
    return make_config(HabitatSimConfig, values, "sim")


def make_episode(sim_config, seed: int, perception=None, index: int | None = None):
    """The episode for ``seed`` of the simulator ``sim_config`` names.

    ``sim_config``: the ``sim`` group as a dict (``name: embedded | habitat``), or an
    ``EmbeddedSimConfig`` / ``HabitatSimConfig``. ``perception``: the perception group (dict
    or ``PerceptionConfig``), where ``sim_config`` does not carry one. ``index``: which of the
    selected FindingDory episodes (Habitat; default ``seed``).
    """
    from embodied_mem.sim.embedded.episode import EmbeddedEpisode, EmbeddedSimConfig

    if isinstance(sim_config, EmbeddedSimConfig):
        return EmbeddedEpisode(sim_config, seed)
    if type(sim_config).__name__ == "HabitatSimConfig":
        _habitat_available()
        from embodied_mem.sim.habitat.episode import HabitatEpisode

        return HabitatEpisode(sim_config, seed, index=index)
    values = _as_dict(sim_config)
    name = values.get("name", "embedded")
    if name == "embedded":
        return EmbeddedEpisode(embedded_config(values, perception), seed)
    if name == "habitat":
        config = habitat_config(values, perception)  # bad keys fail before the long import
        _habitat_available()
        from embodied_mem.sim.habitat.episode import HabitatEpisode

        return HabitatEpisode(config, seed, index=index)
    raise ValueError(f"sim.name must be 'embedded' or 'habitat', got {name!r}")
