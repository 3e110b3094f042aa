"""Temporal memory: a FIFO of step summaries with compression of the oldest.

``capacity`` (4) entries at most. Appending the 5th merges the two oldest into one compressed
entry kept at the head: its frame and time range, the rooms it passed through (in order), and
its most recent events (at most ``keep_events``), so a compressed head stays bounded however
long the session. The paper compresses with a VLM; here the compression is that fixed rule
(how many entries the paper compresses at a time is not known: we merge two, the least that
keeps the length bound). The buffer belongs to one task session: it is cleared at the start
of each day (``day_start``), while the long-term memories persist.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

from embodied_mem.memory.robomemory.summary import StepSummary, clock


@dataclass
class TemporalEntry:
    first_frame: int
    last_frame: int
    first_stamp: float
    last_stamp: float
    steps: int
    rooms: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    text: str = ""
    compressed: bool = False

    def render(self) -> str:
        if not self.compressed:
            return self.text
        rooms = " -> ".join(r.replace("_", " ") for r in self.rooms) or "nowhere known"
        events = "; ".join(self.events) or "no actions"
        return f"earlier ({self.steps} steps, {clock(self.first_stamp)}-{clock(self.last_stamp)}): rooms {rooms}; {events}."


class TemporalMemory:
    def __init__(self, capacity: int = 4, keep_events: int = 8) -> None:
        if capacity < 2:
            raise ValueError(f"temporal capacity must be at least 2 (a head and a step), got {capacity}")
        self.capacity, self.keep_events = capacity, keep_events
        self.entries: list[TemporalEntry] = []
        self._undo: list[TemporalEntry] | None = None

    def update(self, s: StepSummary) -> None:
        """M_t = U(M_{t-1}, s_t). Idempotent: a summary of a frame already held changes nothing."""
        if s.day_start:
            self.entries = []  # a new session (day): the short-term context starts empty
        if self.entries and self.entries[-1].last_frame >= s.frame_id:
            return
        self.entries.append(
            TemporalEntry(s.frame_id, s.frame_id, s.stamp, s.stamp, 1, [s.room] if s.room else [], [e.text for e in s.events], s.text)
        )
        while len(self.entries) > self.capacity:
            self.entries[:2] = [self._merge(self.entries[0], self.entries[1])]

    def _merge(self, a: TemporalEntry, b: TemporalEntry) -> TemporalEntry:
        rooms = list(a.rooms)
        for room in b.rooms:
            if not rooms or rooms[-1] != room:
                rooms.append(room)
        # Rooms alternate at most once per visit; keep the last visits only (bounded).
        rooms = rooms[-self.keep_events :]
        events = (a.events + b.events)[-self.keep_events :]
        return TemporalEntry(a.first_frame, b.last_frame, a.first_stamp, b.last_stamp, a.steps + b.steps, rooms, events, "", True)

    def context(self) -> str:
        """The whole buffer as text (retrieval returns all of it)."""
        return " | ".join(e.render() for e in self.entries)

    # ------------------------------------------------------------------ all or nothing
    def begin(self) -> None:
        self._undo = copy.deepcopy(self.entries)

    def commit(self) -> None:
        self._undo = None

    def rollback(self) -> None:
        if self._undo is not None:
            self.entries, self._undo = self._undo, None

    # ------------------------------------------------------------------ checkpoints
    def to_state(self) -> dict:
        return {"capacity": self.capacity, "keep_events": self.keep_events, "entries": [asdict(e) for e in self.entries]}

    @staticmethod
    def from_state(data: dict) -> "TemporalMemory":
        memory = TemporalMemory(int(data["capacity"]), int(data["keep_events"]))
        memory.entries = [TemporalEntry(**e) for e in data["entries"]]
        if len(memory.entries) > memory.capacity:
            raise ValueError(f"temporal buffer holds {len(memory.entries)} entries, more than its capacity {memory.capacity}")
        frames = [e.first_frame for e in memory.entries]
        if frames != sorted(frames):
            raise ValueError("temporal buffer is not in chronological order")
        return memory
