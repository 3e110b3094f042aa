"""Fitting a Gaussian field to posed RGB-D views, a few Adam steps per keyframe.

Online, as a robot sees its home (SplaTAM-style mapping, since a robot has no offline SfM
run): for each new keyframe, Gaussians are seeded where the field does not yet explain the
view (back-projected depth pixels where the rendered alpha is low, or where something new
stands in front of what was rendered), then Adam takes ``iterations`` steps on the new view
and replayed earlier views, then Gaussians that turned transparent or huge are pruned.

The loss per view is 3DGS's photometric loss ``(1 - l_d) L1 + l_d (1 - SSIM)`` plus an L1 on
the accumulated depth (the RGB-D term M3 has no need of, since it starts from an SfM cloud)
plus ``l_e`` times a feature loss the caller gives (M3's distillation, ``memory/m3``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from embodied_mem.splatting.field import PARAMETERS, GaussianField
from torch import Tensor


@dataclass
class View:
    """One posed frame at render resolution: RGB in [0, 1] (h, w, 3), depth in metres (0 = none)."""

    rgb: Tensor
    depth: Tensor
    viewmat: Tensor  # camera_T_world, optical frame
    K: Tensor
    target: Any = None  # whatever the feature loss needs for this view

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


@dataclass
class FitConfig:
    iterations: int = 8
    lr_means: float = 2e-3
    lr_scales: float = 5e-3
    lr_quats: float = 5e-3
    lr_opacity: float = 5e-2
    lr_colors: float = 1e-2
    lr_queries: float = 5e-2
    lambda_dssim: float = 0.2
    lambda_depth: float = 1.0
    lambda_feature: float = 0.5
    max_new_points: int = 600
    add_alpha: float = 0.5
    add_depth_ratio: float = 0.1
    seed_opacity: float = 0.5
    prune_opacity: float = 0.02
    max_scale: float = 0.5
    max_gaussians: int = 40000
    backend: str = "auto"

    def learning_rates(self) -> dict[str, float]:
        return {
            "means": self.lr_means, "log_scales": self.lr_scales, "quats": self.lr_quats,
            "opacity_logits": self.lr_opacity, "color_logits": self.lr_colors, "queries": self.lr_queries,
        }


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM of two (h, w, 3) images in [0, 1] (Gaussian window, as 3DGS)."""
    x, y = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]
    coords = torch.arange(window, dtype=a.dtype, device=a.device) - window // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(3, 1, window, window).contiguous()

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, kernel, padding=window // 2, groups=3)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return value.mean()


def back_project_pixels(view: View, rows: Tensor, cols: Tensor) -> Tensor:
    """World points (n, 3) of pixels (rows, cols) of a view, through their centres."""
    z = view.depth[rows, cols]
    K = view.K
    x = (cols.to(z.dtype) + 0.5 - K[0, 2]) / K[0, 0] * z
    y = (rows.to(z.dtype) + 0.5 - K[1, 2]) / K[1, 1] * z
    camera = torch.stack([x, y, z, torch.ones_like(z)], dim=-1)
    world_T_camera = torch.linalg.inv(view.viewmat.to(torch.float64)).to(z.dtype)
    return (camera @ world_T_camera.T)[:, :3]


def seed_gaussians(
    field: GaussianField,
    view: View,
    config: FitConfig,
    generator: torch.Generator,
    query_init: Callable[[View, Tensor, Tensor], Tensor] | None = None,
) -> int:
    """Add Gaussians where the field does not explain ``view`` yet; returns how many."""
    valid = view.depth > 0
    if len(field):
        with torch.no_grad():
            rendered = field.render(view.viewmat, view.K, view.width, view.height, with_queries=False, backend=config.backend)
        expected = rendered.depth / rendered.alpha.clamp_min(1e-6)
        in_front = (rendered.alpha >= config.add_alpha) & (view.depth < expected * (1.0 - config.add_depth_ratio))
        wanted = valid & ((rendered.alpha < config.add_alpha) | in_front)
    else:
        wanted = valid
    rows, cols = torch.nonzero(wanted, as_tuple=True)
    if rows.numel() > config.max_new_points:
        pick = torch.randperm(rows.numel(), generator=generator)[: config.max_new_points]
        pick = pick.sort().values
        rows, cols = rows[pick], cols[pick]
    if rows.numel() == 0:
        return 0
    means = back_project_pixels(view, rows, cols)
    footprint = view.depth[rows, cols] / view.K[0, 0]  # one pixel's width in metres at that depth
    scales = footprint[:, None].expand(-1, 3)
    colors = view.rgb[rows, cols]
    queries = None if query_init is None else query_init(view, rows, cols)
    field.add(means, scales, colors, queries, opacity=config.seed_opacity)
    return int(rows.numel())


def view_loss(field: GaussianField, params: dict[str, Tensor], view: View, config: FitConfig, feature_loss=None) -> tuple[Tensor, dict]:
    """The loss of one view (and its parts, as floats)."""
    rendered = field.render(view.viewmat, view.K, view.width, view.height, with_queries=feature_loss is not None, backend=config.backend, params=params)
    rgb = rendered.colors[..., :3]
    l1 = (rgb - view.rgb).abs().mean()
    dssim = 1.0 - ssim(rgb, view.rgb)
    valid = view.depth > 0
    depth = (rendered.depth - view.depth).abs()[valid].mean() if bool(valid.any()) else rgb.sum() * 0.0
    loss = (1.0 - config.lambda_dssim) * l1 + config.lambda_dssim * dssim + config.lambda_depth * depth
    parts = {"l1": float(l1.detach()), "dssim": float(dssim.detach()), "depth": float(depth.detach())}
    if feature_loss is not None:
        feature = feature_loss(rendered.colors[..., 3:], view)
        loss = loss + config.lambda_feature * feature
        parts["feature"] = float(feature.detach())
    return loss, parts


def fit(field: GaussianField, views: list[View], config: FitConfig, feature_loss=None, generator: torch.Generator | None = None) -> list[dict]:
    """``config.iterations`` Adam steps; each renders ``views[0]`` (the new keyframe) and, when
    there are more, one replayed view in turn. A fresh Adam per call (the Gaussian set changes
    between keyframes). Returns each step's loss parts."""
    if not len(field) or not views or config.iterations <= 0:
        return []
    params = {k: field.params[k].detach().clone().requires_grad_(True) for k in PARAMETERS}
    rates = config.learning_rates()
    optimiser = torch.optim.Adam([{"params": [params[k]], "lr": rates[k]} for k in PARAMETERS], eps=1e-15)
    history = []
    for step in range(config.iterations):
        chosen = [views[0]] + ([views[1 + step % (len(views) - 1)]] if len(views) > 1 else [])
        optimiser.zero_grad(set_to_none=True)
        total, parts = None, {}
        for view in chosen:
            loss, parts = view_loss(field, params, view, config, feature_loss)
            total = loss if total is None else total + loss
        total.backward()
        optimiser.step()
        history.append(dict(parts, loss=float(total.detach())))
    field.params = {k: v.detach() for k, v in params.items()}
    prune(field, config)
    return history


def prune(field: GaussianField, config: FitConfig) -> int:
    """Drop Gaussians that turned transparent or grew huge; keep at most ``max_gaussians``
    (the most opaque). Returns how many were dropped."""
    if not len(field):
        return 0
    opacity = field.opacities
    keep = (opacity >= config.prune_opacity) & (field.scales.max(dim=1).values <= config.max_scale)
    if int(keep.sum()) > config.max_gaussians:
        threshold = torch.topk(torch.where(keep, opacity, torch.full_like(opacity, -1.0)), config.max_gaussians).values[-1]
        keep &= opacity >= threshold
    dropped = len(field) - int(keep.sum())
    if dropped:
        field.keep(keep)
    return dropped
