"""Is the data of a training window there? (issue 14: train when the data is there).

Week W's ``als_training`` run (data interval ending W, a Sunday 00:00 UTC) starts at the same moment
as ``listens_daily`` for day W−1, so it would usually train without the last day — and a later re-run
would then make another version. The run waits until the registry holds day W−1's ``daily``
partition — but only while the daily feed is running: when no ``daily`` partition exists for
any of the :data:`FEED_LOOKBACK_DAYS` days before W−1 (a fresh install, a lake filled by the dump
import only, backfilled weeks before the feed started) there is nothing to wait for, and waiting
would hold the DAG's only active run for hours. No Airflow imports: the sensor in ``musicrec_airflow.sensors`` calls this.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from pymongo.database import Database

from musicrec import registry
from musicrec.lake import reader

DAILY_PRODUCER, DAILY_FILE = "daily", "daily.parquet"  # musicrec.lake.daily's producer and file


def last_day(window_end: datetime) -> date:
    """Day W−1: the last day inside a window ending at ``window_end`` (exclusive)."""
    return (reader.utc(window_end) - timedelta(milliseconds=1)).date()


def daily_path(day: date) -> str:
    return f"listens/date={day.isoformat()}/{DAILY_FILE}"


def last_day_loaded(db: Database, window_end: datetime) -> dict | None:
    """The registry record of day W−1's ``daily`` partition, None while ``listens_daily`` has not written it."""
    doc = registry.get(db, daily_path(last_day(window_end)))
    return doc if doc is not None and doc.get("producer") == DAILY_PRODUCER else None


FEED_LOOKBACK_DAYS = 7  # "the daily feed is running" = a daily partition in the week before day W−1


def daily_feed_running(db: Database, window_end: datetime) -> bool:
    """True when ``listens_daily`` wrote a partition for a day in ``[W−1−7 d, W−1)``: only then is day W−1's
    partition expected, and worth waiting for."""
    day = last_day(window_end)
    since = day - timedelta(days=FEED_LOOKBACK_DAYS)
    return any(doc.get("producer") == DAILY_PRODUCER for doc in registry.listens_partitions(db, since, day))
