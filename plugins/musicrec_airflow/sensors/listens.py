"""``wait_for_listens``: week W's ``als_training`` waits for day W−1's ``listens_daily`` partition.

Why a sensor in ``reschedule`` mode and not an asset condition: the ``lake_listens`` asset is emitted by
the import and by every daily run, without saying which day it brought, so no asset expression can
mean "day W−1 is loaded"; and an asset-triggered run has no data interval, which the weekly schedule
and its backfills need. ``reschedule`` frees the worker slot between pokes (a poke is one registry
lookup). Only scheduled and backfill runs wait: a manual run (UI, ``airflow dags test``) anchors at the
newest partition the registry holds, so its data is there by definition. Nor do runs for a week the
daily feed does not cover (no ``daily`` partition in the week before W−1): on a fresh install, where
unpausing ``als_training`` creates the latest week's run, that run trains at once instead of holding the
DAG's single active run (``max_active_runs=1``) for ``wait_timeout_hours``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout
from pymongo.database import Database

from musicrec.als import ready
from musicrec_airflow.anchor import TIME_SCHEDULED
from musicrec_airflow.hooks.mongo import mongo_database
from musicrec_airflow.params import truthy

DEFAULT_TIMEOUT_HOURS = 6.0


def _run_type(context: Any) -> str:
    dag_run = context.get("dag_run")
    rt = getattr(dag_run, "run_type", "")
    return str(getattr(rt, "value", rt) or "")


class ListensDaySensor(BaseSensorOperator):
    """Succeeds once the registry holds ``listens/date=<W−1>/daily.parquet`` for the run's data interval
    end W; fails with a clear message after ``wait_timeout_hours`` (default 6).

    :param wait_for_daily: false skips the wait (e.g. backfilling weeks only the dump import covers);
        a bool or its rendered text (``"{{ params.wait_for_daily }}"``).
    :param wait_timeout_hours: hours to wait before failing (number or rendered text).
    :param mongo_conn_id: the MongoDB connection (the partition registry).
    :param poke_interval: seconds between pokes.
    :param mode: the sensor mode; ``reschedule`` frees the worker slot between pokes.
    """

    template_fields: Sequence[str] = ("wait_for_daily", "wait_timeout_hours")

    def __init__(self, *, wait_for_daily: bool | str = True, wait_timeout_hours: float | str = DEFAULT_TIMEOUT_HOURS,
                 mongo_conn_id: str = "mongo_default", poke_interval: float = 300.0,
                 mode: str = "reschedule", **kwargs: Any) -> None:
        super().__init__(poke_interval=poke_interval, mode=mode, timeout=DEFAULT_TIMEOUT_HOURS * 3600, **kwargs)
        self.wait_for_daily = wait_for_daily
        self.wait_timeout_hours = wait_timeout_hours
        self.mongo_conn_id = mongo_conn_id

    @cached_property
    def db(self) -> Database:
        return mongo_database(self.mongo_conn_id)

    def execute(self, context: Any) -> Any:
        if _run_type(context) not in TIME_SCHEDULED or context.get("data_interval_end") is None:
            self.log.info("%s run: anchors at the newest partition, nothing to wait for", _run_type(context) or "manual")
            return None
        if not truthy(self.wait_for_daily):
            self.log.info("wait_for_daily is false: not waiting for day W-1's daily partition")
            return None
        self.timeout = float(self.wait_timeout_hours) * 3600
        day = ready.last_day(context["data_interval_end"])
        if not ready.daily_feed_running(self.db, context["data_interval_end"]):
            self.log.info("no listens_daily partition in the %d days before %s: the daily feed does not cover this "
                          "week, so %s is not expected; training on what the lake holds",
                          ready.FEED_LOOKBACK_DAYS, day, ready.daily_path(day))
            return None
        try:
            return super().execute(context)
        except AirflowSensorTimeout as e:
            raise AirflowSensorTimeout(
                f"day {day} is not loaded: the registry holds no {ready.daily_path(day)} after "
                f"{self.timeout / 3600:g} h (wait_timeout_hours). Run listens_daily for {day} (or backfill it), then "
                "clear this task; trigger with wait_for_daily=false to train without that day") from e

    def poke(self, context: Any) -> bool:
        doc = ready.last_day_loaded(self.db, context["data_interval_end"])
        day = ready.last_day(context["data_interval_end"])
        if doc is None:
            self.log.info("waiting for %s (listens_daily for %s)", ready.daily_path(day), day)
            return False
        self.log.info("day %s is loaded: %s (%s rows, run %s)", day, doc["_id"], doc.get("rows"), doc.get("run_id"))
        return True
