"""lyrics_enrichment: pending songs (popularity order) → LRCLIB (its dump, or its API) → ``songs.lyrics``.

Runs when ``mongo_songs`` is updated, when new songs are inserted (the ``mongo_songs_new`` change
stream), and hourly until nothing is pending. ``plan_*`` split the queue
into at most ``max_chunks`` chunks (XCom: key bounds, never id lists); ``fetch_dump`` / ``fetch_api``
(pool ``lrclib``: one API client at a time, so the rate limit is global) are mapped over them and
write results as they go. Faults (timeouts, 429, 5xx, bad JSON) leave the song in ``error`` with a
backoff, retried in later runs up to ``max_attempts``; nothing is ever deleted. ``report`` emits
``mongo_lyrics`` when songs were processed.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param

from musicrec_airflow.assets import MONGO_LYRICS, MONGO_SONGS, MONGO_SONGS_NEW
from musicrec_airflow.defaults import POOL_LRCLIB, default_args
from musicrec_airflow.operators.lyrics import LyricsFetchOperator, LyricsPlanOperator, LyricsReportOperator

with DAG(
    dag_id="lyrics_enrichment",
    description="Fetch lyrics for pending songs from LRCLIB (dump or API) with resume",
    # catalog_sync's updates, new songs inserted by anyone (a change stream, issue 18), or hourly
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 * * * *", timezone="UTC"),
                                 assets=(MONGO_SONGS | MONGO_SONGS_NEW)),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["musicrec", "lyrics", "lrclib", "mongo"],
    params={
        "provider": Param("auto", enum=["auto", "api", "dump"],
                          description="auto = the dump when dump_path/Variable musicrec_lrclib_dump exists, else the API"),
        "max_songs": Param(100000, type="integer", minimum=1, description="pending songs taken this run"),
        "max_chunks": Param(4, type="integer", minimum=1, maximum=64, description="mapped fetch tasks"),
        "max_attempts": Param(5, type="integer", minimum=1, description="tries before an error is final"),
        "base_url": Param(None, type=["null", "string"], description="API base (default: connection lrclib_default); "
                                                         "must be under a prefix of Variable musicrec_allowed_sources"),
        "dump_path": Param(None, type=["null", "string"], description="LRCLIB SQLite dump (.sqlite3 or .gz), opened read-only; "
                                                          "must be under a file:// prefix of Variable "
                                                          "musicrec_allowed_sources"),
        "max_unpacked_bytes": Param(128 * 2**30, type="integer", minimum=1,
                                    description="refuse a .gz dump that unpacks to more than this many bytes "
                                                "(default 128 GiB; the full LRCLIB dump unpacks to 60+ GiB)"),
        "rate_per_s": Param(2.0, type="number", minimum=0, description="API requests per second (0 = no limit)"),
        "concurrency": Param(4, type="integer", minimum=1, maximum=64, description="API requests in flight"),
    },
    doc_md=__doc__,
) as dag:
    plan_kwargs = {"provider": "{{ params.provider }}", "max_songs": "{{ params.max_songs }}",
                   "max_chunks": "{{ params.max_chunks }}", "max_attempts": "{{ params.max_attempts }}",
                   "dump_path": "{{ params.dump_path or '' }}", "max_unpacked_bytes": "{{ params.max_unpacked_bytes }}"}
    # one plan per provider (mapping needs a return value): the one not chosen returns [] at once
    plan_dump = LyricsPlanOperator(task_id="plan_dump", for_provider="dump", **plan_kwargs)
    plan_api = LyricsPlanOperator(task_id="plan_api", for_provider="api", **plan_kwargs)
    fetch_dump = LyricsFetchOperator.partial(task_id="fetch_dump", provider="dump",
                                             dump_path="{{ params.dump_path or '' }}",
                                             max_unpacked_bytes="{{ params.max_unpacked_bytes }}").expand(chunk=plan_dump.output)
    fetch_api = LyricsFetchOperator.partial(
        task_id="fetch_api", provider="api", pool=POOL_LRCLIB, base_url="{{ params.base_url or '' }}",
        rate_per_s="{{ params.rate_per_s }}", concurrency="{{ params.concurrency }}",
    ).expand(chunk=plan_api.output)
    report = LyricsReportOperator(task_id="report", trigger_rule="none_failed", outlets=[MONGO_LYRICS])
    [fetch_dump, fetch_api] >> report
