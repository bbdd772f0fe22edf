"""Deterministic ids (design §4)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes

# What every store can hold as a key (design §4): Milvus keys are VARCHAR(64) and count UTF-8
# bytes; Mongo _id, Qdrant payloads and Parquet take anything, but control characters (NUL, C0
# incl. tab/newline, DEL, C1) break Mongo keys, TSV/JSONL exports and log lines. An id outside
# these rules is quarantined at clean time instead of failing a store write later.
MAX_ID_BYTES = 64
BAD_ID_CHARS = "[\x00-\x1f\x7f-\x9f]"
_BAD_ID_RE = re.compile(BAD_ID_CHARS)


def id_problem(value: str) -> str | None:
    """Why a (trimmed, non-empty) id cannot be stored, or None when it can."""
    if len(value.encode("utf-8")) > MAX_ID_BYTES:
        return f"longer than {MAX_ID_BYTES} bytes"
    if _BAD_ID_RE.search(value):
        return "control character"
    return None


def bad_ids(values: pa.Array, check_chars: bool = True) -> np.ndarray:
    """Vectorised :func:`id_problem` over a string array: True where the id cannot be stored
    (null and empty count as fine; emptiness has its own reasons). ``check_chars=False`` skips
    the character scan when the caller knows the bytes hold no control character."""
    bad = pc.greater(pc.binary_length(values), MAX_ID_BYTES)
    if check_chars:
        bad = pc.or_(bad, pc.match_substring_regex(values, BAD_ID_CHARS))
    return pc.fill_null(bad, False).to_numpy(zero_copy_only=False)


_CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F])
_NOT_CONTROL = bytes(b for b in range(256) if b not in _CONTROL_BYTES)
_C1_RE = re.compile(b"\xc2[\x80-\x9f]")  # C1 controls U+0080..U+009F in UTF-8


def may_hold_control_chars(block: bytes) -> bool:
    """Whether UTF-8 bytes may hold a control character other than tab and newline (a cheap
    pre-check over a whole block, so the per-column regex runs only on suspicious blocks)."""
    if block.translate(None, _NOT_CONTROL):  # what is left are control bytes (a C-speed pass)
        return True
    return b"\xc2" in block and _C1_RE.search(block) is not None


def text_key(value: str) -> str:
    """Normalization key: NFC, trim, collapse inner whitespace, casefold."""
    return " ".join(unicodedata.normalize("NFC", value).split()).casefold()


def slug_of(model_key: str) -> str:
    """A model slug usable in Milvus names (letters, digits, underscores).

    Here rather than in ``embeddings.store`` so the encoder imports without the vector-store clients
    (the GPU bench runs it on a machine that has none)."""
    out = "".join(c if c.isascii() and c.isalnum() else "_" for c in text_key(model_key))
    out = "_".join(filter(None, out.split("_")))
    if not out:
        raise ValueError(f"cannot derive a model slug from {model_key!r}")
    return out


def derived_track_id(artist_name: str, track_name: str) -> str:
    """Track id for rows without a MusicBrainz id: uuid5 over the normalized artist/title."""
    return _uuid5_url("lastfm:" + text_key(artist_name) + "\t" + text_key(track_name))


def _uuid5_url(name: str) -> str:
    """``str(uuid.uuid5(uuid.NAMESPACE_URL, name))`` without the UUID object (the clean's hot path)."""
    digest = bytearray(hashlib.sha1(_URL_NAMESPACE + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def track_id(mbid: str | None, artist_name: str, track_name: str) -> str:
    mbid = (mbid or "").strip()
    return mbid if mbid else derived_track_id(artist_name, track_name)


def point_id(key: str) -> str:
    """Qdrant point id for a store key (Qdrant accepts only uint64 or UUID ids)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


def slug(value: str) -> str:
    """A dataset/model slug: lowercase letters, digits and dashes."""
    out = []
    for ch in text_key(value):
        out.append(ch if ch.isascii() and ch.isalnum() else "-")
    s = "-".join(filter(None, "".join(out).split("-")))
    if not s:
        raise ValueError(f"cannot derive a slug from {value!r}")
    return s
