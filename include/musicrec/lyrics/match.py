"""Songs, LRCLIB candidates, the scorer and the outcome of one lookup (shared by both providers).

Score = 0.6·title similarity + 0.4·artist similarity on :func:`match_key` of both sides (0 when the
title is below 0.9 or the artist below 0.85: a title with one more word is another song), then
−0.25 when both durations are known and differ by more than 2 s (−0.5 beyond 10 s), +0.02 when the
albums agree. A candidate below ``threshold`` (0.85) is no match: a wrong song's lyrics are worse than
none (``Blue Moon Rising`` must not answer ``Blue Moon``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from musicrec.lyrics.normalize import match_key, similarity

STATUSES = ("pending", "found", "not_found", "instrumental", "error")
THRESHOLD = 0.85
MIN_TITLE, MIN_ARTIST = 0.9, 0.85  # a title with an extra word ("Blue Moon Rising") is another song
DURATION_TOLERANCE_S = 2.0


@dataclass(frozen=True)
class Song:
    track_id: str
    title: str
    artist: str
    album: str | None = None
    duration_s: float | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Song:
        return cls(doc["_id"], doc.get("title") or "", doc.get("artist") or "", doc.get("album") or None,
                   float(doc["duration_s"]) if doc.get("duration_s") else None)

    @property
    def exact(self) -> bool:
        """Album and duration known: LRCLIB's ``/api/get`` can answer directly."""
        return bool(self.album) and self.duration_s is not None


@dataclass(frozen=True)
class Candidate:
    lrclib_id: int
    title: str
    artist: str
    album: str | None
    duration: float | None
    instrumental: bool
    plain: str | None
    synced: str | None

    @classmethod
    def from_api(cls, rec: dict[str, Any]) -> Candidate:
        return cls(int(rec["id"]), rec.get("trackName") or "", rec.get("artistName") or "", rec.get("albumName"),
                   float(rec["duration"]) if rec.get("duration") is not None else None,
                   bool(rec.get("instrumental")), rec.get("plainLyrics") or None, rec.get("syncedLyrics") or None)


@dataclass
class Outcome:
    status: str  # found | not_found | instrumental | error
    provider: str
    lrclib_id: int | None = None
    plain: str | None = None
    synced: str | None = None
    score: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str | None:
        return hashlib.sha256(self.plain.encode()).hexdigest() if self.plain else None

    @property
    def settled(self) -> bool:
        return self.status != "error"


def score(song: Song, cand: Candidate, keys: tuple[str, str] | None = None) -> float:
    title_key, artist_key = keys or (match_key(song.title), match_key(song.artist))
    title_sim = similarity(title_key, match_key(cand.title), MIN_TITLE)
    artist_sim = similarity(artist_key, match_key(cand.artist), MIN_ARTIST)
    if title_sim < MIN_TITLE or artist_sim < MIN_ARTIST:  # another song, however close the rest is
        return 0.0
    s = 0.6 * title_sim + 0.4 * artist_sim
    if song.duration_s is not None and cand.duration is not None:
        gap = abs(song.duration_s - cand.duration)
        if gap > 10:
            s -= 0.5
        elif gap > DURATION_TOLERANCE_S:
            s -= 0.25
    if song.album and cand.album and match_key(song.album) == match_key(cand.album):
        s += 0.02
    return s


def best(song: Song, candidates: list[Candidate], threshold: float = THRESHOLD) -> tuple[Candidate, float] | None:
    """The best-scoring candidate at or above ``threshold`` (ties: one with lyrics, then the lower id)."""
    if not candidates:
        return None
    keys = (match_key(song.title), match_key(song.artist))
    scored = [(score(song, c, keys), c) for c in candidates]
    scored = [(s, c) for s, c in scored if s >= threshold]
    if not scored:
        return None
    s, cand = max(scored, key=lambda sc: (sc[0], bool(sc[1].plain or sc[1].synced or sc[1].instrumental),
                                          -sc[1].lrclib_id))
    return cand, s


def outcome_of(song: Song, candidates: list[Candidate], provider: str, threshold: float = THRESHOLD) -> Outcome:
    """The status a set of candidates gives a song."""
    picked = best(song, candidates, threshold)
    if picked is None:
        return Outcome("not_found", provider)
    cand, s = picked
    if cand.instrumental:
        return Outcome("instrumental", provider, cand.lrclib_id, score=round(s, 4))
    if not cand.plain and not cand.synced:
        return Outcome("not_found", provider, cand.lrclib_id, score=round(s, 4),
                       extra={"reason": "record without lyrics"})
    return Outcome("found", provider, cand.lrclib_id, cand.plain, cand.synced, round(s, 4))
