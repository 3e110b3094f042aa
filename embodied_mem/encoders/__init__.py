"""Text encoders: the real MiniLM (``minilm``) and a ground-truth-label hashing encoder (``gt_hash``).

Both map a list of strings to L2-normalised float32 vectors::

    encoder = build_encoder("minilm")
    vectors = encoder.encode(["small red ceramic mug"])   # (1, 384)
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


def build_encoder(name: str, **options) -> TextEncoder:
    from embodied_mem.registry import build

    return build("encoder", {"name": name, **options})
