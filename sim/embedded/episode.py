"""One embedded-simulator episode: a home, the robot's days in it, and the tasks that follow."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from embodied_mem.sim.embedded.env import EmbeddedEnv, EnvConfig
from embodied_mem.sim.embedded.navigator import Navigator
from embodied_mem.sim.embedded.oracle import HistoryConfig, OracleRobot
from embodied_mem.sim.embedded.perception import PerceptionConfig
from embodied_mem.sim.embedded.world import WorldConfig, generate_world
from embodied_mem.sim.tasks.generator import Task, TaskConfig, generate_tasks
from embodied_mem.types import FloorPlan, Observation, Pose


@dataclass
class EmbeddedSimConfig:
    """Everything that defines an embedded episode; ``seed`` is set per episode by the runner."""

    world: WorldConfig = field(default_factory=WorldConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)


class EmbeddedEpisode:
    """``history()`` streams the observations; afterwards ``tasks()`` and the success checks."""

    name = "embedded"

    def __init__(self, config: EmbeddedSimConfig, seed: int) -> None:
        world_config = WorldConfig(**{**vars(config.world), "seed": seed})
        history_config = HistoryConfig(**{**vars(config.history), "seed": seed})
        self.seed = seed
        self.perception = config.perception.mode
        self.env = EmbeddedEnv(generate_world(world_config), config.env, config.perception)
        self.robot = OracleRobot(self.env, history_config)
        self.navigator = Navigator(self.env)
        self.final_pose: Pose | None = None

    def history(self) -> Iterator[Observation]:
        yield from self.robot.live()
        self.final_pose = self.env.pose

    def floor_plan(self) -> FloorPlan:
        """The map the robot is deployed with: named rooms (no objects, no furniture)."""
        return self.env.floor_plan()

    def frame_pose(self, frame_id) -> Pose | None:
        """The TRUE pose of a history frame (FindingDory's HL check teleports there); None if
        no such frame exists."""
        if isinstance(frame_id, bool) or not isinstance(frame_id, (int, np.integer)):
            return None
        steps = self.robot.history.steps
        if not 0 <= frame_id < len(steps) or steps[frame_id].frame_id != frame_id:
            return None
        return steps[frame_id].pose

    def tasks(self, config: TaskConfig) -> list[Task]:
        if self.final_pose is None:
            raise RuntimeError("stream the whole history before asking for tasks")
        if config.file is not None:  # your own tasks, given as data
            from embodied_mem.sim.tasks.taskfile import load_tasks

            return load_tasks(config.file)
        task_config = TaskConfig(**{**vars(config), "seed": config.seed + self.seed})
        return generate_tasks(self.robot.history, self.env, self.final_pose, task_config)

    @property
    def oracle(self) -> EmbeddedEnv:
        """The success oracle (geodesic distances, bearings, visibility, rooms)."""
        return self.env

    def reset_to_start(self) -> None:
        """Put the robot back where the history ended, before each task."""
        self.env.teleport(self.final_pose)

    def drive_blind(self, goal: Pose) -> float:
        return self.navigator.drive_blind(goal)

    def shortest_distance(self, start: Pose, goal_entity: int) -> float:
        return self.env.geodesic_to_entity(start.position[:2], goal_entity)

    def shortest_path(self, start: Pose, goals, ordered: bool) -> float:
        """Geodesic length of the shortest visit of every goal (FindingDory's SPL reference).

        Each goal is represented by its nearest viewpoint (objects, receptacles) or cell (rooms)
        from the start; orders are brute-forced up to 6 goals.
        """
        import numpy as np

        from embodied_mem.sim.tasks.success import shortest_multi_goal

        grid = self.env.grid
        start_field = grid.distance_field(np.array([grid._snap_cell(start.position)]))
        points = []
        for goal in goals:
            if goal.kind == "room":
                rooms = [self.env.room_names().index(r) for r in goal.rooms]
                cells = np.argwhere(np.isin(self.env.room_grid, rooms) & grid.navigable)
            else:
                cells = np.concatenate([self.env.viewpoint_cells(e) for e in goal.entity_ids] or [np.zeros((0, 2), int)])
            if len(cells) == 0:
                return float("inf")
            best = cells[int(np.argmin(start_field[cells[:, 0], cells[:, 1]]))]
            points.append((int(best[0]), int(best[1])))
        fields = {point: grid.distance_field(np.array([point])) for point in set(points)}

        def distance(a, b) -> float:
            if a == "start":
                return float(start_field[b])
            return float(fields[a][b])

        return shortest_multi_goal(distance, "start", [[p] for p in points], ordered)
