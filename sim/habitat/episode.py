"""One FindingDory episode in Habitat, with the interface the runner uses (as ``EmbeddedEpisode``).

``history()`` streams the oracle robot's collection run (``robot.py``) as ``Observation``s;
afterwards ``tasks()`` turns the episode's instructions into ``Task``s (``tasks.py``) and the
success checks run through ``sim/tasks/success.py`` over ``oracle`` (``HabitatOracle``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from embodied_mem.sim.embedded.perception import PerceptionConfig
from embodied_mem.sim.habitat.dataset import FindingDoryEpisode, load_episodes, read_attributes
from embodied_mem.sim.habitat.entities import HistoryFacts, build_table
from embodied_mem.sim.habitat.env import HabitatEnv
from embodied_mem.sim.habitat.navigator import HabitatNavigator
from embodied_mem.sim.habitat.oracle import HabitatOracle
from embodied_mem.sim.habitat.perception import HeadCamera
from embodied_mem.sim.habitat.robot import CollectionConfig, HabitatOracleRobot
from embodied_mem.sim.habitat.tasks import build_tasks
from embodied_mem.types import FloorPlan, Observation, Pose

# FindingDory's object config folders (config/simulator/findingdory_sim.yaml), under data_root.
OBJECT_PATHS = [
    "data/objects/train_val/amazon_berkeley/configs/",
    "data/objects/train_val/google_scanned/configs/",
    "data/objects/train_val/ai2thorhab/configs/objects/",
    "data/objects/train_val/hssd/configs/objects/",
]


@dataclass
class HabitatSimConfig:
    """``configs/sim/habitat.yaml``, key for key (see its comments)."""

    episodes: str | None = None
    viewpoints: str | None = None
    transformations: str | None = None
    data_root: str = "."
    split: str = "val"
    episode_ids: list | None = None
    start: int = 0
    count: int | None = None
    instructions: list | None = None
    attributes: str | None = "data/objects/object_attribute_annotation.csv"
    object_paths: list = field(default_factory=lambda: list(OBJECT_PATHS))
    camera: HeadCamera = field(default_factory=HeadCamera)
    collection: CollectionConfig = field(default_factory=CollectionConfig)
    recompute_navmesh: bool = False
    gpu_device_id: int = 0
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)

    def __post_init__(self) -> None:
        if isinstance(self.camera, dict):
            self.camera = HeadCamera(**self.camera)
        if isinstance(self.collection, dict):
            self.collection = CollectionConfig(**self.collection)
        if isinstance(self.perception, dict):
            self.perception = PerceptionConfig(**self.perception)


class HabitatEpisode:
    """``make_episode({'name': 'habitat', ...}, seed)`` builds one of these."""

    name = "habitat"

    def __init__(self, config: HabitatSimConfig, seed: int, index: int | None = None, backend=None, episode: FindingDoryEpisode | None = None) -> None:
        self.config = config
        self.seed = int(seed)
        self.perception = config.perception.mode
        if episode is None:
            if not config.episodes:
                raise ValueError("sim=habitat needs habitat.episodes=<path to FindingDory's episodes.json.gz>")
            chosen = load_episodes(_resolve(config, config.episodes), _resolve(config, config.viewpoints), _resolve(config, config.transformations), config.episode_ids, config.start, config.count).episodes
            position = self.seed if index is None else int(index)
            if not 0 <= position < len(chosen):
                raise ValueError(f"habitat episode {position} asked for, but the selection has {len(chosen)} episode(s)")
            episode = chosen[position]
        self.episode = episode
        self.attributes = read_attributes(_resolve(config, config.attributes)) if config.attributes and _exists(config, config.attributes) else {}
        if backend is None:
            from embodied_mem.sim.habitat.backend import HabitatBackend

            backend = HabitatBackend(episode, config.camera, config.data_root, config.object_paths, config.gpu_device_id, config.recompute_navmesh)
        self.backend = backend
        facts = HistoryFacts(regions=list(backend.regions()))
        self.table = build_table(episode, facts, self.attributes)  # ids and labels; properties come after the history
        self.env = HabitatEnv(backend, self.table, config.camera, config.perception, self.seed, config.collection.num_steps_daily)
        self.navigator = HabitatNavigator(self.env, backend)
        self.robot = HabitatOracleRobot(self.env, self.navigator, episode, self.table, config.collection)
        self.final_pose: Pose | None = None
        self.believed_pose: Pose | None = None
        self._oracle = HabitatOracle(backend, self.table, float(episode.start_pose.position[2]))
        self.skipped: dict[str, str] = {}
        self.notes: dict[str, str] = {}

    def history(self) -> Iterator[Observation]:
        yield from self.robot.live()
        self.final_pose = self.env.pose
        self._settle()

    def _settle(self) -> None:
        """Entity properties from the recorded history (FindingDory registers them then)."""
        facts = self.robot.facts
        start = self.final_pose.position

        def distance(name: str) -> float:
            record = self.table.by_name.get(name)
            if record is None:
                return -math.inf
            return float(self.backend.geodesic(start, self._oracle.goal_points(record.entity_id)))

        self.tables = {
            multi: build_table(self.episode, facts, self.attributes, multi_goal=multi, distance=distance) for multi in (False, True)
        }
        self._oracle.table = self.tables[False]

    def floor_plan(self) -> FloorPlan:
        return self.backend.floor_plan()

    def frame_pose(self, frame_id) -> Pose | None:
        if isinstance(frame_id, bool) or not isinstance(frame_id, (int, np.integer)):
            return None
        steps = self.robot.history.steps
        if not 0 <= frame_id < len(steps) or steps[frame_id].frame_id != frame_id:
            return None
        return steps[frame_id].pose

    def tasks(self, config=None) -> list:
        """One task per instruction of the episode (``habitat.instructions`` chooses)."""
        if self.final_pose is None:
            raise RuntimeError("stream the whole history before asking for tasks")
        if self.robot.history.capped_days:
            self.skipped = {i.task_id: "the collection run hit num_steps_daily (FindingDory fails such episodes)" for i in self.episode.instructions}
            return []
        seed = self.seed + (getattr(config, "seed", 0) or 0)
        tasks, skipped, notes = [], {}, {}
        for multi, table in self.tables.items():
            chosen = [i for i in self.episode.instructions if isinstance(i.sequential_goals, dict) == multi]
            which = self.config.instructions
            sub_episode = _with_instructions(self.episode, chosen)
            found, why, note = build_tasks(sub_episode, table, self.robot.history, self._oracle, seed, which)
            tasks += found
            skipped.update(why)
            notes.update(note)
        order = {i.task_id: n for n, i in enumerate(self.episode.instructions)}
        tasks.sort(key=lambda t: order.get(t.task_id, 0))
        self.skipped, self.notes = skipped, notes
        return tasks

    @property
    def oracle(self) -> HabitatOracle:
        return self._oracle

    def reset_to_start(self) -> None:
        self.env.teleport(self.final_pose)

    def shortest_path(self, start: Pose, goals, ordered: bool) -> float:
        """Geodesic length of the best visit of every goal (FindingDory's SPL reference): each
        goal's points are its viewpoints / snapped position / its region's centre."""
        from embodied_mem.sim.tasks.success import shortest_multi_goal

        plan = self.floor_plan()
        groups = []
        for goal in goals:
            if goal.kind == "room":
                points = [self.backend.snap(np.array([*plan.region(r).center(), start.position[2]])) for r in goal.rooms if plan.region(r) is not None]
            else:
                points = [p for e in goal.entity_ids for p in self._oracle.goal_points(e)]
            if not points:
                return math.inf
            groups.append([tuple(np.round(np.asarray(p, dtype=np.float64), 6)) for p in points])

        def distance(a, b) -> float:
            origin = start.position if a == "start" else np.array(a)
            return float(self.backend.geodesic(origin, np.array(b).reshape(1, 3)))

        return shortest_multi_goal(distance, "start", groups, ordered)


def _with_instructions(episode: FindingDoryEpisode, instructions) -> FindingDoryEpisode:
    from dataclasses import replace

    return replace(episode, instructions=list(instructions))


def _resolve(config: HabitatSimConfig, path: str | None) -> str | None:
    if path is None:
        return None
    from pathlib import Path

    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return str(candidate)
    return str(Path(config.data_root) / candidate)


def _exists(config: HabitatSimConfig, path: str) -> bool:
    from pathlib import Path

    return Path(_resolve(config, path)).is_file()
