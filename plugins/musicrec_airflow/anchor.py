"""The run anchor of a DAG run (design §5), from the task context."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.database import Database

from musicrec.registry import resolve_anchor

TIME_SCHEDULED = {"scheduled", "backfill"}


def run_anchor(context: Any, db: Database) -> datetime:
    """Where the data a run owns ends.

    * scheduled and backfill runs: their data interval's end;
    * asset-triggered runs and runs without a logical date: the end of the newest ``listens``
      partition in the registry (their data interval describes when events arrived, not the data);
    * other manual runs (UI trigger, ``airflow dags test [date]``): the earlier of the data interval's
      end and the newest partition's end — a trigger "now" means "all data there is", a trigger for a
      past date means that date.
    """
    dag_run = context.get("dag_run")
    run_type = str(getattr(getattr(dag_run, "run_type", None), "value", getattr(dag_run, "run_type", "")) or "")
    end = context.get("data_interval_end") if context.get("logical_date") is not None else None
    if end is not None and run_type in TIME_SCHEDULED:
        return resolve_anchor(end, db)
    newest = resolve_anchor(None, db)
    if end is not None and run_type != "asset_triggered":
        return min(resolve_anchor(end, db), newest)
    return newest
