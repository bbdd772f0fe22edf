"""Project settings read from the environment (so tests and operators can change them).

Only process-level knobs live here; store locations are Airflow connections/variables.
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path


def retry_delay() -> timedelta:
    """First retry delay of every task (``MUSICREC_RETRY_DELAY_S``, default 60 s).

    Tests set it to a second so failure paths do not wait Airflow's default 300 s.
    """
    return timedelta(seconds=float(os.environ.get("MUSICREC_RETRY_DELAY_S", "60")))


def max_retry_delay() -> timedelta:
    return timedelta(seconds=float(os.environ.get("MUSICREC_MAX_RETRY_DELAY_S", "1800")))


def task_retries() -> int:
    return max(2, int(os.environ.get("MUSICREC_TASK_RETRIES", "2")))


def gpu_queue() -> str:
    """Celery queue for GPU tasks: ``default`` on the embedded default, ``gpu`` in production."""
    return os.environ.get("MUSICREC_GPU_QUEUE", "default")


def staging_dir() -> Path:
    """Local scratch space for partial downloads and sort spills (survives task retries)."""
    root = os.environ.get("MUSICREC_STAGING_DIR") or os.path.join(tempfile.gettempdir(), "musicrec-staging")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def duckdb_memory_limit() -> str:
    return os.environ.get("MUSICREC_DUCKDB_MEMORY", "2GB")


def listen_events_retention() -> timedelta:
    """How long Mongo keeps a ``listen_events`` document after it arrived, once the lake holds its day
    (``MUSICREC_LISTEN_EVENTS_RETENTION_DAYS``, default 7; the TTL index is set to it)."""
    return timedelta(days=float(os.environ.get("MUSICREC_LISTEN_EVENTS_RETENTION_DAYS", "7")))
