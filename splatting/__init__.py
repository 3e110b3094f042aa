"""embodied_mem.splatting: Gaussian feature fields for the M3 memory (gsplat on CUDA, PyTorch on CPU).

Reserved: nothing is implemented here yet. The M3 issue is held back until the spatial memories
(Mem4Nav, 3D-Mem) have been measured; this package exists so the layout of DESIGN.md is importable.
"""
