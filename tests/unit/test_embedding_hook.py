"""EmbeddingHook and model resolution: defaults without a connection, the connection's BGE-M3 path
(handed to the encoder as an argument), clear errors naming where a missing model was looked for
(nothing is loaded or downloaded)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from musicrec.embeddings import encoder as enc


def test_defaults_without_a_connection(monkeypatch):
    from musicrec_airflow.hooks.embedding import EmbeddingHook

    monkeypatch.delenv("AIRFLOW_CONN_EMBEDDING_DEFAULT", raising=False)
    hook = EmbeddingHook()
    assert enc.DEFAULT_MODEL == "minilm"  # an interface: the DAG param's default, make run's model
    assert hook.settings() == {"model": enc.DEFAULT_MODEL, "device": "auto", "max_length": None, "bge_m3_path": ""}
    spec = hook.describe()
    assert (spec["model_id"], spec["model_slug"], spec["kind"]) == (enc.MINILM_ID, "minilm", "sentence-transformers")
    assert hook.test_connection()[0]


def test_connection_bge_m3_path_and_clear_errors(monkeypatch, tmp_path):
    from musicrec_airflow.hooks.embedding import EmbeddingHook

    missing = tmp_path / "bge-m3-snapshot"
    monkeypatch.delenv(enc.BGE_M3_ENV, raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_EMBEDDING_TEST", json.dumps(
        {"conn_type": "musicrec_embedding", "extra": {"model": "bge-m3", "device": "cpu", "bge_m3_path": str(missing)}}))
    hook = EmbeddingHook("embedding_test")
    ok, message = hook.test_connection()
    assert not ok and str(missing) in message and "nothing is downloaded" in message
    # a directory without BGE-M3's sparse/ColBERT heads is refused (they would be random)
    missing.mkdir()
    (missing / "config.json").write_text("{}")
    with pytest.raises(enc.ModelNotFound, match="sparse_linear.pt"):
        hook.describe()
    for name in enc.BGE_M3_HEADS:
        (missing / name).write_bytes(b"")
    assert hook.describe()["model_id"] == enc.BGE_M3_ID and hook.describe()["model_slug"] == "bge_m3"
    assert hook.describe()["path"] == str(missing)
    assert enc.BGE_M3_ENV not in os.environ  # the path went in as an argument, not through the environment
    with pytest.raises(enc.ModelNotFound, match="not 'minilm'"):
        enc.resolve("no-such-model")


def test_bge_m3_directory_precedence(monkeypatch, tmp_path):
    """``bge-m3:<dir>`` is the only place looked in; else the worker's ``MUSICREC_BGE_M3_PATH`` wins
    over the configured directory (the connection's, passed as an argument)."""
    dirs = {}
    for name in ("explicit", "worker", "configured"):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        (dirs[name] / "config.json").write_text("{}")
    monkeypatch.delenv(enc.BGE_M3_ENV, raising=False)
    assert enc.bge_m3_path(None, str(dirs["configured"])) == dirs["configured"]
    monkeypatch.setenv(enc.BGE_M3_ENV, str(dirs["worker"]))
    assert enc.bge_m3_path(None, str(dirs["configured"])) == dirs["worker"]
    assert enc.bge_m3_path(str(dirs["explicit"]), str(dirs["configured"])) == dirs["explicit"]
    with pytest.raises(enc.ModelNotFound, match="no config.json"):
        enc.bge_m3_path(str(tmp_path / "nowhere"), str(dirs["configured"]))  # never another checkpoint


def test_device_auto_and_length_order():
    assert enc.pick_device("auto") in {"cpu", "cuda"}
    assert list(enc.length_order(["aa", "a", "aaaa", "aaa"])) == [2, 3, 0, 1]
    n = enc.normalize([[3.0, 4.0], [0.0, 0.0]])
    assert n[0].tolist() == pytest.approx([0.6, 0.8])
    assert np.isnan(n[1]).all()  # a zero vector stays non-finite: the embed step skips it with a count
