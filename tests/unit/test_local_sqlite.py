"""The embedded default's Airflow database waits for SQLite's lock instead of failing after 5 s."""

from __future__ import annotations

import importlib
import sqlite3

from musicrec.local import envfile, sqlite


def _resolve(path: str) -> dict:
    module, attr = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), attr)


def test_the_env_file_points_airflow_at_the_connect_args(tmp_path):
    env = envfile.embedded_env(tmp_path)
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC"):
        assert _resolve(env[key])["timeout"] == sqlite.BUSY_TIMEOUT_S  # the import path Airflow resolves


def test_a_writer_waits_for_the_lock(tmp_path):
    db = tmp_path / "a.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("create table t (x)")
    holder.execute("begin immediate")  # the scheduler holding the write lock
    waiter = sqlite3.connect(db, **_resolve(sqlite.ENV["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"]))
    assert waiter.execute("pragma busy_timeout").fetchone()[0] == int(sqlite.BUSY_TIMEOUT_S * 1000)
    holder.execute("commit")
    waiter.execute("insert into t values (1)")
    waiter.commit()
