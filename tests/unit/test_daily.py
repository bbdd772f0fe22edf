"""listens_daily's library: landing JSON lines → listens/date=D/daily.parquet, quarantine, registry."""

import gzip
import json
import shutil
from datetime import UTC, date, datetime

import pyarrow.parquet as pq
import pytest
from upath import UPath

from musicrec import registry
from musicrec.ids import derived_track_id
from musicrec.lake import daily
from musicrec.sample import simulate

D = date(2009, 5, 5)


def _clean(lines: list[bytes], day: date = D):
    import io

    return daily.clean_stream(io.BytesIO(b"\n".join(lines) + b"\n"), day, file_no=0, source_file="f.jsonl")


def _ev(**overrides) -> bytes:
    event = {"user_id": "user_000001", "artist_id": None, "artist_name": "Deep Dish", "track_name": "Flashdance",
             "album": None, "duration_s": 201.5, "ts": "2009-05-05T10:11:12.345Z", "action": "complete",
             "source": "app"}
    event.update(overrides)
    return json.dumps({k: v for k, v in event.items() if v is not ...}).encode()


def test_clean_normalizes_like_the_import():
    rows, quarantine, stats = _clean([
        _ev(),
        _ev(ts=int(datetime(2009, 5, 5, 23, 59, 59, tzinfo=UTC).timestamp() * 1000), track_id="mbid-1",
            action=...),
        _ev(ts="2009-05-05T01:00:00", user_id="  user_000002 ", artist_name=" Deep Dish "),  # naive = UTC
        _ev(ts="2009-05-05T03:00:00+02:00"),  # = 01:00 UTC, same day
    ])
    assert quarantine.num_rows == 0 and stats.clean == 4
    r = rows.to_pylist()
    assert r[0]["track_id"] == derived_track_id("Deep Dish", "Flashdance")  # same id the import derives
    assert r[0]["ts"] == datetime(2009, 5, 5, 10, 11, 12, 345000, tzinfo=UTC)
    assert (r[0]["action"], r[0]["duration_s"], r[0]["album"]) == ("complete", 201.5, None)
    assert (r[1]["track_id"], r[1]["action"]) == ("mbid-1", "listen")  # missing action = listen
    assert (r[2]["user_id"], r[2]["artist_name"]) == ("user_000002", "Deep Dish")
    assert r[3]["ts"] == datetime(2009, 5, 5, 1, tzinfo=UTC)


@pytest.mark.parametrize("reason,line", [
    ("invalid_utf8", b'{"user_id": "u\xff"}'),
    ("invalid_json", b'{"user_id": "u1", '),
    ("invalid_json", b'["not", "an", "object"]'),
    ("empty_user", _ev(user_id="  ")),
    ("bad_timestamp", _ev(ts="yesterday")),
    ("bad_timestamp", _ev(ts=None)),
    ("wrong_date", _ev(ts="2009-05-06T00:00:00Z")),
    ("empty_track", _ev(track_name="")),
    ("bad_action", _ev(action="pause")),
    ("bad_user_id", _ev(user_id="u" * 65)),
    ("bad_user_id", _ev(user_id="user\u0000nul")),
    ("bad_track_id", _ev(track_id="t" * 65)),  # an app event's track id over Milvus' VARCHAR(64)
    ("bad_track_id", _ev(track_id="\u00e9" * 33)),  # 33 characters, 66 UTF-8 bytes
    ("bad_artist_id", _ev(artist_id="a\nb")),
    ("line_too_long", _ev(album="x" * 70_000)),
    ("bad_timestamp", _ev(ts="2009-02-30T10:00:00Z")),
    ("bad_timestamp", _ev(ts=10**20)),  # epoch ms past year 9999
])
def test_each_bad_line_is_quarantined_with_its_reason(reason, line):
    rows, quarantine, stats = _clean([_ev(), line, _ev(user_id="user_000009")])
    assert rows.num_rows == 2 and stats.quarantined == {reason: 1}
    q = quarantine.to_pylist()[0]
    assert (q["reason"], q["line_no"], q["source_file"], q["date"]) == (reason, 2, "f.jsonl", "2009-05-05")


def test_blank_lines_are_counted_not_quarantined():
    rows, quarantine, stats = _clean([_ev(), b"", b"  ", _ev(user_id="u2")])
    assert (rows.num_rows, quarantine.num_rows, stats.blank, stats.lines) == (2, 0, 2, 4)


@pytest.fixture
def lake(tmp_path):
    return UPath(tmp_path / "lake")


def _write_landing(lake, day: date, name: str, lines: list[bytes]) -> None:
    folder = daily.landing_dir(lake, day)
    folder.mkdir(parents=True, exist_ok=True)
    data = b"\n".join(lines) + b"\n"
    (folder / name).write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)


def test_process_day_dedupes_sorts_registers_and_reruns_identically(lake, mongo_db):
    _write_landing(lake, D, "a.jsonl", [_ev(user_id="u2"), _ev(user_id="u1", ts="2009-05-05T09:00:00Z")])
    _write_landing(lake, D, "b.jsonl.gz", [_ev(user_id="u2"),  # exact duplicate of a.jsonl's first event
                                           _ev(user_id="u1", ts="2009-05-05T08:00:00Z"), b"{broken"])
    first = daily.process_day(lake, D, mongo_db, run_id="r1")
    assert first["status"] == "loaded" and first["rows"] == 3 and first["duplicates"] == 1
    assert first["quarantined"] == {"invalid_json": 1}
    path = lake / "listens" / "date=2009-05-05" / "daily.parquet"
    table = pq.read_table(daily.storage.local_path(path))
    assert [(r["user_id"], r["ts"].hour) for r in table.to_pylist()] == [("u1", 8), ("u1", 9), ("u2", 10)]
    doc = registry.get(mongo_db, "listens/date=2009-05-05/daily.parquet")
    assert (doc["producer"], doc["rows"], doc["run_id"]) == ("daily", 3, "r1")
    q = lake / "quarantine" / "daily" / "date=2009-05-05" / "part-00000.parquet"
    assert pq.read_table(daily.storage.local_path(q)).column("source_file").to_pylist() == [
        "landing/date=2009-05-05/b.jsonl.gz"]
    assert not daily.storage.list_files(daily.work_dir(lake, D))  # scratch cleaned up

    data = path.read_bytes()
    again = daily.process_day(lake, D, mongo_db, run_id="r2")
    assert again["rows"] == 3 and path.read_bytes() == data
    assert registry.get(mongo_db, "listens/date=2009-05-05/daily.parquet") == doc  # untouched, still run r1


def test_the_import_file_of_the_day_is_never_touched(lake, mongo_db):
    other = lake / "listens" / "date=2009-05-05" / "import-lastfm-1k.parquet"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"not ours")
    _write_landing(lake, D, "a.jsonl", [_ev()])
    daily.process_day(lake, D, mongo_db, run_id="r1")
    assert other.read_bytes() == b"not ours"


def test_no_landing_folder_is_no_data_and_keeps_the_lake(lake, mongo_db):
    assert daily.plan_day(lake, D) == []
    assert daily.process_day(lake, D, mongo_db, run_id="r1")["status"] == "no_data"
    assert not (lake / "listens").exists()


def test_a_day_whose_lines_are_all_bad_removes_our_file(lake, mongo_db):
    _write_landing(lake, D, "a.jsonl", [_ev()])
    daily.process_day(lake, D, mongo_db, run_id="r1")
    _write_landing(lake, D, "a.jsonl", [b"garbage"])
    result = daily.process_day(lake, D, mongo_db, run_id="r2")
    assert result["status"] == "empty"
    assert not (lake / "listens" / "date=2009-05-05" / "daily.parquet").exists()
    assert registry.get(mongo_db, "listens/date=2009-05-05/daily.parquet") is None


def test_output_does_not_depend_on_chunking(tmp_path, mongo_db):
    simulate(1, tmp_path / "landing", preset="tiny", seed=7, skip_days=0, files_per_day=4)
    outputs = []
    for max_chunks in (1, 3):
        lake = UPath(tmp_path / f"lake{max_chunks}")
        shutil.copytree(tmp_path / "landing", daily.storage.local_path(lake / "landing"))
        chunks = daily.plan_day(lake, D, max_chunks=max_chunks)
        assert len(chunks) == max_chunks
        files = sorted(n for c in chunks for n in c)
        for chunk in chunks:
            daily.clean_files(lake, D, chunk)
        daily.merge_day(lake, D, files, mongo_db, run_id=f"r{max_chunks}")
        outputs.append((lake / "listens" / "date=2009-05-05" / "daily.parquet").read_bytes())
    assert outputs[0] == outputs[1]


def test_simulated_days_match_the_samples_own_landing_days(tmp_path, tiny_sample):
    # simulate(skip_days=0) re-creates the sample's first landing day byte for byte
    simulate(1, tmp_path / "landing", preset="tiny", seed=7, skip_days=0)
    name = "date=2009-05-05/events-0001.jsonl.gz"
    assert (tmp_path / "landing" / name).read_bytes() == (tiny_sample.landing_dir / name).read_bytes()
    more = simulate(2, tmp_path / "more", preset="tiny", seed=7)
    assert more.dates == ["2009-05-08", "2009-05-09"] and more.events > 0


def _iso_matrix() -> list[str]:
    out = []
    for year in (1900, 2000, 2008, 2009):
        for month in range(1, 13):
            for day in (28, 29, 30, 31, 32):
                out.append(f"{year:04d}-{month:02d}-{day:02d}T12:00:00")
    times = ["24:00:00", "23:59:60", "23:59:61", "23:60:00", "12:00:00Z", "12:00:00+01:00", "12:00:00-05:30",
             "12:00:00-0530", "12:00:00+0100", "12:00:00.123Z", "12:00:00+24:00", "12:00:00+23:59", "12:00"]
    out += [f"2009-05-05T{t}" for t in times] + ["2009-05-05", "2009-5-5T12:00:00", "0000-05-05T12:00:00"]
    return out


def _oracle_iso(value: str):
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _assert_cleaned_as(value, want: datetime | None) -> None:
    """The daily clean of one event with ``ts=value``: quarantined as ``bad_timestamp`` when the oracle
    says None, else kept with the oracle's instant (to the millisecond)."""
    day = want.date() if want is not None else D
    rows, quarantine, _ = _clean([_ev(ts=value)], day)
    if want is None:
        assert quarantine.to_pylist()[0]["reason"] == "bad_timestamp"
    else:
        assert rows.num_rows == 1, quarantine.to_pylist()
        assert rows.to_pylist()[0]["ts"] == want.replace(microsecond=want.microsecond // 1000 * 1000)


@pytest.mark.parametrize("value", _iso_matrix())
def test_iso_timestamps_follow_the_calendar_with_python_datetime_as_the_oracle(value):
    want = _oracle_iso(value)
    _assert_cleaned_as(value, want)


@pytest.mark.parametrize("value", [0, -1, 1241481600000, 1241567999999, 253402300799999, 253402300800000,
                                   -62135596800000, -62135596800001, 10**19, -(10**19), "1241481600000",
                                   1241481600000.5, float("inf")])
def test_epoch_millisecond_timestamps_are_exact_and_bounded(value):
    from datetime import timedelta

    try:
        want = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=float(value) if isinstance(value, float)
                                                             else int(value))
    except OverflowError:
        want = None
    _assert_cleaned_as(value, want)


def test_a_line_longer_than_the_limit_is_never_read_whole():
    import io

    class Reads(io.BytesIO):
        def read(self, size=-1):
            assert size is not None and size > 0
            return super().read(size)

        def __iter__(self):  # the old line iterator reads a whole line, however long
            raise AssertionError("unbounded line read")

    data = b"\n".join([_ev(), b"{" + b" " * 200_000 + b"}", _ev(user_id="user_000002")]) + b"\n"
    rows, quarantine, stats = daily.clean_stream(Reads(data), D, file_no=0, source_file="f.jsonl",
                                                 max_line_bytes=1000)
    assert rows.num_rows == 2 and stats.quarantined == {"line_too_long": 1}
    q = quarantine.to_pylist()[0]
    assert q["line_no"] == 2 and len(q["line"]) <= 1024
