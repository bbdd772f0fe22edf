"""An in-memory vector store: a test double implementing ``musicrec.vectors.VectorStore``, to show that a
third store needs no change in the callers (issue 15). Register it with
``musicrec.vectors.register("memory", tests.memory_store)`` and name it in the settings
(``VectorStoreSettings("memory", path=<any name>)``): the stores of one name share one client.

It keeps a payload per row (``Capability.PAYLOAD``) and builds no index, like the Qdrant mirror."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicrec.vectors import (
    Capability,
    DimensionMismatch,
    Record,
    VectorStoreError,
    stale_versions,
    versioned,
)
from musicrec.vectors import records as rec
from musicrec.vectors.base import parquet_dim, read_vectors


@dataclass
class MemoryClient:
    """What a server would hold: collections (dim + rows: key -> (vector, payload)) and aliases."""

    collections: dict[str, dict[str, Any]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    writes: int = 0  # rows written, so tests can see a re-run write nothing

    def resolve(self, name: str) -> str:
        return self.aliases.get(name, name)


_CLIENTS: dict[str, MemoryClient] = {}


class MemoryStore:
    kind = "memory"
    capabilities = Capability.PAYLOAD

    def __init__(self, client: MemoryClient | None = None) -> None:
        self.client = client if client is not None else MemoryClient()

    def _rows(self, name: str) -> dict[str, tuple[list[float], dict[str, Any]]]:
        return self.client.collections[self.client.resolve(name)]["rows"]

    # ---- collections
    def has_collection(self, name: str) -> bool:
        return name in self.client.collections

    def collection_dim(self, name: str) -> int | None:
        return self.client.collections[self.client.resolve(name)]["dim"]

    def ensure_collection(self, name: str, dim: int) -> bool:
        if name in self.client.collections:
            if self.client.collections[name]["dim"] != dim:
                raise DimensionMismatch(f"memory collection {name} has dim {self.client.collections[name]['dim']}, "
                                        f"the vectors have {dim}")
            return False
        self.client.collections[name] = {"dim": dim, "rows": {}}
        return True

    def ensure_record_collection(self, name: str, dim: int, sparse: bool) -> bool:
        return self.ensure_collection(name, dim)  # dense + payload only

    def ready(self, name: str) -> None:
        return None

    def list_collections(self) -> list[str]:
        return sorted(self.client.collections)

    def drop_collection(self, name: str) -> None:
        self.client.collections.pop(name, None)

    def versions(self, alias: str) -> list[str]:
        return versioned(self.client.collections, alias)

    def drop_versions(self, alias: str, keep: Iterable[str]) -> list[str]:
        dropped = stale_versions(self.client.collections, alias, keep, self.alias_target(alias))
        for n in dropped:
            self.drop_collection(n)
        return dropped

    # ---- aliases
    def alias_target(self, alias: str) -> str | None:
        return self.client.aliases.get(alias)

    def swap_alias(self, alias: str, name: str) -> str | None:
        if name not in self.client.collections:
            raise VectorStoreError(f"no collection {name}")
        before = self.client.aliases.get(alias)
        self.client.aliases[alias] = name
        return before

    # ---- data
    def _put(self, name: str, key: str, vector: list[float], payload: dict[str, Any]) -> bool:
        rows = self._rows(name)
        if rows.get(key) == (vector, payload):
            return False
        rows[key] = (vector, payload)
        self.client.writes += 1
        return True

    def upsert_parquet(self, name: str, path: str | Path, *, payload: dict[str, Any] | None = None,
                       delete_missing: bool = True) -> dict[str, int]:
        dim = parquet_dim(path)
        self.ensure_collection(name, dim)
        keep: set[str] = set()
        rows = written = 0
        for ids, vecs in read_vectors(path, "track_id"):
            if not np.isfinite(vecs).all():
                raise VectorStoreError(f"{path} holds NaN/inf vectors: refusing to publish them")
            for key, vec in zip(ids, vecs.tolist(), strict=True):
                written += self._put(name, key, vec, {"track_id": key, **(payload or {})})
            keep.update(ids)
            rows += len(ids)
        extra = [k for k in self._rows(name) if k not in keep] if delete_missing else []
        self.delete(name, extra)
        return {"rows": rows, "written": written, "deleted": len(extra), "dim": dim}

    def upsert_records(self, name: str, table: Any) -> int:
        rec.validate(table, self.collection_dim(name) if self.has_collection(name) else None)
        if table.num_rows == 0:
            return 0
        self.ensure_collection(name, rec.table_dim(table))
        mat = rec.dense_matrix(table)
        cols = {c: table.column(c).to_pylist() for c in ("track_id", *rec.PAYLOAD)}
        written = 0
        for n, key in enumerate(cols["track_id"]):
            written += self._put(name, key, mat[n].tolist(),
                                 {"track_id": key, **{f: cols[f][n] for f in rec.PAYLOAD}})
        return written

    def delete(self, name: str, ids: Iterable[str]) -> int:
        if not self.has_collection(name):
            return 0
        rows = self._rows(name)
        gone = [i for i in set(ids) if rows.pop(i, None) is not None]
        return len(gone)

    def _record(self, key: str, row: tuple[list[float], dict[str, Any]], vectors: bool) -> Record:
        return Record(key, row[0] if vectors else None, dict(row[1]))

    def scan(self, name: str, *, fields: Sequence[str] = (), vectors: bool = False,
             batch: int = 1000) -> Iterator[Record]:
        for key, row in list(self._rows(name).items()):
            yield self._record(key, row, vectors)

    def fetch(self, name: str, ids: list[str], *, fields: Sequence[str] = (), vectors: bool = False
              ) -> list[Record]:
        if not self.has_collection(self.client.resolve(name)):
            return []
        rows = self._rows(name)
        return [self._record(i, rows[i], vectors) for i in ids if i in rows]

    def search(self, name: str, vector: Sequence[float], k: int) -> list[tuple[str, float]]:
        q = np.asarray(vector, dtype=np.float32)
        scored = [(key, float(np.asarray(v, dtype=np.float32) @ q)) for key, (v, _) in self._rows(name).items()]
        return sorted(scored, key=lambda kv: (-kv[1], kv[0]))[:k]

    def count(self, name: str) -> int:
        return len(self._rows(name))

    # ---- indexes: none (no Capability.INDEX)
    def describe_index(self, name: str, field: str | None = None) -> dict[str, Any] | None:
        return None

    def same_index(self, desc: dict[str, Any], spec: Any) -> bool:
        return True

    def build_index(self, name: str, spec: Any, *, field: str | None = None, timeout_s: float = 600.0,
                    load: bool = True) -> dict[str, Any]:
        raise VectorStoreError("the memory store builds no index")

    def verify_search(self, name: str, path: str | Path) -> float:
        raise VectorStoreError("the memory store builds no index")


# ---- the two hooks musicrec.vectors.register() needs

def open_store(settings: Any) -> MemoryStore:
    key = str(settings.path or settings.uri or "default")
    return MemoryStore(_CLIENTS.setdefault(key, MemoryClient()))


def wrap(client: Any) -> MemoryStore | None:
    return MemoryStore(client) if isinstance(client, MemoryClient) else None


def reset() -> None:
    _CLIENTS.clear()
