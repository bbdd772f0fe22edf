"""Connect arguments of the embedded default's Airflow metadata database (SQLite).

The scheduler, the dag-processor, the API server, the task runners and a CLI such as
``airflow backfill create`` all write the one SQLite file. sqlite3's default busy timeout is 5 s:
on a loaded machine a writer waited longer than that for the scheduler's lock and failed with
"database is locked" half-way through creating a backfill (found by the e2e suite under a CPU hog).
Airflow reads these dicts by import path (``[database] sql_alchemy_connect_args`` and its ``_async``
twin), set by the env file and the e2e fixture; a server database (production) does not use them.
"""

from __future__ import annotations

BUSY_TIMEOUT_S = 60.0
CONNECT_ARGS: dict[str, object] = {"timeout": BUSY_TIMEOUT_S}  # sqlite3.connect
CONNECT_ARGS_ASYNC: dict[str, object] = {"timeout": BUSY_TIMEOUT_S}  # aiosqlite.connect → sqlite3.connect

ENV = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.CONNECT_ARGS",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{__name__}.CONNECT_ARGS_ASYNC",
}
