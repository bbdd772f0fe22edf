"""Name normalization for matching songs against LRCLIB records.

* :func:`lrclib_lower` is a port of LRCLIB's own ``prepare_input`` (server/src/utils.rs): lowercase,
  strip diacritics, punctuation → space, apostrophes removed, whitespace collapsed. It is what the
  dump stores in ``name_lower``/``artist_name_lower``/``album_name_lower``, so exact lookups through
  the dump's indexes use it.
* :func:`match_key` is ours, applied to both sides before scoring: :func:`lrclib_lower` after
  removing "feat." credits (``Title (feat. X)``, ``Artist ft. X``, ``featuring``) and treating
  ``&``/``+`` as ``and``.
"""

from __future__ import annotations

import re
import unicodedata
from difflib import SequenceMatcher
from functools import lru_cache

_LRCLIB_PUNCT = re.compile(r"[`~!@#$%^&*()_|+\-=?;:\",.<>{}\[\]\\/]")
_APOS = re.compile(r"['’]")
_LAY = str.maketrans({"ø": "o", "Ø": "o", "æ": "ae", "Æ": "ae", "ß": "ss", "đ": "d", "ł": "l", "Ł": "l",
                      "œ": "oe", "Œ": "oe", "ı": "i"})
# a credit in brackets anywhere, or a bare credit to the end of the name
_FEAT_BRACKETED = re.compile(r"\s*[(\[{]\s*(?:feat|ft|featuring|with)\b\.?[^)\]}]*[)\]}]", re.IGNORECASE)
_FEAT_TRAILING = re.compile(r"\s+(?:feat|ft|featuring)\b\.?\s.*$", re.IGNORECASE)
_AND = re.compile(r"\s*[&+]\s*")
_PLAIN = re.compile(r"[A-Za-z0-9 ]*")
_MAYBE_CREDIT = re.compile(r"\b(?:feat|ft|featuring|with)\b", re.IGNORECASE)


def lay(text: str) -> str:
    """Lowercase without diacritics (``Café`` → ``cafe``); non-Latin scripts are kept."""
    if text.isascii():  # fast path: most names
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.translate(_LAY))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def lrclib_lower(text: str) -> str:
    """What LRCLIB stores in its ``*_lower`` columns for ``text``."""
    if _PLAIN.fullmatch(text):  # fast path: letters, digits and spaces only (most names)
        return " ".join(text.lower().split())
    out = _LRCLIB_PUNCT.sub(" ", lay(text))
    out = _APOS.sub("", out).lower()
    return " ".join(out.split())


def strip_credits(text: str) -> str:
    """``Song (feat. X)`` → ``Song``; ``Artist feat. X`` → ``Artist``."""
    if not _MAYBE_CREDIT.search(text):  # fast path: no credit word at all
        return text.strip()
    out = _FEAT_BRACKETED.sub("", text)
    out = _FEAT_TRAILING.sub("", out)
    return out.strip() or text.strip()


def plain_key(text: str) -> str | None:
    """The lowered, space-collapsed ``text`` when it is letters, digits and spaces without a credit
    word (most names): then it is both its :func:`lrclib_lower` and its :func:`match_key`; else None."""
    if _PLAIN.fullmatch(text) and not _MAYBE_CREDIT.search(text):
        return " ".join(text.lower().split())
    return None


@lru_cache(maxsize=1 << 17)  # names repeat (an artist's every song, a title's every candidate)
def match_key(text: str | None) -> str:
    """The key both sides are compared by: credits removed, ``&``/``+`` = ``and``, LRCLIB-lowered."""
    if not text:
        return ""
    if (key := plain_key(text)) is not None:  # fast path
        return key
    return lrclib_lower(_AND.sub(" and ", strip_credits(text)))


def query_words(text: str) -> list[str]:
    """Words to search for: the match key without ``and`` (``A & B`` is stored as ``a b`` by LRCLIB)."""
    return [w for w in match_key(text).split() if w != "and"]


def similarity(a: str, b: str, minimum: float = 0.0) -> float:
    """0..1 similarity of two match keys: 1.0 when equal, 0.0 when the word counts differ (a word more
    or less makes another song: ``Blue Moon Rising`` is not ``Blue Moon``), else the character-level
    ratio (typos); 0.0 as soon as it is certain to be below ``minimum``."""
    if a == b:
        return 1.0
    if not a or not b or a.count(" ") != b.count(" "):
        return 0.0
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    # cheap upper bounds first (as difflib.get_close_matches does): most pairs stop here
    if matcher.real_quick_ratio() < minimum or matcher.quick_ratio() < minimum:
        return 0.0
    return matcher.ratio()
