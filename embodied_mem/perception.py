"""Perception: what turns camera images into ``Detection``s, and the hook a real detector plugs into.

A memory never sees the simulator's instance ids. It gets per-frame, class-labelled masks
(``Detection``), as an open-vocabulary detector gives them, and does its own data association.
The embedded simulator's perception (``embodied_mem.sim.embedded.perception``) makes such
detections from its renders, with seeded misses, false positives, label confusion and mask
erosion; on a GPU machine a real detector registered here takes its place::

    @register("detector", "my_owlv2", MyConfig)
    def build(config): return MyDetector(config)   # has .vocabulary and .detect(rgb, depth)

``run_detector`` checks whatever a detector returns (mask sizes, labels inside its vocabulary)
and raises ``ValueError`` naming the bad field, so a broken detector never reaches a memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from embodied_mem.types import Detection

PERCEPTION_MODES = ("detector", "gt")


def describe(category: str, attributes: dict[str, str] | None = None) -> str:
    """A short text for an entity, e.g. "small red ceramic mug" (how instructions and captions
    name things; shared by the simulator's task texts and the memories, below both)."""
    attributes = attributes or {}
    words = [attributes.get(key, "") for key in ("size", "color", "material")]
    return " ".join(w for w in words + [category.replace("_", " ")] if w)


@dataclass(frozen=True)
class Vocabulary:
    """The class names a detector is asked for, split by kind (things to pick up / furniture)."""

    objects: tuple[str, ...]
    receptacles: tuple[str, ...]

    def __post_init__(self) -> None:
        both = set(self.objects) & set(self.receptacles)
        if both:
            raise ValueError(f"Vocabulary: {sorted(both)} are both objects and receptacles")

    def kind_of(self, label: str) -> str | None:
        if label in self.objects:
            return "object"
        if label in self.receptacles:
            return "receptacle"
        return None

    def __contains__(self, label: str) -> bool:
        return self.kind_of(label) is not None


class Detector(Protocol):
    """A perception module: per-frame class-labelled masks, no persistent ids."""

    vocabulary: Vocabulary

    def detect(self, rgb: np.ndarray, depth: np.ndarray) -> list[Detection]: ...


def check_detections(detections: list, vocabulary: Vocabulary | None, shape: tuple[int, int]) -> list[Detection]:
    """Validate a detector's output for an image of ``shape`` (height, width)."""
    if not isinstance(detections, list):
        raise ValueError(f"detector output must be a list of Detection, got {type(detections).__name__}")
    for index, detection in enumerate(detections):
        if not isinstance(detection, Detection):
            raise ValueError(f"detections[{index}] must be a Detection, got {type(detection).__name__}")
        if detection.mask.shape != tuple(shape):
            raise ValueError(f"detections[{index}].mask shape {detection.mask.shape} does not match the image {tuple(shape)}")
        if vocabulary is not None:
            kind = vocabulary.kind_of(detection.label)
            if kind is None:
                raise ValueError(f"detections[{index}].label {detection.label!r} is outside the detector's vocabulary")
            if kind != detection.kind:
                raise ValueError(f"detections[{index}].kind {detection.kind!r} does not match label {detection.label!r} ({kind})")
    return detections


def run_detector(detector: Detector, rgb: np.ndarray, depth: np.ndarray) -> list[Detection]:
    """Run a detector and check what it returns."""
    return check_detections(detector.detect(rgb, depth), getattr(detector, "vocabulary", None), rgb.shape[:2])
