"""Feature distillation: the high-dimensional feature image M3 distils into the field.

M3 runs foundation models (CLIP, SigLIP, DINOv2, SEEM, LLaMA) over every view and distils
their patch features. A robot here has a detector and a text encoder, so the default feature
image is the *perceived semantics*: every detection's text (``describe(label, attributes)``,
e.g. "red ceramic mug") is embedded by the configured text encoder (MiniLM by default) and
painted into its mask; smaller masks are painted last, so a mug stays on top of its table.
Pixels no detection covers get the embedding of ``background_text`` (CLIP gives every pixel a
feature; a detector covers only its masks), or stay zero (then the feature loss masks them
out, as M3 masks all-zero ground truth) when ``background_text`` is None. Pixels without depth
are zero.

The image is kept as a small index map into the feature rows of the PSC table (one int per
render pixel), not as a (h, w, D) float image: the feature of a pixel is one of the distinct
detection texts, so the map plus the table is lossless and 1500x smaller.
"""

from __future__ import annotations

import numpy as np

from embodied_mem.perception import describe
from embodied_mem.types import Observation

NO_FEATURE = -1


def feature_texts(obs: Observation, downsample: int, background_text: str | None) -> tuple[list[str], np.ndarray]:
    """The distinct texts of a frame and its (h, w) index map into them at render resolution.

    The render pixel (i, j) takes the full-resolution pixel at its centre, (i * s + s // 2,
    j * s + s // 2) for ``s = downsample``.
    """
    height, width = obs.rgb.shape[0] // downsample, obs.rgb.shape[1] // downsample
    rows = np.arange(height) * downsample + downsample // 2
    cols = np.arange(width) * downsample + downsample // 2
    texts: list[str] = []
    index: dict[str, int] = {}

    def slot(text: str) -> int:
        if text not in index:
            index[text] = len(texts)
            texts.append(text)
        return index[text]

    valid = obs.valid_depth()[np.ix_(rows, cols)]
    labels = np.full((height, width), NO_FEATURE, dtype=np.int32)
    if background_text is not None:
        labels[valid] = slot(background_text)
    order = sorted(obs.detections, key=lambda d: -int(d.mask.sum()))  # largest first: small ones on top
    for detection in order:
        mask = detection.mask[np.ix_(rows, cols)] & valid
        if mask.any():
            labels[mask] = slot(describe(detection.label, detection.attributes))
    return texts, labels
