"""als_rollback: serve a retained ALS version again (manual).

Param ``to_version``: the version to serve; empty = the version the active model replaced (kept by
the publish's cleanup), else the newest retained one. The Models page (``/musicrec/models``) triggers
it through Airflow's REST API with its "roll back to …" buttons; rolling forward is the same run with
the newer version.

The task checks the version first and refuses (fails, nothing moved) one whose collection is gone
from any store, whose artifacts are missing or differ from their registered sha256, or on which the
store audit's ALS scope finds anything; then it moves the ``music_collection`` alias in every store
and activates the model — the same atomic flip of items and users as a publish (readers take the
version from the alias and read that version's user vectors). Emits ``milvus_music_collection``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from musicrec_airflow.assets import MILVUS_MUSIC_COLLECTION
from musicrec_airflow.defaults import POOL_QDRANT_LOCAL, default_args
from musicrec_airflow.operators.rollback import AlsRollbackOperator

with DAG(
    dag_id="als_rollback",
    description="Point music_collection and the users back at a retained ALS version, atomically",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["musicrec", "als", "milvus", "qdrant"],
    params={
        "to_version": Param("", type=["null", "string"], maxLength=64,
                            description="the retained version to serve (empty: the one the active model replaced)"),
        "checksums": Param(True, type="boolean", description="hash the version's artifacts against their sha256"),
    },
    doc_md=__doc__,
) as dag:
    AlsRollbackOperator(task_id="rollback", pool=POOL_QDRANT_LOCAL, to_version="{{ params.to_version or '' }}",
                        checksums="{{ params.checksums }}", outlets=[MILVUS_MUSIC_COLLECTION])
