"""als_training: window → train (+ evaluate vs popularity) → gate → blue/green publish (design §5).

Weekly on a data interval: the run for the week ending W trains on the listens in
``[W − window_days, W)``; manual and ``airflow dags test`` runs without a past date use the end of
the newest listens partition. Backfill: ``airflow backfill create --dag-id als_training --from-date …
--to-date … --reprocess-behavior completed``; an active model whose window ends later is never
replaced (param ``force``), so out-of-order backfills cannot move the alias back.

Publish: item vectors → ``music_collection_v<version>`` (upsert, HNSW/IP index verified, loaded) →
the Qdrant mirror → ``users.latent_vectors.<version>`` → alias swap → model ``active`` → old versions dropped.
A gate refusal skips the publish tasks and leaves the active model serving.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param

from musicrec import settings
from musicrec_airflow.assets import MILVUS_MUSIC_COLLECTION
from musicrec_airflow.defaults import POOL_GPU, POOL_QDRANT_LOCAL, default_args
from musicrec_airflow.operators.als import (
    AlsActivateOperator,
    AlsGateOperator,
    AlsMilvusIndexOperator,
    AlsMilvusUpsertOperator,
    AlsPublishUsersOperator,
    AlsSwapAliasOperator,
    AlsTrainOperator,
    QdrantMirrorOperator,
)
from musicrec_airflow.sensors.listens import ListensDaySensor

# the params train reads, each passed as "{{ params.<name> }}" to the argument of the same name
TRAIN_PARAMS = ("window_days", "eval_days", "factors", "iterations", "regularization", "alpha", "confidence",
                "weight_complete", "weight_listen", "weight_skip", "backend")
INDEX = {"index_type": "{{ params.index_type }}", "index_params": "{{ params.index_params }}"}

with DAG(
    dag_id="als_training",
    description="Train implicit ALS on a lake window, gate it against popularity, publish to Milvus/Qdrant/Mongo",
    schedule=CronDataIntervalTimetable("0 0 * * 0", timezone="UTC"),
    start_date=pendulum.datetime(2009, 1, 4, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["musicrec", "als", "milvus", "gpu"],
    params={
        "window_days": Param(90, type="integer", minimum=8, maximum=3650, description="training window (days)"),
        "eval_days": Param(7, type="integer", minimum=1, maximum=60,
                           description="held-out last days for the evaluation"),
        "factors": Param(64, type="integer", minimum=2, maximum=1024),
        "iterations": Param(15, type="integer", minimum=1, maximum=200),
        "regularization": Param(0.1, type="number", minimum=0),
        "alpha": Param(40.0, type="number", exclusiveMinimum=0, description="confidence = 1 + alpha·weight"),
        "confidence": Param("linear", enum=["linear", "log"], description="linear 1+αw or log 1+α·ln(1+w)"),
        "weight_complete": Param(1.0, type="number"),
        "weight_listen": Param(0.5, type="number"),
        "weight_skip": Param(0.0, type="number"),
        "backend": Param("auto", enum=["auto", "implicit", "implicit-cpu", "implicit-gpu", "torch", "torch-cpu",
                                       "torch-cuda"]),
        "min_lift": Param(1.1, type="number", minimum=0, description="ALS ndcg@10 >= min_lift × popularity"),
        "tolerance": Param(0.02, type="number", minimum=0,
                           description="ALS ndcg@10 >= the active model's − tolerance"),
        "force": Param(False, type="boolean", description="replace an active model whose window ends later"),
        "index_type": Param("HNSW", type="string"),
        "index_params": Param('{"M": 16, "efConstruction": 200}', type="string", description="JSON"),
        "wait_for_daily": Param(True, type="boolean",
                                description="scheduled/backfill runs wait for day W-1's listens_daily partition"),
        "wait_timeout_hours": Param(6.0, type="number", minimum=0,
                                    description="then fail clearly (wait_for_listens)"),
    },
    doc_md=__doc__,
) as dag:
    wait = ListensDaySensor(task_id="wait_for_listens", poke_interval=300,
                            wait_for_daily="{{ params.wait_for_daily }}",
                            wait_timeout_hours="{{ params.wait_timeout_hours }}")
    train = AlsTrainOperator(task_id="train", pool=POOL_GPU, queue=settings.gpu_queue(),
                             **{name: "{{ params." + name + " }}" for name in TRAIN_PARAMS})
    gate = AlsGateOperator(task_id="gate", min_lift="{{ params.min_lift }}", tolerance="{{ params.tolerance }}",
                           force="{{ params.force }}")
    milvus_upsert = AlsMilvusUpsertOperator(task_id="milvus_upsert", **INDEX)
    milvus_index = AlsMilvusIndexOperator(task_id="milvus_index", **INDEX)
    qdrant = QdrantMirrorOperator(task_id="qdrant_mirror", pool=POOL_QDRANT_LOCAL)
    users = AlsPublishUsersOperator(task_id="publish_users")
    swap = AlsSwapAliasOperator(task_id="swap_alias", pool=POOL_QDRANT_LOCAL, outlets=[MILVUS_MUSIC_COLLECTION])
    activate = AlsActivateOperator(task_id="activate", pool=POOL_QDRANT_LOCAL)
    wait >> train >> gate >> milvus_upsert >> milvus_index >> qdrant >> users >> swap >> activate
