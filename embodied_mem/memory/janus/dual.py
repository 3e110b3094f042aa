"""The dual implicit memory: two cached encoders, their two start + recent KV caches, the fusion.

``DualImplicitMemory.step`` takes one frame's semantic and geometric tokens, runs each through its
``CachedTransformer`` (appending the frame's K, V to every layer of that encoder's cache and
evicting whole frame slices past ``start + recent``), and fuses the two outputs. Both caches see
the same frames in the same order, so they always hold the same frame ids. ``read`` is the
memory read of one query token over the semantic cache.
"""

from __future__ import annotations

import numpy as np
import torch

from embodied_mem.memory.janus.attention import CachedTransformer, Shape
from embodied_mem.memory.janus.cache import StartRecentCache
from embodied_mem.memory.janus.encoders import Fusion

CACHES = ("semantic", "spatial")


class DualImplicitMemory:
    """Semantic and spatial ``CachedTransformer`` + caches; ``recent=None``: keep every frame."""

    def __init__(self, semantic: Shape, spatial: Shape, start: int = 8, recent: int | None = 48, lam: float = 0.2, seed: int = 0) -> None:
        if semantic.grid != spatial.grid:
            raise ValueError("the semantic and spatial encoders must share one patch grid")
        self.start, self.recent = start, recent
        self.nets = {"semantic": CachedTransformer(semantic, seed), "spatial": CachedTransformer(spatial, seed + 100)}
        self.fusion = Fusion(semantic, spatial, lam, seed + 200)
        self.caches: dict[str, StartRecentCache] = {}
        self.reset()

    def reset(self) -> None:
        self.caches = {name: net.new_cache(self.start, self.recent) for name, net in self.nets.items()}

    @property
    def frames(self) -> int:
        return self.caches["semantic"].frames

    def frame_ids(self) -> list[int]:
        return self.caches["semantic"].frame_ids(0)

    def step(self, semantic_tokens: torch.Tensor, spatial_tokens: torch.Tensor, frame_id: int) -> dict[str, torch.Tensor]:
        """One frame into both encoders; returns their outputs and the fused rows."""
        semantic = self.nets["semantic"].step(semantic_tokens, self.caches["semantic"], frame_id)
        spatial = self.nets["spatial"].step(spatial_tokens, self.caches["spatial"], frame_id)
        return {"semantic": semantic, "spatial": spatial, "fused": self.fusion(semantic, spatial)}

    def read(self, query: torch.Tensor, layer: int, frame_mask: torch.Tensor | None = None, temperature: float = 1.0, heads: int | None = None) -> torch.Tensor:
        """Attention weights ``[frames, P]`` of one query token over the semantic cache's ``layer``
        (its first ``heads`` heads)."""
        return self.nets["semantic"].read(query, self.caches["semantic"], layer, frame_mask, temperature, heads)

    def nbytes(self) -> int:
        return sum(cache.nbytes() for cache in self.caches.values())

    # ------------------------------------------------------------------ all or nothing
    def snapshot(self) -> dict:
        return {name: cache.snapshot() for name, cache in self.caches.items()}

    def restore(self, snapshot: dict) -> None:
        for name, cache in self.caches.items():
            cache.restore(snapshot[name])

    # ------------------------------------------------------------------ checkpoints
    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {}
        for name, cache in self.caches.items():
            arrays.update(cache.to_arrays(f"{name}."))
        return arrays

    def caches_from_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, StartRecentCache]:
        """New caches from ``to_arrays``; ``ValueError`` if any does not fit (nothing is changed)."""
        caches = {}
        for name, cache in self.caches.items():
            shape = self.nets[name].shape
            caches[name] = cache.from_arrays(arrays, f"{name}.", heads=shape.heads, head_dim=shape.head_dim)
        ids = [caches[name].frame_ids(layer) for name in caches for layer in range(len(caches[name].layers))]
        if any(i != ids[0] for i in ids):
            raise ValueError("the caches' layers hold different frames")
        return caches

    def install(self, caches: dict[str, StartRecentCache]) -> None:
        self.caches = caches
