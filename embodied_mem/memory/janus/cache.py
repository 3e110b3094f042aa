"""The start + recent KV cache of JanusVLN, on the ``transformers`` cache classes.

Each attention layer keeps the keys and values of the frames it has seen as one
``[1, heads, frames * tokens_per_frame, head_dim]`` tensor pair (the ``transformers`` layout:
tokens on dim -2), and beside them the ``frame_ids`` of the slices, in order. After every frame
the layer keeps the first ``start`` frames (the initial, "sink" frames) and the last ``recent``
frames and drops the rest, as whole frame slices (every token of a frame, its camera token
included): upstream's ``StartRecentKVCache(start_size=8, recent_size=48)`` applied to the VGGT
cache after each step of evaluation.

Why a subclass of ``DynamicLayer`` and not an existing class. ``transformers`` 5.x has no sink
cache (``SinkCache`` was removed in 4.53) and its sliding classes (``DynamicSlidingWindowLayer``,
``StaticSlidingWindowLayer``) keep the last ``window - 1`` *tokens*: no initial frames, and a
window that cuts through a frame. ``FrameSliceLayer`` takes ``DynamicLayer``'s concatenating
``update`` (and its ``crop`` / ``reset`` / ``reorder_cache``) and adds the one thing missing:
eviction of whole frame slices, with the frame ids that say which slice is which. The
bookkeeping is the ids tensor and two slices.

Order inside one step (upstream's): the new frame's K, V are appended, the layer's attention
runs over *all* of it (the kept frames plus the new one: up to ``start + recent + 1`` frames),
and only then are frames evicted. ``update`` therefore returns the tensors before eviction and
leaves the cache holding ``min(t, start + recent)`` frames. A frame that leaves is gone: nothing
of it remains anywhere in the cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers.cache_utils import Cache, DynamicLayer


class FrameSliceLayer(DynamicLayer):
    """One layer's KV of whole frames: the first ``start`` and the last ``recent``.

    ``recent=None`` keeps every frame (the growing full-history cache the benchmark compares with).
    """

    def __init__(self, tokens_per_frame: int, start: int = 8, recent: int | None = 48) -> None:
        super().__init__()
        if tokens_per_frame < 1 or start < 0 or (recent is not None and recent < 1):
            raise ValueError(f"bad cache shape: tokens_per_frame={tokens_per_frame}, start={start}, recent={recent}")
        self.tokens_per_frame = int(tokens_per_frame)
        self.start = int(start)
        self.recent = None if recent is None else int(recent)
        self.frame_ids = torch.zeros(0, dtype=torch.long)

    @property
    def capacity(self) -> int | None:
        return None if self.recent is None else self.start + self.recent

    @property
    def frames(self) -> int:
        return int(self.frame_ids.numel())

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, frame_id: int = -1, *args, **kwargs):
        """Append one frame's ``[1, heads, tokens_per_frame, head_dim]`` K and V; return the K, V
        the frame attends over (kept frames + this one), then evict to capacity."""
        if key_states.shape != value_states.shape or key_states.ndim != 4 or key_states.shape[-2] != self.tokens_per_frame:
            raise ValueError(
                f"a frame's K and V must both be [1, heads, {self.tokens_per_frame}, head_dim], "
                f"got {tuple(key_states.shape)} and {tuple(value_states.shape)}"
            )
        keys, values = super().update(key_states, value_states)
        self.frame_ids = torch.cat([self.frame_ids, torch.tensor([int(frame_id)], dtype=torch.long)])
        self.evict()
        return keys, values

    def evict(self) -> list[int]:
        """Keep frames [0, start) and [S - recent, S); return the ids of the frames dropped."""
        capacity = self.capacity
        frames = self.frames
        if capacity is None or frames <= capacity:
            return []
        p = self.tokens_per_frame
        gone = self.frame_ids[self.start : frames - self.recent].tolist()
        head, tail = slice(0, self.start * p), slice((frames - self.recent) * p, frames * p)
        self.keys = torch.cat([self.keys[..., head, :], self.keys[..., tail, :]], dim=-2)
        self.values = torch.cat([self.values[..., head, :], self.values[..., tail, :]], dim=-2)
        self.frame_ids = torch.cat([self.frame_ids[: self.start], self.frame_ids[frames - self.recent :]])
        return [int(i) for i in gone]

    def reset(self) -> None:
        super().reset()
        self.frame_ids = torch.zeros(0, dtype=torch.long)

    def frame_slice(self, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The K, V of the ``row``-th kept frame: ``[1, heads, tokens_per_frame, head_dim]`` each."""
        p = self.tokens_per_frame
        return self.keys[..., row * p : (row + 1) * p, :], self.values[..., row * p : (row + 1) * p, :]

    def nbytes(self) -> int:
        if not self.is_initialized or self.keys is None:
            return int(self.frame_ids.numel() * 8)
        return int(self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size() + self.frame_ids.numel() * 8)


class StartRecentCache(Cache):
    """Per layer a ``FrameSliceLayer``; all layers keep the same frames (they evict alike)."""

    def __init__(self, num_layers: int, tokens_per_frame: int, start: int = 8, recent: int | None = 48) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        super().__init__(layers=[FrameSliceLayer(tokens_per_frame, start, recent) for _ in range(num_layers)])
        self.tokens_per_frame, self.start, self.recent = int(tokens_per_frame), int(start), recent

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, frame_id: int = -1, *args, **kwargs):
        return super().update(key_states, value_states, layer_idx, frame_id)

    def frame_ids(self, layer: int = 0) -> list[int]:
        return self.layers[layer].frame_ids.tolist()

    @property
    def frames(self) -> int:
        return self.layers[0].frames

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()

    # ------------------------------------------------------------------ all or nothing
    def snapshot(self) -> list[tuple]:
        """References to every layer's tensors. ``update`` and ``evict`` never write in place
        (they build new tensors), so keeping the references is a full copy, for free."""
        return [(layer.keys, layer.values, layer.frame_ids, layer.is_initialized, getattr(layer, "device", None)) for layer in self.layers]

    def restore(self, snapshot: list[tuple]) -> None:
        for layer, (keys, values, ids, initialized, device) in zip(self.layers, snapshot):
            layer.keys, layer.values, layer.frame_ids, layer.is_initialized = keys, values, ids, initialized
            if device is not None:
                layer.device = device

    # ------------------------------------------------------------------ checkpoints
    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """``{prefix}{layer}.keys / .values / .frame_ids`` as numpy arrays (bit-exact)."""
        arrays = {}
        for n, layer in enumerate(self.layers):
            if layer.is_initialized and layer.keys is not None and layer.keys.numel():
                keys, values = layer.keys.detach().cpu().numpy().copy(), layer.values.detach().cpu().numpy().copy()
            else:
                keys = values = np.zeros((0,), np.float32)
            arrays[f"{prefix}{n}.keys"], arrays[f"{prefix}{n}.values"] = keys, values
            arrays[f"{prefix}{n}.frame_ids"] = layer.frame_ids.numpy().astype(np.int64)
        return arrays

    def from_arrays(self, arrays: dict[str, np.ndarray], prefix: str = "", heads: int | None = None, head_dim: int | None = None) -> "StartRecentCache":
        """A new cache of this one's shape holding ``arrays``; ``ValueError`` if they do not fit."""
        fresh = StartRecentCache(len(self.layers), self.tokens_per_frame, self.start, self.recent)
        count = None
        for n, layer in enumerate(fresh.layers):
            try:
                keys, values, ids = (arrays[f"{prefix}{n}.{part}"] for part in ("keys", "values", "frame_ids"))
            except KeyError as error:
                raise ValueError(f"cache array {error.args[0]!r} is missing") from error
            ids = np.asarray(ids)
            if ids.ndim != 1 or ids.dtype.kind != "i":
                raise ValueError(f"{prefix}{n}.frame_ids must be a 1-D int array")
            capacity = layer.capacity
            if capacity is not None and ids.size > capacity:
                raise ValueError(f"{prefix}{n} holds {ids.size} frames, more than the cache keeps ({capacity})")
            if count is not None and ids.size != count:
                raise ValueError(f"{prefix}{n} holds {ids.size} frames, another layer {count}")
            count = ids.size
            if ids.size == 0:
                if np.asarray(keys).size or np.asarray(values).size:
                    raise ValueError(f"{prefix}{n}: K / V without frames")
                continue
            expected = (1, heads if heads else keys.shape[1], ids.size * self.tokens_per_frame, head_dim if head_dim else keys.shape[-1])
            for name, array in (("keys", keys), ("values", values)):
                if array.dtype.kind != "f" or tuple(array.shape) != expected:
                    raise ValueError(f"{prefix}{n}.{name} has shape {array.shape} {array.dtype}, expected {expected} float")
                if not np.all(np.isfinite(array)):
                    raise ValueError(f"{prefix}{n}.{name} holds NaN or inf")
            layer.lazy_initialization(torch.from_numpy(np.ascontiguousarray(keys)), torch.from_numpy(np.ascontiguousarray(values)))
            layer.keys, layer.values = torch.from_numpy(np.array(keys)), torch.from_numpy(np.array(values))
            layer.frame_ids = torch.from_numpy(ids.astype(np.int64))
        return fresh

    def save_safetensors(self, path: str | Path) -> None:
        """The cache alone as one safetensors file (for inspection, or another process)."""
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in self.to_arrays().items()}, str(path), metadata={
            "tokens_per_frame": str(self.tokens_per_frame), "start": str(self.start), "recent": str(self.recent), "layers": str(len(self.layers)),
        })

    def load_safetensors(self, path: str | Path) -> "StartRecentCache":
        """A new cache from ``save_safetensors``'s file; ``ValueError`` if it is not one of this shape."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            arrays = load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise ValueError(f"corrupt cache file {path}: {error}") from error
        return self.from_arrays(arrays)
