"""embodied_mem.splatting: Gaussian feature fields (gsplat on CUDA, pure PyTorch on the CPU).

- ``raster``: projection (gsplat's reference PyTorch code) and depth-sorted alpha compositing;
  ``rasterize(..., backend="auto"|"torch"|"gsplat")``; both paths are differentiable.
- ``field``: ``GaussianField``, positions / scales / rotations / opacities / colour and a
  low-dimensional query per Gaussian (M3's principal query).
- ``fit``: seeding from back-projected depth and a few Adam steps per keyframe.

Used by the M3 memory (``embodied_mem.memory.m3``).
"""

from embodied_mem.splatting.field import GaussianField
from embodied_mem.splatting.fit import FitConfig, View, fit, prune, seed_gaussians, ssim
from embodied_mem.splatting.raster import (
    Rendered,
    intrinsics,
    project,
    rasterize,
    rasterize_torch,
    view_matrix,
)

__all__ = [
    "FitConfig", "GaussianField", "Rendered", "View", "fit", "intrinsics", "project", "prune",
    "rasterize", "rasterize_torch", "seed_gaussians", "ssim", "view_matrix",
]
