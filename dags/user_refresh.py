"""user_refresh: fold users' new listens into their vectors of the active ALS model (issue 18).

Scheduled by the change stream on Mongo ``listen_events`` (asset ``mongo_listen_events``, an
AssetWatcher in the triggerer): each debounced batch of inserted events names the users who
listened; the run refreshes exactly those users (events arriving during a run are served by the
next one). The fold-in is one exact ALS user step against the active model's item factors with the
model's own weights, alpha and regularization, over the user's listens since the model window's
start (the lake plus events not loaded yet), written to ``users.refreshed_vectors.<active version>``
(serving prefers it; the published ``latent_vectors`` stay as the model's artifact has them) — so
``home()`` reflects a listen without a retrain, and the weekly ``als_training`` recomputes
everyone. A manual run takes ``user_ids``, else every user with events received in the last
``since_hours``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from musicrec_airflow.assets import LISTEN_USERS_STREAM, MONGO_LISTEN_EVENTS
from musicrec_airflow.defaults import default_args
from musicrec_airflow.operators.freshness import FoldInUsersOperator

with DAG(
    dag_id="user_refresh",
    description="Fold new listens into user vectors of the active ALS model (change stream on listen_events)",
    schedule=[MONGO_LISTEN_EVENTS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["musicrec", "als", "freshness", "mongo"],
    params={
        "user_ids": Param([], type="array", items={"type": "string"},
                          description="manual run: users to refresh (empty = users with recent events)"),
        "since_hours": Param(24, type="number", minimum=0, description="manual run without user_ids: users "
                                                                     "with events received this recently"),
    },
    doc_md=__doc__,
) as dag:
    FoldInUsersOperator(task_id="fold_in", changes_stream=LISTEN_USERS_STREAM,
                        user_ids="{{ params.user_ids | tojson }}", since_hours="{{ params.since_hours }}")
