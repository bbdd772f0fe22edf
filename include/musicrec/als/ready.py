"""Is the data of a training window there? (issue 14: train when the data is there).

Week W's ``als_training`` run (data interval ending W, a Sunday 00:00 UTC) starts at the same moment
as ``listens_daily`` for day W−1, so it would usually train without the last day — and a later re-run
would then make another version. The run waits until the registry holds day W−1's ``daily``
partition. No Airflow imports: the sensor in ``musicrec_airflow.sensors`` calls this.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from pymongo.database import Database

from musicrec import registry
from musicrec.catalog import listens

DAILY_PRODUCER, DAILY_FILE = "daily", "daily.parquet"  # musicrec.lake.daily's producer and file


def last_day(window_end: datetime) -> date:
    """Day W−1: the last day inside a window ending at ``window_end`` (exclusive)."""
    return (listens.utc(window_end) - timedelta(milliseconds=1)).date()


def daily_path(day: date) -> str:
    return f"listens/date={day.isoformat()}/{DAILY_FILE}"


def last_day_loaded(db: Database, window_end: datetime) -> dict | None:
    """The registry record of day W−1's ``daily`` partition, None while ``listens_daily`` has not written it."""
    doc = registry.get(db, daily_path(last_day(window_end)))
    return doc if doc is not None and doc.get("producer") == DAILY_PRODUCER else None
