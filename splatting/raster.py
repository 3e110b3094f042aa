"""Rendering a Gaussian field: gsplat's CUDA rasteriser, or a pure-PyTorch one on the CPU.

Both paths are differentiable and follow the same rules (those of gsplat's
``RasterizeToPixels3DGSFwd.cu``), so a field fitted on one renders the same on the other:

- projection: gsplat's own reference implementation (``gsplat.cuda._torch_impl``: EWA
  splatting, a 0.3 px^2 low-pass ``eps2d`` added to every 2D covariance, a 3.33 sigma box);
- per pixel, Gaussians front to back by camera depth; ``sigma = 1/2 d^T conic d`` at the pixel
  centre ``(x + 0.5, y + 0.5)``; ``alpha = min(0.999, opacity * exp(-sigma))``; a Gaussian with
  ``sigma < 0`` or ``alpha < 1/255`` is skipped; weight ``w_i = alpha_i * T_i`` with
  ``T_i = prod_{j<i} (1 - alpha_j)``; a pixel stops (exclusively) at the first Gaussian that
  would bring ``T`` to ``<= 1e-4``;
- outputs: ``sum_i w_i c_i`` for every channel (no background), the accumulated depth
  ``sum_i w_i z_i`` and the accumulated alpha ``sum_i w_i = 1 - T``.

Camera: ``viewmat`` is ``camera_T_world`` (4x4) in the optical frame (z forward, x right,
y down: gsplat's and OpenCV's convention, and the project's), ``K`` the 3x3 intrinsics.
Quaternions here are (w, x, y, z), gsplat's order (``embodied_mem.types.Pose`` uses x, y, z, w).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0  # gsplat ALPHA_THRESHOLD
ALPHA_MAX = 0.999
T_MIN = 1e-4  # a pixel is done once its transmittance would fall to this
EPS2D = 0.3
NEAR_PLANE = 0.01


@dataclass
class Rendered:
    """What one render returns: channels (H, W, C), accumulated depth and alpha (H, W)."""

    colors: Tensor
    depth: Tensor
    alpha: Tensor


@dataclass
class Projected:
    """Gaussians projected into one camera (every tensor has N rows, gsplat's order)."""

    means2d: Tensor  # (N, 2) pixels
    conics: Tensor  # (N, 3) upper triangle of the inverse 2D covariance: a, b, c
    depths: Tensor  # (N,) camera z
    radii: Tensor  # (N, 2) int box half sizes; 0 = culled


def project(means: Tensor, quats: Tensor, scales: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int) -> Projected:
    """gsplat's pure-PyTorch projection (``_fully_fused_projection``) for one camera."""
    from gsplat.cuda._torch_impl import (
        _fully_fused_projection,
        _quat_scale_to_covar_preci,
    )

    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        means, covars, viewmat[None], K[None], width, height, eps2d=EPS2D, near_plane=NEAR_PLANE
    )
    return Projected(means2d[0], conics[0], depths[0], radii[0])


def pixel_pairs(means2d: Tensor, radii: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """(gaussian, pixel) index pairs: every pixel inside each Gaussian's box (radii, clipped).

    Outside its 3.33-sigma box a Gaussian has ``alpha < 1/255`` (the level set
    ``sigma <= log 255`` spans at most 3.33 marginal sigmas), so the pairs lose nothing gsplat's
    tiles would keep.
    """
    centre = means2d.detach()
    r = radii.to(centre.dtype)
    x0 = torch.floor(centre[:, 0] - r[:, 0]).clamp(0, width).long()
    x1 = torch.ceil(centre[:, 0] + r[:, 0]).clamp(0, width).long()
    y0 = torch.floor(centre[:, 1] - r[:, 1]).clamp(0, height).long()
    y1 = torch.ceil(centre[:, 1] + r[:, 1]).clamp(0, height).long()
    box_w, box_h = x1 - x0, y1 - y0
    counts = box_w * box_h
    gaussian = torch.repeat_interleave(torch.arange(len(counts), device=centre.device), counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(len(gaussian), device=centre.device) - first[gaussian]
    px = x0[gaussian] + local % box_w[gaussian]
    py = y0[gaussian] + local // box_w[gaussian]
    return gaussian, py * width + px


def _pair_alpha(means2d: Tensor, conics: Tensor, opacities: Tensor, gaussian: Tensor, pixel: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Each pair's ``sigma`` and ``alpha = min(0.999, opacity * exp(-sigma))`` at the pixel centre."""
    xs = (pixel % width).to(means2d.dtype) + 0.5
    ys = torch.div(pixel, width, rounding_mode="floor").to(means2d.dtype) + 0.5
    dx, dy = means2d[gaussian, 0] - xs, means2d[gaussian, 1] - ys
    conic = conics[gaussian]
    sigma = 0.5 * (conic[:, 0] * dx**2 + conic[:, 2] * dy**2) + conic[:, 1] * dx * dy
    return sigma, torch.clamp_max(opacities[gaussian] * torch.exp(-sigma), ALPHA_MAX)


def _runs(pixel: Tensor) -> tuple[Tensor, Tensor]:
    """For pairs sorted by pixel: each pair's run number and the index where each run starts."""
    starts = torch.ones_like(pixel, dtype=torch.bool)
    starts[1:] = pixel[1:] != pixel[:-1]
    return torch.cumsum(starts.long(), 0) - 1, torch.nonzero(starts).squeeze(-1)


def _transmittance_before(alpha: Tensor, run: Tensor, run_first: Tensor) -> tuple[Tensor, Tensor]:
    """log T before and after each pair: exclusive running sums of log(1 - alpha) per run (float64)."""
    log_keep = torch.log1p(-alpha.double())
    exclusive = torch.cumsum(log_keep, 0) - log_keep
    log_before = exclusive - exclusive[run_first][run]
    return log_before, log_before + log_keep


def composite(
    means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, radii: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor]:
    """Alpha-composite depth-sorted Gaussians (rows front first) into an (H*W, C) image.

    Vectorised over all (Gaussian, pixel) pairs: the pairs are ordered by pixel, then depth, and
    each pixel's transmittance is an exclusive running sum of ``log(1 - alpha)`` within its run
    (float64). Which pairs count (``alpha >= 1/255``, ``sigma >= 0``, not behind the stop) is
    decided first without gradients; the weights of the pairs that count are then computed
    again with them (dropping skipped pairs, which leave T alone, and the stopped tail of each
    run changes no kept pair's T). Returns the weighted channels (H*W, C) and the weights' sum.
    """
    gaussian, pixel = pixel_pairs(means2d, radii, width, height)
    channels = colors.shape[-1]
    out = colors.new_zeros((width * height, channels)) + 0.0 * colors.sum()
    accumulated = colors.new_zeros(width * height) + 0.0 * opacities.sum()
    with torch.no_grad():
        sigma, alpha = _pair_alpha(means2d, conics, opacities, gaussian, pixel, width)
        used = (sigma >= 0) & (alpha >= ALPHA_MIN)
        gaussian, pixel, alpha = gaussian[used], pixel[used], alpha[used]
        order = torch.argsort(pixel * max(len(means2d), 1) + gaussian)  # rows are depth-sorted: (pixel, depth)
        gaussian, pixel, alpha = gaussian[order], pixel[order], alpha[order]
        if gaussian.numel():
            run, run_first = _runs(pixel)
            _, log_after = _transmittance_before(alpha, run, run_first)
            # Exclusive stop: the Gaussian that would take T to <= 1e-4 and all behind it go.
            done = (log_after <= math.log(T_MIN)).long()
            done_total = torch.cumsum(done, 0)
            live = (done_total - (done_total - done)[run_first][run]) == 0
            gaussian, pixel = gaussian[live], pixel[live]
    if gaussian.numel() == 0:
        return out, accumulated
    run, run_first = _runs(pixel)
    _, alpha = _pair_alpha(means2d, conics, opacities, gaussian, pixel, width)
    log_before, _ = _transmittance_before(alpha, run, run_first)
    weights = alpha * torch.exp(log_before).to(alpha.dtype)
    out = out.index_add(0, pixel, weights[:, None] * colors[gaussian])
    accumulated = accumulated.index_add(0, pixel, weights)
    return out, accumulated


def rasterize_torch(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    tile_size: int = 16,
) -> Rendered:
    """CPU (any device) rasteriser: gsplat's projection, then depth-sorted compositing.

    ``tile_size`` is accepted for gsplat's signature and unused: the pairs come from each
    Gaussian's own box, which is what gsplat's tiles keep of it.
    """
    proj = project(means, quats, scales, viewmat, K, width, height)
    channels = colors.shape[-1]
    visible = torch.nonzero((proj.radii > 0).all(dim=-1)).squeeze(-1)
    order = visible[torch.argsort(proj.depths[visible].detach(), stable=True)]  # front to back
    depths = proj.depths[order]
    payload = torch.cat([colors[order], depths[:, None]], dim=-1)  # depth rides as one more channel
    image, alpha = composite(proj.means2d[order], proj.conics[order], opacities[order], payload, proj.radii[order], width, height)
    image = image.reshape(height, width, channels + 1)
    return Rendered(image[..., :channels], image[..., channels], alpha.reshape(height, width))


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    tile_size: int = 16,
) -> Rendered:
    """gsplat's fused CUDA rasteriser (tensors on a CUDA device)."""
    from gsplat import rasterization

    image, alpha, _ = rasterization(
        means, quats, scales, opacities, colors, viewmat[None], K[None], width, height,
        near_plane=NEAR_PLANE, eps2d=EPS2D, packed=False, tile_size=tile_size, render_mode="RGB+D",
    )
    channels = colors.shape[-1]
    return Rendered(image[0, ..., :channels], image[0, ..., channels], alpha[0, ..., 0])


def rasterize(means, quats, scales, opacities, colors, viewmat, K, width, height, backend: str = "auto", tile_size: int = 16) -> Rendered:
    """``backend``: "torch" (any device), "gsplat" (CUDA only) or "auto" (gsplat on CUDA tensors)."""
    if backend not in ("auto", "torch", "gsplat"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'gsplat', got {backend!r}")
    use_gsplat = backend == "gsplat" or (backend == "auto" and means.is_cuda)
    if use_gsplat and not means.is_cuda:
        raise ValueError("the gsplat backend rasterises only CUDA tensors; use backend='torch' on the CPU")
    function = rasterize_gsplat if use_gsplat else rasterize_torch
    return function(means, quats, scales, opacities, colors, viewmat, K, width, height, tile_size=tile_size)


def intrinsics(fx: float, fy: float, cx: float, cy: float, downsample: int = 1) -> Tensor:
    """K for an image ``downsample`` times smaller: pixel (i + 0.5) maps to (i + 0.5) * downsample."""
    s = float(downsample)
    return torch.tensor([[fx / s, 0.0, cx / s], [0.0, fy / s, cy / s], [0.0, 0.0, 1.0]], dtype=torch.float32)


def view_matrix(world_T_camera) -> Tensor:
    """``camera_T_world`` (what the rasterisers take) from a 4x4 ``world_T_camera``."""
    matrix = torch.as_tensor(world_T_camera, dtype=torch.float64)
    return torch.linalg.inv(matrix).to(torch.float32)
