"""An undo journal: what makes ``Mem4Nav.observe`` all or nothing without copying the memory.

Every mutating method of a Mem4Nav component (``SemanticGraph.update`` / ``note_frame``,
``SparseOctree.insert_or_get`` / ``see``, ``LongTermMemory.write``, ``ShortTermMemory.write``)
takes an optional ``journal``. Before it changes anything it records a closure that puts back
exactly what it is about to change (a row, a few attributes, a dict entry), so a frame costs
a few small closures, not a copy of the state. ``rollback`` runs them newest first, which
returns every component to the state it had when the journal was opened; ``discard`` forgets
them once the frame has been taken.
"""

from __future__ import annotations

from collections.abc import Callable


class Journal:
    """Inverse operations of one transaction, undone newest first."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def __call__(self, undo: Callable[[], None]) -> None:
        """Record ``undo``, the inverse of a change about to be made."""
        self._undo.append(undo)

    def __len__(self) -> int:
        return len(self._undo)

    def rollback(self) -> None:
        """Undo every recorded change, newest first (each one exactly once)."""
        while self._undo:
            self._undo.pop()()

    def discard(self) -> None:
        self._undo.clear()


def record(journal: Journal | None, undo: Callable[[], None]) -> None:
    """``journal(undo)`` when there is a journal (components also run without one)."""
    if journal is not None:
        journal(undo)
