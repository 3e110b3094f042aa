"""What the embedded robot's sensors and perception give a memory, and nothing more.

The renderer knows every pixel's instance; a robot does not. ``SimulatedPerception`` turns a
render into what a robot has:

- ``perception=detector`` (the default): per-frame class-labelled masks with **no persistent
  ids**, as an open-vocabulary detector gives them, with seeded misses (``miss_rate``), false
  positives (``false_positive_rate`` per frame: a blob labelled with a random class), label
  confusion among similar-looking categories (``confusion_rate``, ``CONFUSABLE``), wrong
  attribute guesses (``attribute_error_rate``), mask erosion (``erosion_px``), multiplicative
  depth noise (``depth_noise``) and a localisation error that wanders slowly and stays bounded
  (``drift_xy`` metres and ``drift_yaw_deg`` degrees stationary standard deviation, correlation
  ``drift_steps`` steps), as a SLAM pose with loop closures does. The pose, the depth and the
  gripper pose of grasp / release events are all in that drifting frame.
- ``perception=gt``: the simulator's persistent instance ids and true labels, exact depth and
  pose; every number it produces is an upper bound and is named so.
- ``perception=hook``: a detector registered under ``embodied_mem.registry`` kind "detector"
  (a real open-vocabulary detector on a GPU machine) runs on the rendered RGB-D; drift and depth
  noise still apply.

What never reaches a memory in any mode: entity ids in events, room labels (rooms come from the
floor plan a robot is deployed with, ``floor_plan()``), the state of the world.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_erosion

from embodied_mem.perception import PERCEPTION_MODES, Vocabulary, run_detector
from embodied_mem.sim.embedded.catalog import OBJECTS, RECEPTACLES
from embodied_mem.sim.embedded.render import Frame
from embodied_mem.sim.embedded.world import World
from embodied_mem.types import Detection, Event, FloorPlan, Pose, Region

VOCABULARY = Vocabulary(tuple(sorted(OBJECTS)), tuple(sorted(RECEPTACLES)))

# Categories a detector mixes up: similar size and shape in the embedded homes.
CONFUSABLE: tuple[tuple[str, ...], ...] = (
    ("mug", "cup", "jar", "can"),
    ("bowl", "pot", "kettle"),
    ("plate", "towel"),
    ("bottle", "vase", "soap_dispenser", "candle"),
    ("apple", "orange", "tomato", "ball"),
    ("book", "box", "cereal_box", "pencil_case"),
    ("laptop", "hard_drive", "phone", "remote"),
    ("picture_frame", "clock"),
    ("stuffed_toy", "pillow", "plant"),
    ("toy_car", "shoe", "toolbox"),
    ("table", "desk", "dining_table", "console_table"),
    ("cabinet", "dresser", "sideboard", "vanity"),
    ("sofa", "armchair", "bench", "bed"),
    ("nightstand", "tv_stand", "coffee_table"),
)
_ATTRIBUTE_VALUES = {"color": ("red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "black", "grey", "brown")}


@dataclass
class PerceptionConfig:
    """How the robot perceives; ``mode`` is named on every result."""

    mode: str = "detector"  # detector | gt | hook
    miss_rate: float = 0.1
    false_positive_rate: float = 0.05
    confusion_rate: float = 0.1
    attribute_error_rate: float = 0.1
    erosion_px: int = 1
    min_pixels: int = 12  # smaller masks are never reported (as a detector's size floor)
    depth_noise: float = 0.01
    drift_xy: float = 0.05
    drift_yaw_deg: float = 1.0
    drift_steps: float = 200.0
    detector: dict | None = None  # mode=hook: the registered detector's config {"name": ...}

    def __post_init__(self) -> None:
        if self.mode not in PERCEPTION_MODES + ("hook",):
            raise ValueError(f"perception.mode must be one of {PERCEPTION_MODES + ('hook',)}, got {self.mode!r}")
        for name in ("miss_rate", "false_positive_rate", "confusion_rate", "attribute_error_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"perception.{name} must be in [0, 1], got {value}")
        if self.mode == "hook" and not self.detector:
            raise ValueError("perception.mode=hook needs perception.detector={name: ...}")


def floor_plan(world: World) -> FloorPlan:
    """The map the robot is deployed with: each room as a named rectangle."""
    return FloorPlan(tuple(Region(r.name, ((r.x0, r.y0), (r.x1, r.y0), (r.x1, r.y1), (r.x0, r.y1))) for r in world.rooms))


class SimulatedPerception:
    """Renders -> what a memory may see, for one episode (deterministic for the seed)."""

    def __init__(self, world: World, config: PerceptionConfig | None = None, seed: int = 0) -> None:
        self.world = world
        self.config = config or PerceptionConfig()
        self.rng = np.random.default_rng([seed, 104729])
        self.drift = np.zeros(3)  # x, y, yaw of the localisation error
        self._confusable = {name: group for group in CONFUSABLE for name in group}
        self.detector = None
        if self.config.mode == "hook":
            from embodied_mem.registry import build

            self.detector = build("detector", dict(self.config.detector))

    @property
    def exact(self) -> bool:
        return self.config.mode == "gt"

    # ------------------------------------------------------------------ pose
    def step_drift(self) -> None:
        """Advance the localisation error one step (an Ornstein-Uhlenbeck walk: bounded)."""
        c = self.config
        if self.exact:
            return
        alpha = 1.0 / max(c.drift_steps, 1.0)
        sigma = np.array([c.drift_xy, c.drift_xy, math.radians(c.drift_yaw_deg)])
        self.drift += -alpha * self.drift + sigma * math.sqrt(2.0 * alpha) * self.rng.standard_normal(3)

    def believed(self, true: Pose) -> Pose:
        """The world pose the robot's localisation reports for its true pose."""
        if self.exact:
            return true
        dx, dy, dyaw = self.drift
        x, y, z = true.position
        return Pose.from_xy_yaw(x + dx, y + dy, true.yaw + dyaw, z)

    def believed_point(self, true_base: Pose, point) -> np.ndarray:
        """A point known relative to the base (the gripper), in the believed world frame."""
        believed_base = self.believed(true_base)
        body = np.linalg.inv(true_base.matrix()) @ np.append(np.asarray(point, dtype=np.float64), 1.0)
        return (believed_base.matrix() @ body)[:3]

    def event(self, kind: str, stamp: float, true_base: Pose, gripper_xyz=None) -> Event:
        """A proprioceptive event in the robot's own frame."""
        base = self.believed(true_base)
        if gripper_xyz is None:
            return Event(kind, stamp, base_pose=base if kind in ("grasp", "release") else None)
        return Event(kind, stamp, base_pose=base, gripper_pose=Pose(self.believed_point(true_base, gripper_xyz), base.orientation))

    # ------------------------------------------------------------------ images
    def depth(self, frame: Frame) -> np.ndarray:
        if self.exact or self.config.depth_noise <= 0:
            return frame.depth
        noise = 1.0 + self.config.depth_noise * self.rng.standard_normal(frame.depth.shape)
        return (frame.depth * noise).astype(np.float32)

    def detections(self, frame: Frame, depth: np.ndarray) -> list[Detection]:
        if self.detector is not None:
            return run_detector(self.detector, frame.rgb, depth)
        ids, counts = np.unique(frame.instances, return_counts=True)
        found = []
        c = self.config
        for instance_id, count in zip(ids.tolist(), counts.tolist()):
            if instance_id <= 0 or count < c.min_pixels:
                continue
            label = self.world.label(instance_id)
            attributes = dict(self.world.attributes(instance_id))
            kind = attributes.pop("kind", "object")
            mask = frame.instances == instance_id
            if self.exact:
                found.append(Detection(label, mask, 1.0, kind, attributes, int(instance_id)))
                continue
            if self.rng.random() < c.miss_rate:
                continue
            if c.erosion_px > 0:
                mask = binary_erosion(mask, iterations=c.erosion_px)
                if np.count_nonzero(mask) < c.min_pixels:
                    continue
            score = float(np.clip(self.rng.normal(0.8, 0.1), 0.3, 1.0))
            if self.rng.random() < c.confusion_rate:
                group = [g for g in self._confusable.get(label, (label,)) if g != label]
                if group:
                    label = group[int(self.rng.integers(len(group)))]
                    score *= 0.7
            if self.rng.random() < c.attribute_error_rate and "color" in attributes:
                colours = [v for v in _ATTRIBUTE_VALUES["color"] if v != attributes["color"]]
                attributes["color"] = colours[int(self.rng.integers(len(colours)))]
            found.append(Detection(label, mask, score, kind, attributes))
        if not self.exact and self.rng.random() < c.false_positive_rate:
            found.append(self._false_positive(frame))
        return [d for d in found if d is not None]

    def _false_positive(self, frame: Frame) -> Detection | None:
        """A blob where there is nothing, labelled with a random class of the vocabulary."""
        height, width = frame.instances.shape
        h, w = int(self.rng.integers(4, max(5, height // 8))), int(self.rng.integers(4, max(5, width // 8)))
        top, left = int(self.rng.integers(0, height - h)), int(self.rng.integers(0, width - w))
        mask = np.zeros((height, width), dtype=bool)
        mask[top : top + h, left : left + w] = True
        if np.count_nonzero(mask & (frame.depth > 0)) < self.config.min_pixels:
            return None
        objects = VOCABULARY.objects
        label = objects[int(self.rng.integers(len(objects)))]
        colour = _ATTRIBUTE_VALUES["color"][int(self.rng.integers(len(_ATTRIBUTE_VALUES["color"])))]
        return Detection(label, mask, float(self.rng.uniform(0.3, 0.6)), "object", {"color": colour})
