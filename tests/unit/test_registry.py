"""The lake_partitions registry and the run anchor, against a real SecantusDB server."""

from datetime import UTC, date, datetime

import pytest

from musicrec import registry


def _rec(day: str, sha: str = "a" * 64, producer: str = "import-x", rows: int = 10) -> registry.PartitionRecord:
    return registry.PartitionRecord(path=f"listens/date={day}/{producer}.parquet", dataset="x", date=day,
                                    producer=producer, rows=rows, bytes=100, sha256=sha, run_id="r1")


def test_record_writes_only_changed_documents(mongo_db):
    registry.ensure_indexes(mongo_db)
    assert registry.record(mongo_db, [_rec("2009-05-04"), _rec("2009-05-05")]) == 2
    first = registry.get(mongo_db, "listens/date=2009-05-04/import-x.parquet")
    # identical content: nothing written, written_at unchanged
    assert registry.record(mongo_db, [_rec("2009-05-04"), _rec("2009-05-05")]) == 0
    assert registry.get(mongo_db, "listens/date=2009-05-04/import-x.parquet") == first
    assert registry.record(mongo_db, [_rec("2009-05-04", sha="b" * 64)]) == 1
    assert registry.get(mongo_db, "listens/date=2009-05-04/import-x.parquet")["sha256"] == "b" * 64


def test_producer_paths_forget_and_ranges(mongo_db):
    registry.record(mongo_db, [_rec("2009-05-04"), _rec("2009-05-05"), _rec("2009-05-05", producer="daily"),
                               _rec("2009-05-07")])
    assert registry.paths_of_producer(mongo_db, "daily") == {"listens/date=2009-05-05/daily.parquet"}
    window = registry.listens_partitions(mongo_db, date(2009, 5, 5), date(2009, 5, 7))
    assert [d["_id"] for d in window] == ["listens/date=2009-05-05/daily.parquet",
                                          "listens/date=2009-05-05/import-x.parquet"]
    assert registry.newest_listens_date(mongo_db) == date(2009, 5, 7)
    assert registry.forget(mongo_db, ["listens/date=2009-05-07/import-x.parquet"]) == 1
    assert registry.newest_listens_date(mongo_db) == date(2009, 5, 5)


def test_resolve_anchor(mongo_db):
    with pytest.raises(LookupError, match="no listens partitions"):
        registry.resolve_anchor(None, mongo_db)
    registry.record(mongo_db, [_rec("2009-05-04")])
    # manual/asset-triggered run: end of the newest partition's day
    assert registry.resolve_anchor(None, mongo_db) == datetime(2009, 5, 5, tzinfo=UTC)
    # scheduled run: the data interval end, whatever the lake holds
    end = datetime(2010, 1, 1, 6, tzinfo=UTC)
    assert registry.resolve_anchor(end, mongo_db) == end
