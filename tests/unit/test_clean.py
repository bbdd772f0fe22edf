"""The streaming cleaner: every malformed-line kind, block boundaries, ids, timestamps."""

import base64
import gzip
import io
import tarfile
from datetime import datetime

import pyarrow.parquet as pq
import pytest

from musicrec.ids import derived_track_id
from musicrec.lake.clean import (
    KEPT_PREFIX_BYTES,
    LASTFM_TS_FORMAT,
    REASONS,
    EventCleaner,
    QuarantineBuffer,
    TooLongLine,
    clean_events,
    iter_blocks,
    open_archive_members,
    parse_profiles,
)

GOOD = [
    b"user_000001\t2009-05-04T23:08:57Z\tf1b1cf71-bd35-4e99-8624-24a6e15f133a\tDeep Dish\t\tFuck Me Im Famous (Pacha Ibiza)-09-28-2007",
    b"user_000001\t2009-05-04T13:54:10Z\ta7f7df4a-77d8-4f12-8acd-5c60c93f4de8\t\xe5\x9d\x82\xe6\x9c\xac\xe9\xbe\x8d\xe4\xb8\x80\t\tComposition 0919 (Live_2009_4_15)",
    b"user_000002\t2009-05-05T00:00:01Z\t\tSome Artist\t0b0f0a0c-1111-2222-3333-444455556666\tA Song",
]
BAD = {
    "invalid_utf8": b"user_000003\t2009-05-04T10:00:00Z\t\tArtist\t\tBad \xff\xfe title",
    "column_count": b"user_000003\t2009-05-04T10:00:00Z\tArtist only",
    "empty_user": b"  \t2009-05-04T10:00:00Z\t\tArtist\t\tTitle",
    "bad_timestamp": b"user_000003\t2009-13-45T99:00:00Z\t\tArtist\t\tTitle",
    "empty_track": b"user_000003\t2009-05-04T10:00:00Z\t\tArtist\t\t  ",
    "line_too_long": b"user_000003\t2009-05-04T10:00:00Z\t\tArtist\t\t" + b"x" * 70_000,
    "bad_user_id": b"u" * 65 + b"\t2009-05-04T10:00:00Z\t\tArtist\t\tTitle",  # over Milvus' VARCHAR(64)
    "bad_track_id": b"user_000003\t2009-05-04T10:00:00Z\t\tArtist\t" + b"m" * 65 + b"\tTitle",
    "bad_artist_id": b"user_000003\t2009-05-04T10:00:00Z\tab\x01cd\tArtist\t\tTitle",
}


def _clean(lines: list[bytes]):
    quarantine = QuarantineBuffer("test.tsv")
    cleaner = EventCleaner("lastfm-1k", quarantine)
    table = cleaner.clean_block(b"\n".join(lines), 1)
    return table, quarantine, cleaner.stats


def test_good_lines_are_normalized():
    table, quarantine, stats = _clean(GOOD)
    assert len(quarantine) == 0 and stats.clean == 3
    rows = table.to_pylist()
    assert rows[0]["user_id"] == "user_000001"
    assert rows[0]["ts"].isoformat() == "2009-05-04T23:08:57+00:00"
    assert rows[0]["artist_name"] == "Deep Dish"
    assert rows[0]["track_id"] == derived_track_id("Deep Dish", "Fuck Me Im Famous (Pacha Ibiza)-09-28-2007")
    assert rows[1]["artist_name"] == "坂本龍一"
    assert rows[2]["track_id"] == "0b0f0a0c-1111-2222-3333-444455556666"  # MusicBrainz id wins
    assert rows[2]["artist_id"] is None  # empty mbid becomes null, not ""
    assert [r["line_no"] for r in rows] == [1, 2, 3]
    assert {r["action"] for r in rows} == {"listen"}
    assert str(rows[0]["date"]) == "2009-05-04"


@pytest.mark.parametrize("reason", REASONS)
def test_each_malformed_kind_is_quarantined_with_its_reason(reason):
    table, quarantine, stats = _clean([GOOD[0], BAD[reason], GOOD[2]])
    assert table.num_rows == 2
    assert stats.quarantined == {reason: 1}
    records = [r for t in quarantine.tables().values() for r in t.to_pylist()]
    assert len(records) == 1
    rec = records[0]
    assert rec["reason"] == reason and rec["line_no"] == 2 and rec["source_file"] == "test.tsv"
    if reason == "invalid_utf8":
        assert rec["encoding"] == "base64"
        assert base64.b64decode(rec["line"]) == BAD[reason]  # the exact bytes survive
    elif reason == "line_too_long":
        assert rec["line"].encode() == BAD[reason][:KEPT_PREFIX_BYTES]  # only its start is kept
    else:
        assert rec["encoding"] == "utf-8"
        assert rec["line"].encode() == BAD[reason]


def test_quarantine_is_grouped_by_event_date_when_known():
    _, quarantine, _ = _clean([BAD["empty_track"], BAD["bad_timestamp"]])
    tables = quarantine.tables()
    assert set(tables) == {"2009-05-04", "unknown"}


def test_every_line_is_accounted_for():
    lines = GOOD + list(BAD.values()) + [b""]  # a blank line is a column_count reject, not lost
    table, quarantine, stats = _clean(lines)
    assert stats.lines == len(lines)
    assert table.num_rows + len(quarantine) == len(lines)


def test_crlf_and_surrounding_space_are_tolerated():
    table, quarantine, _ = _clean([b"user_9\t 2009-05-04T10:00:00Z \t\t Artist \t\t Title \r"])
    assert len(quarantine) == 0
    row = table.to_pylist()[0]
    assert (row["artist_name"], row["track_name"]) == ("Artist", "Title")


def test_iter_blocks_keeps_lines_whole_and_numbers_them():
    data = b"\n".join(b"line%03d" % i for i in range(100)) + b"\n"
    blocks = list(iter_blocks(io.BytesIO(data), block_bytes=37))
    lines, numbers = [], []
    for block, first in blocks:
        split = block.split(b"\n")
        lines += split
        numbers += range(first, first + len(split))
    assert lines == [b"line%03d" % i for i in range(100)]
    assert numbers == list(range(1, 101))


def test_clean_events_streams_blocks_into_parts(tmp_path):
    lines = (GOOD + [BAD["column_count"]]) * 50
    quarantine = QuarantineBuffer("x.tsv")
    stats = clean_events(io.BytesIO(b"\n".join(lines)), tmp_path, source="s", source_file="x.tsv",
                         quarantine=quarantine, rows_per_part=60, block_bytes=256)
    assert stats.lines == 200 and stats.clean == 150 and stats.quarantined == {"column_count": 50}
    assert len(stats.parts) >= 2
    total = sum(pq.ParquetFile(tmp_path / p).metadata.num_rows for p in stats.parts)
    assert total == 150
    line_nos = [n for p in stats.parts for n in pq.read_table(tmp_path / p).column("line_no").to_pylist()]
    assert line_nos == [i for i in range(1, 201) if i % 4 != 0]


def test_parse_profiles():
    data = (b"#id\tgender\tage\tcountry\tregistered\n"
            b"user_000002\tf\t\tPeru\tFeb 24, 2006\n"
            b"user_000001\tm\t25\tJapan\tAug 13, 2006\n"
            b"user_000003\tm\n"
            b"user_000004\t\xff\t\t\t\n")
    quarantine = QuarantineBuffer("p.tsv")
    table = parse_profiles(io.BytesIO(data), quarantine)
    rows = table.to_pylist()
    assert [r["user_id"] for r in rows] == ["user_000001", "user_000002"]
    assert rows[0]["age"] == 25 and rows[1]["age"] is None
    assert str(rows[1]["registered"]) == "2006-02-24"
    reasons = sorted(r["reason"] for t in quarantine.tables().values() for r in t.to_pylist())
    assert reasons == ["column_count", "invalid_utf8"]


def test_open_archive_members_handles_tar_gz_gz_and_plain(tmp_path):
    payload = b"\n".join(GOOD)
    tar_path = tmp_path / "d.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        info = tarfile.TarInfo("lastfm-dataset-1K/userid-timestamp-artid-artname-traid-traname.tsv")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with open(tar_path, "rb") as fh, open_archive_members(fh, tar_path.name) as members:
        got = [(name, stream.read()) for name, stream in members]
    assert got == [("lastfm-dataset-1K/userid-timestamp-artid-artname-traid-traname.tsv", payload)]

    gz_path = tmp_path / "events.tsv.gz"
    gz_path.write_bytes(gzip.compress(payload))
    with open(gz_path, "rb") as fh, open_archive_members(fh, gz_path.name) as members:
        assert [(n, s.read()) for n, s in members] == [("events.tsv", payload)]

    plain = tmp_path / "events.tsv"
    plain.write_bytes(payload)
    with open(plain, "rb") as fh, open_archive_members(fh, plain.name) as members:
        assert [(n, s.read()) for n, s in members] == [("events.tsv", payload)]


def _timestamp_matrix() -> list[str]:
    """Calendar edge cases: day after each month's last day (and the last day itself), Feb 29 in
    leap and non-leap years (1900 no, 2000 yes), 24:00:00, leap seconds, minute/hour overflow,
    offsets the Z-only format does not allow, year 0, unpadded fields."""
    out = []
    for year in (1900, 2000, 2008, 2009):
        for month in range(1, 13):
            for day in (28, 29, 30, 31, 32):
                out.append(f"{year:04d}-{month:02d}-{day:02d}T12:00:00Z")
    out += ["2009-05-04T24:00:00Z", "2009-12-31T23:59:60Z", "2008-12-31T23:59:60Z", "2009-05-04T23:59:61Z",
            "2009-05-04T23:60:00Z", "2009-05-04T25:00:00Z", "2009-05-04T00:00:00+01:00", "2009-05-04T00:00:00-0530",
            "2009-05-04T00:00:00", "2009-05-04T00:00:00.5Z", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z", "2009-5-4T3:08:57Z", "2009-02-29T00:00:00Z", "2009-00-10T00:00:00Z",
            "2009-01-00T00:00:00Z", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "2009-05-04T23:08:57Z"]
    return out


def test_timestamps_follow_the_calendar_with_python_datetime_as_the_oracle():
    values = _timestamp_matrix()
    lines = [f"user_1\t{v}\t\tArtist\t\tTitle".encode() for v in values]
    table, quarantine, stats = _clean(lines)
    kept = {r["line_no"]: r["ts"] for r in table.to_pylist()}
    reasons = {r["line_no"]: r["reason"] for r in quarantine.table().to_pylist()}
    for line_no, value in enumerate(values, start=1):
        try:
            want = datetime.strptime(value, LASTFM_TS_FORMAT)
        except ValueError:
            want = None
        if want is None:
            assert reasons.get(line_no) == "bad_timestamp", value
            assert line_no not in kept
        else:
            assert line_no in kept, (value, reasons.get(line_no))
            assert kept[line_no].replace(tzinfo=None) == want, value
    assert stats.quarantined["bad_timestamp"] >= 4 * 12 + 10  # the matrix has many impossible dates


def test_an_impossible_date_is_not_shifted_into_the_next_month():
    table, quarantine, _ = _clean([b"user_1\t2009-02-30T10:00:00Z\t\tArtist\t\tTitle", GOOD[0]])
    assert table.num_rows == 1
    rec = quarantine.table().to_pylist()[0]
    assert (rec["reason"], rec["date"]) == ("bad_timestamp", "unknown")  # not 2009-03-02


@pytest.mark.parametrize("bad_id", ["x" * 65, "\u00e9" * 33, "a\x00b", "a\u0085b", "a\x7fb"])
def test_ids_a_store_cannot_hold_are_quarantined_in_every_column(bad_id):
    enc = bad_id.encode()
    lines = [enc + b"\t2009-05-04T10:00:00Z\t\tArtist\t\tTitle",
             b"user_1\t2009-05-04T10:00:00Z\t\tArtist\t" + enc + b"\tTitle",
             b"user_1\t2009-05-04T10:00:00Z\t" + enc + b"\tArtist\t\tTitle",
             b"user_1\t2009-05-04T10:00:00Z\t\tArtist\t" + b"m" * 64 + b"\tTitle"]  # 64 bytes: fits
    table, quarantine, stats = _clean(lines)
    assert stats.quarantined == {"bad_user_id": 1, "bad_track_id": 1, "bad_artist_id": 1}
    assert table.to_pylist()[0]["track_id"] == "m" * 64


def test_a_line_longer_than_a_block_is_quarantined_without_being_held_whole(tmp_path):
    class Reads(io.BytesIO):
        biggest = 0

        def read(self, size=-1):
            assert size is not None and size > 0  # never an unbounded read
            return super().read(size)

    long_line = b"user_1\t2009-05-04T10:00:00Z\t\tArtist\t\t" + b"y" * 5000
    data = b"\n".join([GOOD[0], long_line, GOOD[2], long_line]) + b"\n"
    blocks = list(iter_blocks(Reads(data), block_bytes=256, max_line_bytes=1000))
    too_long = [(b, n) for b, n in blocks if isinstance(b, TooLongLine)]
    assert [n for _, n in too_long] == [2, 4]
    assert all(len(b.prefix) <= 1000 + 256 for b, _ in too_long)
    assert all(isinstance(b, TooLongLine) or len(b) <= 1000 + 256 for b, _ in blocks)
    quarantine = QuarantineBuffer("x.tsv")
    stats = clean_events(Reads(data), tmp_path, source="s", source_file="x.tsv", quarantine=quarantine,
                         block_bytes=256, max_line_bytes=1000)
    assert stats.lines == 4 and stats.clean == 2 and stats.quarantined == {"line_too_long": 2}
    line_nos = [n for p in stats.parts for n in pq.read_table(tmp_path / p).column("line_no").to_pylist()]
    assert line_nos == [1, 3]
