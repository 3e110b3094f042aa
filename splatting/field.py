"""A 3D Gaussian field with a low-dimensional query per Gaussian (M3's "principal query").

Parameters are kept unconstrained, as 3DGS does: ``log_scales`` (scale = exp), ``opacity_logits``
(opacity = sigmoid), ``color_logits`` (RGB in [0, 1] = sigmoid; degree-0 colour, no spherical
harmonics: a robot's small, diffusely lit frames do not constrain view-dependent colour),
``quats`` (w, x, y, z, normalised where used) and ``queries`` (N, c) as they are. Positions are
in the memory's world frame (REP-103), metres.
"""

from __future__ import annotations

import numpy as np
import torch
from embodied_mem.splatting.raster import Rendered, rasterize
from torch import Tensor

PARAMETERS = ("means", "log_scales", "quats", "opacity_logits", "color_logits", "queries")


def _logit(p: Tensor) -> Tensor:
    p = p.clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p))


class GaussianField:
    """N Gaussians: ``means`` (N, 3), ``log_scales`` (N, 3), ``quats`` (N, 4 wxyz),
    ``opacity_logits`` (N,), ``color_logits`` (N, 3), ``queries`` (N, query_dim)."""

    def __init__(self, query_dim: int, device: str | torch.device = "cpu") -> None:
        if query_dim < 0:
            raise ValueError(f"query_dim must be >= 0, got {query_dim}")
        self.query_dim = int(query_dim)
        self.device = torch.device(device)
        shapes = {"means": (0, 3), "log_scales": (0, 3), "quats": (0, 4), "opacity_logits": (0,), "color_logits": (0, 3), "queries": (0, self.query_dim)}
        self.params: dict[str, Tensor] = {k: torch.zeros(v, device=self.device) for k, v in shapes.items()}

    # ------------------------------------------------------------------ views of the parameters
    def __len__(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def means(self) -> Tensor:
        return self.params["means"]

    @property
    def scales(self) -> Tensor:
        return torch.exp(self.params["log_scales"])

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.params["opacity_logits"])

    @property
    def colors(self) -> Tensor:
        return torch.sigmoid(self.params["color_logits"])

    @property
    def queries(self) -> Tensor:
        return self.params["queries"]

    # ------------------------------------------------------------------ editing
    def add(self, means: Tensor, scales: Tensor, colors: Tensor, queries: Tensor | None = None, opacity: float = 0.5) -> None:
        """Append Gaussians: isotropic or not (``scales`` (n, 3) metres), identity rotation."""
        n = int(means.shape[0])
        device = self.device
        if queries is None:
            queries = torch.zeros((n, self.query_dim), device=device)
        new = {
            "means": means.to(device, torch.float32),
            "log_scales": torch.log(scales.to(device, torch.float32).clamp_min(1e-6)),
            "quats": torch.tensor([1.0, 0.0, 0.0, 0.0], device=device).repeat(n, 1),
            "opacity_logits": _logit(torch.full((n,), float(opacity), device=device)),
            "color_logits": _logit(colors.to(device, torch.float32)),
            "queries": queries.to(device, torch.float32).reshape(n, self.query_dim),
        }
        self.params = {k: torch.cat([self.params[k].detach(), new[k]]) for k in PARAMETERS}

    def keep(self, mask: Tensor) -> None:
        """Keep only the Gaussians where ``mask`` (N,) is True (prune)."""
        self.params = {k: v.detach()[mask] for k, v in self.params.items()}

    def clone(self) -> GaussianField:
        other = GaussianField(self.query_dim, self.device)
        other.params = {k: v.detach().clone() for k, v in self.params.items()}
        return other

    def nbytes(self) -> int:
        return int(sum(v.numel() * v.element_size() for v in self.params.values()))

    # ------------------------------------------------------------------ rendering
    def render(self, viewmat: Tensor, K: Tensor, width: int, height: int, with_queries: bool = True, backend: str = "auto", params: dict | None = None) -> Rendered:
        """RGB (+ the rendered query channels ``E(p) = sum_i q_i alpha_i T_i``), depth and alpha.

        ``params`` (default: the field's own) lets a trainer render leaf tensors it optimises.
        """
        p = self.params if params is None else params
        colors = torch.sigmoid(p["color_logits"])
        if with_queries and self.query_dim:
            colors = torch.cat([colors, p["queries"]], dim=-1)
        return rasterize(
            p["means"], p["quats"], torch.exp(p["log_scales"]), torch.sigmoid(p["opacity_logits"]), colors,
            viewmat.to(self.device), K.to(self.device), width, height, backend=backend,
        )

    # ------------------------------------------------------------------ checkpoints
    def to_arrays(self, prefix: str = "field_") -> dict[str, np.ndarray]:
        return {prefix + k: v.detach().cpu().numpy().astype(np.float32) for k, v in self.params.items()}

    @staticmethod
    def from_arrays(arrays: dict[str, np.ndarray], query_dim: int, prefix: str = "field_", device: str = "cpu") -> GaussianField:
        """Parse saved arrays; ``ValueError`` names a missing, misshapen or non-finite one."""
        field = GaussianField(query_dim, device)
        tails = {"means": (3,), "log_scales": (3,), "quats": (4,), "opacity_logits": (), "color_logits": (3,), "queries": (query_dim,)}
        count = None
        params = {}
        for name, tail in tails.items():
            key = prefix + name
            if key not in arrays:
                raise ValueError(f"array {key!r} is missing")
            array = arrays[key]
            if array.dtype.kind != "f" or tuple(array.shape[1:]) != tail:
                raise ValueError(f"array {key!r} has shape {array.shape} / dtype {array.dtype}, expected (N, {tail}) floats")
            if not np.all(np.isfinite(array)):
                raise ValueError(f"array {key!r} holds NaN or inf")
            if count is None:
                count = array.shape[0]
            elif array.shape[0] != count:
                raise ValueError(f"array {key!r} has {array.shape[0]} rows, the field has {count}")
            params[name] = torch.as_tensor(np.array(array, dtype=np.float32), device=field.device)
        if count and np.any(np.linalg.norm(arrays[prefix + "quats"], axis=1) < 1e-8):
            raise ValueError(f"array {prefix}quats holds a zero quaternion")
        field.params = params
        return field
