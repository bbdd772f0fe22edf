"""ALS library: params and versions, the interaction matrix, both trainers, the evaluation, the gate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pytest
import scipy.sparse as sp

from musicrec.als import backends, evaluate, matrix
from musicrec.als.params import AlsParams, collection_name, version_of

# ----------------------------------------------------------------------------- params

INPUTS = [{"path": "listens/date=2009-05-01/import-x.parquet", "sha256": "a" * 64},
          {"path": "listens/date=2009-05-02/import-x.parquet", "sha256": "b" * 64}]


def test_version_is_deterministic_and_changes_with_params_and_inputs():
    end = datetime(2009, 5, 3, tzinfo=UTC)
    a, b = AlsParams(), AlsParams()
    assert a.version(end, INPUTS) == b.version(end, list(reversed(INPUTS)))  # the order of the inputs is not identity
    v = a.version(end, INPUTS)
    assert v.startswith("20090503_") and len(v) == len("20090503_") + 6
    assert AlsParams(factors=32).version(end, INPUTS) != v
    assert AlsParams(weights={"skip": 0.1}).version(end, INPUTS) != v
    # a late partition inside the window, or a re-processed day (new bytes, new sha256): a new version
    late = INPUTS + [{"path": "listens/date=2009-05-02/daily.parquet", "sha256": "c" * 64}]
    assert a.version(end, late) != v
    assert a.version(end, [INPUTS[0], {**INPUTS[1], "sha256": "d" * 64}]) != v
    # the same window end with another window length is another model
    assert AlsParams(window_days=60).version(end, INPUTS) != v
    with pytest.raises(ValueError, match="sha256"):
        a.version(end, [{"path": "listens/date=2009-05-01/x.parquet", "sha256": None}])
    assert collection_name(v) == f"music_collection_v{v}"
    assert version_of(collection_name("x_1")) == "x_1" and version_of("other") is None


def test_params_from_conf_casts_and_rejects_bad_values():
    p = AlsParams.from_conf({"factors": "16", "alpha": "10", "weights": {"skip": "0.2"}, "unknown": 1,
                             "iterations": ""})
    assert p.factors == 16 and p.alpha == 10.0 and p.iterations == AlsParams().iterations
    assert p.weights == {"complete": 1.0, "listen": 0.5, "skip": 0.2}
    with pytest.raises(ValueError, match="factors=0.*alpha=0"):
        AlsParams(factors=0, alpha=0)
    with pytest.raises(ValueError, match="window_days"):
        AlsParams(window_days=7, eval_days=7)
    with pytest.raises(ValueError, match="unknown actions"):
        AlsParams(weights={"like": 1.0})
    with pytest.raises(ValueError, match="confidence"):
        AlsParams(confidence="sqrt")


# ----------------------------------------------------------------------------- matrix

def _events(rows):
    con = duckdb.connect()
    con.execute("CREATE TABLE ev (user_id VARCHAR, track_id VARCHAR, ts TIMESTAMPTZ, action VARCHAR)")
    if rows:
        con.executemany("INSERT INTO ev VALUES (?, ?, ?, ?)", rows)
    con.execute("CREATE VIEW events AS SELECT * FROM ev")
    return con


def test_matrix_sums_action_weights_and_splits_at_the_cut():
    t0 = datetime(2009, 1, 1, tzinfo=UTC)
    cut = t0 + timedelta(days=10)
    con = _events([
        ("u1", "a", t0, "listen"), ("u1", "a", t0 + timedelta(hours=1), "complete"),  # 1.5 in train
        ("u1", "b", t0, "skip"),  # only a skip: no interaction
        ("u2", "b", t0, "listen"), ("u2", "c", cut, "complete"),  # c is held out
        ("u3", "c", cut + timedelta(days=1), "listen"),  # u3 only in the test days
    ])
    inter = matrix.load(con, {"complete": 1.0, "listen": 0.5, "skip": 0.0}, cut)
    assert list(inter.users) == ["u1", "u2", "u3"] and list(inter.items) == ["a", "b", "c"]
    assert inter.train.toarray().tolist() == [[1.5, 0, 0], [0, 0.5, 0], [0, 0, 0]]
    assert inter.test.toarray().tolist() == [[0, 0, 0], [0, 0, 1.0], [0, 0, 0.5]]
    conf = matrix.confidence(inter.full, alpha=40.0)
    assert conf[0, 0] == pytest.approx(61.0) and conf.nnz == 4
    assert matrix.confidence(inter.full, 40.0, "log")[0, 0] == pytest.approx(1 + 40 * np.log1p(1.5))


def test_matrix_of_an_empty_or_skip_only_window_is_a_clear_error():
    t0 = datetime(2009, 1, 1, tzinfo=UTC)
    with pytest.raises(matrix.EmptyWindow):
        matrix.load(_events([("u1", "a", t0, "skip")]), {"complete": 1.0, "listen": 0.5, "skip": 0.0}, t0)
    with pytest.raises(matrix.EmptyWindow):
        matrix.load(_events([]), {"complete": 1.0, "listen": 0.5, "skip": 0.0}, t0)


# ----------------------------------------------------------------------------- trainers

def planted(users=120, items=300, clusters=4, per_user=25, seed=0) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Users in taste clusters, each listening mostly inside its cluster's block of items."""
    rng = np.random.default_rng(seed)
    user_cluster = rng.integers(0, clusters, users)
    item_cluster = np.arange(items) % clusters
    rows, cols = [], []
    for u in range(users):
        inside = np.flatnonzero(item_cluster == user_cluster[u])
        picks = rng.choice(inside, per_user, replace=False)
        rows += [u] * per_user
        cols += picks.tolist()
    w = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(users, items))
    return matrix.confidence(w, 40.0), user_cluster, item_cluster


def test_auto_backend_explains_its_choice():
    chosen, why = backends.choose("auto")
    assert chosen in {"implicit-gpu", "torch-cuda", "implicit-cpu"} and why
    assert backends.choose("torch-cpu") == ("torch-cpu", "asked for")
    with pytest.raises(backends.TrainingError, match="unknown backend"):
        backends.choose("tensorflow")
    if not backends.torch_cuda_available()[0]:
        assert backends.choose("torch")[0] == "torch-cpu"
        with pytest.raises(backends.TrainingError, match="torch-cuda asked for"):
            backends.choose("torch-cuda")


@pytest.mark.parametrize("backend", ["implicit-cpu", "torch-cpu"])
def test_trainers_learn_the_planted_clusters(backend):
    conf, user_cluster, item_cluster = planted()
    fit = backends.fit(conf, factors=8, iterations=10, regularization=0.1, backend=backend)
    assert fit.backend == backend and len(fit.seconds_per_iteration) == 10
    assert fit.user_factors.shape == (120, 8) and fit.item_factors.shape == (300, 8)
    scores = fit.user_factors @ fit.item_factors.T
    top = np.argsort(-scores, axis=1)[:, :10]
    same = (item_cluster[top] == user_cluster[:, None]).mean()
    assert same > 0.95, same


def test_torch_and_implicit_reach_a_comparable_loss_on_the_same_matrix():
    conf, _, _ = planted(seed=3)
    rng = np.random.default_rng(1)
    init = (backends.init_factors(conf.shape[0], 16, rng), backends.init_factors(conf.shape[1], 16, rng))
    start = backends.loss(conf, *init, 0.1)
    losses = {}
    for backend in ("implicit-cpu", "torch-cpu"):
        fit = backends.fit(conf, factors=16, iterations=15, regularization=0.1, backend=backend, init=init)
        losses[backend] = backends.loss(conf, fit.user_factors, fit.item_factors, 0.1)
    assert losses["implicit-cpu"] < 0.5 * start and losses["torch-cpu"] < 0.5 * start
    assert losses["torch-cpu"] == pytest.approx(losses["implicit-cpu"], rel=0.05), losses


def test_nan_factors_are_a_training_error():
    bad = backends.FitResult(np.array([[np.nan, 1.0]], np.float32), np.ones((2, 2), np.float32), "torch-cpu",
                             "", 0.0)
    with pytest.raises(backends.TrainingError, match="1 user factor rows are NaN/inf"):
        bad.check_finite()
    with pytest.raises(backends.TrainingError, match="empty"):
        backends.fit(sp.csr_matrix((3, 3), dtype=np.float32), factors=2, iterations=1, regularization=0.1,
                     backend="torch-cpu")


# ----------------------------------------------------------------------------- evaluation

def test_metrics_on_a_hand_made_case():
    recs = np.array([[0, 1, 2], [3, 4, 5]])
    relevant = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0]]))
    m = evaluate.score(recs[:1], np.array([0]), relevant, n_items=8, k=3)
    assert m.precision_at_10 == pytest.approx(1 / 3)
    assert m.recall_at_10 == pytest.approx(1 / 2)
    assert m.ndcg_at_10 == pytest.approx(1.0 / (1.0 + 1 / np.log2(3)))
    assert m.coverage == pytest.approx(3 / 8) and m.users == 1


def test_evaluation_excludes_seen_tracks_and_scores_new_ones():
    conf, user_cluster, item_cluster = planted(seed=5)
    weights = (conf > 0).astype(np.float32).tocsr()
    # hold out one in-cluster track per user that is not in training
    rng = np.random.default_rng(2)
    test_rows, test_cols = [], []
    for u in range(weights.shape[0]):
        unseen = np.setdiff1d(np.flatnonzero(item_cluster == user_cluster[u]), weights[u].indices)
        test_rows.append(u)
        test_cols.append(int(rng.choice(unseen)))
    test = sp.csr_matrix((np.ones(len(test_rows), np.float32), (test_rows, test_cols)), shape=weights.shape)
    fit = backends.fit(conf, factors=8, iterations=10, regularization=0.1, backend="implicit-cpu")
    metrics = evaluate.evaluate(fit.user_factors, fit.item_factors, weights, test)
    assert metrics["als"]["users"] == weights.shape[0]
    assert metrics["als"]["ndcg_at_10"] > 2 * metrics["popularity"]["ndcg_at_10"]
    top = evaluate.top_k_scores(fit.user_factors, fit.item_factors, np.arange(weights.shape[0]), weights)
    assert not any(set(top[u]) & set(weights[u].indices) for u in range(weights.shape[0]))
    with pytest.raises(ValueError, match="no user has new tracks"):
        evaluate.evaluate(fit.user_factors, fit.item_factors, weights, sp.csr_matrix(weights.shape))
