"""ALS parameters, the deterministic model version and the Milvus collection names (design §4)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

DEFAULT_WEIGHTS = {"complete": 1.0, "listen": 0.5, "skip": 0.0}
CONFIDENCE = ("linear", "log")
BACKENDS = ("auto", "implicit", "implicit-cpu", "implicit-gpu", "torch", "torch-cpu", "torch-cuda")
ALIAS = "music_collection"
USER_VECTORS = "latent_vectors"  # users.latent_vectors.<version>: the user's vector in each published model
PLAYED = "played_tracks"  # users.played_tracks.<version>: what the user played in that model's window
# users.refreshed_vectors.<version>: a fold-in's newer vector of the user against that model's items (issue 18).
# Serving prefers it; latent_vectors.<version> stays exactly as published (the audit's truth is the
# model's lake artifact, and a live model is never rewritten in place).
REFRESHED = "refreshed_vectors"
VERSION_HEX = 6  # hex digits of the identity digest in a version name (the documented format)


@dataclass(frozen=True)
class AlsParams:
    """What defines a model (everything here goes into the version hash).

    ``confidence``: ``linear`` = 1 + alpha·w, ``log`` = 1 + alpha·ln(1 + w), where w is the sum of the
    action weights of a (user, track) pair in the window; pairs with w <= 0 are no interaction.
    """

    factors: int = 64
    iterations: int = 15
    regularization: float = 0.1
    alpha: float = 40.0
    confidence: str = "linear"
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    window_days: int = 90
    eval_days: int = 7
    cg_steps: int = 3
    random_state: int = 42

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.factors <= 1024:
            problems.append(f"factors={self.factors} (1..1024)")
        if not 1 <= self.iterations <= 500:
            problems.append(f"iterations={self.iterations} (1..500)")
        if self.regularization < 0:
            problems.append(f"regularization={self.regularization} (>= 0)")
        if self.alpha <= 0:
            problems.append(f"alpha={self.alpha} (> 0)")
        if self.confidence not in CONFIDENCE:
            problems.append(f"confidence={self.confidence!r} (one of {CONFIDENCE})")
        if self.window_days <= self.eval_days or self.eval_days < 1:
            problems.append(f"window_days={self.window_days}, eval_days={self.eval_days} (window > eval >= 1)")
        if not 1 <= self.cg_steps <= 50:
            problems.append(f"cg_steps={self.cg_steps} (1..50)")
        unknown = set(self.weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            problems.append(f"weights for unknown actions {sorted(unknown)}")
        if problems:
            raise ValueError("invalid ALS params: " + ", ".join(problems))

    @classmethod
    def from_conf(cls, conf: dict[str, Any]) -> AlsParams:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in conf.items() if k in known and v is not None and v != ""}
        for k, cast in (("factors", int), ("iterations", int), ("window_days", int), ("eval_days", int),
                        ("cg_steps", int), ("random_state", int), ("regularization", float), ("alpha", float)):
            if k in values:
                values[k] = cast(values[k])
        if "weights" in values:
            values["weights"] = DEFAULT_WEIGHTS | {k: float(v) for k, v in dict(values["weights"]).items()}
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["weights"] = dict(sorted(self.weights.items()))
        return out

    def digest(self) -> str:
        blob = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def version(self, window_end: datetime, inputs: Sequence[Mapping[str, Any]]) -> str:
        """``<YYYYMMDD of the window end>_<6 hex of the identity digest>``: the digest covers the params,
        the window and every input file's registry sha256 (:func:`identity_digest`), so the same inputs
        rebuild the same name and a late partition or a re-processed day makes a new version."""
        return f"{window_end:%Y%m%d}_{identity_digest(self, window_end, inputs)[:VERSION_HEX]}"

    def with_(self, **changes: Any) -> AlsParams:
        return replace(self, **changes)


def identity_digest(params: AlsParams, window_end: datetime, inputs: Sequence[Mapping[str, Any]]) -> str:
    """sha256 over (params, window start/end, sorted (path, sha256) of the inputs): what a model *is*.

    A file whose bytes changed (a re-processed day, a late ``daily`` file beside an import file) changes
    its sha256 and so the digest; an input without a registry sha256 is an error, since the version
    could not tell two different files apart."""
    missing = [i.get("path") for i in inputs if not i.get("sha256")]
    if missing:
        raise ValueError(f"inputs without a registry sha256 (cannot name the version by its inputs): {missing[:5]}")
    end = window_end.astimezone(UTC) if window_end.tzinfo else window_end.replace(tzinfo=UTC)
    start = end - timedelta(days=params.window_days)
    blob = json.dumps({"params": params.as_dict(), "window": [start.isoformat(), end.isoformat()],
                       "inputs": sorted([str(i["path"]), str(i["sha256"])] for i in inputs)},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


INDEX_TAG = re.compile(r"_ix[0-9a-f]{6}$")


def collection_name(version: str, alias: str = ALIAS, index_tag: str | None = None) -> str:
    """``<alias>_v<version>``; a side build for an index change of a live version adds ``_ix<6 hex>``."""
    return f"{alias}_v{version}" + (f"_ix{index_tag}" if index_tag else "")


def version_of(collection: str, alias: str = ALIAS) -> str | None:
    """The model version a physical collection holds (``_ix<hex>`` side builds hold the same version)."""
    prefix = f"{alias}_v"
    return INDEX_TAG.sub("", collection[len(prefix):]) if collection.startswith(prefix) else None


def user_vector_field(version: str) -> str:
    """The ``users`` field holding a user's vector of model ``version`` (one key per version, so a
    publish writes the new model's vectors beside the live ones and the alias swap flips both)."""
    return f"{USER_VECTORS}.{version}"


def refreshed_field(version: str) -> str:
    """The ``users`` field holding a user's fold-in vector in model ``version`` (see ``REFRESHED``)."""
    return f"{REFRESHED}.{version}"


def played_field(version: str) -> str:
    """The ``users`` field holding the track ids a user played in model ``version``'s window (written
    by the publish beside the user's vector, so serving excludes them without scanning the lake)."""
    return f"{PLAYED}.{version}"
