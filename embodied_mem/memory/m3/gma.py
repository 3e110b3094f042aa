"""Gaussian memory attention (GMA), M3's ``xy_utils/memory.py``.

A rendered (or per-Gaussian) query ``q`` (c,) is lifted by the projection ``P`` (c, D) to
``e = q P``, attends over the PSC bank ``M`` (n, D) with cosine logits at temperature ``T``,
and reads the bank back::

    A = softmax( (e / (|e| + 1e-6)) . (M / (|M| + 1e-6))^T / T )     (rows sum to 1)
    R = A M                                                          (raw, unnormalised bank)

with ``T = softmax_temp = 0.05`` in the paper's code. ``P`` is a fixed N(0, 1) matrix there: it
is in no optimiser group (it is saved with the checkpoint); we do the same.
"""

from __future__ import annotations

import torch
from torch import Tensor

NORM_EPS = 1e-6  # added to the norm, as the public code does (not a clamp)


def attention(queries: Tensor, projection: Tensor, bank: Tensor, temperature: float = 0.05) -> Tensor:
    """A (n_queries, n_bank): the softmax of cosine(q P, M) / temperature over the bank."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    lifted = queries @ projection.to(queries.dtype)
    bank = bank.to(queries.dtype)
    unit_e = lifted / (lifted.norm(dim=-1, keepdim=True) + NORM_EPS)
    unit_m = bank / (bank.norm(dim=-1, keepdim=True) + NORM_EPS)
    return torch.softmax(unit_e @ unit_m.T / temperature, dim=-1)


def gaussian_memory_attention(queries: Tensor, projection: Tensor, bank: Tensor, temperature: float = 0.05) -> Tensor:
    """R = A M (n_queries, D): each query's reconstruction from the raw bank."""
    return attention(queries, projection, bank, temperature) @ bank.to(queries.dtype)


def feature_loss(rendered: Tensor, target: Tensor, projection: Tensor, bank: Tensor, temperature: float = 0.05) -> tuple[Tensor, Tensor]:
    """M3's ``point_sample_cos_with_mask`` on sampled pixels: (L_cos, L_l2).

    ``rendered`` (n, c) rendered queries, ``target`` (n, D) distilled features. Rows whose
    target is all zero are masked out; L_cos is the masked mean of ``1 - cos``, L_l2 the
    masked squared error divided by (mask count * D).
    """
    mask = target.abs().sum(dim=-1) != 0
    count = int(mask.sum())
    if count == 0:
        zero = rendered.sum() * 0.0
        return zero, zero
    recon = gaussian_memory_attention(rendered[mask], projection, bank, temperature)
    goal = target[mask].to(recon.dtype)
    cos = torch.nn.functional.cosine_similarity(recon, goal, dim=-1, eps=1e-8)
    l_cos = (1.0 - cos).mean()
    l_l2 = ((recon - goal) ** 2).sum() / (count * goal.shape[-1])
    return l_cos, l_l2
