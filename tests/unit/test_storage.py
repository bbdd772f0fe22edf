"""Atomic publish on local disk and on S3 (moto), registry-relative keys, JSON helpers."""

import os

import boto3
import pytest
from upath import UPath

from musicrec.lake import storage


def test_publish_replaces_atomically_and_moves_source(tmp_path):
    root = UPath(tmp_path / "lake")
    dest = root / "listens" / "date=2009-05-04" / "f.parquet"
    src = tmp_path / "src.bin"
    src.write_bytes(b"one")
    info = storage.publish_file(src, dest)
    assert dest.read_bytes() == b"one" and not src.exists()
    assert info.bytes == 3 and info.sha256 == storage.sha256_file(storage.local_path(dest)).sha256
    src.write_bytes(b"two!")
    storage.publish_file(src, dest, keep_source=True)
    assert dest.read_bytes() == b"two!" and src.exists()
    # no temp names are left next to the published file
    assert os.listdir(storage.local_path(dest).parent) == ["f.parquet"]
    assert storage.relative(dest, root) == "listens/date=2009-05-04/f.parquet"
    with pytest.raises(ValueError):
        storage.relative(UPath(tmp_path / "elsewhere"), root)


def test_json_roundtrip_and_listing(tmp_path):
    root = UPath(tmp_path / "lake")
    storage.write_json_atomic(root / "a" / "m.json", {"x": 1})
    storage.write_json_atomic(root / "a" / "b" / "n.json", {"y": [1, 2]})
    assert storage.read_json(root / "a" / "m.json") == {"x": 1}
    assert [storage.relative(p, root) for p in storage.list_files(root / "a", "*.json")] == [
        "a/b/n.json", "a/m.json"]
    assert storage.list_files(root / "missing") == []
    storage.delete(root / "a" / "m.json")
    storage.delete(root / "a" / "m.json")  # deleting twice is fine
    assert not (root / "a" / "m.json").exists()


def test_publish_and_fetch_on_s3(s3_endpoint, tmp_path):
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="lake-unit")
    root = UPath("s3://lake-unit", endpoint_url=s3_endpoint, key="testing", secret="testing")
    dest = root / "models" / "x.bin"
    src = tmp_path / "x.bin"
    src.write_bytes(b"payload" * 1000)
    info = storage.publish_file(src, dest)
    assert not storage.is_local(dest) and not src.exists()
    assert storage.sha256_lake(dest) == info
    back = storage.fetch_to_local(dest, tmp_path / "back.bin")
    assert back.read_bytes() == b"payload" * 1000
    assert storage.relative(dest, root) == "models/x.bin"
    storage.write_json_atomic(root / "models" / "m.json", {"ok": True})
    assert storage.read_json(root / "models" / "m.json") == {"ok": True}
    assert [p.name for p in storage.list_files(root / "models")] == ["m.json", "x.bin"]


def test_local_file_of_an_s3_lake_is_fetched_fresh(s3_endpoint, tmp_path):
    """Without a checksum a cached copy could be stale: a replaced model artifact must be re-read."""
    from musicrec.lake.reader import local_file

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="lake-local-file")
    root = UPath("s3://lake-local-file", endpoint_url=s3_endpoint, key="testing", secret="testing")
    for payload in (b"version one", b"version two, longer"):
        src = tmp_path / "v.bin"
        src.write_bytes(payload)
        storage.publish_file(src, root / "models" / "v.bin")
        assert local_file(root, "models/v.bin").read_bytes() == payload
    local = UPath(tmp_path / "lake")
    storage.write_json_atomic(local / "m.json", {"x": 1})
    assert local_file(local, "m.json") == storage.local_path(local / "m.json")  # no copy on disk
    with pytest.raises(FileNotFoundError, match="missing"):
        local_file(local, "nope.parquet")
