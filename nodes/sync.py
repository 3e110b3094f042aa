"""Assembling one observation from several topics, by stamp (pure Python, no rclpy).

A frame is keyed by its rgb image's stamp. It takes the depth image and the detections whose
stamps are within ``tolerance`` of it, the odometry sample nearest to it within
``odom_tolerance``, the newest camera intrinsics and every grasp / release event up to it.
Frames leave in stamp order. A frame whose partner cannot come any more (that stream has
already delivered something newer than the frame's window: every stream is in order) or has
not come within ``max_wait_s`` seconds of wall-clock time is dropped with the reason.

Each stream must be in stamp order: a message older than (or, for images and odometry, as old
as) the last one on its stream is refused with ``BadMessage``; what was buffered is untouched.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from embodied_mem.types import Detection, Event, Pose

from .convert import BadMessage

STREAMS = ("rgb", "depth", "detections", "odom", "camera_info", "event")
STRICT = {"rgb", "depth", "detections", "odom"}  # a repeated stamp is refused too


@dataclass
class Bundle:
    """What one observation is made of, before the memory node adds the camera mount."""

    stamp: float
    rgb: np.ndarray
    depth: np.ndarray
    pose: Pose
    intrinsics: dict
    detections: list[Detection] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    latency_start: float = 0.0  # wall time the rgb image arrived


@dataclass
class _Pending:
    stamp: float
    value: Any
    arrived: float


class FrameAssembler:
    def __init__(
        self,
        tolerance: float = 0.02,
        odom_tolerance: float = 0.05,
        max_wait_s: float = 2.0,
        require_detections: bool = True,
        buffer: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if tolerance < 0 or odom_tolerance < 0 or max_wait_s <= 0 or buffer < 1:
            raise ValueError("tolerances must be >= 0, max_wait_s and buffer positive")
        self.tolerance = tolerance
        self.odom_tolerance = odom_tolerance
        self.max_wait_s = max_wait_s
        self.require_detections = require_detections
        self.buffer = buffer
        self.clock = clock
        self.queues: dict[str, deque[_Pending]] = {name: deque() for name in ("rgb", "depth", "detections", "odom")}
        self.events: list[Event] = []
        self.intrinsics: dict | None = None
        self.last = {name: -math.inf for name in STREAMS}
        self.emitted_stamp = -math.inf
        self.overflow = 0

    # ------------------------------------------------------------------ input
    def _check_order(self, stream: str, stamp: float) -> None:
        if not math.isfinite(stamp):
            raise BadMessage(f"{stream} stamp is not finite")
        last = self.last[stream]
        if stamp < last or (stream in STRICT and stamp == last):
            word = "repeated" if stamp == last else "went backwards"
            raise BadMessage(f"{stream} stamp {stamp:.3f} {word} (last {last:.3f})")

    def add(self, stream: str, stamp: float, value: Any) -> list[tuple[float, str]]:
        """Buffer one message; returns frames dropped to make room ((stamp, reason) pairs)."""
        self._check_order(stream, stamp)
        self.last[stream] = stamp
        dropped: list[tuple[float, str]] = []
        if stream == "camera_info":
            self.intrinsics = value
        elif stream == "event":
            self.events.append(value)
            if len(self.events) > self.buffer:
                gone = self.events.pop(0)
                dropped.append((gone.stamp, f"event backlog over {self.buffer}: oldest {gone.kind} event dropped"))
        else:
            queue = self.queues[stream]
            queue.append(_Pending(stamp, value, self.clock()))
            if len(queue) > self.buffer:
                gone = queue.popleft()
                self.overflow += 1
                if stream == "rgb":
                    dropped.append((gone.stamp, f"rgb backlog over {self.buffer} frames waiting for partners"))
        return dropped

    # ------------------------------------------------------------------ matching
    def _nearest(self, stream: str, stamp: float, tolerance: float) -> _Pending | None:
        best, gap = None, math.inf
        for item in self.queues[stream]:
            distance = abs(item.stamp - stamp)
            if distance <= tolerance + 1e-9 and distance < gap:
                best, gap = item, distance
        return best

    def _missing(self, stream: str, stamp: float, tolerance: float, waited: float) -> str | None:
        """None while the partner may still come; else why the frame cannot be completed."""
        if self.last[stream] > stamp + tolerance:
            return f"no {stream} within {tolerance * 1000:.0f} ms of rgb stamp {stamp:.3f}"
        if waited > self.max_wait_s:
            return f"no {stream} within {tolerance * 1000:.0f} ms of rgb stamp {stamp:.3f} after waiting {self.max_wait_s:.1f} s"
        return None

    def poll(self) -> tuple[list[Bundle], list[tuple[float, str]]]:
        """Frames that are complete (in stamp order) and frames that cannot be (with reasons)."""
        ready: list[Bundle] = []
        dropped: list[tuple[float, str]] = []
        now = self.clock()
        rgb_queue = self.queues["rgb"]
        while rgb_queue:
            head = rgb_queue[0]
            waited = now - head.arrived
            stamp, rgb = head.stamp, head.value
            reason = None
            depth = self._nearest("depth", stamp, self.tolerance)
            if depth is None:
                reason = self._missing("depth", stamp, self.tolerance, waited)
                if reason is None:
                    break
            odom = self._nearest("odom", stamp, self.odom_tolerance) if reason is None else None
            if reason is None and odom is None:
                reason = self._missing("odom", stamp, self.odom_tolerance, waited)
                if reason is None:
                    break
            detections = self._nearest("detections", stamp, self.tolerance) if reason is None else None
            if reason is None and detections is None and (self.require_detections or self.last["detections"] > -math.inf):
                reason = self._missing("detections", stamp, self.tolerance, waited)
                if reason is None:
                    break
                if not self.require_detections:
                    reason = None  # optional: go on without them
            if reason is None and self.intrinsics is None:
                if waited <= self.max_wait_s:
                    break
                reason = "no camera_info received yet"
            rgb_queue.popleft()
            if reason is None:
                reason = self._shape_problem(rgb, depth.value, detections)
            if reason is not None:
                dropped.append((stamp, reason))
                self._prune(stamp)
                continue
            events = [e for e in self.events if e.stamp <= stamp + self.tolerance]
            self.events = [e for e in self.events if e.stamp > stamp + self.tolerance]
            ready.append(
                Bundle(
                    stamp=stamp,
                    rgb=rgb,
                    depth=depth.value,
                    pose=odom.value,
                    intrinsics=dict(self.intrinsics),
                    detections=list(detections.value[1]) if detections is not None else [],
                    events=events,
                    latency_start=head.arrived,
                )
            )
            self.emitted_stamp = stamp
            self._prune(stamp)
        return ready, dropped

    def _shape_problem(self, rgb: np.ndarray, depth: np.ndarray, detections: _Pending | None) -> str | None:
        height, width = rgb.shape[:2]
        if depth.shape != (height, width):
            return f"depth is {depth.shape[1]}x{depth.shape[0]}, rgb is {width}x{height} (depth must be registered to rgb)"
        info = self.intrinsics
        if (info["height"], info["width"]) != (height, width):
            return f"camera_info is {info['width']}x{info['height']}, rgb is {width}x{height}"
        if detections is not None and tuple(detections.value[0]) != (height, width):
            size = detections.value[0]
            return f"detections are for {size[1]}x{size[0]}, rgb is {width}x{height}"
        return None

    def _prune(self, stamp: float) -> None:
        """Forget partners too old for any later frame (keep the newest odometry sample)."""
        for stream, tolerance in (("depth", self.tolerance), ("detections", self.tolerance), ("odom", self.odom_tolerance)):
            queue = self.queues[stream]
            while queue and queue[0].stamp < stamp - tolerance - 1e-9 and (stream != "odom" or len(queue) > 1):
                queue.popleft()

    def pending(self) -> int:
        return len(self.queues["rgb"])
