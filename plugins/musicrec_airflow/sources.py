"""The allow-list of sources (Variable ``musicrec_allowed_sources``), read where operators take
untrusted values: ``source_url``, the LRCLIB ``base_url`` and ``dump_path``, and a model directory
given as the ``model`` param of ``lyrics_embeddings`` (docs/operations.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from airflow.sdk import Variable
from airflow.sdk.exceptions import AirflowFailException

from musicrec.embeddings.encoder import model_directory
from musicrec.lyrics.lrclib import DEFAULT_BASE_URL
from musicrec.sources import (
    ALLOWED_SOURCES_VARIABLE,
    AllowEntry,
    SourceNotAllowed,
    check_path,
    parse_allowed,
)
from musicrec_airflow.lake import LAKE_ROOT_VARIABLE


def allowed_sources() -> list[AllowEntry]:
    """The Variable's prefixes; unset, only the lake root and the public LRCLIB API are allowed
    (a deployment names its landing buckets, sample folders and mirrors explicitly)."""
    value = Variable.get(ALLOWED_SOURCES_VARIABLE, default=None)
    if value is not None and str(value).strip():
        return parse_allowed(str(value))
    fallback = [DEFAULT_BASE_URL.rstrip("/") + "/"]
    lake = (Variable.get(LAKE_ROOT_VARIABLE, default="") or "").strip()
    if lake:
        fallback.insert(0, lake.rstrip("/") + "/")
    return parse_allowed(fallback)


@contextlib.contextmanager
def refusals_fail() -> Iterator[None]:
    """A refused source fails the task at once: retrying cannot make it allowed, so no retries."""
    try:
        yield
    except SourceNotAllowed as exc:
        raise AirflowFailException(f"{exc} (see docs/operations.md, 'Allowed sources')") from exc


def check_model_param(model: str) -> None:
    """A model *directory* named by a trigger-form param must be under a ``file://`` prefix of the
    allow-list: loading a model runs its files (pickled weights, custom code), so a param must not
    reach an arbitrary folder. Named models (``minilm``, ``bge-m3``) and the connection's
    ``bge_m3_path`` (set by an admin) are not checked."""
    directory = model_directory(model)
    if directory is not None:
        check_path(directory, allowed_sources(), what="model")
