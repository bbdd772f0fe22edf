"""Global sort + dedupe + split by date, on small staged parts."""

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from musicrec.lake import schema
from musicrec.lake.partition import sort_staged, split_by_date


def _staged(rows):
    cols = {name: [] for name in schema.STAGED.names}
    for line_no, (user, ts, track) in enumerate(rows, start=1):
        t = datetime.fromisoformat(ts).replace(tzinfo=UTC)
        for name, value in (("user_id", user), ("track_id", track), ("artist_id", None), ("artist_name", "A"),
                            ("track_name", "T"), ("album", None), ("duration_s", None), ("ts", t),
                            ("action", "listen"), ("source", "s"), ("line_no", line_no), ("date", t.date())):
            cols[name].append(value)
    return pa.table(cols, schema=schema.STAGED)


def test_sort_dedupe_and_split(tmp_path):
    rows = [
        ("u2", "2009-05-05T10:00:00", "t1"),
        ("u1", "2009-05-04T12:00:00", "t1"),
        ("u1", "2009-05-04T09:00:00", "t2"),
        ("u1", "2009-05-04T09:00:00", "t2"),  # exact duplicate event
        ("u1", "2009-05-05T01:00:00", "t3"),
        ("u1", "2009-05-04T09:00:00", "t3"),  # same time, other track: kept
    ]
    staged = _staged(rows)
    # two parts, with the duplicate's twin in the other part: dedupe must be global
    pq.write_table(staged.slice(0, 3), tmp_path / "p0.parquet")
    pq.write_table(staged.slice(3), tmp_path / "p1.parquet")
    spill = tmp_path / "spill"
    spill.mkdir()
    n = sort_staged([tmp_path / "p0.parquet", tmp_path / "p1.parquet"], tmp_path / "sorted.parquet",
                    temp_dir=spill, threads=1)
    assert n == 6

    published = []
    stats = split_by_date(tmp_path / "sorted.parquet", tmp_path / "out", "import-x.parquet",
                          on_file=published.append, batch_rows=2)  # tiny batches: key carried across
    assert (stats.rows_in, stats.rows_out, stats.duplicates) == (6, 5, 1)
    assert [(p.date, p.rows) for p in published] == [("2009-05-04", 3), ("2009-05-05", 2)]

    day1 = pq.read_table(tmp_path / "out" / "date=2009-05-04" / "import-x.parquet")
    assert day1.schema.equals(schema.LISTENS, check_metadata=False)
    got = [(r["user_id"], r["ts"].strftime("%H"), r["track_id"]) for r in day1.to_pylist()]
    assert got == [("u1", "09", "t2"), ("u1", "09", "t3"), ("u1", "12", "t1")]  # sorted by user, ts
    day2 = pq.read_table(tmp_path / "out" / "date=2009-05-05" / "import-x.parquet").to_pylist()
    assert [r["user_id"] for r in day2] == ["u1", "u2"]


def test_sort_is_deterministic(tmp_path):
    rows = [(f"u{i % 7}", f"2009-05-0{1 + i % 3}T0{i % 10}:00:00", f"t{i % 5}") for i in range(200)]
    pq.write_table(_staged(rows), tmp_path / "p.parquet")
    outputs = []
    for attempt in range(2):
        spill = tmp_path / f"spill{attempt}"
        spill.mkdir()
        sort_staged([tmp_path / "p.parquet"], tmp_path / f"s{attempt}.parquet", temp_dir=spill)
        split_by_date(tmp_path / f"s{attempt}.parquet", tmp_path / f"o{attempt}", "f.parquet")
        outputs.append(sorted(p.read_bytes() for p in (tmp_path / f"o{attempt}").rglob("*.parquet")))
    assert outputs[0] == outputs[1]  # byte-identical files: re-runs publish the same sha256


def test_empty_input(tmp_path):
    spill = tmp_path / "spill"
    spill.mkdir()
    assert sort_staged([], tmp_path / "s.parquet", temp_dir=spill) == 0
    stats = split_by_date(tmp_path / "s.parquet", tmp_path / "o", "f.parquet")
    assert stats.rows_out == 0 and stats.files == []
