"""Thin operators of ``als_training``: every input a templated keyword argument (the DAG passes
``{{ params.x }}``); each ``execute`` is one call into ``musicrec.als``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from musicrec.als import matrix, model, publish
from musicrec.als.params import AlsParams
from musicrec.vectors import milvus as mv
from musicrec_airflow.anchor import run_anchor
from musicrec_airflow.lake import lake_root
from musicrec_airflow.operators.base import MongoStep, StoreStep
from musicrec_airflow.params import json_value, truthy

ALS_FIELDS = ("window_days", "eval_days", "factors", "iterations", "regularization", "alpha", "confidence")
WEIGHT_FIELDS = ("weight_complete", "weight_listen", "weight_skip")


def index_spec(index_type: Any, index_params: Any) -> mv.IndexSpec:
    """The dense index of the ALS collection (``index_params``: a JSON object, or its text)."""
    return mv.IndexSpec(str(index_type or "HNSW"), "IP", json_value(index_params) or None)


class AlsTrainOperator(MongoStep):
    """Window → evaluate vs popularity → train → ``models/als/<version>/`` + ``models`` document.

    Numbers may come as rendered strings; None or "" leaves ``AlsParams``'s default.

    :param window_days: training window in days (ending at the run's anchor).
    :param eval_days: held-out last days for the evaluation.
    :param factors: latent factors.
    :param iterations: ALS iterations.
    :param regularization: L2 regularization.
    :param alpha: confidence scale (confidence = 1 + alpha·weight, or its log form).
    :param confidence: ``linear`` or ``log``.
    :param weight_complete: interaction weight of a completed listen.
    :param weight_listen: interaction weight of a partial listen.
    :param weight_skip: interaction weight of a skip.
    :param backend: ``auto`` or a named backend (``musicrec.als.params.BACKENDS``).
    :param mongo_conn_id: the MongoDB connection (:class:`MongoStep`).
    """

    template_fields: Sequence[str] = (*ALS_FIELDS, *WEIGHT_FIELDS, "backend")

    def __init__(self, *, window_days: int | str | None = None, eval_days: int | str | None = None,
                 factors: int | str | None = None, iterations: int | str | None = None,
                 regularization: float | str | None = None, alpha: float | str | None = None,
                 confidence: str | None = None, weight_complete: float | str | None = None,
                 weight_listen: float | str | None = None, weight_skip: float | str | None = None,
                 backend: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window_days, self.eval_days = window_days, eval_days
        self.factors, self.iterations = factors, iterations
        self.regularization, self.alpha, self.confidence = regularization, alpha, confidence
        self.weight_complete, self.weight_listen, self.weight_skip = weight_complete, weight_listen, weight_skip
        self.backend = backend

    def als_params(self) -> AlsParams:
        conf: dict[str, Any] = {k: getattr(self, k) for k in ALS_FIELDS}
        conf["weights"] = {f.removeprefix("weight_"): getattr(self, f) for f in WEIGHT_FIELDS
                           if getattr(self, f) not in (None, "")}
        if not conf["weights"]:
            del conf["weights"]
        return AlsParams.from_conf(conf)

    def execute(self, context: Any) -> dict[str, Any]:
        anchor = run_anchor(context, self.db)
        params = self.als_params()
        backend = str(self.backend or "auto")
        self.log.info("ALS as of %s: %s (backend %s)", anchor, params.as_dict(), backend)
        try:
            summary = model.train(lake_root(), self.db, anchor, params, backend=backend, run_id=context["run_id"])
        except matrix.EmptyWindow as e:  # a retry reads the same lake: fail now, with the reason
            raise AirflowFailException(f"nothing to train as of {anchor}: {e}") from e
        self.log.info("model %s (%s): ALS %s | popularity %s", summary["version"], summary["backend"],
                      summary["metrics"]["als"], summary["metrics"]["popularity"])
        return summary


class _AlsStep(StoreStep):
    """A publish step: reads ``train``'s summary.

    :param upstream_task_id: the task whose XCom it reads (default ``train``).
    :param placement_task_id: the task whose XCom names the run's physical collection (``milvus_upsert``).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    """

    default_upstream = "train"

    def collection(self, context: Any, summary: dict[str, Any]) -> str:
        """The physical collection chosen by ``milvus_upsert`` (a side build on an index change)."""
        return self.placed(context).get("collection") or summary["collection"]


class _AlsIndexStep(_AlsStep):
    """A publish step that needs the dense index asked for (upsert: placement; index: the build).

    :param index_type: the dense index type (default HNSW).
    :param index_params: its build params: a JSON object or its text (empty: Milvus's defaults).
    :param upstream_task_id: the task whose XCom it reads (default ``train``).
    :param placement_task_id: the task whose XCom names the run's physical collection (``milvus_upsert``).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    """

    template_fields: Sequence[str] = ("index_type", "index_params")

    def __init__(self, *, index_type: str = "HNSW", index_params: str | dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index_type, self.index_params = index_type, index_params


class AlsMilvusUpsertOperator(_AlsIndexStep):
    """The item vectors → the version's collection; a live version is only checked; an index change on
    the live version goes to a side collection (``publish.placement``).

    :param index_type: the dense index type (decides whether a side collection is needed).
    :param index_params: its build params (JSON object or text).
    :param upstream_task_id: the task whose XCom it reads (default ``train``).
    :param placement_task_id: the task whose XCom names the run's physical collection (``milvus_upsert``).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    """

    def execute(self, context: Any) -> dict[str, Any]:
        s = self.upstream(context)
        out = publish.publish_vectors(self.serving(), lake_root(), s["version"], s["item_factors"],
                                      index=index_spec(self.index_type, self.index_params))
        self.log.info("placement: %s", out)
        return out


class AlsMilvusIndexOperator(_AlsIndexStep):
    """Build (or keep) the index of the chosen collection, verify it by recall against exact search, load.

    :param index_type: the dense index type.
    :param index_params: its build params (JSON object or text).
    :param upstream_task_id: the task whose XCom it reads (default ``train``).
    :param placement_task_id: the task whose XCom names the run's physical collection (``milvus_upsert``).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    """

    def execute(self, context: Any) -> dict[str, Any]:
        s = self.upstream(context)
        return publish.publish_index(self.serving(), lake_root(), self.collection(context, s),
                                     s["item_factors"], index=index_spec(self.index_type, self.index_params))


class AlsGateOperator(_AlsStep):
    """Publishes only when ALS ndcg@10 >= min_lift × popularity and >= the active model's − tolerance,
    and never over an active model whose window ends later (unless ``force``): else skips with the reason.

    :param min_lift: ALS ndcg@10 must reach this multiple of popularity's.
    :param tolerance: ALS ndcg@10 may fall at most this far below the active model's.
    :param force: replace an active model whose window ends later (bool or rendered text).
    :param upstream_task_id: the task whose XCom it reads (default ``train``).
    :param placement_task_id: the task whose XCom names the run's physical collection (``milvus_upsert``).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    """

    template_fields: Sequence[str] = ("min_lift", "tolerance", "force")

    def __init__(self, *, min_lift: float | str = 1.1, tolerance: float | str = 0.02, force: bool | str = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_lift, self.tolerance, self.force = min_lift, tolerance, force

    def execute(self, context: Any) -> dict[str, Any]:
        summary = self.upstream(context)
        try:
            decision = publish.gate(self.db, summary["version"], min_lift=float(self.min_lift),
                                    tolerance=float(self.tolerance), force=truthy(self.force))
        except publish.GateRefused as refused:
            publish.record_gate(self.db, refused.decision)
            self.log.info("gate refused: %s", refused.decision)
            raise AirflowSkipException(f"gate: not publishing {summary['version']}: {refused}") from None
        publish.record_gate(self.db, decision)
        self.log.info("gate passed: %s", decision)
        return decision


class QdrantMirrorOperator(_AlsStep):
    """The item vectors → every mirror store's collection of the same name (the Qdrant mirror; pool
    ``qdrant_local`` on local mode). One mirror: its result; several: one result per store kind.

    :param upstream_task_id: the task whose XCom it reads (default ``train``).
    :param placement_task_id: the task whose XCom names the run's physical collection (``milvus_upsert``).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    """

    def execute(self, context: Any) -> dict[str, Any]:
        s = self.upstream(context)
        out = {m.kind: publish.publish_mirror(m, lake_root(), s["version"], s["item_factors"],
                                              self.collection(context, s))
               for m in self.mirrors()}
        return next(iter(out.values())) if len(out) == 1 else out


class AlsPublishUsersOperator(_AlsStep):
    """The users' vectors of the version → ``users.latent_vectors.<version>``.

    :param upstream_task_id: the task whose XCom it reads (default ``train``).
    :param placement_task_id: the task whose XCom names the run's physical collection (``milvus_upsert``).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    """

    def execute(self, context: Any) -> dict[str, Any]:
        s = self.upstream(context)
        return publish.publish_users(self.db, lake_root(), s["version"], s["user_factors"])


class AlsSwapAliasOperator(_AlsStep):
    """``music_collection`` → the new collection in Milvus and in the Qdrant mirror.

    :param upstream_task_id: the task whose XCom it reads (default ``train``).
    :param placement_task_id: the task whose XCom names the run's physical collection (``milvus_upsert``).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    """

    def execute(self, context: Any) -> dict[str, Any]:
        s = self.upstream(context)
        return publish.swap_aliases(self.stores(), s["version"], s["factors"], self.collection(context, s))


class AlsActivateOperator(_AlsStep):
    """The model document becomes ``active`` (the previous one ``retired``); then versions older than
    the previous one are dropped from Milvus and Qdrant.

    :param upstream_task_id: the task whose XCom it reads (default ``train``).
    :param placement_task_id: the task whose XCom names the run's physical collection (``milvus_upsert``).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    """

    def execute(self, context: Any) -> dict[str, Any]:
        s = self.upstream(context)
        return publish.activate_and_cleanup(self.db, self.stores(), s["version"], self.collection(context, s))
