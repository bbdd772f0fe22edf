"""Thin operators of ``store_audit``: resolve params and connections, call ``musicrec.audit``."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from musicrec.audit import report
from musicrec.audit.core import AuditContext
from musicrec.audit.lake import run_path
from musicrec.audit.run import DEFAULT_MODE, SCOPES, check_mode, remaining, run_scope
from musicrec.lake import storage
from musicrec_airflow.hooks.milvus import MilvusHook
from musicrec_airflow.hooks.mongo import mongo_database
from musicrec_airflow.hooks.qdrant import QdrantLocalHook
from musicrec_airflow.hooks.stores import vector_stores
from musicrec_airflow.lake import lake_root
from musicrec_airflow.params import truthy

VECTOR_SCOPES = {"als", "lyrics"}


def selected_scopes(params: dict[str, Any]) -> list[str]:
    value = params.get("scopes") or list(SCOPES)
    if isinstance(value, str):
        value = [s.strip() for s in value.split(",") if s.strip()]
    unknown = sorted(set(value) - set(SCOPES))
    if unknown:
        raise AirflowFailException(f"unknown audit scopes {unknown}: choose from {list(SCOPES)}")
    return list(value)


def audit_mode(params: dict[str, Any]) -> str:
    """The run's ``mode`` param (``audit`` | ``plan`` | ``repair``), the one place the operators read it."""
    try:
        return check_mode(params.get("mode") or DEFAULT_MODE)
    except ValueError as e:  # the DAG's enum Param refuses it first; this covers a DAG without one
        raise AirflowFailException(str(e)) from None


class StoreAuditOperator(BaseOperator):
    """Audit one scope against its sources of truth; in mode ``repair`` fix the findings and audit
    again (``plan``: list the repair, write nothing). The scope's part of the report goes to
    ``audit/<run_id>/parts/<scope>.json``; XCom carries its path and counts only."""

    def __init__(self, *, scope: str, mongo_conn_id: str = "mongo_default",
                 milvus_conn_id: str = MilvusHook.default_conn_name,
                 qdrant_conn_id: str = QdrantLocalHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if scope not in SCOPES:
            raise ValueError(f"unknown audit scope {scope!r}")
        self.scope = scope
        self.mongo_conn_id = mongo_conn_id
        self.milvus_conn_id = milvus_conn_id
        self.qdrant_conn_id = qdrant_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        p = context["params"]
        if self.scope not in selected_scopes(p):
            raise AirflowSkipException(f"scope {self.scope} not in params.scopes")
        root = lake_root()
        vectors = self.scope in VECTOR_SCOPES
        conn_ids = {"milvus": self.milvus_conn_id, "qdrant": self.qdrant_conn_id}
        ctx = AuditContext(db=mongo_database(self.mongo_conn_id), root=root,
                           stores=vector_stores(conn_ids) if vectors else [],
                           run_id=context["run_id"], lake_checksums=truthy(p.get("lake_checksums", True)),
                           examples=int(p.get("examples", 20)))
        part = run_scope(self.scope, ctx, mode=audit_mode(p), grace_minutes=float(p.get("grace_minutes", 60)),
                         batch_size=int(p.get("batch_size", 500)))
        rel = f"{run_path(context['run_id'])}/parts/{self.scope}.json"
        storage.write_json_atomic(root / rel, part)
        for plan in part["plans"]:
            self.log.info("%s: %s", plan["name"], plan.get("skipped") or
                          {k: (plan.get(k) or {}).get("counts") for k in ("before", "after") if plan.get(k)})
        return {"scope": self.scope, "part": rel, "remaining": remaining(part),
                "findings": sum((pl.get("before") or {}).get("total", 0) for pl in part["plans"])}


class AuditReportOperator(BaseOperator):
    """``audit/<run_id>/report.json`` + ``report.html`` from the scope parts; the summary table in the log."""

    def __init__(self, *, audit_task_ids: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.audit_task_ids = audit_task_ids  # scope -> task id

    def execute(self, context: Any) -> dict[str, Any]:
        p = context["params"]
        root = lake_root()
        parts, failed = [], []
        for scope in selected_scopes(p):
            meta = context["ti"].xcom_pull(task_ids=self.audit_task_ids[scope])
            if meta:
                parts.append(storage.read_json(root / meta["part"]))
            else:  # selected but no result: the scope's task failed
                failed.append(scope)
        doc = report.build(context["run_id"], parts, mode=audit_mode(p),
                           grace_minutes=float(p.get("grace_minutes", 60)), max_findings=int(p.get("max_findings", 0)),
                           failed_scopes=failed)
        paths = report.write(root, doc)
        self.log.info("store audit summary:\n%s", report.table(doc))
        self.log.info("report: %s (and %s)", paths["html"], paths["json"])
        return {"report": paths, "findings": doc["findings"], "remaining": doc["remaining"], "passed": doc["passed"],
                "failed_scopes": failed}


class AuditCheckOperator(BaseOperator):
    """Fails (no retry: the outcome is deterministic) when the open findings exceed ``max_findings``,
    so the DAG run is red and failure alerts fire."""

    def __init__(self, *, report_task_id: str = "report", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report_task_id = report_task_id

    def execute(self, context: Any) -> dict[str, Any]:
        res = context["ti"].xcom_pull(task_ids=self.report_task_id)
        if not res:
            raise AirflowFailException("no report from the report task")
        limit = int(context["params"].get("max_findings", 0))
        if res.get("failed_scopes"):
            raise AirflowFailException(f"audit scopes {res['failed_scopes']} failed; see {res['report']['html']}")
        if res["remaining"] > limit:
            raise AirflowFailException(f"{res['remaining']} open audit findings > max_findings={limit}; see "
                                       f"{res['report']['html']}")
        self.log.info("audit check passed: %d open findings <= %d", res["remaining"], limit)
        return res
