"""An index change on the live lyrics collection (issue 14): built on a new physical collection behind
the alias, verified by recall, swapped — a loop of searches meanwhile never fails."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from musicrec.embeddings import embed, store
from musicrec.vectors import milvus as mv
from musicrec.vectors import qdrant as qd
from tests.integration.test_lyrics_embeddings import assert_mirrors_agree, bge, env, run_all  # noqa: F401

pytestmark = pytest.mark.integration


def test_a_dense_index_change_is_built_off_to_the_side(env, bge, milvus_uri):  # noqa: F811
    db, root, milvus, qdrant = env
    first = run_all(db, root, bge, milvus, qdrant, "run1")
    live = first["embed"]["collection"]
    assert mv.alias_target(milvus, store.ALIAS) == live
    probe = np.asarray(milvus.query(live, ids=["s01"], output_fields=["dense"])[0]["dense"], np.float32).tolist()
    stop, started = threading.Event(), threading.Event()
    done, failed = [0], []

    def readers():
        client = mv.connect(milvus_uri)
        while not stop.is_set():
            try:
                res = client.search(store.ALIAS, data=[probe], limit=3, anns_field=store.DENSE,
                                    search_params={"metric_type": "IP"}, output_fields=[store.ID_FIELD])
                hit = res[0][0]
                assert (hit.get("entity") or {}).get(store.ID_FIELD, hit.get("id")) == "s01"
                done[0] += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                failed.append(repr(e))
            started.set()

    thread = threading.Thread(target=readers, daemon=True)
    thread.start()
    assert started.wait(120)
    ivf = mv.IndexSpec("FLAT", "IP", {})
    with pytest.raises(mv.VectorStoreError, match="never rebuilt in place"):
        embed.build_indexes(milvus, live, dense_index=ivf)

    info = embed.embed_changed(db, root, bge, "run2")
    assert info["embedded"] == 0  # nothing changed: the new collection is filled from the current shards
    placed = embed.upsert_run_milvus(milvus, db, root, info, "run2", dense_index=ivf)
    side = placed["collection"]
    assert placed["side"] is True and side.startswith(live + "_ix") and placed["backfilled"] == 7
    info = info | {"collection": side, "side": True}
    built = embed.build_indexes(milvus, side, dense_index=ivf)
    assert built["dense"]["index_type"] == "FLAT"
    embed.upsert_run_qdrant(qdrant, db, root, info, "run2")
    act = embed.activate(db, milvus, qdrant, info, root=root, run_id="run2")
    assert act["recall"] >= 0.8 and act["previous"] == live
    embed.stamp(db, root, info["model_slug"], "run2")
    pruned = embed.prune(db, milvus, qdrant, side, info["model_id"])
    before = done[0]
    while done[0] + len(failed) < before + 20 and thread.is_alive():
        stop.wait(0.05)
    stop.set()
    thread.join(120)
    assert failed == [], failed[:3]
    assert done[0] > 20
    assert mv.alias_target(milvus, store.ALIAS) == side == qd.alias_target(qdrant, store.ALIAS)
    assert mv.describe_index(milvus, side, store.DENSE)["index_type"] == "FLAT"
    assert store.active_model(db)["collection"] == side
    assert pruned["dropped"] == [live, f"qdrant:{live}"] and not milvus.has_collection(live)
    assert_mirrors_agree(db, milvus, qdrant, side)
    # the next run with the same index writes into the (now live) new collection
    info3 = embed.embed_changed(db, root, bge, "run3")
    again = embed.upsert_run_milvus(milvus, db, root, info3, "run3", dense_index=ivf)
    assert again["collection"] == side and again["side"] is False and again["backfilled"] == 0
