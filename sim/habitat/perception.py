"""Habitat's sensor output -> the project's ``Observation``.

The head camera as FindingDory configures Stretch (``config/agents/stretch.yaml``,
``task/findingdory.yaml``): ``head_rgb``, ``head_depth`` and ``head_panoptic`` at 480 x 640
(width x height: portrait), ``hfov`` 43 degrees, mounted 1.31 m up and tilted down by
``camera_tilt`` = -0.5236 rad (30 degrees) in navigation mode. On a GPU machine the mount is
read from the simulator each frame (``body_T_camera`` from the sensor's world transform), so
this nominal mount only fills in where no simulator is.

Detections come from the panoptic (semantic) sensor: each instance id with at least
``min_pixels`` pixels becomes a class-labelled ``Detection`` (its mask, label, kind, the
object's attributes). ``perception=gt`` keeps the persistent ids (an upper bound);
``perception=detector`` (the default) strips them and runs the embedded simulator's seeded
noise model (``sim/embedded/perception.py``: misses, false positives, label confusion within
``CONFUSABLE`` groups, attribute errors, mask erosion, depth noise, pose drift) unchanged. Two
departures, both because Habitat's categories are not the embedded catalogue's: a false
positive takes a random label of the episode's categories, and Habitat categories absent from
``CONFUSABLE`` are never confused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from embodied_mem.geometry import camera_mount
from embodied_mem.sim.embedded.perception import PerceptionConfig, SimulatedPerception
from embodied_mem.sim.habitat.frames import depth_to_metres, habitat_intrinsics
from embodied_mem.types import CameraInfo, Detection, Observation, Pose


@dataclass
class HeadCamera:
    """Stretch's head camera as FindingDory sets it up."""

    width: int = 480
    height: int = 640
    hfov_deg: float = 43.0
    height_m: float = 1.31
    tilt_rad: float = -0.5236  # camera_tilt: negative looks down
    min_depth: float = 0.0
    max_depth: float = 10.0
    normalize_depth: bool = True  # habitat-lab's default for depth sensors

    def nominal_mount(self) -> Pose:
        return camera_mount(self.height_m, -self.tilt_rad)

    def info(self, body_T_camera: Pose | None = None) -> CameraInfo:
        return habitat_intrinsics(self.width, self.height, self.hfov_deg, body_T_camera or self.nominal_mount())


@dataclass
class Frame:
    """What the GPU renderer gives for one pose, in the shape ``SimulatedPerception`` reads."""

    rgb: np.ndarray  # uint8 HxWx3
    depth: np.ndarray  # float32 HxW metres, 0 = no return
    instances: np.ndarray  # int HxW: the project's entity id of each pixel (0: none known)


class _Catalogue:
    """The ``world.label`` / ``world.attributes`` view ``SimulatedPerception`` asks for."""

    def __init__(self, labels: dict[int, tuple[str, str, dict]]) -> None:
        self.labels = labels  # id -> (label, kind, attributes)

    def label(self, instance_id: int) -> str:
        return self.labels[instance_id][0]

    def attributes(self, instance_id: int) -> dict:
        label, kind, attributes = self.labels[instance_id]
        return {**attributes, "kind": kind}


class HabitatPerception(SimulatedPerception):
    """The embedded perception model over Habitat frames and categories."""

    def __init__(self, labels: dict[int, tuple[str, str, dict]], config: PerceptionConfig | None = None, seed: int = 0, object_labels: tuple[str, ...] = ()) -> None:
        super().__init__(_Catalogue(labels), config, seed)
        self.object_labels = tuple(sorted(set(object_labels))) or ("object",)

    def set_labels(self, labels: dict[int, tuple[str, str, dict]]) -> None:
        self.world.labels = labels

    def detections(self, frame, depth: np.ndarray) -> list[Detection]:
        # Pixels of instances the catalogue does not know (walls, unlabelled clutter) are no detection.
        known = np.isin(frame.instances, list(self.world.labels)) if self.world.labels else np.zeros(frame.instances.shape, bool)
        masked = Frame(frame.rgb, frame.depth, np.where(known, frame.instances, 0))
        return super().detections(masked, depth)

    def _false_positive(self, frame) -> Detection | None:
        height, width = frame.instances.shape
        h, w = int(self.rng.integers(4, max(5, height // 8))), int(self.rng.integers(4, max(5, width // 8)))
        top, left = int(self.rng.integers(0, height - h)), int(self.rng.integers(0, width - w))
        mask = np.zeros((height, width), dtype=bool)
        mask[top : top + h, left : left + w] = True
        if np.count_nonzero(mask & (frame.depth > 0)) < self.config.min_pixels:
            return None
        label = self.object_labels[int(self.rng.integers(len(self.object_labels)))]
        return Detection(label, mask, float(self.rng.uniform(0.3, 0.6)), "object", {})


def panoptic_to_instances(panoptic: np.ndarray, semantic_to_entity: dict[int, int]) -> np.ndarray:
    """Habitat semantic ids -> the project's entity ids (0 where the id is no known entity)."""
    image = np.asarray(panoptic)
    if image.ndim == 3:
        image = image[..., 0]
    out = np.zeros(image.shape, dtype=np.int64)
    for semantic_id, entity_id in semantic_to_entity.items():
        out[image == semantic_id] = entity_id
    return out


def make_observation(
    perception: HabitatPerception,
    camera: CameraInfo,
    rgb: np.ndarray,
    depth_raw: np.ndarray,
    instances: np.ndarray,
    true_pose: Pose,
    stamp: float,
    frame_id: int,
    day: int,
    head: HeadCamera,
    events=(),
) -> Observation:
    """One step's sensor output as the ``Observation`` a memory gets (perception applied)."""
    rgb = np.ascontiguousarray(np.asarray(rgb)[..., :3], dtype=np.uint8)
    depth = depth_to_metres(depth_raw, head.normalize_depth, head.min_depth, head.max_depth)
    frame = Frame(rgb, depth, np.asarray(instances))
    perception.step_drift()
    noisy = perception.depth(frame)
    return Observation(
        stamp=float(stamp),
        frame_id=int(frame_id),
        rgb=rgb,
        depth=noisy,
        pose=perception.believed(true_pose),
        camera=camera,
        detections=perception.detections(frame, noisy),
        events=[perception.event(kind, stamp, true_pose, xyz) for kind, xyz in events],
        day=int(day),
    )


def visible_counts(instances: np.ndarray) -> dict[int, int]:
    """Entity id -> pixels in view (the history's ``StepRecord.visible``)."""
    ids, counts = np.unique(instances, return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts) if i > 0}


def degrees(radians: float) -> float:
    return math.degrees(radians)
