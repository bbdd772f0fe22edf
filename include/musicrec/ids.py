"""Deterministic ids (design §4)."""

from __future__ import annotations

import hashlib
import unicodedata
import uuid

_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes


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
