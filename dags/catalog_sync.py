"""catalog_sync: ``songs`` and ``users`` in MongoDB from the lake's listens (design §4–5).

Runs when ``lake_listens`` is updated (listens_import, listens_daily) or daily at midnight UTC,
whichever comes first. Counters are recomputed as of the run anchor: the data interval's end for
time-scheduled runs (a daily run for D owns [D, D+1) and counts everything before D+1), the end of
the newest listens partition for asset-triggered and manual runs. A re-run for the same anchor
writes nothing; a backfill older than what the catalog reflects leaves counters alone (param
``force`` to recompute them anyway). Emits ``mongo_songs`` for the lyrics DAG.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, AssetOrTimeSchedule, CronDataIntervalTimetable, Param

from musicrec_airflow.assets import LAKE_LISTENS, MONGO_SONGS
from musicrec_airflow.defaults import default_args
from musicrec_airflow.operators.catalog import CatalogSyncOperator

with DAG(
    dag_id="catalog_sync",
    description="Upsert songs/users into MongoDB from the lake; recompute play counters",
    schedule=AssetOrTimeSchedule(timetable=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
                                 assets=[LAKE_LISTENS]),
    start_date=pendulum.datetime(2009, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["musicrec", "catalog", "mongo"],
    params={
        "trending_days": Param(7, type="integer", minimum=1, maximum=365,
                               description="plays_7d counts plays in this many days before the anchor"),
        "force": Param(False, type="boolean",
                       description="recompute counters even when the catalog reflects a later anchor"),
    },
    doc_md=__doc__,
) as dag:
    CatalogSyncOperator(task_id="sync", trending_days="{{ params.trending_days }}", force="{{ params.force }}",
                        outlets=[MONGO_SONGS])
