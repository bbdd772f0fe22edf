"""Deterministic ids (design §4)."""

from __future__ import annotations

import unicodedata
import uuid


def text_key(value: str) -> str:
    """Normalization key: NFC, trim, collapse inner whitespace, casefold."""
    return " ".join(unicodedata.normalize("NFC", value).split()).casefold()


def derived_track_id(artist_name: str, track_name: str) -> str:
    """Track id for rows without a MusicBrainz id: uuid5 over the normalized artist/title."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "lastfm:" + text_key(artist_name) + "\t" + text_key(track_name)))


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
