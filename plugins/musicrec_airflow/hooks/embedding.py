"""Embedding hook in the providers' style: connection ``embedding_default`` (conn type
``musicrec_embedding``, optional; the form is declared in ``musicrec_airflow.provider_info``) over
``musicrec.embeddings.encoder``; the model is loaded once per process."""

from __future__ import annotations

from typing import Any

from airflow.sdk.bases.hook import BaseHook

from musicrec.embeddings import encoder as enc


class EmbeddingHook(BaseHook):
    """Connection extra (all optional; without the connection these defaults apply): ``model``
    (``encoder.DEFAULT_MODEL``), ``device`` (``auto``), ``max_length``, ``bge_m3_path`` (the local
    BGE-M3 snapshot; nothing is ever downloaded; a worker's ``MUSICREC_BGE_M3_PATH`` wins). Task
    params override the connection. The settings reach the encoder as arguments, never through
    ``os.environ``.

    :param conn_id: the Airflow connection (conn type ``musicrec_embedding``; may be absent).
    :param kwargs: passed to ``BaseHook``.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "embedding_default"
    conn_type = "musicrec_embedding"
    hook_name = "Text embeddings (local models)"

    def __init__(self, conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def settings(self) -> dict[str, Any]:
        try:
            extra = self.get_connection(self.conn_id).extra_dejson
        except Exception:  # no connection: the embedded default
            extra = {}
        return {"model": extra.get("model") or enc.DEFAULT_MODEL, "device": extra.get("device") or "auto",
                "max_length": int(extra["max_length"]) if extra.get("max_length") else None,
                "bge_m3_path": extra.get("bge_m3_path") or ""}

    def get_conn(self, model: str | None = None, device: str | None = None,
                 max_length: int | None = None) -> enc.Encoder:
        """The encoder (cached per process: one load per task, however many batches)."""
        s = self.settings()
        return enc.load_encoder((model or "").strip() or s["model"], (device or "").strip() or s["device"],
                                max_length or s["max_length"], s["bge_m3_path"] or None)

    def describe(self, model: str | None = None) -> dict[str, Any]:
        """Where the model would load from, without loading it (raises ModelNotFound with the paths)."""
        s = self.settings()
        return enc.resolve((model or "").strip() or s["model"], s["bge_m3_path"] or None).as_dict()

    def test_connection(self) -> tuple[bool, str]:
        try:
            spec = self.describe()
        except Exception as exc:  # the UI shows the message
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"{spec['model_id']} at {spec['path']}"
