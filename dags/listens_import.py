"""listens_import: download -> clean -> partition a whole Last.fm-1K-format dump (design §5)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from musicrec_airflow.assets import LAKE_LISTENS
from musicrec_airflow.defaults import default_args
from musicrec_airflow.operators.lake import (
    CleanListensOperator,
    DownloadDatasetOperator,
    PartitionListensOperator,
)

with DAG(
    dag_id="listens_import",
    description="Import a Last.fm-1K-format dump into the Parquet lake (listens/date=YYYY-MM-DD/)",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["musicrec", "lake", "import"],
    params={
        "source_url": Param(None, type=["null", "string"],
                            description="http(s)://, file:// or s3://conn@bucket/key of the dump; empty = "
                                        "Variable musicrec_listens_source_url. It must be under a prefix "
                                        "of Variable musicrec_allowed_sources"),
        "sha256": Param(None, type=["null", "string"], description="expected sha256 of the file (optional)"),
        "dataset": Param("lastfm-1k", type="string", minLength=1, description="dataset slug under raw/"),
        "max_bytes": Param(4 * 2**30, type="integer", minimum=1,
                           description="refuse a source larger than this many bytes (default 4 GiB; the "
                                       "real Last.fm-1K dump is ~640 MB)"),
        "max_unpacked_bytes": Param(64 * 2**30, type="integer", minimum=1,
                                    description="refuse an archive that unpacks to more than this many bytes "
                                                "(default 64 GiB; the real dump unpacks to ~2.5 GB)"),
    },
    doc_md=__doc__,
) as dag:
    download = DownloadDatasetOperator(
        task_id="download",
        source_url="{{ params.source_url or '' }}",
        sha256="{{ params.sha256 or '' }}",
        dataset="{{ params.dataset }}",
        max_bytes="{{ params.max_bytes }}",
    )
    clean = CleanListensOperator(task_id="clean", dataset="{{ params.dataset }}",
                                 max_unpacked_bytes="{{ params.max_unpacked_bytes }}")
    partition = PartitionListensOperator(task_id="partition", dataset="{{ params.dataset }}",
                                         outlets=[LAKE_LISTENS])
    download >> clean >> partition
