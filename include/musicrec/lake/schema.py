"""Arrow schemas of the lake's tables (design §4)."""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("ms", tz="UTC")

LISTENS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("artist_id", pa.string()),
        pa.field("artist_name", pa.string(), nullable=False),
        pa.field("track_name", pa.string(), nullable=False),
        pa.field("album", pa.string()),
        pa.field("duration_s", pa.float64()),
        pa.field("ts", TS, nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)
EVENT_KEY = ("user_id", "ts", "track_id")
ACTIONS = ("listen", "skip", "complete")

# Intermediate rows carry where they came from, for a deterministic dedupe and the partitioning.
STAGED = LISTENS.append(pa.field("line_no", pa.int64(), nullable=False)).append(
    pa.field("date", pa.date32(), nullable=False)
)

PROFILES = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("gender", pa.string()),
        pa.field("age", pa.int32()),
        pa.field("country", pa.string()),
        pa.field("registered", pa.date32()),
    ]
)

QUARANTINE = pa.schema(
    [
        pa.field("line", pa.string(), nullable=False),  # the raw line; base64 when not UTF-8
        pa.field("encoding", pa.string(), nullable=False),  # utf-8 | base64
        pa.field("reason", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("line_no", pa.int64(), nullable=False),
        pa.field("date", pa.string(), nullable=False),  # YYYY-MM-DD or unknown
    ]
)

PARQUET_OPTIONS = {"compression": "zstd", "write_statistics": True}
