"""listens_daily: the app events of day D (``landing/date=D/``) → ``listens/date=D/daily.parquet``.

A run owns the data interval [D, D+1); backfill a range with
``airflow backfill create --dag-id listens_daily --from-date … --to-date … --reprocess-behavior completed``.
No landing folder for D is an explicit "no data" outcome: ``merge`` is skipped, the lake is unchanged.
By hand: ``airflow dags test listens_daily <D+1>`` (Airflow 3 reads that date as "run after", so the
run owns the interval that ended then, [D, D+1)), or trigger with the param ``{"date": "D"}``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, TriggerRule
from airflow.timetables.interval import CronDataIntervalTimetable

from musicrec_airflow.assets import LAKE_LISTENS
from musicrec_airflow.defaults import default_args
from musicrec_airflow.operators.daily import (
    CleanLandingFilesOperator,
    MergeLandingDayOperator,
    PlanLandingDayOperator,
)

with DAG(
    dag_id="listens_daily",
    description="Clean one day of landing app events into listens/date=D/daily.parquet",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2009, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["musicrec", "lake", "daily"],
    params={
        "date": Param(None, type=["null", "string"], pattern=r"^\d{4}-\d{2}-\d{2}$",
                      description="YYYY-MM-DD to process instead of the run's data interval (manual runs)"),
        "max_chunks": Param(8, type="integer", minimum=1, maximum=64,
                            description="at most this many parallel clean tasks for the day's files"),
    },
    doc_md=__doc__,
) as dag:
    plan = PlanLandingDayOperator(task_id="plan", day="{{ params.date or '' }}",
                                  max_chunks="{{ params.max_chunks }}")
    clean = CleanLandingFilesOperator.partial(task_id="clean", day="{{ params.date or '' }}").expand(
        file_names=plan.output)
    merge = MergeLandingDayOperator(task_id="merge", plan_task_id="plan", day="{{ params.date or '' }}",
                                    trigger_rule=TriggerRule.NONE_FAILED, outlets=[LAKE_LISTENS])
    plan >> clean >> merge
