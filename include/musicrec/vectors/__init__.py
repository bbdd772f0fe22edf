"""Vector stores (design §4): versioned collections behind aliases, one interface for every store.

* :mod:`musicrec.vectors.base`: the :class:`~musicrec.vectors.base.VectorStore` protocol, its
  capabilities, the errors and the Parquet readers;
* one module per store (:mod:`.milvus`, :mod:`.qdrant`), each with a store class wrapping its client,
  ``open_store(settings)`` (from :class:`musicrec.stores.VectorStoreSettings`) and ``wrap(client)``;
* :data:`KINDS`: the stores the project knows, in no particular order — **adding a store is one module
  and one line here** (plus its Airflow hook). The order callers use is the order of the settings.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Any

from musicrec.vectors.base import (  # noqa: F401 - the interface lives beside the registry
    Capability,
    DimensionMismatch,
    Record,
    VectorStore,
    VectorStoreError,
    has,
    parquet_dim,
    read_vectors,
)

# kind -> the module (or any object) with ``open_store(settings)`` and ``wrap(client)``; imported on use,
# so a process that never touches Qdrant never imports its client
KINDS: dict[str, Any] = {
    "milvus": "musicrec.vectors.milvus",
    "qdrant": "musicrec.vectors.qdrant",
}


def register(kind: str, provider: Any) -> None:
    """Add (or replace) a store kind at run time: ``provider`` has ``open_store(settings)`` and
    ``wrap(client)`` (a module path, a module or an object). Tests register an in-memory store this way."""
    KINDS[kind] = provider


def unregister(kind: str) -> None:
    KINDS.pop(kind, None)


def provider(kind: str) -> Any:
    try:
        entry = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown vector store kind {kind!r} (known: {sorted(KINDS)})") from None
    return importlib.import_module(entry) if isinstance(entry, str) else entry


def open_store(settings: Any) -> VectorStore:
    """The store ``settings.kind`` names, built from plain settings (``musicrec.stores.VectorStoreSettings``)."""
    return provider(settings.kind).open_store(settings)


def as_store(obj: Any) -> VectorStore:
    """``obj`` when it is a store already, else the store wrapping that client (a ``MilvusClient``,
    a ``QdrantClient``, or any registered kind's client)."""
    if isinstance(obj, VectorStore):
        return obj
    for kind in KINDS:
        store = provider(kind).wrap(obj)
        if store is not None:
            return store
    raise TypeError(f"{type(obj).__name__} is not a vector store nor a client of one ({sorted(KINDS)})")


def as_stores(*objs: Any) -> list[VectorStore]:
    """Flatten ``objs`` (stores, clients, None, or sequences of them) into stores, in order; None is
    skipped, so ``as_stores(milvus, None)`` is the Milvus store alone (no mirror)."""
    out: list[VectorStore] = []
    for obj in objs:
        if obj is None:
            continue
        if isinstance(obj, Sequence) and not isinstance(obj, str):
            out.extend(as_stores(*obj))
        else:
            out.append(as_store(obj))
    return out


def versioned(names: Iterable[str], alias: str) -> list[str]:
    """The ``<alias>_v<version>`` collections among ``names``, sorted."""
    prefix = f"{alias}_v"
    return sorted(n for n in names if n.startswith(prefix))


def stale_versions(names: Iterable[str], alias: str, keep: Iterable[str], target: str | None) -> list[str]:
    """Versioned collections to drop: not in ``keep`` and not the alias' current ``target``."""
    kept = set(keep) | ({target} if target else set())
    return [n for n in versioned(names, alias) if n not in kept]
