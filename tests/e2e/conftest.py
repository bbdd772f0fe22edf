"""The e2e session fixture: the embedded default's ``airflow standalone`` on free loopback ports."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.airflow_standalone import Standalone


# package scope: stopped when tests/e2e is done, not left running (a core's tenth) through the rest of the suite
@pytest.fixture(scope="package")
def airflow_standalone(tmp_root: Path, tiny_sample, mongo_uri: str, milvus_uri: str) -> Iterator[Standalone]:
    """Scheduler, dag-processor, triggerer and API server with their own data dir, SQLite db and lake.

    The engines are the session's SecantusDB (a database of its own) and milvus-lite server. The
    JWT secret, Fernet key and admin password come from ``musicrec.local.keys`` as on the embedded
    default: ``MUSICREC_E2E_SHARED_SECRETS=0`` leaves the JWT secret out, and every task fails.
    """
    base_env = {
        "AIRFLOW_CONN_MONGO_DEFAULT": mongo_uri.replace("mongodb://", "mongo://") + "musicrec_e2e",
        "AIRFLOW_CONN_MILVUS_DEFAULT": json.dumps({"conn_type": "milvus", "extra": {"uri": milvus_uri, "token": ""}}),
        "AIRFLOW_VAR_MUSICREC_LISTENS_SOURCE_URL": tiny_sample.archive.as_uri(),
        "AIRFLOW_VAR_MUSICREC_LRCLIB_DUMP": str(tiny_sample.lrclib_dump),
    }
    shared = os.environ.get("MUSICREC_E2E_SHARED_SECRETS", "1") != "0"
    af = Standalone(home=tmp_root / "e2e", base_env=base_env, shared_secrets=shared)
    try:
        af.start()
        yield af
    finally:
        killed = af.stop()
        assert not killed, f"airflow standalone left processes that needed SIGKILL: {killed}"
