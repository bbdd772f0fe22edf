"""Thin operators of ``store_audit``: every input a templated keyword argument (the DAG passes
``{{ params.x }}``); each ``execute`` calls ``musicrec.audit``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from musicrec.audit import report
from musicrec.audit.core import AuditContext
from musicrec.audit.lake import run_path
from musicrec.audit.run import DEFAULT_MODE, SCOPES, check_mode, remaining, run_scope
from musicrec.lake import storage
from musicrec_airflow.lake import lake_root
from musicrec_airflow.operators.base import StoreStep
from musicrec_airflow.params import string_list, truthy

VECTOR_SCOPES = {"als", "lyrics"}


def selected_scopes(value: Any) -> list[str]:
    """The run's scopes: a list, its JSON (``{{ params.scopes | tojson }}``) or comma-separated text;
    empty = every scope."""
    scopes = string_list(value) or list(SCOPES)
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise AirflowFailException(f"unknown audit scopes {unknown}: choose from {list(SCOPES)}")
    return scopes


def audit_mode(value: Any) -> str:
    """The run's mode (``audit`` | ``plan`` | ``repair``); empty = the default."""
    try:
        return check_mode(str(value or "").strip() or DEFAULT_MODE)
    except ValueError as e:  # the DAG's enum Param refuses it first; this covers a DAG without one
        raise AirflowFailException(str(e)) from None


class StoreAuditOperator(StoreStep):
    """Audit one scope against its sources of truth; in mode ``repair`` fix the findings and audit
    again (``plan``: list the repair, write nothing). The scope's part of the report goes to
    ``audit/<run_id>/parts/<scope>.json``; XCom carries its path and counts only.

    :param scope: the scope this task audits (``lake``, ``als`` or ``lyrics``).
    :param scopes: the run's selected scopes (list, JSON list or comma text); not selected = skipped.
    :param mode: ``audit``, ``plan`` or ``repair``.
    :param grace_minutes: orphans younger than this are kept.
    :param examples: example ids kept per finding type.
    :param lake_checksums: hash every lake file (else sizes only); bool or rendered text.
    :param batch_size: ids per repair batch.
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (vector scopes).
    :param qdrant_conn_id: the Qdrant connection (vector scopes).
    :param upstream_task_id: unused (the audit reads no upstream XCom).
    :param placement_task_id: unused.
    """

    template_fields: Sequence[str] = ("scopes", "mode", "grace_minutes", "examples", "lake_checksums", "batch_size")

    def __init__(self, *, scope: str, scopes: str | list[str] = "", mode: str = DEFAULT_MODE,
                 grace_minutes: float | str = 60, examples: int | str = 20, lake_checksums: bool | str = True,
                 batch_size: int | str = 500, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if scope not in SCOPES:
            raise ValueError(f"unknown audit scope {scope!r}")
        self.scope = scope
        self.scopes, self.mode, self.grace_minutes = scopes, mode, grace_minutes
        self.examples, self.lake_checksums, self.batch_size = examples, lake_checksums, batch_size

    def execute(self, context: Any) -> dict[str, Any]:
        if self.scope not in selected_scopes(self.scopes):
            raise AirflowSkipException(f"scope {self.scope} not in params.scopes")
        root = lake_root()
        ctx = AuditContext(db=self.db, root=root, stores=self.stores() if self.scope in VECTOR_SCOPES else [],
                           run_id=context["run_id"], lake_checksums=truthy(self.lake_checksums),
                           examples=int(self.examples))
        part = run_scope(self.scope, ctx, mode=audit_mode(self.mode), grace_minutes=float(self.grace_minutes),
                         batch_size=int(self.batch_size))
        rel = f"{run_path(context['run_id'])}/parts/{self.scope}.json"
        storage.write_json_atomic(root / rel, part)
        for plan in part["plans"]:
            self.log.info("%s: %s", plan["name"], plan.get("skipped") or
                          {k: (plan.get(k) or {}).get("counts") for k in ("before", "after") if plan.get(k)})
        return {"scope": self.scope, "part": rel, "remaining": remaining(part),
                "findings": sum((pl.get("before") or {}).get("total", 0) for pl in part["plans"])}


class AuditReportOperator(BaseOperator):
    """``audit/<run_id>/report.json`` + ``report.html`` from the scope parts; the summary table in the log.

    :param audit_task_ids: scope → the task id that audited it.
    :param scopes: the run's selected scopes (as :class:`StoreAuditOperator`'s).
    :param mode: the run's mode (recorded in the report).
    :param grace_minutes: the run's grace (recorded in the report).
    :param max_findings: open findings the check tolerates (recorded in the report).
    """

    template_fields: Sequence[str] = ("scopes", "mode", "grace_minutes", "max_findings")

    def __init__(self, *, audit_task_ids: dict[str, str], scopes: str | list[str] = "", mode: str = DEFAULT_MODE,
                 grace_minutes: float | str = 60, max_findings: int | str = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.audit_task_ids = audit_task_ids  # scope -> task id
        self.scopes, self.mode, self.grace_minutes, self.max_findings = scopes, mode, grace_minutes, max_findings

    def execute(self, context: Any) -> dict[str, Any]:
        root = lake_root()
        parts, failed = [], []
        for scope in selected_scopes(self.scopes):
            meta = context["ti"].xcom_pull(task_ids=self.audit_task_ids[scope])
            if meta:
                parts.append(storage.read_json(root / meta["part"]))
            else:  # selected but no result: the scope's task failed
                failed.append(scope)
        doc = report.build(context["run_id"], parts, mode=audit_mode(self.mode),
                           grace_minutes=float(self.grace_minutes), max_findings=int(self.max_findings),
                           failed_scopes=failed)
        paths = report.write(root, doc)
        self.log.info("store audit summary:\n%s", report.table(doc))
        self.log.info("report: %s (and %s)", paths["html"], paths["json"])
        return {"report": paths, "findings": doc["findings"], "remaining": doc["remaining"], "passed": doc["passed"],
                "failed_scopes": failed}


class AuditCheckOperator(BaseOperator):
    """Fails (no retry: the outcome is deterministic) when the open findings exceed ``max_findings``,
    so the DAG run is red and failure alerts fire.

    :param report_task_id: the task whose XCom is the report's summary.
    :param max_findings: open findings tolerated (int or rendered text).
    """

    template_fields: Sequence[str] = ("max_findings",)

    def __init__(self, *, report_task_id: str = "report", max_findings: int | str = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report_task_id = report_task_id
        self.max_findings = max_findings

    def execute(self, context: Any) -> dict[str, Any]:
        res = context["ti"].xcom_pull(task_ids=self.report_task_id)
        if not res:
            raise AirflowFailException("no report from the report task")
        limit = int(self.max_findings)
        if res.get("failed_scopes"):
            raise AirflowFailException(f"audit scopes {res['failed_scopes']} failed; see {res['report']['html']}")
        if res["remaining"] > limit:
            raise AirflowFailException(f"{res['remaining']} open audit findings > max_findings={limit}; see "
                                       f"{res['report']['html']}")
        self.log.info("audit check passed: %d open findings <= %d", res["remaining"], limit)
        return res
