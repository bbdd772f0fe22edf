"""Lyrics matching: our normalization and the scorer (both providers use them)."""

from __future__ import annotations

import pytest

from musicrec.lyrics.match import Candidate, Song, best, outcome_of, score
from musicrec.lyrics.normalize import lrclib_lower, match_key, query_words, strip_credits


@pytest.mark.parametrize(("text", "key"), [
    ("Don't Stop Me Now", "dont stop me now"),
    ("Café del Mar", "cafe del mar"),
    ("Song (feat. Someone Else)", "song"),
    ("Song [ft. X & Y]", "song"),
    ("Artist feat. Guest", "artist"),
    ("Artist featuring Guest", "artist"),
    ("Simon & Garfunkel", "simon and garfunkel"),
    ("Simon and Garfunkel", "simon and garfunkel"),
    ("  HELLO,   World!! ", "hello world"),
    ("Любовь", "любовь"),
])
def test_match_key(text, key):
    assert match_key(text) == key


def test_lrclib_lower_is_lrclibs_normalization_and_credits_stay():
    assert lrclib_lower("Song (feat. X)") == "song feat x"  # LRCLIB keeps the credit in name_lower
    assert lrclib_lower("Rock & Roll") == "rock roll"
    assert strip_credits("(feat. X)") == "(feat. X)"  # never strip a name to nothing
    assert query_words("Rock & Roll (feat. Y)") == ["rock", "roll"]


def cand(id_, title, artist, duration=None, album=None, plain="la la", instrumental=False, synced=None):
    return Candidate(id_, title, artist, album, duration, instrumental, None if instrumental else plain, synced)


def test_spelling_variants_match_and_longer_titles_do_not():
    song = Song("t", "Blue Moon", "Ann & the Wolves", duration_s=200.0)
    assert score(song, cand(1, "BLUE MOON", "Ann and the Wolves", 201.0)) >= 0.99
    assert score(song, cand(2, "Blue Moon (feat. Bo)", "Ann & The Wolves feat. Bo")) >= 0.99
    assert score(song, cand(3, "Blue Moon Rising", "Ann & the Wolves", 200.0)) == 0.0  # another song
    assert score(song, cand(4, "Blue Moon", "Someone Else")) == 0.0  # a cover by another artist
    assert score(song, cand(5, "Blue Mon", "Ann & the Wolves")) > 0.85  # a typo
    assert score(song, cand(6, "Blue Moon", "Ann & the Wolves", 215.0)) < 0.85  # another recording


def test_best_prefers_the_closest_and_outcomes_follow_the_record():
    song = Song("t", "Blue Moon", "Ann", album="Nights", duration_s=200.0)
    cands = [cand(10, "Blue Moon", "Ann", 205.0), cand(11, "Blue Moon", "Ann", 200.5, album="Nights"),
             cand(12, "Blue Moon Rising", "Ann", 200.0)]
    picked, s = best(song, cands)
    assert picked.lrclib_id == 11 and s > 1.0
    found = outcome_of(song, cands, "dump")
    assert found.status == "found" and found.lrclib_id == 11 and found.sha256 and len(found.sha256) == 64
    assert outcome_of(song, [cand(7, "Blue Moon", "Ann", instrumental=True)], "api").status == "instrumental"
    assert outcome_of(song, [cand(8, "Blue Moon", "Ann", plain=None)], "api").status == "not_found"
    assert outcome_of(song, [cands[2]], "api").status == "not_found"
    assert outcome_of(song, [], "api").status == "not_found"
