"""The user×track interaction matrix of a window, built by DuckDB from the lake (bounded memory).

Rows are users, columns tracks, both in sorted id order (deterministic). A cell holds the sum of
the action weights of that pair's events; pairs summing to <= 0 (only skips) are no interaction.
``train`` holds events before ``cut`` (the evaluation split), ``test`` those from ``cut`` on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

import duckdb
import numpy as np
import scipy.sparse as sp

from musicrec.lake.reader import _ts_literal

log = logging.getLogger(__name__)


class EmptyWindow(ValueError):
    """The window holds no positive interaction: nothing to train on."""


@dataclass
class Interactions:
    users: np.ndarray  # user ids (str), row order
    items: np.ndarray  # track ids (str), column order
    train: sp.csr_matrix  # weights before the cut
    test: sp.csr_matrix  # weights from the cut on

    @cached_property
    def full(self) -> sp.csr_matrix:
        return (self.train + self.test).tocsr()

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.users), len(self.items)


def confidence(weights: sp.csr_matrix, alpha: float, kind: str = "linear") -> sp.csr_matrix:
    out = weights.astype(np.float32, copy=True)
    out.eliminate_zeros()
    if kind == "log":
        out.data = (1.0 + alpha * np.log1p(out.data)).astype(np.float32)
    else:
        out.data = (1.0 + alpha * out.data).astype(np.float32)
    return out


def load(con: duckdb.DuckDBPyConnection, weights: dict[str, float], cut: datetime, view: str = "events"
         ) -> Interactions:
    """Interactions from ``view`` (the window's deduplicated events), split at ``cut``."""
    case = " ".join(f"WHEN '{a}' THEN {float(w)!r}" for a, w in sorted(weights.items()))
    cut_sql = _ts_literal(cut)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE pairs AS
        SELECT user_id, track_id,
               coalesce(sum(w) FILTER (WHERE ts < {cut_sql}), 0) AS w_train,
               coalesce(sum(w) FILTER (WHERE ts >= {cut_sql}), 0) AS w_test
        FROM (SELECT user_id, track_id, ts, CASE action {case} ELSE 0.0 END AS w FROM {view})
        GROUP BY user_id, track_id
        HAVING sum(w) > 0
    """)
    users = np.array([r[0] for r in con.execute("SELECT DISTINCT user_id FROM pairs ORDER BY 1").fetchall()],
                     dtype=object)
    items = np.array([r[0] for r in con.execute("SELECT DISTINCT track_id FROM pairs ORDER BY 1").fetchall()],
                     dtype=object)
    if len(users) == 0:
        raise EmptyWindow("the window holds no interaction with a positive weight")
    arrays = con.execute("""
        WITH u AS (SELECT user_id, (row_number() OVER (ORDER BY user_id) - 1)::INTEGER AS u
                   FROM (SELECT DISTINCT user_id FROM pairs)),
             i AS (SELECT track_id, (row_number() OVER (ORDER BY track_id) - 1)::INTEGER AS i
                   FROM (SELECT DISTINCT track_id FROM pairs))
        SELECT u.u, i.i, p.w_train::FLOAT AS w_train, p.w_test::FLOAT AS w_test
        FROM pairs p JOIN u USING (user_id) JOIN i USING (track_id)
    """).fetchnumpy()
    con.execute("DROP TABLE pairs")
    rows, cols = np.asarray(arrays["u"]), np.asarray(arrays["i"])
    shape = (len(users), len(items))

    def csr(values: np.ndarray) -> sp.csr_matrix:
        keep = values > 0
        m = sp.csr_matrix((values[keep].astype(np.float32), (rows[keep], cols[keep])), shape=shape)
        m.sort_indices()
        return m

    inter = Interactions(users, items, csr(np.asarray(arrays["w_train"])), csr(np.asarray(arrays["w_test"])))
    log.info("interactions: %d users x %d tracks, %d train + %d test pairs", *shape, inter.train.nnz,
             inter.test.nnz)
    return inter
