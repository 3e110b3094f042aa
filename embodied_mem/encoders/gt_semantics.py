"""A ground-truth-semantics encoder: exact label words, hashed into a fixed-size vector.

In the simulator the robot knows every instance's category and attributes; this encoder
turns such label text into a vector where texts sharing words are similar (a normalised
bag of words with one fixed random unit vector per word). It needs no model, is exact for
label words and knows nothing of synonyms: "sofa" and "couch" are unrelated. Use it for
fast runs and tests; use ``minilm`` where language matters.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from embodied_mem.registry import register

_WORD = re.compile(r"[a-z0-9]+")
_STOP = {"the", "a", "an", "to", "you", "of", "on", "in", "that", "with", "from", "your", "which", "and", "any", "was", "were", "it"}


@dataclass
class HashConfig:
    dim: int = 384


@register("encoder", "gt_hash", HashConfig)
class HashEncoder:
    name = "gt_hash"

    def __init__(self, config: HashConfig | None = None) -> None:
        self.config = config or HashConfig()
        self.dim = self.config.dim
        self._words: dict[str, np.ndarray] = {}

    def _word(self, word: str) -> np.ndarray:
        if word not in self._words:
            rng = np.random.default_rng(zlib.crc32(word.encode("utf-8")))
            vector = rng.standard_normal(self.dim).astype(np.float32)
            self._words[word] = vector / np.linalg.norm(vector)
        return self._words[word]

    def encode(self, texts: list[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise ValueError("encode takes a list of strings, not a single string")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w for w in _WORD.findall(text.lower().replace("_", " ")) if w not in _STOP]
            for word in words:
                out[row] += self._word(word)
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
        return out
