"""JanusVLN's two encoders, small and offline, and the fusion of their outputs.

- **Semantic** (the paper: Qwen2.5-VL's vision tower): a frame becomes a camera token and
  ``grid x grid`` patch tokens. A patch token is the patch's colour statistics (a random linear
  map) plus what the detector says is there: the text embedding (MiniLM, or ``gt_hash``) of
  the descriptions of the detections in the patch, weighted by score and mask share, through
  a fixed orthonormal projection into the model width. The labels are there because an untrained
  net cannot name what it sees; they are the detector's per-frame output (possibly wrong),
  nothing more.
- **Spatial** (the paper: VGGT-1B over RGB): a patch token is its back-projected world points
  (mean), camera-frame points, depth and valid-depth fraction; the camera token is the robot's
  pose (x, y, z, sin / cos yaw). VGGT infers geometry from RGB; a robot has depth and pose, so
  the geometric encoder reads them directly.

Each goes through its own ``CachedTransformer`` whose attention layers keep KV caches (the dual
implicit memory). ``Fusion`` is JanusVLN's ``image_embeds = visual + lam * merger(vggt)``: both
outputs are merged 2 x 2 (a ``VGGTMerger``-shaped MLP on each side) and added with ``lam`` = 0.2.

Pluggable backbones. ``backbone="hf:<model id or local path>"`` puts a Hugging Face vision model
(``AutoModel``; its last hidden state pooled to the patch grid) in place of the hand-made image
features of a tokenizer (the semantic side's colour statistics; on the spatial side, beside
the points); the label channels and the cached layers stay ours. It is loaded with
``local_files_only=True``: nothing is downloaded unless the caller put the model there.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from torch import nn

from embodied_mem.geometry import transform_points
from embodied_mem.memory.janus.attention import RMSNorm, Shape
from embodied_mem.types import Observation

SEMANTIC_FEATURES = 7  # rgb mean (3), rgb std (3), detection coverage (1)
GEOMETRIC_FEATURES = 8  # world xyz (3), camera xyz (3), mean depth (1), valid fraction (1)
POSE_FEATURES = 5  # x, y, z, sin yaw, cos yaw


def patch_index(height: int, width: int, grid: int) -> np.ndarray:
    """The patch (row-major, ``grid x grid``) each pixel falls in: int (H*W,)."""
    rows = np.arange(height) * grid // height
    cols = np.arange(width) * grid // width
    return (rows[:, None] * grid + cols[None, :]).reshape(-1)


def pooled(values: np.ndarray, index: np.ndarray, patches: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch weighted mean of ``values`` (N, C) and the per-patch weight total."""
    weights = np.ones(len(index)) if weights is None else weights
    total = np.bincount(index, weights=weights, minlength=patches)
    sums = np.stack([np.bincount(index, weights=weights * values[:, c], minlength=patches) for c in range(values.shape[1])], axis=1)
    return sums / np.maximum(total, 1e-9)[:, None], total


def frame_features(obs: Observation, grid: int, min_pixels: int) -> dict[str, np.ndarray]:
    """What both tokenizers read from one frame (numpy; computed outside any lock).

    ``coverage`` [detections, patches]: the fraction of each patch a detection's mask covers;
    ``share`` [detections, patches]: the fraction of each detection's mask in each patch (a
    detection spreads unit weight over the patches it falls in, so a small object owns its patch
    instead of drowning under the table it stands on).
    ``points`` [patches, 3]: each patch's mean back-projected world point (zeros where no depth).
    """
    height, width = obs.rgb.shape[:2]
    patches = grid * grid
    index = patch_index(height, width, grid)
    rgb = obs.rgb.reshape(-1, 3).astype(np.float64) / 255.0
    mean, count = pooled(rgb, index, patches)
    square, _ = pooled(rgb * rgb, index, patches)
    std = np.sqrt(np.maximum(square - mean * mean, 0.0))
    valid = obs.valid_depth().reshape(-1)
    coverage = np.zeros((len(obs.detections), patches))
    share = np.zeros((len(obs.detections), patches))
    for n, detection in enumerate(obs.detections):
        mask = detection.mask.reshape(-1)
        pixels = int(mask.sum())
        if pixels >= min_pixels:
            inside = np.bincount(index[mask], minlength=patches)
            coverage[n], share[n] = inside / np.maximum(count, 1.0), inside / pixels
    camera = obs.camera
    rows, cols = np.divmod(np.nonzero(valid)[0], width)
    z = obs.depth.reshape(-1)[valid].astype(np.float64)
    camera_points = np.stack([(cols + 0.5 - camera.cx) / camera.fx * z, (rows + 0.5 - camera.cy) / camera.fy * z, z], axis=-1)
    world_points = transform_points(obs.world_T_camera.matrix(), camera_points) if len(z) else np.zeros((0, 3))
    valid_index = index[valid]
    world, depth_count = pooled(world_points, valid_index, patches)
    local, _ = pooled(camera_points, valid_index, patches)
    valid_fraction = depth_count / np.maximum(count, 1.0)
    semantic = np.concatenate([mean, std, np.minimum(coverage.sum(0), 1.0)[:, None]], axis=1)
    geometric = np.concatenate([world, local, local[:, 2:3], valid_fraction[:, None]], axis=1)
    yaw = obs.pose.yaw
    pose = np.array([*obs.pose.position, math.sin(yaw), math.cos(yaw)])
    return {
        "semantic": semantic.astype(np.float32),
        "geometric": geometric.astype(np.float32),
        "pose": pose.astype(np.float32),
        "coverage": coverage.astype(np.float32),
        "share": share.astype(np.float32),
        "points": world.astype(np.float32),
        "scores": np.array([d.score for d in obs.detections], np.float32),
        "image": obs.rgb,  # for a Hugging Face backbone only
    }


def _seeded(module: nn.Module, seed: int, scale: float = 1.0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.ndim >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(parameter.shape[1]) * scale)
            elif parameter.ndim == 1 and parameter.shape[0] > 0:
                parameter.zero_()


class HFImage(nn.Module):
    """A Hugging Face vision model's per-patch features: its last hidden state pooled to the grid.

    ``source`` is a model id or a local folder, loaded with ``local_files_only=True`` (nothing is
    downloaded). The image is resized to the model's ``image_size`` and scaled to [-1, 1].
    """

    def __init__(self, source: str, grid: int, device: str = "cpu") -> None:
        super().__init__()
        from transformers import AutoModel

        self.grid, self.device = grid, device
        self.model = AutoModel.from_pretrained(source, local_files_only=True).to(device).eval()
        config = getattr(self.model.config, "vision_config", self.model.config)
        self.width = int(getattr(config, "hidden_size", None) or getattr(config, "embed_dim"))
        size = getattr(config, "image_size", 224)
        self.size = int(size[0] if isinstance(size, (list, tuple)) else size)
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def forward(self, features: dict[str, np.ndarray]) -> torch.Tensor:
        image = torch.from_numpy(np.ascontiguousarray(features["image"])).permute(2, 0, 1)[None].float() / 255.0
        image = torch.nn.functional.interpolate(image, size=(self.size, self.size), mode="bilinear", align_corners=False)
        hidden = self.model(pixel_values=((image - 0.5) / 0.5).to(self.device)).last_hidden_state[0].float().cpu()  # [N, width]
        side = math.isqrt(hidden.shape[0])
        square = hidden[-side * side :].T.reshape(1, self.width, side, side)  # the patch part (a CLS token dropped)
        return torch.nn.functional.adaptive_avg_pool2d(square, self.grid)[0].reshape(self.width, -1).T  # [grid^2, width]


class SemanticTokenizer(nn.Module):
    """Patch colour (or a Hugging Face model's patch features) + the detector's label embeddings
    -> ``[1 + grid^2, dim]`` tokens.

    Channels: all heads but the last carry the label embeddings (``read_heads``; the text space
    through a fixed orthonormal map, a trained projection's stand-in: cosine similarity survives
    it up to a random-projection error of about 1 / sqrt(width)); the last head's channels carry
    the image features and the camera token. The memory read compares a text query with the
    read heads only: text with text, not with colour.
    """

    def __init__(self, shape: Shape, text_dim: int, seed: int, image: HFImage | None = None, label_gain: float = 1.0) -> None:
        super().__init__()
        if shape.heads < 2:
            raise ValueError("the semantic encoder needs 2 or more heads: the last for the image, the others read the labels")
        self.shape, self.text_dim, self.label_gain, self.image = shape, text_dim, label_gain, image
        self.read_heads = shape.heads - 1
        self.text_width = shape.head_dim * self.read_heads
        self.colour = nn.Linear(image.width if image is not None else SEMANTIC_FEATURES, shape.head_dim)
        self.camera = nn.Parameter(torch.zeros(shape.head_dim))
        _seeded(self.colour, seed, scale=1.0)
        with torch.no_grad():
            self.camera.copy_(torch.randn(shape.head_dim, generator=torch.Generator().manual_seed(seed + 1)))
        generator = torch.Generator().manual_seed(seed + 2)
        wide = max(self.text_width, text_dim)
        basis, _ = torch.linalg.qr(torch.randn(wide, wide, generator=generator))
        self.register_buffer("text_map", basis[: self.text_width, :text_dim].contiguous())  # [text_width, text_dim]
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    def labels(self, vectors: np.ndarray, share: np.ndarray, scores: np.ndarray) -> torch.Tensor:
        """Per patch: the mean of the detections' text vectors, each weighted by its score and
        the share of its mask in the patch."""
        patches = self.shape.grid ** 2
        if len(vectors) == 0:
            return torch.zeros(patches, self.text_dim)
        weights = share * scores[:, None]  # [detections, patches]
        mixed = weights.T @ vectors  # [patches, text_dim]
        total = weights.sum(0)[:, None]
        return torch.from_numpy((mixed / np.maximum(total, 1e-9)).astype(np.float32))

    @torch.no_grad()
    def forward(self, features: dict[str, np.ndarray], vectors: np.ndarray) -> torch.Tensor:
        label = self.label_gain * self.labels(vectors, features["share"], features["scores"]) @ self.text_map.T
        pixels = self.image(features) if self.image is not None else torch.from_numpy(features["semantic"])
        patches = torch.cat([label, self.colour(pixels)], dim=-1)
        camera = torch.cat([torch.zeros(self.text_width), self.camera])
        return torch.cat([camera[None], patches])

    @torch.no_grad()
    def query(self, vector: np.ndarray) -> torch.Tensor:
        """An instruction's text vector as one query token ``[dim]`` (the read heads' channels)."""
        text = self.label_gain * torch.from_numpy(np.asarray(vector, np.float32)) @ self.text_map.T
        return torch.cat([text, torch.zeros(self.shape.head_dim)])


class GeometricTokenizer(nn.Module):
    """Back-projected points, depth (and a Hugging Face model's patch features, if given) and the
    pose -> ``[1 + grid^2, dim]`` tokens."""

    def __init__(self, shape: Shape, seed: int, image: HFImage | None = None, scale: float = 5.0) -> None:
        super().__init__()
        self.shape, self.scale, self.image = shape, scale, image  # metres -> about unit
        self.patch = nn.Linear(GEOMETRIC_FEATURES + (image.width if image is not None else 0), shape.dim)
        self.pose = nn.Linear(POSE_FEATURES, shape.dim)
        _seeded(self.patch, seed, scale=1.0)
        _seeded(self.pose, seed + 1, scale=1.0)
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def forward(self, features: dict[str, np.ndarray], vectors: np.ndarray | None = None) -> torch.Tensor:
        geometric = torch.from_numpy(features["geometric"]).clone()
        geometric[:, :7] /= self.scale
        if self.image is not None:
            geometric = torch.cat([geometric, self.image(features)], dim=-1)
        pose = torch.from_numpy(features["pose"]).clone()
        pose[:3] /= self.scale
        return torch.cat([self.pose(pose)[None], self.patch(geometric)])


class Merger(nn.Module):
    """``VGGTMerger``'s shape: RMSNorm, 2 x 2 patch merge, Linear-GELU-Linear."""

    def __init__(self, shape: Shape, hidden: int, output: int, seed: int, merge: int = 2) -> None:
        super().__init__()
        if shape.grid % merge:
            raise ValueError(f"grid {shape.grid} must be a multiple of the merge size {merge}")
        self.shape, self.merge = shape, merge
        self.norm = RMSNorm(shape.dim)
        self.mlp = nn.Sequential(nn.Linear(shape.dim * merge * merge, hidden), nn.GELU(), nn.Linear(hidden, output))
        _seeded(self.mlp, seed)
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """``[grid^2, dim]`` patch tokens (row-major) -> ``[(grid / merge)^2, output]``."""
        g, m, d = self.shape.grid, self.merge, self.shape.dim
        x = self.norm(patches).reshape(g // m, m, g // m, m, d).permute(0, 2, 1, 3, 4).reshape(-1, m * m * d)
        return self.mlp(x)


class Fusion(nn.Module):
    """``fused = semantic_merger(semantic) + lam * spatial_merger(spatial)`` per merged patch."""

    def __init__(self, semantic: Shape, spatial: Shape, lam: float, seed: int) -> None:
        super().__init__()
        if semantic.grid != spatial.grid:
            raise ValueError("the two encoders must share one patch grid (their tokens are aligned)")
        self.lam = lam
        self.semantic = Merger(semantic, semantic.dim * 4, semantic.dim, seed)
        self.spatial = Merger(spatial, spatial.dim * 4, semantic.dim, seed + 1)

    @torch.no_grad()
    def forward(self, semantic_out: torch.Tensor, spatial_out: torch.Tensor) -> torch.Tensor:
        """Both encoders' frame outputs ``[1 + grid^2, dim]`` (camera token first) -> fused rows."""
        return self.semantic(semantic_out[1:]) + self.lam * self.spatial(spatial_out[1:])


def weights_digest(*modules: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (a checkpoint names the weights it was made with)."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
