"""Long-term memory (Mem4Nav): a reversible transformer writes 2d-dim tokens, an exact index finds them.

Reversible transformer ``R`` (additive coupling, as in RevNets / Reformer): a token ``x`` of
size 2d is split into halves ``(x1, x2)`` and each block computes

    y1 = x1 + F(LN(x2))        F: multi-head self-attention
    y2 = x2 + G(LN(y1))        G: MLP d -> ratio*d -> d with GELU

and the inverse ``x2 = y2 - G(LN(y1))``, ``x1 = y1 - F(LN(x2))``, blocks in reverse order.
Sequence layout for F: the d-vector (after the LayerNorm over all d) is cut into ``chunks``
consecutive pieces of width d/chunks; those pieces are the attention sequence (plus a fixed
per-chunk position embedding, since attention alone cannot tell the pieces apart), attended
with ``heads`` heads, and the output pieces are concatenated back into a d-vector.

Untrained: the paper trains R (and a query projection) end to end with a navigation loss we do
not have. R here is built from a fixed seed (PyTorch's default initialisation under
``torch.manual_seed(seed)``), in eval mode with dropout 0, so it is an exact, deterministic
bijection. The residual output layers (F's output projection, G's last layer) are then scaled by
``init_gain`` (GPT-2 scales the same layers down at init too). With the default init (gain 1) the
untrained R scrambles its input (|R(x) - x| = 12 |x|; the content half keeps cos 0.08 with v),
so L2 distances between tokens say nothing about what was written, and the k-NN step misses:
the best-matching key survived the 32 L2 candidates + cosine re-rank for 62 % of text queries
(gt_hash; 73 % MiniLM). The memory system uses gain 0.03 (|R(x) - x| = 0.34 |x|, content half
cos 0.97 with v), where tokens keep the geometry of what was written: 97 % for both encoders.

Write rule: ``theta_new = R([theta_prev ; v_t])`` with ``theta_prev`` = the first half of the
key's previous token (zeros for a new key), so tokens carry history. The public code instead
takes the first half of ``R^-1(previous token)``, which is the previous *input* theta, i.e. zeros
forever, so its tokens never accumulate anything (its bug 10). Decoding a token gives back
``[theta_prev ; v_t]`` exactly: ``v_s`` (the second half) is the latest vector written there.

Departure: ``theta_prev`` is rescaled to norm ``theta_norm`` before it enters R. An untrained
additive-coupling R adds a roughly constant increment to the first half per write, so a raw theta
grows linearly with the number of writes (norm ~470 after 150 writes at gain 1) and often-seen
places drift away from every query in L2 (with raw theta, 24-45 % of exact-description queries
found their key among the 32 L2 candidates in our test; 100 % with the rescale). The direction
(the history) is kept; ``theta_norm = 0`` carries theta raw, as written in the paper. The system
uses 0.1, about half of one write's increment at gain 0.03 (62 % -> 97 % above needs both).

Index: an exact in-memory L2 index (numpy) with one live row per key; rewriting a key overwrites
its row, and rows of removed keys are reused. The paper uses HNSW (hnswlib), whose labels the
public code never reuses (MemoryError after 20,000 writes). Why not HNSW here: every
observation rewrites its leaf's and its node's token, and an HNSW update is a graph search
(hnswlib at the paper's M = 64 / efConstruction = 500, 768-d: 10 ms per update at 1,000
points, 46 ms at 20,000, against 6 ms for a whole frame's R call), while the live tokens stay
few (one per visited leaf and node: 354 after 1 day of the benchmark home and still 354 after
100,000 replayed observations, 170 days), where the scan costs ~0.1-0.3 ms (1,000 x 768 float32).

Reads (exact, only faster): ``v_s = R^-1(token)[d:]`` is cached per key until the key's next
write (a read decodes every key written since the last read, up to ``WARM_ALL``, not only its
candidates: one batch of work after a burst of writes instead of a decode in every query), and
the query token ``R([0 ; v_q])`` of recurring queries (entity descriptions) per query vector
(LRU). R's batched matmuls round a row differently with the batch size (5e-7), so both run in
fixed-shape batches (chunks of ``DECODE_CHUNK`` / ``QUERY_CHUNK`` rows, zero-padded),
which makes a cached value the one an uncached read would compute, whatever was read with it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from embodied_mem.memory.mem4nav.journal import Journal, record
from embodied_mem.memory.mem4nav.state import keys_from_arrays, keys_to_arrays, shaped
from embodied_mem.runtime import torch_threads


class ChunkSelfAttention(nn.Module):
    """Multi-head self-attention over the ``chunks`` pieces of a d-vector."""

    def __init__(self, dim: int, chunks: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % chunks or (dim // chunks) % heads:
            raise ValueError(f"d={dim} must split into {chunks} chunks whose width divides into {heads} heads")
        self.chunks, self.heads, self.width = chunks, heads, dim // chunks
        self.position = nn.Parameter(0.02 * torch.randn(chunks, self.width))
        self.qkv = nn.Linear(self.width, 3 * self.width)
        self.out = nn.Linear(self.width, self.width)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        sequence = x.reshape(batch, self.chunks, self.width) + self.position
        qkv = self.qkv(sequence).reshape(batch, self.chunks, 3, self.heads, self.width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, chunks, head_dim)
        attended = functional.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        attended = attended.transpose(1, 2).reshape(batch, self.chunks, self.width)
        return self.out(attended).reshape(batch, -1)


class ReversibleBlock(nn.Module):
    def __init__(self, dim: int, chunks: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = round(dim * mlp_ratio)
        self.norm_f = nn.LayerNorm(dim)
        self.attention = ChunkSelfAttention(dim, chunks, heads, dropout)
        self.norm_g = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def f(self, x2: torch.Tensor) -> torch.Tensor:
        return self.attention(self.norm_f(x2))

    def g(self, y1: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm_g(y1))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y1 = x1 + self.f(x2)
        return y1, x2 + self.g(y1)

    def inverse(self, y1: torch.Tensor, y2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x2 = y2 - self.g(y1)
        return y1 - self.f(x2), x2


@dataclass(frozen=True)
class TransformerSpec:
    """Everything that determines R's weights (a checkpoint stores it with a checksum)."""

    dim: int  # d: the size of v_t; tokens are 2d
    depth: int = 6
    heads: int = 8
    chunks: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    init_gain: float = 1.0
    seed: int = 0


class ReversibleTransformer(nn.Module):
    """A stack of reversible blocks on 2d tokens; ``inverse(forward(x)) == x`` up to rounding."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.dim = spec.dim
        # A few tokens per call: one thread is as fast alone and far faster on a busy machine
        # (2 threads spin-wait: 4 tokens took 38 ms with 2 threads vs 6-10 ms with 1 under load).
        self.threads = 1
        with torch.random.fork_rng(devices=[]):  # a fixed init that leaves the caller's RNG alone
            torch.manual_seed(spec.seed)
            self.blocks = nn.ModuleList(
                ReversibleBlock(spec.dim, spec.chunks, spec.heads, spec.mlp_ratio, spec.dropout) for _ in range(spec.depth)
            )
        with torch.no_grad():
            for block in self.blocks:
                for layer in (block.attention.out, block.mlp[3]):
                    layer.weight.mul_(spec.init_gain)
                    layer.bias.mul_(spec.init_gain)
        self.eval()  # dropout off: inversion is exact only with the same (no) masks both ways
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, : self.dim], x[:, self.dim :]
        for block in self.blocks:
            x1, x2 = block(x1, x2)
        return torch.cat([x1, x2], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = y[:, : self.dim], y[:, self.dim :]
        for block in reversed(self.blocks):
            y1, y2 = block.inverse(y1, y2)
        return torch.cat([y1, y2], dim=1)

    def _run(self, function, array: np.ndarray) -> np.ndarray:
        dtype = next(self.parameters()).dtype
        with torch.inference_mode(), torch_threads(self.threads):
            out = function(torch.from_numpy(np.ascontiguousarray(array)).to(dtype))
        return out.numpy()

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        """R on a (n, 2d) array."""
        return self._run(self.forward, tokens)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """R^-1 on a (n, 2d) array."""
        return self._run(self.inverse, tokens)

    def checksum(self) -> str:
        """SHA-256 of the weights (as float32), to refuse tokens written by a different R."""
        if getattr(self, "_checksum", None) is None:
            self._checksum = self._digest()
        return self._checksum

    def _digest(self) -> str:
        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()

    @property
    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())


class TokenIndex:
    """Exact L2 k-NN over one live token per key; rows are reused (never a growing label space)."""

    def __init__(self, dim: int, capacity: int = 256) -> None:
        self.dim = int(dim)
        self.matrix = np.zeros((capacity, self.dim), dtype=np.float32)
        self.sq_norms = np.zeros(capacity, dtype=np.float32)
        self.live = np.zeros(capacity, dtype=bool)
        self.keys: list[Hashable | None] = [None] * capacity
        self.slot_of: dict[Hashable, int] = {}
        self.free: list[int] = list(range(capacity - 1, -1, -1))  # pop() hands out the lowest row
        self.used = 0  # rows [0, used) have ever been handed out

    def __len__(self) -> int:
        return len(self.slot_of)

    def get(self, key: Hashable) -> np.ndarray | None:
        slot = self.slot_of.get(key)
        return None if slot is None else self.matrix[slot]

    def put(self, key: Hashable, token: np.ndarray, journal: Journal | None = None) -> int:
        """Store ``token`` as the one live entry of ``key``; returns its row. Undo (``journal``):
        the old token back in its row, or the new key removed, its row freed and the matrix
        shrunk back if this put grew it."""
        slot = self.slot_of.get(key)
        if journal is not None:
            capacity, used = len(self.keys), self.used
            row = slot if slot is not None else (self.free[-1] if self.free else capacity)
            old_row = self.matrix[row].copy() if row < capacity else None
            old_norm = self.sq_norms[row] if row < capacity else None
            journal(lambda created=slot is None: self._undo_put(key, created, row, old_row, old_norm, capacity, used))
        if slot is None:
            if not self.free:
                self._grow()
            slot = self.free.pop()
            self.slot_of[key], self.keys[slot], self.live[slot] = slot, key, True
            self.used = max(self.used, slot + 1)
        self.matrix[slot] = token
        self.sq_norms[slot] = float(np.dot(self.matrix[slot], self.matrix[slot]))
        return slot

    def remove(self, key: Hashable) -> None:
        slot = self.slot_of.pop(key)
        self.keys[slot], self.live[slot] = None, False
        self.free.append(slot)

    def _undo_put(self, key: Hashable, created: bool, row: int, old_row: np.ndarray | None, old_norm, capacity: int, used: int) -> None:
        if created and key in self.slot_of:
            self.remove(key)  # appends its row to ``free``: undone newest first, ``free`` is as before
        if len(self.keys) > capacity:  # this put grew the index (only when ``free`` was empty)
            self.matrix, self.sq_norms, self.live = self.matrix[:capacity].copy(), self.sq_norms[:capacity].copy(), self.live[:capacity].copy()
            del self.keys[capacity:]
            self.free = [s for s in self.free if s < capacity]
        if old_row is not None:
            self.matrix[row], self.sq_norms[row] = old_row, old_norm
        self.used = used

    def _grow(self) -> None:
        old = len(self.keys)
        self.matrix = np.vstack([self.matrix, np.zeros((old, self.dim), dtype=np.float32)])
        self.sq_norms = np.concatenate([self.sq_norms, np.zeros(old, dtype=np.float32)])
        self.live = np.concatenate([self.live, np.zeros(old, dtype=bool)])
        self.keys += [None] * old
        self.free = list(range(2 * old - 1, old - 1, -1)) + self.free

    def search(self, queries: np.ndarray, m: int) -> list[list[tuple[Hashable, float]]]:
        """For each query row, the ``m`` nearest live keys with squared L2 distances, nearest first."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if not self.slot_of:
            return [[] for _ in queries]
        rows = slice(0, self.used)
        distances = self.sq_norms[rows][None, :] - 2.0 * queries @ self.matrix[rows].T + np.sum(queries**2, axis=1, keepdims=True)
        distances[:, ~self.live[rows]] = np.inf
        m = min(m, len(self.slot_of))
        found = []
        for row in distances:
            top = np.argpartition(row, m - 1)[:m]
            top = top[np.argsort(row[top], kind="stable")]
            found.append([(self.keys[int(s)], float(max(row[s], 0.0))) for s in top])
        return found

    def state(self) -> tuple[list[Hashable], np.ndarray]:
        """Live keys and their tokens, in row order (for checkpoints)."""
        slots = sorted(self.slot_of.values())
        return [self.keys[s] for s in slots], self.matrix[slots].copy().reshape(-1, self.dim)

    @property
    def nbytes(self) -> int:
        return self.matrix.nbytes + self.sq_norms.nbytes + self.live.nbytes


@dataclass
class LtmMatch:
    key: Hashable
    cosine: float  # cos(v_s, v_q) after decoding
    distance: float  # squared L2 between the query token and the stored token
    v_s: np.ndarray


DECODE_CHUNK = 16  # rows per R^-1 call on reads (fixed shape: see the module docstring)
WARM_ALL = 1024  # a read decodes every stale key (not only its candidates) when at most this many are stale
QUERY_CHUNK = 16  # rows per R call for query tokens (fixed shape, as decoding)
QUERY_CACHE = 1024  # query tokens kept (LRU), keyed by the query vector's bytes (3 MB at d = 384)


class LongTermMemory:
    """Token writes through R, exact k-NN candidates, decode and re-rank by cosine."""

    def __init__(self, transformer: ReversibleTransformer, theta_norm: float = 1.0, capacity: int = 256) -> None:
        self.transformer = transformer
        self.dim = transformer.dim
        self.theta_norm = float(theta_norm)
        self.capacity = capacity
        self.index = TokenIndex(2 * self.dim, capacity)
        self._decoded: dict[Hashable, np.ndarray] = {}  # key -> v_s of its current token
        self._stale: dict[Hashable, None] = {}  # live keys whose v_s is not cached (an ordered set)
        self._queries: OrderedDict[bytes, np.ndarray] = OrderedDict()  # v_q bytes -> R([0 ; v_q])

    def __len__(self) -> int:
        return len(self.index)

    def carry(self, token: np.ndarray | None) -> np.ndarray:
        """theta_prev from a key's previous token: its first half, rescaled to ``theta_norm`` (> 0)."""
        if token is None:
            return np.zeros(self.dim, dtype=np.float32)
        theta = token[: self.dim].astype(np.float32)
        norm = float(np.linalg.norm(theta))
        if self.theta_norm > 0 and norm > 0:
            theta = theta * np.float32(self.theta_norm / norm)
        return theta

    def compute_writes(self, keys: list[Hashable], vectors: np.ndarray) -> list[np.ndarray]:
        """The tokens that writing ``vectors`` under ``keys`` (in order) would store; changes nothing.

        All distinct keys go through R in one batch. A key repeated within the list is written
        in a later round, so its second write carries the first write's token as history.
        """
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(keys), self.dim)
        rounds: list[list[int]] = []
        seen: dict[Hashable, int] = {}
        for position, key in enumerate(keys):
            occurrence = seen.get(key, 0)
            seen[key] = occurrence + 1
            if occurrence == len(rounds):
                rounds.append([])
            rounds[occurrence].append(position)
        tokens: list[np.ndarray | None] = [None] * len(keys)
        latest: dict[Hashable, np.ndarray] = {}  # tokens computed in an earlier round of this call
        for positions in rounds:
            inputs = np.zeros((len(positions), 2 * self.dim), dtype=np.float32)
            for row, position in enumerate(positions):
                key = keys[position]
                inputs[row, : self.dim] = self.carry(latest[key] if key in latest else self.index.get(key))
                inputs[row, self.dim :] = vectors[position]
            for position, token in zip(positions, self.transformer.encode(inputs).astype(np.float32)):
                tokens[position] = token
                latest[keys[position]] = token
        return tokens

    def commit(self, keys: list[Hashable], tokens: list[np.ndarray], journal: Journal | None = None) -> None:
        """Store the tokens. Undo (``journal``): the index as it was, and each key's read cache
        (its cached v_s, whether it was stale) as it was."""
        for key, token in zip(keys, tokens):
            if journal is not None:
                journal(lambda key=key, decoded=self._decoded.get(key), stale=key in self._stale: self._undo_caches(key, decoded, stale))
            self.index.put(key, token, journal)
            self._decoded.pop(key, None)  # the cached v_s was the old token's
            self._stale[key] = None

    def _undo_caches(self, key: Hashable, decoded: np.ndarray | None, stale: bool) -> None:
        if decoded is None:
            self._decoded.pop(key, None)
        else:
            self._decoded[key] = decoded
        if not stale:
            self._stale.pop(key, None)  # a key that was stale stays in its place of the ordered set

    def write(self, keys: list[Hashable], vectors: np.ndarray, journal: Journal | None = None) -> list[np.ndarray]:
        tokens = self.compute_writes(keys, vectors)
        self.commit(keys, tokens, journal)
        return tokens

    def remove(self, key: Hashable) -> None:
        """Forget ``key`` (its token and cached v_s)."""
        self.index.remove(key)
        self._decoded.pop(key, None)
        self._stale.pop(key, None)

    def query_tokens(self, queries: np.ndarray, remember: bool = True) -> np.ndarray:
        """q = R([0 ; v_q]) per row (the paper's learned Proj([v_t ; p_t]) is untrained here),
        looked up in (and, if ``remember``, added to) the query cache. The rows not cached go
        through R together, in zero-padded chunks of ``QUERY_CHUNK`` (fixed shape: a row's token
        is the same whatever rows it was asked with, or in which position)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        out = np.empty((len(queries), 2 * self.dim), dtype=np.float32)
        missing: dict[bytes, list[int]] = {}
        for row, query in enumerate(queries):
            name = query.tobytes()
            token = self._queries.get(name)
            if token is None:
                missing.setdefault(name, []).append(row)
            else:
                self._queries.move_to_end(name)
                out[row] = token
        names = list(missing)
        for start in range(0, len(names), QUERY_CHUNK):
            chunk = names[start : start + QUERY_CHUNK]
            inputs = np.zeros((QUERY_CHUNK, 2 * self.dim), dtype=np.float32)
            inputs[: len(chunk), self.dim :] = queries[[missing[name][0] for name in chunk]]
            tokens = self.transformer.encode(inputs).astype(np.float32)
            for n, name in enumerate(chunk):
                out[missing[name]] = tokens[n]
                if remember:
                    self._queries[name] = tokens[n]
        while len(self._queries) > QUERY_CACHE:
            self._queries.popitem(last=False)
        return out

    def decoded(self, keys: list[Hashable]) -> list[np.ndarray]:
        """``v_s = R^-1(token)[d:]`` of each key's current token (cached until its next write).

        When few keys are stale (at most ``WARM_ALL``: those written since the last read), all of
        them are decoded now, in full chunks, so the reads after a burst of writes find them
        cached; else only ``keys``.
        """
        missing = [key for key in dict.fromkeys(keys) if key not in self._decoded]
        if missing and len(self._stale) <= WARM_ALL:
            missing = list(dict.fromkeys([*missing, *(key for key in self._stale if key in self.index.slot_of)]))
        for start in range(0, len(missing), DECODE_CHUNK):
            chunk = missing[start : start + DECODE_CHUNK]
            tokens = np.zeros((DECODE_CHUNK, 2 * self.dim), dtype=np.float32)
            tokens[: len(chunk)] = np.stack([self.index.get(key) for key in chunk])
            decoded = self.transformer.decode(tokens)
            for row, key in enumerate(chunk):
                self._decoded[key] = decoded[row, self.dim :].astype(np.float32)
                self._stale.pop(key, None)
        return [self._decoded[key] for key in keys]

    def settle(self) -> int:
        """Decode every key written since the last read now (the deferred part of reads);
        returns how many. Reads then find them cached, with the values they would compute."""
        stale = [key for key in self._stale if key in self.index.slot_of]
        if stale:
            self.decoded(stale)
        return len(stale)

    def retrieve(self, queries: np.ndarray, candidates: int, m: int, remember: bool = True) -> list[list[LtmMatch]]:
        """Per query: top-``candidates`` tokens by L2, decoded, re-ranked by cos(v_s, v_q), top ``m``.
        ``remember``: keep the query tokens (for queries that recur, e.g. entity descriptions)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if len(self.index) == 0:
            return [[] for _ in queries]
        found = self.index.search(self.query_tokens(queries, remember), candidates)
        union = list(dict.fromkeys(key for row in found for key, _ in row))
        decoded = self.decoded(union)
        column = {key: n for n, key in enumerate(union)}
        # Every cosine at once (many goals ask for dozens of entities, each 32 candidates).
        v_s = np.array(decoded, dtype=np.float64).reshape(len(union), self.dim)
        q = queries.astype(np.float64)
        scale = np.linalg.norm(q, axis=1)[:, None] * np.linalg.norm(v_s, axis=1)[None, :]
        cosines = np.divide(q @ v_s.T, scale, out=np.zeros((len(q), len(union))), where=scale > 0)
        results = []
        for n, row in enumerate(found):
            matches = [LtmMatch(key, float(cosines[n, column[key]]), distance, decoded[column[key]]) for key, distance in row]
            matches.sort(key=lambda match: -match.cosine)
            results.append(matches[:m])
        return results

    @property
    def nbytes(self) -> int:
        """The index, plus the decode cache at the size reads bring it to (one v_s per live key),
        whether or not a read came yet, so ``stats()`` does not depend on what was asked.

        Reads decode stale keys lazily (``decoded``): counting ``len(self._decoded)`` made the
        size grow after the first recall. Counting every live key gives the number that
        finishing that deferred work gives, without running R^-1 in ``stats()``. The query-token
        LRU (at most ``QUERY_CACHE`` rows, 3 MB) is left out: it holds what was asked, not
        what was seen, and no amount of finishing work makes it the same for two histories of
        recalls.
        """
        return self.index.nbytes + 4 * self.dim * len(self.index)

    def clear_caches(self) -> None:
        """Drop the read caches (they refill, with the same values, on the next reads)."""
        self._decoded.clear()
        self._queries.clear()
        self._stale = dict.fromkeys(self.index.slot_of)

    def clear(self) -> None:
        self.index = TokenIndex(2 * self.dim, self.capacity)
        self.clear_caches()

    # ------------------------------------------------------------------ checkpoints
    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """R's spec and weight checksum, theta's norm, and the live keys with their tokens (the
        read caches are not saved: they are recomputed, identically, on the first reads)."""
        keys, tokens = self.index.state()
        kinds, kind_index, values = keys_to_arrays(keys)
        state = {
            "transformer": {"spec": asdict(self.transformer.spec), "checksum": self.transformer.checksum()},
            "theta_norm": self.theta_norm,
            "key_kinds": kinds,
        }
        return state, {"key_kind": kind_index, "key_value": values, "tokens": tokens}

    @classmethod
    def from_state(cls, transformer: ReversibleTransformer, state: dict, arrays: dict[str, np.ndarray], capacity: int = 256) -> LongTermMemory:
        """A new LTM over ``transformer``; ``ValueError`` if the tokens were written by another R
        (spec or weight checksum differ) or the arrays are not consistent."""
        saved = state["transformer"]
        if saved["checksum"] != transformer.checksum() or saved["spec"] != asdict(transformer.spec):
            raise ValueError("the checkpoint's tokens were written by a different reversible transformer (weights checksum differs)")
        ltm = cls(transformer, float(state["theta_norm"]), capacity)
        n = len(arrays["key_kind"])
        keys = keys_from_arrays(state["key_kinds"], shaped(arrays, "key_kind", (n,), "i"), shaped(arrays, "key_value", (n,), "i"), allow_free=False)
        tokens = shaped(arrays, "tokens", (n, 2 * ltm.dim), "f")
        for key, token in zip(keys, tokens):
            ltm.index.put(key, token.astype(np.float32))
        ltm._stale = dict.fromkeys(keys)
        return ltm

