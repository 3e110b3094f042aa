"""Data association: turning per-frame detections into persistent entities, and inferring what
the robot grasped and where it put it.

A detector gives class-labelled masks with no identity, so a memory that wants to say "the mug
I moved" must decide which sightings are the same mug. ``EntityTracker`` is the shared rule
for the systems that have no association of their own in their paper (the frame baselines,
Mem4Nav); 3D-Mem keeps its paper's own object-map merging.

Rules (all in the memory's own, possibly drifting, world frame):

- an object sighting joins the nearest track of the same kind within ``object_radius`` of the
  track's position (a label that disagrees with the track's majority costs ``label_penalty``
  metres, so a confused label still joins the right mug, but two different things side by
  side stay apart); one track takes at most one sighting per frame;
- a receptacle sighting joins a receptacle track whose box, grown by ``receptacle_margin``,
  holds the sighting's centroid (receptacles are large and seen in parts);
- labels and attributes are majority votes over sightings (detector confusion averages out);
- a track is trusted (``confirmed``) after sightings in ``min_sightings`` distinct frames
  (one ``assign`` call is one frame: two detections of one instance in a frame count once), so
  one-frame false positives never enter the catalogue;
- an unconfirmed track decays: one with fewer than ``min_sightings`` sightings, that the robot
  never moved, not held, and not seen for more than ``unconfirmed_ttl`` seconds of stream time
  is dropped at the next frame (``frame`` lists it in ``dropped``), so false positives do not
  pile up over a long life (568 tracks after 100k frames without decay);
- a ``grasp`` event takes the nearest not-held object track within ``grasp_radius`` of the
  gripper; the receptacle under the gripper is where it came from. A ``release`` puts the held
  track at the gripper position, on the receptacle under it. These are inferences from what
  the memory perceived, and can be wrong.

In the ``gt`` perception mode detections carry the simulator's instance ids; the tracker then
uses them as track ids (perfect association: the upper bound).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from embodied_mem.types import Event

TRACK_ID_BASE = 1  # track ids are positive, like instance ids


@dataclass
class TrackerConfig:
    object_radius: float = 0.35
    label_penalty: float = 0.15
    receptacle_margin: float = 0.3
    min_sightings: int = 2
    grasp_radius: float = 0.6
    surface_margin: float = 0.25
    unconfirmed_ttl: float = 600.0  # s of stream time an unconfirmed track waits for its confirming sighting

    def __post_init__(self) -> None:
        if self.min_sightings < 1:
            raise ValueError(f"tracker min_sightings must be at least 1, got {self.min_sightings}")
        if not self.unconfirmed_ttl >= 0:
            raise ValueError(f"tracker unconfirmed_ttl must be >= 0 seconds, got {self.unconfirmed_ttl}")


@dataclass
class Track:
    """One entity as the memory believes it is."""

    track_id: int
    kind: str
    labels: dict[str, float] = field(default_factory=dict)  # label -> summed detector score
    attributes: dict[str, dict[str, float]] = field(default_factory=dict)  # key -> value -> votes
    position: np.ndarray = field(default_factory=lambda: np.zeros(3))  # mean of sightings since it last moved
    box_min: np.ndarray = field(default_factory=lambda: np.full(3, np.inf))
    box_max: np.ndarray = field(default_factory=lambda: np.full(3, -np.inf))
    count: int = 0  # sightings since it last moved (every detection: the position's running mean)
    sightings: int = 0  # frames it was seen in (what confirms it)
    first_seen: float = 0.0
    last_seen: float = 0.0
    held: bool = False
    moved_at: float | None = None  # stamp of the last release that put it here

    @property
    def category(self) -> str:
        return max(sorted(self.labels), key=lambda label: self.labels[label]) if self.labels else "unknown"

    @property
    def attribute_values(self) -> dict[str, str]:
        values = {key: max(sorted(votes), key=lambda v: votes[v]) for key, votes in self.attributes.items() if votes}
        values["kind"] = self.kind
        return values

    def add(self, category: str, score: float, attributes: dict[str, str], centroid, extent_min, extent_max, stamp: float, new_frame: bool = True) -> None:
        """One detection of it; ``new_frame``: the first in its frame (counts as a sighting)."""
        self.labels[category] = self.labels.get(category, 0.0) + score
        for key, value in attributes.items():
            if key == "kind":
                continue
            votes = self.attributes.setdefault(key, {})
            votes[value] = votes.get(value, 0.0) + score
        self.position = (self.position * self.count + np.asarray(centroid, dtype=np.float64)) / (self.count + 1)
        self.box_min = np.minimum(self.box_min, extent_min)
        self.box_max = np.maximum(self.box_max, extent_max)
        self.count += 1
        if new_frame:
            self.sightings += 1
        self.last_seen = float(stamp)
        if self.sightings == 1:
            self.first_seen = float(stamp)

    def move_to(self, xyz: np.ndarray, stamp: float) -> None:
        """The robot put it down here: forget where it was seen before."""
        xyz = np.asarray(xyz, dtype=np.float64)
        self.position = xyz.copy()
        self.box_min, self.box_max = xyz - 0.05, xyz + 0.05
        self.count = 1
        self.held = False
        self.moved_at = float(stamp)

    def to_dict(self) -> dict:
        return {
            "track_id": self.track_id,
            "kind": self.kind,
            "labels": dict(self.labels),
            "attributes": {key: dict(votes) for key, votes in self.attributes.items()},
            "position": self.position.tolist(),
            "box_min": self.box_min.tolist(),
            "box_max": self.box_max.tolist(),
            "count": self.count,
            "sightings": self.sightings,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "held": self.held,
            "moved_at": self.moved_at,
        }

    @staticmethod
    def from_dict(data: dict) -> "Track":
        fields = dict(data)
        for name in ("position", "box_min", "box_max"):
            fields[name] = np.asarray(fields[name], dtype=np.float64)
        return Track(**fields)


@dataclass
class EventInference:
    """What the memory concluded a grasp or release was about (track ids, or None)."""

    kind: str
    stamp: float
    object_id: int | None
    receptacle_id: int | None


class EntityTracker:
    """Associates sightings into tracks and follows the object the robot carries."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.reset()

    def reset(self) -> None:
        self.tracks: dict[int, Track] = {}
        self.next_id = TRACK_ID_BASE
        self.held: int | None = None
        self.dropped: list[int] = []  # the tracks the last ``frame`` dropped (decay)
        self._undo: dict | None = None

    # ------------------------------------------------------------------ all or nothing
    def begin(self) -> None:
        """Start recording what a frame changes, so ``rollback`` can undo it (cheap: only the
        tracks the frame touches are copied)."""
        self._undo = {"originals": {}, "next_id": self.next_id, "held": self.held, "dropped": self.dropped, "order": None}

    def commit(self) -> None:
        self._undo = None

    def rollback(self) -> None:
        """Put every track the frame touched back as it was; forget tracks it created."""
        undo, self._undo = self._undo, None
        if undo is None:
            return
        for track_id, original in undo["originals"].items():
            if original is None:
                self.tracks.pop(track_id, None)
            else:
                self.tracks[track_id] = original
        if undo["order"] is not None:  # a dropped track came back: in its place (checkpoints list tracks in order)
            self.tracks = {track_id: self.tracks[track_id] for track_id in undo["order"] if track_id in self.tracks}
        self.next_id, self.held, self.dropped = undo["next_id"], undo["held"], undo["dropped"]

    def _touch(self, track_id: int) -> None:
        """Before changing a track inside a transaction, keep its original once."""
        if self._undo is not None and track_id not in self._undo["originals"]:
            track = self.tracks.get(track_id)
            self._undo["originals"][track_id] = None if track is None else copy.deepcopy(track)

    # ------------------------------------------------------------------ association
    def assign(self, views, stamp: float) -> list[int]:
        """Track id for each view (``InstanceView``), creating tracks as needed; updates them."""
        ids: list[int | None] = [None] * len(views)
        taken: set[int] = set()
        pairs = []
        for index, view in enumerate(views):
            if view.instance_id is not None:  # gt perception: the simulator's identity
                ids[index] = int(view.instance_id)
                continue
            for track in self.tracks.values():
                cost = self._cost(track, view)
                if cost is not None:
                    pairs.append((cost, index, track.track_id))
        for cost, index, track_id in sorted(pairs):
            if ids[index] is None and track_id not in taken:
                ids[index] = track_id
                taken.add(track_id)
        counted: set[int] = set()  # tracks this frame already counted a sighting of
        for index, view in enumerate(views):
            track_id = ids[index]
            if track_id is None:
                track_id = self._new_id()
                ids[index] = track_id
            self._touch(track_id)
            track = self.tracks.get(track_id)
            if track is None:
                track = self.tracks[track_id] = Track(track_id, view.kind)
                self.next_id = max(self.next_id, track_id + 1)
            track.add(view.category, view.score, view.attributes, view.centroid, view.extent_min, view.extent_max, stamp, track_id not in counted)
            counted.add(track_id)
        return [int(i) for i in ids]

    def decay(self, stamp: float) -> list[int]:
        """Drop the unconfirmed tracks not seen for more than ``unconfirmed_ttl`` before ``stamp``
        (never one the robot holds or moved); returns their ids (undone by ``rollback``)."""
        c = self.config
        stale = [
            t.track_id
            for t in self.tracks.values()
            if t.sightings < c.min_sightings and t.moved_at is None and not t.held and t.track_id != self.held and stamp - t.last_seen > c.unconfirmed_ttl
        ]
        if stale and self._undo is not None and self._undo["order"] is None:
            self._undo["order"] = list(self.tracks)
        for track_id in stale:
            self._touch(track_id)
            del self.tracks[track_id]
        return stale

    def frame(self, views, events, stamp: float) -> tuple[list[int], list["EventInference | None"]]:
        """One frame: its events and its detections, in the order the frame shows them.

        A release frame already shows the object where it was put, so releases are applied
        before association (the sighting joins the moved track instead of starting a new one);
        a grasp frame still shows the object where it stood, so grasps come after. Events up to
        the frame's first grasp go first, the rest after. Unconfirmed tracks that outlived
        ``unconfirmed_ttl`` are dropped first (``self.dropped``).
        """
        events = list(events)
        self.dropped = self.decay(stamp)  # before association: a stale false positive takes no sighting
        first_grasp = next((n for n, e in enumerate(events) if e.kind == "grasp"), len(events))
        inferences = [self.infer(e) for e in events[:first_grasp]]
        ids = self.assign(views, stamp)
        inferences += [self.infer(e) for e in events[first_grasp:]]
        return ids, inferences

    def _cost(self, track: Track, view) -> float | None:
        if track.kind != view.kind or track.held:
            return None
        c = self.config
        penalty = 0.0 if view.category == track.category else c.label_penalty
        if view.kind == "object":
            distance = float(np.linalg.norm(track.position - view.centroid)) + penalty
            return distance if distance <= c.object_radius else None
        grown_min, grown_max = track.box_min - c.receptacle_margin, track.box_max + c.receptacle_margin
        if np.all(view.centroid[:2] >= grown_min[:2]) and np.all(view.centroid[:2] <= grown_max[:2]):
            return float(np.linalg.norm(track.position[:2] - view.centroid[:2])) * 0.1 + penalty
        return None

    def _new_id(self) -> int:
        track_id = self.next_id
        self.next_id += 1
        return track_id

    def confirmed(self) -> list[Track]:
        """Tracks seen often enough to be trusted (or that the robot itself carried)."""
        return [t for t in self.tracks.values() if t.sightings >= self.config.min_sightings or t.moved_at is not None]

    # ------------------------------------------------------------------ the robot's own actions
    def infer(self, event: Event) -> EventInference | None:
        """Which track a grasp took / a release put down, and on which receptacle."""
        if event.kind not in ("grasp", "release") or event.gripper_pose is None:
            return None
        gripper = event.gripper_pose.position
        if event.kind == "grasp":
            object_id = self.nearest_object(gripper)
            receptacle_id = self.surface_under(gripper)
            if object_id is not None:
                self._touch(object_id)
                self.tracks[object_id].held = True
            self.held = object_id
            return EventInference("grasp", event.stamp, object_id, receptacle_id)
        object_id, self.held = self.held, None
        receptacle_id = self.surface_under(gripper)
        if object_id is not None and object_id in self.tracks:
            self._touch(object_id)
            self.tracks[object_id].move_to(gripper, event.stamp)
        return EventInference("release", event.stamp, object_id, receptacle_id)

    def nearest_object(self, xyz: np.ndarray) -> int | None:
        best, best_distance = None, self.config.grasp_radius
        for track in self.tracks.values():
            if track.kind != "object" or track.held:
                continue
            distance = float(np.linalg.norm(track.position - xyz))
            if distance <= best_distance:
                best, best_distance = track.track_id, distance
        return best

    def surface_under(self, xyz: np.ndarray) -> int | None:
        """The receptacle whose seen box holds ``xyz`` in plan view (nearest box if several)."""
        margin = self.config.surface_margin
        best, best_gap = None, np.inf
        for track in self.tracks.values():
            if track.kind != "receptacle" or track.sightings < self.config.min_sightings:
                continue
            nearest = np.clip(xyz[:2], track.box_min[:2], track.box_max[:2])
            gap = float(np.linalg.norm(nearest - xyz[:2]))
            if gap <= margin and gap < best_gap:
                best, best_gap = track.track_id, gap
        return best

    # ------------------------------------------------------------------ checkpoints
    def to_dict(self) -> dict:
        return {"tracks": [t.to_dict() for t in self.tracks.values()], "next_id": self.next_id, "held": self.held}

    def load_dict(self, data: dict) -> None:
        tracks = {int(t["track_id"]): Track.from_dict(t) for t in data["tracks"]}
        self.tracks, self.next_id, self.held = tracks, int(data["next_id"]), data["held"]

