"""Principal scene components (PSC): M3's greedy similarity de-duplication of the feature bank.

The rule (``filter_embeddings_efficient`` in the public code, ``lmm/clip/fea2mem.py``): walk the
raw features ``f_i`` in storage order, all normalised. For each ``i`` not yet covered, let
``S_i = {j : cos(f_i, f_j) >= tau}``. If no ``j`` in ``S_i`` is covered, keep ``i`` and mark all
of ``S_i`` covered; otherwise skip ``i`` and mark nothing. The bank holds the kept rows raw
(unnormalised). The public script never writes its bank (``torch.save`` is commented out);
``PrincipalSceneComponents`` keeps and checkpoints it.

Known properties, kept on purpose (they are the paper's rule): the result depends on the row
order, and a skipped row can end with no bank entry at ``cos >= tau`` (the coverage gap);
``reconstruction_error`` measures that gap.
"""

from __future__ import annotations

import numpy as np


def _normalise(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def psc_reduce(features: np.ndarray, tau: float) -> np.ndarray:
    """Indices (in order) of the rows the greedy PSC pass keeps from ``features`` (n, D)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be (n, D), got shape {features.shape}")
    if not np.isfinite(tau):
        raise ValueError(f"tau must be finite, got {tau}")
    n = features.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    unit = _normalise(features)
    similar = (unit @ unit.T) >= tau  # S_i as rows
    covered = np.zeros(n, dtype=bool)
    kept = []
    for i in range(n):
        if covered[i]:
            continue
        neighbours = similar[i]
        if not covered[neighbours].any():
            kept.append(i)
            covered[neighbours] = True
    return np.asarray(kept, dtype=np.int64)


def reconstruction_error(features: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Per raw feature, ``1 - max_k cos(f_i, M_k)`` (not bounded by tau: the coverage gap)."""
    if len(bank) == 0:
        return np.ones(len(features))
    return 1.0 - (_normalise(np.asarray(features, np.float64)) @ _normalise(np.asarray(bank, np.float64)).T).max(axis=1)


class PrincipalSceneComponents:
    """The distinct raw features seen so far (in order of first appearance) and the bank.

    Our features are piecewise constant (one embedding per detection text), so the pixel rows of
    all views are these distinct rows repeated; duplicates never change the greedy pass (a
    duplicate of a kept row is covered by it, one of a skipped row is skipped again), so the
    pass over the distinct rows in order of first appearance gives the bank the pass over every
    pixel would. The paper builds the bank once, offline; an online memory sees new features
    as it goes, and appending rows can change earlier decisions, so the bank is rebuilt with
    the same rule whenever a new feature appears (cheap: hundreds of rows).
    """

    def __init__(self, dim: int, tau: float) -> None:
        self.dim, self.tau = int(dim), float(tau)
        self.texts: list[str] = []
        self.features = np.zeros((0, self.dim), dtype=np.float32)
        self.kept = np.zeros(0, dtype=np.int64)
        self._index: dict[str, int] = {}

    @property
    def bank(self) -> np.ndarray:
        """The PSC bank M (n_bank, D): raw kept rows."""
        return self.features[self.kept]

    def index_of(self, text: str) -> int | None:
        return self._index.get(text)

    def add(self, texts: list[str], vectors: np.ndarray) -> list[int]:
        """Feature rows for ``texts`` (new ones appended); the bank is rebuilt if any is new."""
        rows, new = [], False
        for text, vector in zip(texts, vectors):
            row = self._index.get(text)
            if row is None:
                row = len(self.texts)
                self.texts.append(text)
                self._index[text] = row
                self.features = np.concatenate([self.features, np.asarray(vector, np.float32).reshape(1, self.dim)])
                new = True
            rows.append(row)
        if new:
            self.kept = psc_reduce(self.features, self.tau)
        return rows

    def copy(self) -> PrincipalSceneComponents:
        other = PrincipalSceneComponents(self.dim, self.tau)
        other.texts, other.features, other.kept = list(self.texts), self.features.copy(), self.kept.copy()
        other._index = dict(self._index)
        return other

    def nbytes(self) -> int:
        return int(self.features.nbytes + self.kept.nbytes + sum(len(t) for t in self.texts))

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {"texts": list(self.texts), "tau": self.tau}, {"psc_features": self.features, "psc_kept": self.kept}

    @staticmethod
    def from_state(state: dict, arrays: dict[str, np.ndarray], dim: int, tau: float) -> PrincipalSceneComponents:
        texts = [str(t) for t in state["texts"]]
        features = np.asarray(arrays["psc_features"])
        kept = np.asarray(arrays["psc_kept"])
        if features.dtype.kind != "f" or features.shape != (len(texts), dim) or not np.all(np.isfinite(features)):
            raise ValueError(f"psc_features has shape {features.shape}, expected ({len(texts)}, {dim}) finite floats")
        if kept.dtype.kind not in "iu" or kept.ndim != 1:
            raise ValueError("psc_kept must be a 1-D integer array")
        if len(set(texts)) != len(texts):
            raise ValueError("psc texts are not distinct")
        if float(state["tau"]) != float(tau):
            raise ValueError(f"psc tau {state['tau']} does not match the config's {tau}")
        if not np.array_equal(kept, psc_reduce(features, tau)):  # the bank is a function of the rows
            raise ValueError("psc_kept is not the greedy bank of psc_features")
        other = PrincipalSceneComponents(dim, tau)
        other.texts, other.features, other.kept = texts, features.astype(np.float32), kept.astype(np.int64)
        other._index = {t: n for n, t in enumerate(texts)}
        return other
