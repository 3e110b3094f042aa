"""The cached global attention of JanusVLN's encoders, small.

A ``CachedTransformer`` is a stack of VGGT-style global attention blocks over frames of ``P``
tokens (one camera token, then the patch tokens of a ``grid x grid`` image)::

    x <- x + proj(softmax(Q K^T / sqrt(d)) V)          Q = RoPE2D(q_norm(LN(x) W_q))
    x <- x + MLP(LN(x))                                 K = RoPE2D(k_norm([K_kept; LN(x) W_k]))

``step`` runs one new frame: each block computes q, k, v for the frame's tokens only, appends
k, v to its layer of the ``StartRecentCache`` and attends over what the cache returns (the kept
frames and this one); nothing of the past is recomputed. As upstream, the cache stores K
*before* ``k_norm`` and RoPE, and the normalisation and rotation are applied to the whole kept K
at every step; the cached frames reuse the current frame's positions (every frame has the same
token layout, so each token keeps its own patch position).

``forward_frames`` is the uncached path (upstream's training path): every frame at once, with
a frame mask saying which frames each frame sees (a causal mask: the frames before it and
itself). With the causal mask it is what ``step`` computes for t <= start + recent; with the
start + recent mask of ``evicted_mask`` it is what ``step`` computes for any t (each frame's
keys were computed while the frames it saw then were still present). Tests hold the two equal.

``read`` is the memory read: one query token (not a frame token: no position) attends over a
layer's cached keys; the softmax weights, averaged over heads, say which cached tokens (so which
frames and patches) answer it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from embodied_mem.memory.janus.cache import StartRecentCache


@dataclass(frozen=True)
class Shape:
    """The size of one encoder's transformer."""

    dim: int = 128
    heads: int = 4
    layers: int = 2
    grid: int = 4
    mlp_ratio: float = 2.0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.heads < 1 or self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be a positive multiple of heads {self.heads}")
        if (self.dim // self.heads) % 4:
            raise ValueError(f"head dim {self.dim // self.heads} must be a multiple of 4 (2-D RoPE)")
        if self.layers < 1 or self.grid < 1 or self.mlp_ratio <= 0:
            raise ValueError(f"layers, grid and mlp_ratio must be positive, got {self.layers}, {self.grid}, {self.mlp_ratio}")

    @property
    def tokens(self) -> int:
        """Tokens per frame: the camera token and grid x grid patches."""
        return 1 + self.grid * self.grid

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def grid_positions(grid: int) -> torch.Tensor:
    """(row, col) of each token: the camera token at (0, 0), patches from (1, 1) (VGGT's offset)."""
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    patches = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=-1) + 1
    return torch.cat([torch.zeros(1, 2, dtype=torch.long), patches]).float()


def rope_tables(positions: torch.Tensor, head_dim: int, base: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos / sin ``[N, head_dim]`` of 2-D RoPE: the first half of the head dim turns with the
    row, the second half with the column (each half as standard RoPE, rotate-half layout)."""
    half = head_dim // 2
    freqs = 1.0 / (base ** (torch.arange(0, half, 2, dtype=torch.float32) / half))
    angles = [positions[:, axis : axis + 1].float() * freqs for axis in (0, 1)]  # [N, half / 2] each
    cos = torch.cat([torch.cos(a).repeat(1, 2) for a in angles], dim=-1)
    sin = torch.cat([torch.sin(a).repeat(1, 2) for a in angles], dim=-1)
    return cos, sin


def rope_2d(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` [..., N, head_dim] by the tables of ``rope_tables`` ([N, head_dim])."""
    a1, b1, a2, b2 = x.split(x.shape[-1] // 4, dim=-1)
    return x * cos + torch.cat([-b1, a1, -b2, a2], dim=-1) * sin


class GlobalBlock(nn.Module):
    """One global attention block; its K, V live in one layer of a ``StartRecentCache``."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.shape = shape
        dim, hidden = shape.dim, int(shape.dim * shape.mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.q_norm = RMSNorm(shape.head_dim)
        self.k_norm = RMSNorm(shape.head_dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[..., N, dim] -> [..., heads, N, head_dim]."""
        *lead, n, _ = x.shape
        return x.reshape(*lead, n, self.shape.heads, self.shape.head_dim).transpose(-3, -2)

    def query(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """Normalised (and, for frame tokens, rotated) queries ``[..., heads, N, head_dim]``;
        ``rope``: the (cos, sin) tables of the N tokens."""
        q = self.q_norm(self._heads(self.q(self.norm1(x))))
        return q if rope is None else rope_2d(q, *rope)

    def raw_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K before ``k_norm`` / RoPE (what the cache stores) and V: ``[..., heads, N, head_dim]``."""
        h = self.norm1(x)
        return self._heads(self.k(h)), self._heads(self.v(h))

    def keys(self, raw: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """``k_norm`` and RoPE over cached keys; ``rope``: one frame's tables (frames share one
        token layout, so the tables tile over the frames)."""
        k = self.k_norm(raw)
        if rope is None:
            return k
        frames = raw.shape[-2] // rope[0].shape[0]
        cos, sin = rope
        return rope_2d(k, cos.repeat(frames, 1), sin.repeat(frames, 1))

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Residual, projection and MLP; ``attended``: [..., heads, N, head_dim]."""
        *lead, heads, n, head_dim = attended.shape
        x = x + self.proj(attended.transpose(-3, -2).reshape(*lead, n, heads * head_dim))
        return x + self.mlp(self.norm2(x))


class CachedTransformer(nn.Module):
    """``layers`` global blocks; ``step`` over a ``StartRecentCache``, ``forward_frames`` without."""

    def __init__(self, shape: Shape, seed: int = 0) -> None:
        super().__init__()
        self.shape = shape
        self.blocks = nn.ModuleList(GlobalBlock(shape) for _ in range(shape.layers))
        self.register_buffer("positions", grid_positions(shape.grid), persistent=False)
        self.rope = rope_tables(self.positions, shape.head_dim)  # one frame's (cos, sin)
        self._initialise(seed)

    def _initialise(self, seed: int) -> None:
        """Seeded weights (nothing is trained here). Q and K start at the identity, so attention
        starts as similarity of the normalised tokens; V, the projection and the MLP are random
        and small (the residual stream keeps each token's own content)."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for block in self.blocks:
                for linear in (block.q, block.k):
                    linear.weight.copy_(torch.eye(self.shape.dim))
                    linear.bias.zero_()
                for linear in (block.v, block.proj, block.mlp[0], block.mlp[2]):
                    fan_in = linear.weight.shape[1]
                    linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) / math.sqrt(fan_in) * 0.5)
                    linear.bias.zero_()
        self.eval()
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    def new_cache(self, start: int, recent: int | None) -> StartRecentCache:
        return StartRecentCache(self.shape.layers, self.shape.tokens, start, recent)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, cache: StartRecentCache, frame_id: int) -> torch.Tensor:
        """One new frame ``[P, dim]`` through every block; returns its output tokens ``[P, dim]``.

        Each block appends the frame's raw K, V to its cache layer, attends over the kept frames
        and this one, and the layer then evicts to start + recent frames."""
        if tokens.shape != (self.shape.tokens, self.shape.dim):
            raise ValueError(f"a frame is {self.shape.tokens} tokens of {self.shape.dim}, got {tuple(tokens.shape)}")
        x = tokens.unsqueeze(0)  # [1, P, dim]
        for index, block in enumerate(self.blocks):
            q = block.query(x, self.rope)
            k_raw, v = block.raw_kv(x)
            keys, values = cache.update(k_raw, v, index, frame_id)
            attended = F.scaled_dot_product_attention(q, block.keys(keys, self.rope), values)
            x = block.finish(x, attended)
        return x[0]

    @torch.no_grad()
    def forward_frames(self, tokens: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Every frame at once ``[T, P, dim]``; ``visible[i, j]``: frame i sees frame j. Uncached."""
        frames, p, dim = tokens.shape
        if visible.shape != (frames, frames):
            raise ValueError(f"visible must be [{frames}, {frames}], got {tuple(visible.shape)}")
        mask = visible.bool().repeat_interleave(p, 0).repeat_interleave(p, 1)  # token level
        x = tokens.reshape(1, frames * p, dim)
        rope = (self.rope[0].repeat(frames, 1), self.rope[1].repeat(frames, 1))
        for block in self.blocks:
            q = block.query(x, rope)
            k_raw, v = block.raw_kv(x)
            attended = F.scaled_dot_product_attention(q, block.keys(k_raw, self.rope), v, attn_mask=mask)
            x = block.finish(x, attended)
        return x[0].reshape(frames, p, dim)

    @torch.no_grad()
    def read(self, query: torch.Tensor, cache: StartRecentCache, layer: int, frame_mask: torch.Tensor | None = None, temperature: float = 1.0, heads: int | None = None) -> torch.Tensor:
        """The attention weights of one query token ``[dim]`` over every cached token of ``layer``
        (softmax over all kept frames' tokens, averaged over the first ``heads`` heads, all by
        default): ``[frames, P]``, summing to 1.

        ``frame_mask`` (bool ``[frames]``): only those frames may be attended. Empty cache or no
        frame allowed: an empty / all-zero result."""
        cache_layer = cache.layers[layer]
        frames, p = cache_layer.frames, self.shape.tokens
        if frames == 0:
            return torch.zeros(0, p)
        block = self.blocks[layer]
        # The query token has no image position, so it meets the keys unrotated (the cache keeps
        # them before RoPE): the read compares content, not where in the image it was.
        q = block.query(query.reshape(1, 1, -1), None)  # [1, heads, 1, head_dim]
        k = block.keys(cache_layer.keys, None)
        logits = (q @ k.transpose(-1, -2))[0, : heads or self.shape.heads, 0] / math.sqrt(self.shape.head_dim) * temperature  # [heads, S*P]
        if frame_mask is not None:
            allowed = frame_mask.bool().repeat_interleave(p)
            if not bool(allowed.any()):
                return torch.zeros(frames, p)
            logits = logits.masked_fill(~allowed, -math.inf)
        weights = torch.softmax(logits, dim=-1).mean(0)
        return weights.reshape(frames, p)


def start_recent_mask(frames: int, start: int, recent: int) -> torch.Tensor:
    """``visible[i, j]``: what frame i attends when it is observed with a start + recent cache:
    itself and the cache as it stood after frame i - 1 (frames < start, and the last ``recent``
    before i)."""
    i = torch.arange(frames).unsqueeze(1)
    j = torch.arange(frames).unsqueeze(0)
    return (j <= i) & ((j < start) | (j >= i - recent))
