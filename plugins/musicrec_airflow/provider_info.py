"""The ``apache_airflow_provider`` entry point (pyproject.toml): tells Airflow's ProvidersManager about
the project's connection types, so that they appear in the UI's connection form.

Airflow 3 builds the form from this metadata alone (``conn-fields`` and ``ui-field-behaviour``), without
importing the hooks; the hooks are imported only when a connection of the type is used or tested.
This module therefore imports nothing: every Airflow process loads it through the entry point, early.
Connection types (interface names; docs/operations.md lists them):

* ``milvus``: :class:`~musicrec_airflow.hooks.milvus.MilvusHook`;
* ``lrclib``: :class:`~musicrec_airflow.hooks.lrclib.LrclibHook` (the hook still reads an ``http``
  connection the same way: the conn type only picks the form);
* ``musicrec_embedding``: :class:`~musicrec_airflow.hooks.embedding.EmbeddingHook`.
"""

from __future__ import annotations

from typing import Any

# Must equal the distribution's canonical name (pyproject.toml [project].name): Airflow refuses a
# provider whose get_provider_info() names another package.
PACKAGE_NAME = "musicrec"


def _field(label: str, type_: str, description: str, **schema: Any) -> dict[str, Any]:
    """One extra field of the form; ``null`` is allowed so that an empty field means "the default"."""
    return {"label": label, "schema": {"type": [type_, "null"], "description": description, **schema}}


CONNECTION_TYPES: list[dict[str, Any]] = [
    {
        "connection-type": "milvus",
        "hook-class-name": "musicrec_airflow.hooks.milvus.MilvusHook",
        "hook-name": "Milvus",
        "conn-fields": {
            "uri": _field("URI", "string", "Server URI, e.g. http://milvus:19530 (wins over Host/Port)."),
            "timeout": _field("Timeout (s)", "number", "Seconds to wait for the server (pymilvus' default is long)."),
        },
        "ui-field-behaviour": {
            "hidden-fields": ["login"],
            "relabeling": {"password": "Token", "schema": "Database"},
            "placeholders": {"host": "milvus", "port": "19530"},
        },
    },
    {
        "connection-type": "lrclib",
        "hook-class-name": "musicrec_airflow.hooks.lrclib.LrclibHook",
        "hook-name": "LRCLIB",
        "conn-fields": {
            "user_agent": _field("User agent", "string", "Sent with every request; LRCLIB asks clients to name "
                                 "themselves (default: musicrec <version> and the project URL)."),
            "rate_per_s": _field("Requests per second", "number", "Global rate limit of a task (default 2; 0 = off)."),
            "concurrency": _field("Concurrency", "integer", "Requests in flight at once (default 4)."),
            "timeout_s": _field("Timeout (s)", "number", "Per request (default 10)."),
        },
        "ui-field-behaviour": {
            "hidden-fields": ["login", "password"],
            "relabeling": {"host": "Base URL", "schema": "Scheme"},
            "placeholders": {"host": "https://lrclib.net", "schema": "https"},
        },
    },
    {
        "connection-type": "musicrec_embedding",
        "hook-class-name": "musicrec_airflow.hooks.embedding.EmbeddingHook",
        "hook-name": "Text embeddings (local models)",
        "conn-fields": {
            "model": _field("Model", "string", "minilm (default), bge-m3, bge-m3:<dir> or a model directory."),
            "device": _field("Device", "string", "auto (default), cpu, cuda or cuda:<n>."),
            "max_length": _field("Max length", "integer", "Tokens per text (default: the model's)."),
            "bge_m3_path": _field("BGE-M3 path", "string", "Local BGE-M3 snapshot on the workers; nothing is "
                                  "ever downloaded (MUSICREC_BGE_M3_PATH on a worker wins)."),
        },
        "ui-field-behaviour": {
            "hidden-fields": ["host", "port", "login", "password", "schema"],
            "relabeling": {},
        },
    },
]


def get_provider_info() -> dict[str, Any]:
    """The provider metadata Airflow reads (schema: airflow/provider_info.schema.json)."""
    return {
        "package-name": PACKAGE_NAME,
        "name": "musicrec",
        "description": "Connection types of the musicrec music-recommendation platform (Milvus, LRCLIB, "
                       "local text embeddings).",
        "connection-types": [dict(entry) for entry in CONNECTION_TYPES],
    }
