"""listens_import end to end through ``airflow dags test`` on the tiny preset: file:// and moto S3."""

from __future__ import annotations

import json

import boto3
import pyarrow.parquet as pq
import pytest
from pymongo import MongoClient
from upath import UPath

from musicrec.lake.clean import REASONS
from tests.conftest import airflow_dags_test

pytestmark = pytest.mark.integration


def _registry(mongo_uri: str, db: str) -> dict[str, dict]:
    with MongoClient(mongo_uri) as client:
        return {d["_id"]: d for d in client[db]["lake_partitions"].find()}


def _check_lake(root: UPath, counts: dict, registry: dict[str, dict]) -> dict[str, str]:
    """The lake holds exactly the sample's valid events, its malformed lines, its profiles."""
    listens = sorted((p for p in (root / "listens").rglob("*.parquet")), key=lambda p: p.path)
    assert listens, "no listens partitions written"
    rows = 0
    shas = {}
    for path in listens:
        rel = path.path[len(root.path.rstrip("/")) + 1 :]
        with path.open("rb") as fh:
            table = pq.read_table(fh)
        day = rel.split("/")[1].removeprefix("date=")
        assert {t.date().isoformat() for t in table.column("ts").to_pylist()} == {day}
        keys = list(zip(table.column("user_id").to_pylist(), table.column("ts").to_pylist(), strict=True))
        assert keys == sorted(keys), f"{rel} is not sorted by (user_id, ts)"
        doc = registry[rel]
        assert doc["rows"] == table.num_rows and doc["producer"] == "import-tiny"
        shas[rel] = doc["sha256"]
        rows += table.num_rows
    assert rows == counts["valid_events"]
    days = {p.split("/")[1] for p in shas}
    assert min(days) == f"date={counts['first_date']}" and max(days) == f"date={counts['last_date']}"

    quarantined: dict[str, int] = {}
    for path in (root / "quarantine" / "import-tiny").rglob("*.parquet"):
        with path.open("rb") as fh:
            for reason in pq.read_table(fh).column("reason").to_pylist():
                quarantined[reason] = quarantined.get(reason, 0) + 1
    assert quarantined == {r: counts["malformed"][r] for r in REASONS if counts["malformed"].get(r)}

    with (root / "profiles" / "users.parquet").open("rb") as fh:
        assert pq.read_table(fh).num_rows == counts["profiles"]
    assert registry["profiles/users.parquet"]["rows"] == counts["profiles"]
    return shas


def test_listens_import_on_local_lake_and_rerun_is_identical(tiny_sample, airflow_db, mongo_uri, tmp_root):
    lake = tmp_root / "lake-file"
    env = {
        "AIRFLOW_VAR_MUSICREC_LAKE_ROOT": lake.as_uri(),
        "AIRFLOW_CONN_MONGO_DEFAULT": mongo_uri.replace("mongodb://", "mongo://") + "it_file",
    }
    conf = {"source_url": tiny_sample.archive.as_uri(), "dataset": "tiny"}
    airflow_dags_test("listens_import", conf, env)
    root = UPath(lake)
    registry = _registry(mongo_uri, "it_file")
    shas = _check_lake(root, tiny_sample.counts, registry)
    files = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "raw" not in p.parts}

    out = airflow_dags_test("listens_import", conf, env)
    assert "nothing to do" in out  # the download is a no-op the second time
    again = _registry(mongo_uri, "it_file")
    assert again == registry  # same documents, same run_id and written_at: nothing rewritten
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and "raw" not in p.parts} == files
    assert _check_lake(root, tiny_sample.counts, again) == shas


def test_listens_import_on_s3_lake(tiny_sample, airflow_db, mongo_uri, s3_endpoint, tmp_root):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for bucket in ("it-landing", "it-lake"):
        s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(tiny_sample.archive), "it-landing", "dumps/lastfm-dataset-1K.tar.gz")
    env = {
        "AIRFLOW_VAR_MUSICREC_LAKE_ROOT": "s3://aws_default@it-lake",
        "AIRFLOW_VAR_MUSICREC_ALLOWED_SOURCES": '["s3://aws_default@it-landing/dumps/"]',
        "AIRFLOW_CONN_MONGO_DEFAULT": mongo_uri.replace("mongodb://", "mongo://") + "it_s3",
    }
    conf = {"source_url": "s3://aws_default@it-landing/dumps/lastfm-dataset-1K.tar.gz", "dataset": "tiny",
            "sha256": tiny_sample.counts["files"]["lastfm-dataset-1K.tar.gz"]["sha256"]}
    airflow_dags_test("listens_import", conf, env)
    root = UPath("s3://it-lake", endpoint_url=s3_endpoint, key="testing", secret="testing")
    registry = _registry(mongo_uri, "it_s3")
    shas = _check_lake(root, tiny_sample.counts, registry)
    manifest = json.loads((root / "raw" / "tiny" / "_manifest.json").read_text())
    assert manifest["url"] == conf["source_url"]

    airflow_dags_test("listens_import", conf, env)
    assert _registry(mongo_uri, "it_s3") == registry
    assert _check_lake(root, tiny_sample.counts, registry) == shas
