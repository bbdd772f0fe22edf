"""Thin operators of ``als_training``: resolve connections, params and the anchor; call ``musicrec.als``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from musicrec.als import matrix, model, publish
from musicrec.als.params import AlsParams
from musicrec.vectors import milvus as mv
from musicrec_airflow.anchor import run_anchor
from musicrec_airflow.hooks.milvus import MilvusHook
from musicrec_airflow.hooks.mongo import mongo_database
from musicrec_airflow.hooks.qdrant import QdrantLocalHook
from musicrec_airflow.hooks.stores import mirror_stores, serving_store, vector_stores
from musicrec_airflow.lake import lake_root
from musicrec_airflow.params import truthy


def params_from_context(params: dict[str, Any]) -> AlsParams:
    conf = dict(params)
    conf["weights"] = {a: conf[f"weight_{a}"] for a in ("complete", "listen", "skip") if f"weight_{a}" in conf}
    return AlsParams.from_conf(conf)


class AlsTrainOperator(BaseOperator):
    """Window → evaluate vs popularity → train → ``models/als/<version>/`` + ``models`` document."""

    def __init__(self, *, mongo_conn_id: str = "mongo_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mongo_conn_id = mongo_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        db = mongo_database(self.mongo_conn_id)
        anchor = run_anchor(context, db)
        params = params_from_context(context["params"])
        backend = str(context["params"].get("backend") or "auto")
        self.log.info("ALS as of %s: %s (backend %s)", anchor, params.as_dict(), backend)
        try:
            summary = model.train(lake_root(), db, anchor, params, backend=backend, run_id=context["run_id"])
        except matrix.EmptyWindow as e:  # a retry reads the same lake: fail now, with the reason
            raise AirflowFailException(f"nothing to train as of {anchor}: {e}") from e
        self.log.info("model %s (%s): ALS %s | popularity %s", summary["version"], summary["backend"],
                      summary["metrics"]["als"], summary["metrics"]["popularity"])
        return summary


class _AlsStep(BaseOperator):
    template_fields: Sequence[str] = ()

    def __init__(self, *, train_task_id: str = "train", mongo_conn_id: str = "mongo_default",
                 milvus_conn_id: str = MilvusHook.default_conn_name,
                 qdrant_conn_id: str = QdrantLocalHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_task_id = train_task_id
        self.mongo_conn_id = mongo_conn_id
        self.milvus_conn_id = milvus_conn_id
        self.qdrant_conn_id = qdrant_conn_id

    def summary(self, context: Any) -> dict[str, Any]:
        summary = context["ti"].xcom_pull(task_ids=self.train_task_id)
        if not summary:
            raise ValueError(f"no result from task {self.train_task_id}")
        return summary

    def conn_ids(self) -> dict[str, str]:
        return {"milvus": self.milvus_conn_id, "qdrant": self.qdrant_conn_id}

    def serving(self):
        """The serving store only (these tasks may run outside pool ``qdrant_local``)."""
        return serving_store(self.conn_ids())

    def stores(self):
        """Every store, the serving one first (tasks in pool ``qdrant_local``)."""
        return vector_stores(self.conn_ids())

    def collection(self, context: Any, summary: dict[str, Any]) -> str:
        """The physical collection chosen by ``milvus_upsert`` (a side build on an index change)."""
        placed = context["ti"].xcom_pull(task_ids="milvus_upsert")
        return (placed or {}).get("collection") or summary["collection"]


def index_spec(params: dict[str, Any]) -> mv.IndexSpec:
    raw = params.get("index_params")
    parsed = json.loads(raw) if isinstance(raw, str) and raw.strip() else (raw or None)
    return mv.IndexSpec(str(params.get("index_type") or "HNSW"), "IP", parsed)


class AlsMilvusUpsertOperator(_AlsStep):
    """The item vectors → the version's collection; a live version is only checked; an index change on
    the live version goes to a side collection (``publish.placement``)."""

    def execute(self, context: Any) -> dict[str, Any]:
        s = self.summary(context)
        out = publish.publish_vectors(self.serving(), lake_root(), s["version"],
                                      s["item_factors"], index=index_spec(context["params"]))
        self.log.info("placement: %s", out)
        return out


class AlsMilvusIndexOperator(_AlsStep):
    """Build (or keep) the index of the chosen collection, verify it by recall against exact search, load."""

    def execute(self, context: Any) -> dict[str, Any]:
        s = self.summary(context)
        return publish.publish_index(self.serving(), lake_root(), self.collection(context, s),
                                     s["item_factors"], index=index_spec(context["params"]))


class AlsGateOperator(_AlsStep):
    """Publishes only when ALS ndcg@10 >= min_lift × popularity and >= the active model's − tolerance,
    and never over an active model whose window ends later (unless ``force``): else skips with the reason."""

    def execute(self, context: Any) -> dict[str, Any]:
        summary = self.summary(context)
        p = context["params"]
        db = mongo_database(self.mongo_conn_id)
        try:
            decision = publish.gate(db, summary["version"], min_lift=float(p.get("min_lift", 1.1)),
                                    tolerance=float(p.get("tolerance", 0.02)), force=truthy(p.get("force")))
        except publish.GateRefused as refused:
            publish.record_gate(db, refused.decision)
            self.log.info("gate refused: %s", refused.decision)
            raise AirflowSkipException(f"gate: not publishing {summary['version']}: {refused}") from None
        publish.record_gate(db, decision)
        self.log.info("gate passed: %s", decision)
        return decision


class QdrantMirrorOperator(_AlsStep):
    """The item vectors → every mirror store's collection of the same name (the Qdrant mirror; pool
    ``qdrant_local`` on local mode). One mirror: its result; several: one result per store kind."""

    def execute(self, context: Any) -> dict[str, Any]:
        s = self.summary(context)
        out = {m.kind: publish.publish_mirror(m, lake_root(), s["version"], s["item_factors"],
                                              self.collection(context, s))
               for m in mirror_stores(self.conn_ids())}
        return next(iter(out.values())) if len(out) == 1 else out


class AlsPublishUsersOperator(_AlsStep):
    def execute(self, context: Any) -> dict[str, Any]:
        s = self.summary(context)
        return publish.publish_users(mongo_database(self.mongo_conn_id), lake_root(), s["version"],
                                     s["user_factors"])


class AlsSwapAliasOperator(_AlsStep):
    """``music_collection`` → the new collection in Milvus and in the Qdrant mirror."""

    def execute(self, context: Any) -> dict[str, Any]:
        s = self.summary(context)
        return publish.swap_aliases(self.stores(), s["version"], s["factors"], self.collection(context, s))


class AlsActivateOperator(_AlsStep):
    """The model document becomes ``active`` (the previous one ``retired``); then versions older than
    the previous one are dropped from Milvus and Qdrant."""

    def execute(self, context: Any) -> dict[str, Any]:
        s = self.summary(context)
        db = mongo_database(self.mongo_conn_id)
        out = publish.activate(db, s["version"], self.collection(context, s))
        out["dropped"] = publish.cleanup(db, self.stores(), s["version"])
        return out
