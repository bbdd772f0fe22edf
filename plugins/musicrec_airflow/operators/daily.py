"""Thin operators of ``listens_daily``: resolve the run's day and delegate to ``musicrec.lake.daily``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from musicrec.lake import daily
from musicrec_airflow.lake import lake_root
from musicrec_airflow.operators.base import MongoStep


def run_day(context: Any, override: str | None = None) -> date:
    """Day D of the run: the ``date`` param when given, else the start of the data interval."""
    if override:
        try:
            return date.fromisoformat(override.strip())
        except ValueError:
            raise ValueError(f"param date={override!r} is not YYYY-MM-DD") from None
    start = context.get("data_interval_start")
    if start is None:
        raise ValueError("this run has no data interval (a manual run without a logical date): "
                         "pass the day as the `date` param, e.g. {\"date\": \"2009-05-05\"}")
    return start.date()


class PlanLandingDayOperator(BaseOperator):
    """Lists ``landing/date=D/`` and returns chunks of file names (one mapped clean task each).

    :param day: day D as ``YYYY-MM-DD``; empty = the start of the run's data interval.
    :param max_chunks: chunks (mapped clean tasks) at most.
    """

    template_fields: Sequence[str] = ("day", "max_chunks")

    def __init__(self, *, day: str = "", max_chunks: int | str = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.day = day
        self.max_chunks = max_chunks

    def execute(self, context: Any) -> list[list[str]]:
        day = run_day(context, self.day)
        chunks = daily.plan_day(lake_root(), day, int(self.max_chunks))
        if not chunks:
            self.log.info("no landing data for %s: nothing to clean", day)
        return chunks


class CleanLandingFilesOperator(BaseOperator):
    """Cleans one chunk of the day's landing files into staged Parquet + quarantine under ``work/``.

    :param file_names: the chunk's landing file names (one of the plan's XCom items).
    :param day: day D as ``YYYY-MM-DD``; empty = the start of the run's data interval.
    """

    template_fields: Sequence[str] = ("day", "file_names")

    def __init__(self, *, file_names: list[str], day: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.file_names = file_names
        self.day = day

    def execute(self, context: Any) -> dict[str, Any]:
        return daily.clean_files(lake_root(), run_day(context, self.day), list(self.file_names))


class MergeLandingDayOperator(MongoStep):
    """Publishes ``listens/date=D/daily.parquet`` (landing files + Mongo ``listen_events`` of D) +
    quarantine, updates the registry, marks the events loaded (the TTL may then expire them); skips
    when D has neither landing files nor events.

    :param plan_task_id: the plan task whose XCom lists the day's chunks.
    :param day: day D as ``YYYY-MM-DD``; empty = the start of the run's data interval.
    :param mongo_conn_id: the MongoDB connection (:class:`MongoStep`).
    """

    template_fields: Sequence[str] = ("day",)

    def __init__(self, *, plan_task_id: str = "plan", day: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan_task_id = plan_task_id
        self.day = day

    def execute(self, context: Any) -> dict[str, Any]:
        day = run_day(context, self.day)
        chunks = context["ti"].xcom_pull(task_ids=self.plan_task_id) or []
        files = sorted(name for chunk in chunks for name in chunk)
        root = lake_root()
        result = daily.merge_day(root, day, files, self.db, run_id=context["run_id"])
        if result["status"] == "no_data":
            raise AirflowSkipException(f"no landing data for {day} and no listen_events: the lake is unchanged")
        daily.cleanup_work(root, day)
        return result
