"""The lake root as an ``ObjectStoragePath`` (design §3): one code path for file:// and s3://."""

from __future__ import annotations

from airflow.sdk import ObjectStoragePath, Variable

from musicrec import stores

LAKE_ROOT_VARIABLE = "musicrec_lake_root"


def lake_root() -> ObjectStoragePath:
    """``file:///…/data/lake`` on the embedded default, ``s3://aws_default@datalake`` in production."""
    return stores.lake_root(Variable.get(LAKE_ROOT_VARIABLE), ObjectStoragePath)


def source_path(url: str) -> ObjectStoragePath:
    """A non-HTTP source URL as a path (``s3://conn_id@bucket/key`` uses that Airflow connection)."""
    return ObjectStoragePath(url)
