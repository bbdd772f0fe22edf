"""Shared DAG defaults: owner, retries with exponential backoff, pool names (the GPU queue is
``musicrec.settings.gpu_queue``)."""

from __future__ import annotations

from typing import Any

from musicrec import settings

OWNER = "musicrec"
POOL_GPU = "gpu"
POOL_LRCLIB = "lrclib"
POOL_QDRANT_LOCAL = "qdrant_local"


def default_args(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "owner": OWNER,
        "retries": settings.task_retries(),
        "retry_delay": settings.retry_delay(),
        "retry_exponential_backoff": True,
        "max_retry_delay": settings.max_retry_delay(),
    }
    args.update(overrides)
    return args

