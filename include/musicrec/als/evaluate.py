"""Offline evaluation: top-k for held-out days, ALS against a popularity baseline.

Protocol (docs/sample-data.md "seen items filtered"): the model is trained on the window minus its
last ``eval_days``; for every user with training interactions and at least one *new* track in the
held-out days, both rankers recommend k tracks the user has not interacted with in training, and
the relevant set is the held-out tracks the user had not interacted with before. That is what
``home()`` serves (it excludes played tracks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

K = 10


@dataclass
class Metrics:
    precision_at_10: float
    recall_at_10: float
    ndcg_at_10: float
    coverage: float  # distinct recommended tracks / tracks in the matrix
    users: int

    def as_dict(self) -> dict[str, float]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def top_k_scores(user_factors: np.ndarray, item_factors: np.ndarray, users: np.ndarray, exclude: sp.csr_matrix,
                 k: int = K, batch: int = 512) -> np.ndarray:
    """(len(users), k) item indices by descending x_u·y_i, excluded cells never returned."""
    out = np.empty((len(users), k), dtype=np.int64)
    y = item_factors.astype(np.float32)
    for start in range(0, len(users), batch):
        rows = users[start:start + batch]
        scores = user_factors[rows].astype(np.float32) @ y.T
        ex = exclude[rows]
        scores[np.repeat(np.arange(len(rows)), np.diff(ex.indptr)), ex.indices] = -np.inf
        out[start:start + len(rows)] = _top(scores, k)
    return out


def top_k_popular(popularity: np.ndarray, users: np.ndarray, exclude: sp.csr_matrix, k: int = K) -> np.ndarray:
    order = np.argsort(-popularity, kind="stable")
    head = order[: k + int(np.diff(exclude.indptr).max(initial=0)) + 1]
    out = np.empty((len(users), k), dtype=np.int64)
    for n, u in enumerate(users):
        seen = set(exclude.indices[exclude.indptr[u]:exclude.indptr[u + 1]].tolist())
        out[n] = [i for i in head if i not in seen][:k]
    return out


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    picked = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -picked), axis=1)  # score desc, then index asc: deterministic
    return np.take_along_axis(part, order, axis=1)


def score(recs: np.ndarray, users: np.ndarray, relevant: sp.csr_matrix, n_items: int, k: int = K) -> Metrics:
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    prec, rec, ndcg = [], [], []
    for n, u in enumerate(users):
        rel = set(relevant.indices[relevant.indptr[u]:relevant.indptr[u + 1]].tolist())
        hits = np.array([i in rel for i in recs[n][:k]], dtype=bool)
        prec.append(hits.sum() / k)
        rec.append(hits.sum() / len(rel))
        ideal = discounts[: min(k, len(rel))].sum()
        ndcg.append(float((discounts[: len(hits)] * hits).sum() / ideal))
    return Metrics(float(np.mean(prec)) if prec else 0.0, float(np.mean(rec)) if rec else 0.0,
                   float(np.mean(ndcg)) if ndcg else 0.0,
                   float(len(np.unique(recs[:, :k])) / n_items) if len(users) else 0.0, len(users))


def evaluation_users(train: sp.csr_matrix, test: sp.csr_matrix) -> tuple[np.ndarray, sp.csr_matrix]:
    """Users to score and their relevant (new) held-out tracks."""
    seen = (train > 0).astype(np.int8)
    held = (test > 0).astype(np.int8)
    new = (held - held.multiply(seen)).tocsr()
    new.eliminate_zeros()
    has_train = np.diff(seen.indptr) > 0
    has_new = np.diff(new.indptr) > 0
    return np.flatnonzero(has_train & has_new), new


def evaluate(user_factors: np.ndarray, item_factors: np.ndarray, train: sp.csr_matrix, test: sp.csr_matrix,
             k: int = K) -> dict[str, dict[str, float]]:
    users, relevant = evaluation_users(train, test)
    if len(users) == 0:
        raise ValueError("no user has new tracks in the held-out days: cannot evaluate (empty or too short window)")
    seen = (train > 0).tocsr()
    n_items = train.shape[1]
    als = score(top_k_scores(user_factors, item_factors, users, seen, k), users, relevant, n_items, k)
    popularity = np.asarray(train.sum(axis=0)).ravel()
    pop = score(top_k_popular(popularity, users, seen, k), users, relevant, n_items, k)
    return {"als": als.as_dict(), "popularity": pop.as_dict()}
