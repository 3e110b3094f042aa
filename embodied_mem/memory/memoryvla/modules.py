"""MemoryVLA's small learned modules (torch), after ``vla/memory_vla.py`` of the public code.

- ``timestep_encoding``: the sinusoid ``[cos(t f_i), sin(t f_i)]``, ``f_i = exp(-ln(10000) i / half)``
  (GLIDE / DiT form, cos first), zero-padded when ``dim`` is odd.
- ``TimestepEmbedder``: sinusoid -> Linear -> SiLU -> Linear (frequency dim = ``D // 4``, vla).
- ``CrossBlock``: one retrieval block, single head, no dropout (vla):
  ``q <- LN(q + softmax(W_q q (W_k K)^T / sqrt(D)) W_v V)``, ``q <- LN(q + FFN(q))``,
  FFN = Linear(D, 4D) - GELU - Linear(4D, D). It also returns its attention weights.
- ``GateFusion``: ``g = sigmoid(W_g [x ; r] + b_g)``, out ``g * x + (1 - g) * r``; W_g, b_g ~ N(0, 1e-3).
- ``StreamMemory``: one stream's retrieval blocks, timestep embedder and gate (the paper learns
  one set per stream: perceptual and cognitive).
- ``BottleneckSE``: the vla compressor (1x1 conv C_in -> C_mid, ReLU; squeeze-excite on C_mid
  with C_mid // 16; 1x1 conv C_mid -> C_out), here over our small image encoder's feature grid.
- ``ImageEncoder``: the substitute for DINOv2 + SigLIP patch features (section "Substitutions"
  in the package docstring): rgb -> 64x64 -> three stride-2 convs -> a 4x4 grid -> BottleneckSE.
- ``CognitiveEncoder``: the substitute for the LLM's EOS hidden state: Linear(384 -> d_c) + LayerNorm
  over the MiniLM embedding of what the step perceived (LayerNorm gives the token the scale of
  the retrieval blocks' LayerNorm outputs, as an LLM hidden state is not a unit vector).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_encoding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(T,) timesteps (may be fractional) -> (T, dim) sinusoids, cos half first."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.reshape(-1, 1).to(torch.float32) * freqs[None]
    out = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        out = torch.cat([out, torch.zeros_like(out[:, :1])], dim=-1)
    return out


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, frequency_dim: int) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_encoding(t, self.frequency_dim))


class CrossBlock(nn.Module):
    """Single-head cross-attention + FFN, post-LayerNorm (vla ``CrossTransformerBlock``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.ffn_norm = nn.LayerNorm(dim)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (N, D), keys / values (M, D) -> (N, D) output, (N, M) attention weights."""
        q, k, v = self.q_proj(query), self.k_proj(keys), self.v_proj(values)
        weights = torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), dim=-1)
        x = self.attn_norm(query + weights @ v)
        return self.ffn_norm(x + self.ffn(x)), weights


class GateFusion(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * dim, dim)
        nn.init.normal_(self.proj.weight, mean=0.0, std=1e-3)
        nn.init.normal_(self.proj.bias, mean=0.0, std=1e-3)

    def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.proj(torch.cat([x, r], dim=-1)))
        return gate * x + (1.0 - gate) * r


class StreamMemory(nn.Module):
    """Retrieval (cross-attention over the bank, timestep encodings on the keys) and fusion."""

    def __init__(self, dim: int, layers: int = 2, use_timestep_pe: bool = True, fusion: str = "gate") -> None:
        super().__init__()
        if fusion not in ("gate", "add"):
            raise ValueError(f"fusion must be 'gate' or 'add', got {fusion!r}")
        self.dim, self.fusion = dim, fusion
        self.blocks = nn.ModuleList([CrossBlock(dim) for _ in range(layers)])
        self.timestep = TimestepEmbedder(dim, max(dim // 4, 2)) if use_timestep_pe else None
        self.gate = GateFusion(dim) if fusion == "gate" else None

    def retrieve(self, x: torch.Tensor, memory: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (N, D) working tokens; memory (T, N_m, D) bank entries; times (T,).

        Returns r (N, D) and the last block's attention (N, T * N_m), or (x, None) for an empty
        bank (vla: with no history the working memory stands in for the retrieved one).
        """
        if memory.shape[0] == 0:
            return x, None
        entries, tokens, dim = memory.shape
        flat = memory.reshape(entries * tokens, dim)
        if self.timestep is not None:
            keys = flat + self.timestep(times).repeat_interleave(tokens, dim=0)  # PE on keys only
        else:
            keys = flat
        query, weights = x, None
        for block in self.blocks:
            query, weights = block(query, keys, flat)
        return query, weights

    def fuse(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            return 0.5 * (x + r)
        return self.gate(x, r)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        r, _ = self.retrieve(x, memory, times)
        return self.fuse(x, r)


class BottleneckSE(nn.Module):
    """vla's compressor: (B, C_in, H, W) -> (B, H*W, C_out) tokens."""

    def __init__(self, c_in: int, c_mid: int, c_out: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(c_in, c_mid, 1, bias=False)
        squeeze = max(c_mid // 16, 1)
        self.excite = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_mid, squeeze, 1), nn.ReLU(), nn.Conv2d(squeeze, c_mid, 1), nn.Sigmoid())
        self.expand = nn.Conv2d(c_mid, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.relu(self.reduce(x))
        out = self.expand(z * self.excite(z))
        return out.flatten(2).transpose(1, 2)


class ImageEncoder(nn.Module):
    """rgb uint8 (B, H, W, 3) -> perceptual tokens (B, grid*grid, d_p)."""

    def __init__(self, d_p: int, grid: int = 4, width: int = 32, size: int = 64) -> None:
        super().__init__()
        if size % (8 * grid):
            raise ValueError(f"image size {size} must be a multiple of 8 * grid ({8 * grid})")
        self.size, self.grid = size, grid
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.compress = BottleneckSE(2 * width, 2 * d_p, d_p)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = rgb.permute(0, 3, 1, 2).to(torch.float32) / 255.0 - 0.5
        x = F.interpolate(x, size=(self.size, self.size), mode="area")
        x = self.stem(x)
        x = F.adaptive_avg_pool2d(x, self.grid)
        return self.compress(x)


class PatchCompressor(nn.Module):
    """A VLM's patch features (B, N_v, C_v), N_v a square, -> (B, grid*grid, d_p) (``vlm`` mode)."""

    def __init__(self, c_in: int, d_p: int, grid: int) -> None:
        super().__init__()
        self.grid = grid
        self.compress = BottleneckSE(c_in, 2 * d_p, d_p)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        batch, count, channels = patches.shape
        side = int(round(math.sqrt(count)))
        if side * side != count:
            raise ValueError(f"vlm patch features have no square grid: {count} patches")
        x = patches.to(torch.float32).transpose(1, 2).reshape(batch, channels, side, side)
        return self.compress(F.adaptive_avg_pool2d(x, self.grid))


class CognitiveEncoder(nn.Module):
    """MiniLM embedding (B, 384) -> cognitive token (B, 1, d_c)."""

    def __init__(self, in_dim: int, d_c: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, d_c)
        self.norm = nn.LayerNorm(d_c)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(embedding.to(torch.float32)))[:, None, :]


class MemoryVLAModules(nn.Module):
    """Every learned part, one state dict (what ``train.py`` fits and saves)."""

    def __init__(
        self, d_p: int, d_c: int, text_dim: int, grid: int, layers: int, use_timestep_pe: bool, fusion: str, vision_dim: int | None = None
    ) -> None:
        super().__init__()
        # Our small image encoder over rgb, or (``vlm`` mode) a compressor of the VLM's patches.
        self.image = ImageEncoder(d_p, grid) if vision_dim is None else PatchCompressor(vision_dim, d_p, grid)
        self.cognitive = CognitiveEncoder(text_dim, d_c)
        self.per = StreamMemory(d_p, layers, use_timestep_pe, fusion)
        self.cog = StreamMemory(d_c, layers, use_timestep_pe, fusion)
