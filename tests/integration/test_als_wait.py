"""The Sunday race (issue 14): week W's als_training run waits for day W−1's listens_daily partition,
then trains; without it, it fails after ``wait_timeout_hours`` with a clear message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowRescheduleException, AirflowSensorTimeout

from musicrec import registry
from musicrec.als import ready
from musicrec_airflow.sensors.listens import ListensDaySensor

pytestmark = pytest.mark.integration

W = datetime(2009, 5, 3, tzinfo=UTC)  # a Sunday: the weekly run's data-interval end


class FakeTI:
    """The task instance part the reschedule-mode sensor reads: when its first try started."""

    def __init__(self, first: datetime | None) -> None:
        self.first = first

    def get_first_reschedule_date(self, context):
        return self.first


def ctx(run_type: str, first: datetime | None = None) -> dict:
    return {"dag_run": SimpleNamespace(run_type=run_type), "data_interval_end": W, "logical_date": W - timedelta(7),
            "ti": FakeTI(first)}


@pytest.fixture
def sensor(mongo_db, mongo_uri, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MONGO_DEFAULT", mongo_uri.replace("mongodb://", "mongo://") + mongo_db.name)
    # the values the DAG's "{{ params.wait_for_daily }}" / "{{ params.wait_timeout_hours }}" render to
    return ListensDaySensor(task_id="wait_for_listens", poke_interval=1, wait_for_daily="True",
                            wait_timeout_hours="6.0")


def _daily(day: str) -> registry.PartitionRecord:
    return registry.PartitionRecord(f"listens/date={day}/daily.parquet", "x", day, "daily", 5, 50, "c" * 64,
                                    f"scheduled__{day}")


def test_the_weekly_run_waits_for_the_last_days_daily_partition(sensor, mongo_db):
    assert ready.last_day(W).isoformat() == "2009-05-02"
    registry.record(mongo_db, [_daily("2009-04-27")])  # the daily feed is running: W−1 is expected
    # the import already holds 2009-05-02, but listens_daily for W−1 has not landed: wait (reschedule)
    registry.record(mongo_db, [registry.PartitionRecord("listens/date=2009-05-02/import-x.parquet", "x",
                                                        "2009-05-02", "import-x", 10, 100, "a" * 64, "imp")])
    started = datetime.now(UTC)
    with pytest.raises(AirflowRescheduleException):
        sensor.execute(ctx("scheduled", started))
    with pytest.raises(AirflowRescheduleException):
        sensor.execute(ctx("backfill", started))
    # listens_daily for 2009-05-02 lands after the training run started: the next poke lets it train
    registry.record(mongo_db, [registry.PartitionRecord(ready.daily_path(ready.last_day(W)), "x", "2009-05-02",
                                                        "daily", 5, 50, "b" * 64, "scheduled__2009-05-02")])
    assert sensor.execute(ctx("scheduled", started)) is None


def test_no_partition_fails_clearly_after_the_timeout(sensor, mongo_db):
    registry.record(mongo_db, [_daily("2009-05-01")])
    long_ago = datetime.now(UTC) - timedelta(hours=7)
    with pytest.raises(AirflowSensorTimeout, match=r"day 2009-05-02 is not loaded.*daily\.parquet after 6 h"):
        sensor.execute(ctx("scheduled", long_ago))
    # a shorter timeout param applies too
    sensor.wait_timeout_hours = "0.5"
    with pytest.raises(AirflowSensorTimeout, match="after 0.5 h"):
        sensor.execute(ctx("scheduled", datetime.now(UTC) - timedelta(hours=1)))


def test_manual_runs_and_wait_for_daily_false_do_not_wait(sensor):
    assert sensor.execute(ctx("manual", datetime.now(UTC) - timedelta(hours=7))) is None
    sensor.wait_for_daily = "False"
    assert sensor.execute(ctx("scheduled", datetime.now(UTC) - timedelta(hours=7))) is None


def test_a_week_the_daily_feed_does_not_cover_does_not_wait(sensor, mongo_db):
    """A fresh install (or a dump-only lake): unpausing creates the latest week's run, which must not hold
    the DAG's single active run for hours waiting for a day no listens_daily will write."""
    long_ago = datetime.now(UTC) - timedelta(hours=7)
    registry.record(mongo_db, [registry.PartitionRecord("listens/date=2009-05-02/import-x.parquet", "x",
                                                        "2009-05-02", "import-x", 10, 100, "a" * 64, "imp")])
    assert not ready.daily_feed_running(mongo_db, W)
    assert sensor.execute(ctx("scheduled", long_ago)) is None
    # a daily partition older than the look-back window does not count either
    registry.record(mongo_db, [_daily("2009-04-24")])
    assert not ready.daily_feed_running(mongo_db, W)
    assert sensor.execute(ctx("scheduled", long_ago)) is None
    registry.record(mongo_db, [_daily("2009-04-25")])
    assert ready.daily_feed_running(mongo_db, W)
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute(ctx("scheduled", long_ago))
