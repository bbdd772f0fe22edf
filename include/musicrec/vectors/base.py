"""The vector-store interface (issue 15): one :class:`VectorStore` protocol that every store module in
``musicrec.vectors`` implements (``MilvusStore``, ``QdrantStore``), the errors they raise and the
Parquet readers they share. No Airflow imports, no store client imports.

The callers (ALS publish, lyrics embeddings, the audit, ``recommend``) take a *sequence* of stores:
the first one serves (placement, index, recall check, the alias readers follow), the others mirror it
(same collection and alias names). What a store lacks is a :class:`Capability` it does not declare —
Qdrant has no BM25/sparse fields and no explicit index builds — and the callers skip that part for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Flag, auto
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow.parquet as pq


class VectorStoreError(RuntimeError):
    pass


class DimensionMismatch(VectorStoreError):
    pass


class Capability(Flag):
    """What a store can do beyond the protocol's common part (collections, aliases, dense vectors)."""

    NONE = 0
    INDEX = auto()  # explicit index builds (type + params, checked built): ``describe_index``/``build_index``
    SPARSE = auto()  # sparse (lexical-weight) vectors beside the dense one
    BM25 = auto()  # a text field scored by BM25 (full-text leg of the hybrid search)
    PAYLOAD = auto()  # a free payload per row (ALS rows carry ``model_version``; else the collection name says it)


@dataclass(frozen=True)
class Record:
    """One row as a store returns it: ``key`` is the track id (``#<point id>`` for a Qdrant point
    without one, so the audit can still name and delete it), ``payload`` the scalar fields asked for."""

    key: str
    vector: Any = None
    payload: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class VectorStore(Protocol):
    """A vector store holding versioned collections behind aliases (design §4).

    Two layouts exist. The *vector file* layout (ALS): id + one dense vector, filled from a Parquet file
    (:meth:`upsert_parquet`), with a constant payload where the store has one. The *record* layout
    (lyrics, ``musicrec.vectors.records``): id + dense + sparse + BM25 text + scalars, filled from a
    record table (:meth:`upsert_records`); each store keeps what its capabilities allow.
    """

    kind: str  # "milvus", "qdrant": names the store in findings, reports and results ("<kind>:<collection>")
    capabilities: Capability
    client: Any  # the wrapped client (store-specific callers: hybrid search, tests)

    # ---- collections
    def has_collection(self, name: str) -> bool: ...
    def collection_dim(self, name: str) -> int | None: ...
    def ensure_collection(self, name: str, dim: int) -> bool: ...
    def ensure_record_collection(self, name: str, dim: int, sparse: bool) -> bool: ...
    def ready(self, name: str) -> None: ...
    def list_collections(self) -> list[str]: ...
    def drop_collection(self, name: str) -> None: ...
    def versions(self, alias: str) -> list[str]: ...
    def drop_versions(self, alias: str, keep: Iterable[str]) -> list[str]: ...

    # ---- aliases
    def alias_target(self, alias: str) -> str | None: ...
    def swap_alias(self, alias: str, name: str) -> str | None: ...

    # ---- data
    def upsert_parquet(self, name: str, path: str | Path, *, payload: dict[str, Any] | None = None,
                       delete_missing: bool = True) -> dict[str, int]: ...
    def upsert_records(self, name: str, table: Any) -> int: ...
    def delete(self, name: str, ids: Iterable[str]) -> int: ...
    def scan(self, name: str, *, fields: Sequence[str] = (), vectors: bool = False,
             batch: int = 1000) -> Iterator[Record]: ...
    def fetch(self, name: str, ids: list[str], *, fields: Sequence[str] = (), vectors: bool = False
              ) -> list[Record]: ...
    def search(self, name: str, vector: Sequence[float], k: int) -> list[tuple[str, float]]: ...
    def count(self, name: str) -> int: ...

    # ---- indexes (Capability.INDEX only)
    def describe_index(self, name: str, field: str | None = None) -> dict[str, Any] | None: ...
    def same_index(self, desc: dict[str, Any], spec: Any) -> bool: ...
    def build_index(self, name: str, spec: Any, *, field: str | None = None, timeout_s: float = 600.0,
                    load: bool = True) -> dict[str, Any]: ...
    def verify_search(self, name: str, path: str | Path) -> float: ...


def has(store: VectorStore, capability: Capability) -> bool:
    return bool(store.capabilities & capability)


def read_vectors(path: str | Path, id_col: str, vector_col: str = "vector", batch_rows: int = 2000
                 ) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, float32 matrix) batches of a factors/embeddings Parquet file."""
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=batch_rows, columns=[id_col, vector_col]):
        ids = batch.column(0).to_pylist()
        vec = batch.column(1)
        dim = vec.type.list_size if hasattr(vec.type, "list_size") else None
        flat = vec.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        yield ids, flat.reshape(len(ids), dim or (len(flat) // max(1, len(ids))))


def parquet_dim(path: str | Path, vector_col: str = "vector") -> int:
    field_ = pq.read_schema(path).field(vector_col)
    return int(field_.type.list_size)


class ClientStore:
    """Plumbing shared by the stores that wrap one client plus a module of functions taking that client
    first (``versions(client, alias)``, ``swap_alias(client, alias, name)``, ...): the version, alias and
    record calls are the same delegation on every such store, so they live here once. A subclass sets
    ``module`` to its own module and implements the rest of :class:`VectorStore`."""

    module: Any  # the store's module: versions, drop_versions, alias_target, swap_alias, upsert_records

    def __init__(self, client: Any) -> None:
        self.client = client

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client!r})"

    def versions(self, alias: str) -> list[str]:
        return self.module.versions(self.client, alias)

    def drop_versions(self, alias: str, keep: Iterable[str]) -> list[str]:
        return self.module.drop_versions(self.client, alias, keep)

    def alias_target(self, alias: str) -> str | None:
        return self.module.alias_target(self.client, alias)

    def swap_alias(self, alias: str, name: str) -> str | None:
        return self.module.swap_alias(self.client, alias, name)

    def upsert_records(self, name: str, table: Any) -> int:
        return self.module.upsert_records(self.client, name, table)
