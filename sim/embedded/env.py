"""The embedded simulator: a Stretch-like robot in a procedural home, on the CPU.

Actions are Habitat's defaults: move forward 0.25 m, turn 30 degrees. An action may ask for
less (a final 0.1 m, a 12 degree turn) so a navigator can stop on an exact pose, as Habitat's
continuous base control allows Stretch to; it may never ask for more. Every action is one
step: the clock advances by ``step_seconds`` and the robot renders a new observation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from embodied_mem.geometry import bearing_in_body, camera_mount, pinhole_camera, wrap_angle
from embodied_mem.sim.embedded.navigation import NavigationGrid
from embodied_mem.sim.embedded.perception import PerceptionConfig, SimulatedPerception, floor_plan
from embodied_mem.sim.embedded.render import Frame, Renderer
from embodied_mem.sim.embedded.world import World, WorldState
from embodied_mem.types import CameraInfo, FloorPlan, Observation, Pose

FORWARD_STEP = 0.25
TURN_STEP = math.radians(30.0)
SECONDS_PER_DAY = 86400.0


@dataclass
class EnvConfig:
    """Camera and robot of the embedded simulator (defaults: Stretch's head camera, roughly)."""

    width: int = 320
    height: int = 240
    hfov_deg: float = 90.0
    camera_height: float = 1.2
    camera_pitch_deg: float = 20.0  # tilted down
    max_depth: float = 10.0
    robot_radius: float = 0.2
    grid_resolution: float = 0.05
    step_seconds: float = 5.0
    day_start_hour: float = 9.0


@dataclass
class Action:
    """``forward`` (metres, 0 < amount <= 0.25), ``turn`` (radians, |amount| <= 30 deg, + is left),
    or ``wait`` (manipulate / look: the robot stays put for a step)."""

    kind: str
    amount: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("forward", "turn", "wait"):
            raise ValueError(f"Action.kind must be forward, turn or wait, got {self.kind!r}")
        if not math.isfinite(self.amount):
            raise ValueError(f"Action.amount must be finite, got {self.amount}")
        if self.kind == "forward" and not 0.0 < self.amount <= FORWARD_STEP + 1e-9:
            raise ValueError(f"forward amount must be in (0, {FORWARD_STEP}] m, got {self.amount}")
        if self.kind == "turn" and abs(self.amount) > TURN_STEP + 1e-9:
            raise ValueError(f"turn amount must be within +-30 degrees, got {math.degrees(self.amount):.1f}")


class EmbeddedEnv:
    """The world, its changing state, the robot's pose and the clock."""

    def __init__(self, world: World, config: EnvConfig | None = None, perception: PerceptionConfig | None = None) -> None:
        self.world = world
        self.config = config or EnvConfig()
        self.perception = SimulatedPerception(world, perception, seed=world.seed)
        self.last_frame: Frame | None = None
        c = self.config
        self.camera: CameraInfo = pinhole_camera(c.width, c.height, c.hfov_deg, camera_mount(c.camera_height, math.radians(c.camera_pitch_deg)))
        self.grid = NavigationGrid(world, c.grid_resolution, c.robot_radius)
        self.renderer = Renderer(world, self.camera, c.max_depth)
        self.state = WorldState.initial(world)
        self.pose = Pose.from_xy_yaw(0.0, 0.0, 0.0)
        self.day = 0
        self.step_index = 0  # steps taken today
        self.frame_id = 0
        self.collisions = 0
        self._truth: dict = {}  # ground-truth caches: viewpoints, snapped positions, distance fields
        self.room_grid = self._room_grid()

    def _room_grid(self) -> np.ndarray:
        """Index into ``world.rooms`` of every grid cell (-1 outside every room)."""
        spec = self.grid.spec
        ii, jj = np.meshgrid(np.arange(spec.shape[0]), np.arange(spec.shape[1]), indexing="ij")
        centers = spec.centers(np.stack([ii.ravel(), jj.ravel()], axis=-1))
        rooms = np.full(len(centers), -1, dtype=np.int32)
        for index, room in enumerate(self.world.rooms):
            inside = (centers[:, 0] >= room.x0) & (centers[:, 0] < room.x1) & (centers[:, 1] >= room.y0) & (centers[:, 1] < room.y1)
            rooms[inside] = index
        return rooms.reshape(spec.shape)

    # ------------------------------------------------------------------ clock
    @property
    def stamp(self) -> float:
        c = self.config
        return self.day * SECONDS_PER_DAY + c.day_start_hour * 3600.0 + self.step_index * c.step_seconds

    def start_day(self, day: int, pose: Pose) -> None:
        self.day, self.step_index = day, 0
        self.pose = pose

    # ------------------------------------------------------------------ acting
    def step(self, action: Action, events: list[tuple[str, np.ndarray | None]] | None = None) -> Observation:
        """Apply an action, advance the clock one step and return what the robot sees."""
        self.move(action)
        return self.observe(events or [])

    def move(self, action: Action) -> bool:
        """Apply an action's motion and advance the clock, without rendering (for evaluation
        drives where nobody looks). Returns False if a forward move was blocked."""
        x, y, z = self.pose.position
        yaw = self.pose.yaw
        if action.kind == "forward":
            nx, ny = x + action.amount * math.cos(yaw), y + action.amount * math.sin(yaw)
            if self.grid.is_navigable((nx, ny)):
                x, y = nx, ny
            else:
                self.collisions += 1
        elif action.kind == "turn":
            yaw = wrap_angle(yaw + action.amount)
        blocked = action.kind == "forward" and (x, y) == tuple(self.pose.position[:2])
        self.pose = Pose.from_xy_yaw(x, y, yaw)
        self.step_index += 1
        return not blocked

    def observe(self, events: list[tuple[str, np.ndarray | None]] | None = None) -> Observation:
        """Render the current pose into what the robot perceives (and count it as a frame).

        ``events`` are the robot's own actions at this step: ``(kind, gripper_xyz)`` with the
        gripper's true world position for grasp / release (None for day_start / day_end). The
        perception turns them into proprioceptive ``Event``s in the robot's own frame.
        """
        frame = self.render(self.pose)
        self.last_frame = frame
        perception = self.perception
        perception.step_drift()
        depth = perception.depth(frame)
        obs = Observation(
            stamp=self.stamp,
            frame_id=self.frame_id,
            rgb=frame.rgb,
            depth=depth,
            pose=perception.believed(self.pose),
            camera=self.camera,
            detections=perception.detections(frame, depth),
            events=[perception.event(kind, self.stamp, self.pose, xyz) for kind, xyz in events or []],
            day=self.day,
        )
        self.frame_id += 1
        return obs

    def render(self, pose: Pose) -> Frame:
        return self.renderer.render(self.state, pose)

    def teleport(self, pose: Pose) -> None:
        self.pose = Pose.from_xy_yaw(float(pose.position[0]), float(pose.position[1]), pose.yaw)

    # ------------------------------------------------------------------ ground truth
    def entity_ids(self) -> list[int]:
        return sorted(self.world.receptacles) + sorted(self.world.objects)

    def entity_kind(self, entity_id: int) -> str:
        return "receptacle" if entity_id in self.world.receptacles else "object"

    def label(self, entity_id: int) -> str:
        return self.world.label(entity_id)

    def attributes(self, entity_id: int) -> dict[str, str]:
        return self.world.attributes(entity_id)

    def floor_plan(self) -> FloorPlan:
        """The map a robot is deployed with (named rooms), as given to every memory."""
        return floor_plan(self.world)

    def room_names(self) -> list[str]:
        return [room.name for room in self.world.rooms]

    def room_of(self, xy) -> str | None:
        room = self.world.room_at(float(xy[0]), float(xy[1]))
        return room.name if room else None

    def entity_position(self, entity_id: int) -> np.ndarray:
        """Current centre of an object, or the centre of a receptacle's top."""
        if entity_id in self.world.receptacles:
            box = self.world.receptacles[entity_id].box
            return np.array([*box.center[:2], box.max_corner[2]])
        if entity_id in self.state.placements:
            return self.state.placements[entity_id].position.copy()
        if entity_id == self.state.held:
            return np.array([*self.pose.position[:2], 0.8])
        raise KeyError(f"unknown entity {entity_id}")

    # FindingDory's goal geometry: what ``robot_at_object`` / ``robot_at_receptacle`` measure to.
    def snapped_position(self, entity_id: int) -> np.ndarray:
        """The entity's xy snapped to the nearest navigable cell centre of its own room.

        FindingDory's ``is_robot_at_position`` measures an object's geodesic to its position
        snapped onto the navmesh. Ours snaps within the entity's room: the nearest cell overall
        can lie behind the wall a shelf stands against, and the geodesic from the shelf's front
        would then go round through a door.
        """
        version = self.state.version if entity_id in self.world.objects else -1
        key = ("snap", entity_id)
        cached = self._truth.get(key)
        if cached is None or cached[0] != version:
            xy = self.entity_position(entity_id)[:2]
            room = self.room_grid[self.grid.spec.cell(xy)]
            cells = np.argwhere(self.grid.navigable & (self.room_grid == room))
            if len(cells) == 0:  # outside every room, or a room with no floor left
                cells = np.argwhere(self.grid.navigable)
            centers = self.grid.spec.centers(cells)
            cached = (version, centers[int(np.argmin(np.linalg.norm(centers - xy, axis=1)))])
            self._truth[key] = cached
        return cached[1].copy()

    def _receptacle_viewpoints(self, receptacle_id: int):
        """The sparse viewpoints of a receptacle (``viewpoints.py``), computed once."""
        from embodied_mem.sim.embedded.viewpoints import compute_viewpoints

        if receptacle_id not in self.world.receptacles:
            raise KeyError(f"{receptacle_id} is not a receptacle")
        key = ("viewpoints", receptacle_id)
        if key not in self._truth:
            if "static_renderer" not in self._truth:  # the home without its small objects
                self._truth["static_renderer"] = Renderer(self.world, self.camera, self.config.max_depth)
            self._truth[key] = compute_viewpoints(self, receptacle_id, self._truth["static_renderer"])
        return self._truth[key]

    def receptacle_viewpoints(self, receptacle_id: int) -> list[Pose]:
        """FindingDory's ``view_points`` of a receptacle: sparse poses facing it, from which it is visible."""
        return [viewpoint.pose for viewpoint in self._receptacle_viewpoints(receptacle_id)]

    def viewpoint_cells(self, entity_id: int) -> np.ndarray:
        """(N, 2) grid cells an entity's geodesic is measured to.

        Receptacles: the cells of their sparse viewpoints. Objects: the one cell of the
        snapped position (FindingDory's fallback when an object has no viewpoints, which is
        how its predicate reads for the embedded objects).
        """
        if entity_id in self.world.receptacles:
            cells = [viewpoint.cell for viewpoint in self._receptacle_viewpoints(entity_id)]
            return np.array(cells, dtype=np.int64).reshape(-1, 2)
        return np.array([self.grid.spec.cell(self.snapped_position(entity_id))], dtype=np.int64)

    def distance_field_to(self, entity_id: int) -> np.ndarray:
        """Geodesic distance (m) from every grid cell to the entity's viewpoint cells; cached
        (for objects, until the object moves)."""
        version = self.state.version if entity_id in self.world.objects else -1
        key = ("field", entity_id)
        cached = self._truth.get(key)
        if cached is None or cached[0] != version:
            cells = self.viewpoint_cells(entity_id)
            field = self.grid.distance_field(cells) if len(cells) else np.full(self.grid.spec.shape, np.inf)
            cached = (version, field)
            self._truth[key] = cached
        return cached[1]

    def geodesic_to_entity(self, xy, entity_id: int) -> float:
        """Geodesic distance from ``xy`` to the entity's nearest viewpoint cell (inf if none is reachable)."""
        return float(self.distance_field_to(entity_id)[self.grid._snap_cell(xy)])

    def visible_fraction(self, pose: Pose, entity_id: int) -> float:
        """Fraction of the image covered by the entity when seen from ``pose``."""
        frame = self.render(pose)
        return float(np.count_nonzero(frame.instances == entity_id)) / frame.instances.size

    def bearing(self, pose: Pose, entity_id: int) -> float:
        return bearing_in_body(pose, self.entity_position(entity_id))
