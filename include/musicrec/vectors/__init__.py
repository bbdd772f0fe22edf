"""Vector-store helpers (Milvus, the Qdrant mirror): versioned collections behind aliases."""

from __future__ import annotations

from collections.abc import Iterable


def versioned(names: Iterable[str], alias: str) -> list[str]:
    """The ``<alias>_v<version>`` collections among ``names``, sorted."""
    prefix = f"{alias}_v"
    return sorted(n for n in names if n.startswith(prefix))


def stale_versions(names: Iterable[str], alias: str, keep: Iterable[str], target: str | None) -> list[str]:
    """Versioned collections to drop: not in ``keep`` and not the alias' current ``target``."""
    kept = set(keep) | ({target} if target else set())
    return [n for n in versioned(names, alias) if n not in kept]
