"""Thin operators of the lake import: they resolve connections/params and call the library."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Variable

from musicrec.ids import slug
from musicrec.lake import download, importer
from musicrec_airflow.lake import lake_root, source_path
from musicrec_airflow.operators.base import MongoStep
from musicrec_airflow.sources import allowed_sources, refusals_fail

SOURCE_URL_VARIABLE = "musicrec_listens_source_url"


class DownloadDatasetOperator(BaseOperator):
    """Download ``source_url`` (http(s)/file/s3) into ``raw/<dataset>/``; resumable, checksummed.

    The URL must pass Variable ``musicrec_allowed_sources`` (``musicrec.sources``); at most
    ``max_bytes`` are fetched.

    :param source_url: http(s)/file/s3 URL of the dump; empty = Variable ``musicrec_listens_source_url``.
    :param sha256: the expected sha256 of the file; empty = not checked.
    :param dataset: the dataset slug under ``raw/``.
    :param max_bytes: refuse a larger source; empty = the default (4 GiB).
    """

    template_fields: Sequence[str] = ("source_url", "sha256", "dataset", "max_bytes")

    def __init__(self, *, source_url: str = "", sha256: str = "", dataset: str = "lastfm-1k",
                 max_bytes: int | str = download.DEFAULT_MAX_BYTES, **kwargs: Any):
        super().__init__(**kwargs)
        self.source_url = source_url
        self.sha256 = sha256
        self.dataset = dataset
        self.max_bytes = max_bytes

    def execute(self, context: Any) -> dict[str, Any]:
        url = (self.source_url or "").strip() or Variable.get(SOURCE_URL_VARIABLE, default="")
        if not url:
            raise ValueError("no source_url given: pass it in the run conf or set the Airflow Variable "
                             f"{SOURCE_URL_VARIABLE}")
        dataset = slug(self.dataset)
        raw_dir = lake_root() / "raw" / dataset
        max_bytes = int(self.max_bytes) if str(self.max_bytes).strip() else download.DEFAULT_MAX_BYTES
        with refusals_fail():
            result = download.download(url, raw_dir, sha256=(self.sha256 or "").strip() or None,
                                       open_source=source_path, allowed=allowed_sources(), max_bytes=max_bytes)
        out = result.manifest() | {"dataset": dataset, "skipped": result.skipped}
        self.log.info("download: %s", out)
        return out


class CleanListensOperator(BaseOperator):
    """Clean ``raw/<dataset>/`` into staged rows + quarantine (``musicrec.lake.importer.clean_raw``).

    :param dataset: the dataset slug under ``raw/``.
    :param max_unpacked_bytes: refuse an archive that unpacks to more; empty = the default (64 GiB).
    """

    template_fields: Sequence[str] = ("dataset", "max_unpacked_bytes")

    def __init__(self, *, dataset: str = "lastfm-1k",
                 max_unpacked_bytes: int | str = importer.DEFAULT_MAX_UNPACKED_BYTES, **kwargs: Any):
        super().__init__(**kwargs)
        self.dataset = dataset
        self.max_unpacked_bytes = max_unpacked_bytes

    def execute(self, context: Any) -> dict[str, Any]:
        bound = int(self.max_unpacked_bytes) if str(self.max_unpacked_bytes).strip() else importer.DEFAULT_MAX_UNPACKED_BYTES
        with refusals_fail():
            result = importer.clean_raw(lake_root(), slug(self.dataset), max_unpacked_bytes=bound)
        return {k: v for k, v in result.items() if k != "parts"} | {"parts": len(result["parts"])}


class PartitionListensOperator(MongoStep):
    """Write ``listens/date=D/import-<dataset>.parquet`` and ``profiles/users.parquet``; registry.

    :param dataset: the dataset slug under ``raw/``.
    :param mongo_conn_id: the MongoDB connection (:class:`MongoStep`).
    """

    template_fields: Sequence[str] = ("dataset",)

    def __init__(self, *, dataset: str = "lastfm-1k", **kwargs: Any):
        super().__init__(**kwargs)
        self.dataset = dataset

    def execute(self, context: Any) -> dict[str, Any]:
        return importer.partition_clean(lake_root(), slug(self.dataset), self.db, run_id=context["run_id"])
