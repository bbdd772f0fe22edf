"""The taste model: catalog, users and their listening sessions (an interface: see docs/sample-data.md).

* K clusters ("genres") with play shares ``cluster_weight``; every artist, and so every track,
  belongs to one cluster.
* Popularity is Zipf (exponent 1) over a random within-cluster rank: a draw from cluster c picks
  rank ``r = floor((n_c + 1) ** U) - 1`` (density ~ 1/(r+1)); a "global" draw first picks the
  cluster by ``cluster_weight`` — so popularity is a power law within and across clusters.
* A user has a primary cluster, half of them a secondary one, and 5-120 favourite tracks (from
  those clusters, reaching into the tail). Plays mix: 30 % favourites (repeat listens), 65 %
  fresh draws from the user's clusters (68/32 primary/secondary), 5 % global popularity.
* Plays come in sessions (geometric length, mean 8) on random days of the user's active span, at
  diurnal hours shifted by the user's time zone; consecutive plays are one track length apart
  (shorter when skipped). Activity (plays per user) is log-normal.

Everything is a pure function of (seed, user/track index), drawn from independent
``numpy.random.default_rng([seed, stream, index])`` streams, so a user's events are the same
whether the file is written in one piece or in chunks, and in any order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np

from musicrec.ids import derived_track_id
from musicrec.sample import names
from musicrec.sample.presets import Preset

# RNG stream ids (the second element of every seed list): never reuse one for another purpose.
S_CATALOG, S_USERS, S_TASTE, S_TRACKS, S_TIMES, S_PLANT, S_PROFILE, S_LYRICS, S_LANDING = range(1, 10)

# Play mix (measured on `small`, see docs/sample-data.md): a larger global share makes the
# global heads something every user has played, and popularity then rivals ALS.
FAV_SHARE, CLUSTER_SHARE, PRIMARY_SHARE_WITH_SECONDARY = 0.30, 0.65, 0.68
FAV_GAMMA = 0.5  # favourites reach into the cluster's mid/tail: personal, not just the hits
CLUSTER_EXP = 0.3  # cluster play shares ~ 1/(k+1)^0.3: no cluster dominates
SESSION_MEAN = 8
# Relative listening activity per local hour of day (evening peak, night trough).
HOURS = np.array([2, 1, .6, .4, .3, .3, .5, 1, 1.5, 2, 2.2, 2.4, 2.6, 2.6, 2.6, 2.8, 3, 3.2, 3.6, 4, 4.2, 4,
                  3.4, 2.6])
HOUR_CDF = np.cumsum(HOURS) / HOURS.sum()


def epoch_day(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) // 86400


def uuid4_strings(rng: np.random.Generator, n: int) -> np.ndarray:
    """n uuid4-formatted ids (version and variant bits set) from a seeded RNG, as an ``S36`` array."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexd = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    digits = np.empty((n, 32), dtype=np.uint8)
    digits[:, 0::2] = hexd[raw >> 4]
    digits[:, 1::2] = hexd[raw & 0x0F]
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    for dst, src in ((0, 0), (9, 8), (14, 12), (19, 16), (24, 20)):
        width = {0: 8, 24: 12}.get(dst, 4)
        out[:, dst:dst + width] = digits[:, src:src + width]
    return out.view("S36").ravel()


@dataclass
class Catalog:
    seed: int
    k: int
    cluster_weight: np.ndarray  # (K,) share of "global" plays
    artist_names: list[str]
    artist_mbid: np.ndarray  # S36, b"" = none
    artist_cluster: np.ndarray
    track_artist: np.ndarray  # int32
    titles: list[str]
    track_mbid: np.ndarray  # S36, b"" = none
    track_cluster: np.ndarray  # int16
    duration: np.ndarray  # int32 seconds
    album_slot: np.ndarray  # int8: which of the artist's albums
    by_cluster: np.ndarray  # int32 track indices grouped by cluster, in popularity order
    cluster_start: np.ndarray  # int64 (K+1,)
    _albums: dict[tuple[int, int], str] = field(default_factory=dict, repr=False)

    @property
    def n_tracks(self) -> int:
        return len(self.titles)

    def cluster_size(self, c: int | np.ndarray) -> np.ndarray:
        return self.cluster_start[np.asarray(c) + 1] - self.cluster_start[np.asarray(c)]

    def artist(self, t: int) -> str:
        return self.artist_names[int(self.track_artist[t])]

    def album(self, t: int) -> str:
        a, s = int(self.track_artist[t]), int(self.album_slot[t])
        name = self._albums.get((a, s))
        if name is None:
            rnd = random.Random(f"album:{self.seed}:{a}:{s}")
            name = self._albums[(a, s)] = names.album_name(rnd, names.theme_for_cluster(int(self.artist_cluster[a])))
        return name

    def mbid(self, t: int) -> str:
        return self.track_mbid[t].decode()

    def artist_mbid_of(self, t: int) -> str:
        return self.artist_mbid[int(self.track_artist[t])].decode()

    def track_id(self, t: int) -> str:
        """The design's ``track_id``: the MusicBrainz id, else uuid5 of the normalized artist/title."""
        mbid = self.mbid(t)
        return mbid or derived_track_id(self.artist(t), self.titles[t])

    def zipf_pick(self, clusters: np.ndarray, rng: np.random.Generator, gamma: float = 1.0) -> np.ndarray:
        """One popularity-weighted track from each given cluster (vectorized, O(1) per draw).

        ``gamma`` < 1 flattens the draw towards the cluster's tail (used to pick favourites)."""
        n_c = self.cluster_size(clusters)
        u = rng.random(len(clusters))
        if gamma != 1.0:
            u = np.power(u, gamma)
        rank = np.floor(np.power(n_c + 1.0, u)).astype(np.int64) - 1
        rank = np.minimum(np.maximum(rank, 0), n_c - 1)
        return self.by_cluster[self.cluster_start[clusters] + rank]

    def global_clusters(self, rng: np.random.Generator, n: int) -> np.ndarray:
        cdf = np.cumsum(self.cluster_weight)
        return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), self.k - 1)


def build_catalog(p: Preset, seed: int) -> Catalog:
    rng = np.random.default_rng([seed, S_CATALOG])
    k, n_art, n_trk = p.clusters, p.artists, p.tracks
    cw = 1.0 / np.power(np.arange(k) + 1.0, CLUSTER_EXP)
    cw = cw[rng.permutation(k)]
    cw /= cw.sum()
    artist_cluster = rng.choice(k, size=n_art, p=cw).astype(np.int16)
    artist_cluster[:k] = np.arange(k)  # every cluster has an artist
    # Tracks per artist: power law over a random artist rank.
    aw = 1.0 / np.power(rng.permutation(n_art) + 1.0, 0.8)
    acdf = np.cumsum(aw)
    track_artist = np.searchsorted(acdf, rng.random(n_trk) * acdf[-1], side="right").clip(0, n_art - 1)
    # Every cluster gets a few tracks even in the tiny preset.
    m = min(10, n_trk // (2 * k))
    if m:
        per_cluster = [np.flatnonzero(artist_cluster == c) for c in range(k)]
        seed_tracks = rng.permutation(n_trk)[: m * k]
        for i, t in enumerate(seed_tracks):
            pool = per_cluster[i % k]
            track_artist[t] = pool[rng.integers(len(pool))]
    track_artist = track_artist.astype(np.int32)
    track_cluster = artist_cluster[track_artist]
    by_cluster = np.lexsort((rng.random(n_trk), track_cluster)).astype(np.int32)
    cluster_start = np.concatenate([[0], np.cumsum(np.bincount(track_cluster, minlength=k))]).astype(np.int64)
    duration = np.clip(rng.lognormal(np.log(225.0), 0.3, n_trk), 60, 720).astype(np.int32)
    has_artist_mbid = rng.random(n_art) < 0.92
    artist_mbid = uuid4_strings(rng, n_art)
    artist_mbid[~has_artist_mbid] = b""
    has_track_mbid = (rng.random(n_trk) < 0.65) & has_artist_mbid[track_artist]
    track_mbid = uuid4_strings(rng, n_trk)
    track_mbid[~has_track_mbid] = b""
    tracks_per_artist = np.bincount(track_artist, minlength=n_art)
    n_albums = np.clip(1 + tracks_per_artist // 8, 1, 8)
    album_slot = np.floor(rng.random(n_trk) * n_albums[track_artist]).astype(np.int8)

    themes = [names.theme_for_cluster(c) for c in range(k)]
    rnd = random.Random(f"names:{seed}")
    artist_names: list[str] = []
    seen: set[str] = set()
    for a in range(n_art):
        theme = themes[artist_cluster[a]]
        name = names.artist_name(rnd, theme)
        key = names.match_key(name)
        while not key or key in seen or names.FEAT.search(name):
            name = names.artist_name(rnd, theme) + ("" if rnd.random() < 0.5 else f" {names.pseudo_word(rnd)}")
            key = names.match_key(name)
        seen.add(key)
        artist_names.append(name)
    titles: list[str] = []
    seen_titles: set[tuple[int, str]] = set()
    for a, c in zip(track_artist.tolist(), track_cluster.tolist(), strict=True):
        title = names.track_title(rnd, themes[c])
        key = (a, names.match_key(title))
        tries = 0
        while not key[1] or key in seen_titles or names.FEAT.search(title):
            tries += 1
            title = names.track_title(rnd, themes[c]) if tries < 4 else f"{title} {names.pseudo_word(rnd)}"
            key = (a, names.match_key(title))
        seen_titles.add(key)
        titles.append(title)
    return Catalog(seed=seed, k=k, cluster_weight=cw, artist_names=artist_names, artist_mbid=artist_mbid,
                   artist_cluster=artist_cluster, track_artist=track_artist, titles=titles,
                   track_mbid=track_mbid, track_cluster=track_cluster, duration=duration,
                   album_slot=album_slot, by_cluster=by_cluster, cluster_start=cluster_start)


@dataclass
class Users:
    n: int
    events: np.ndarray  # events per user (valid + malformed lines, duplicates excluded)
    start_day: np.ndarray  # active span, as day offsets from the preset's start
    end_day: np.ndarray
    primary: np.ndarray
    secondary: np.ndarray  # -1 = none
    tz: np.ndarray  # hours east of UTC
    anchor: int  # the user whose sessions pin the first and last date

    def user_id(self, u: int) -> str:
        return f"user_{u + 1:06d}"


def build_users(p: Preset, cat: Catalog, seed: int, n_events: int) -> Users:
    rng = np.random.default_rng([seed, S_USERS])
    n, days = p.users, p.days
    w = rng.lognormal(0.0, 1.0, n)
    min_ev = min(30, n_events // (2 * n))
    raw = w / w.sum() * (n_events - min_ev * n)
    events = min_ev + np.floor(raw).astype(np.int64)
    rest = n_events - int(events.sum())
    events[np.argsort(-(raw - np.floor(raw)), kind="stable")[:rest]] += 1
    start = np.where(rng.random(n) < 0.3, 0, np.floor(np.power(rng.random(n), 1.5) * 0.6 * days)).astype(np.int64)
    churned = rng.random(n) < 0.15
    end_lo = np.minimum(start + max(6, int(0.3 * days)), days - 1)
    end = np.where(churned, end_lo + np.floor(rng.random(n) * (days - end_lo)), days - 1).astype(np.int64)
    anchor = int(np.argmax(events))
    start[anchor], end[anchor] = 0, days - 1
    primary = cat.global_clusters(rng, n)
    second = cat.global_clusters(rng, n)
    secondary = np.where((rng.random(n) < 0.5) & (second != primary), second, -1)
    tz = rng.choice(np.array([-8, -5, -3, 0, 1, 2, 3, 8, 9, 10]), n)
    return Users(n=n, events=events, start_day=start, end_day=end, primary=primary, secondary=secondary, tz=tz,
                 anchor=anchor)


@dataclass
class Taste:
    clusters: np.ndarray  # the user's clusters (1 or 2)
    shares: np.ndarray  # cumulative shares: favourites, primary, secondary (rest = global)
    favourites: np.ndarray  # track indices, favourite first


def user_taste(cat: Catalog, users: Users, u: int, seed: int) -> Taste:
    rng = np.random.default_rng([seed, S_TASTE, u])
    p, s = int(users.primary[u]), int(users.secondary[u])
    clusters = np.array([p] if s < 0 else [p, s])
    if s < 0:
        shares = np.cumsum([FAV_SHARE, CLUSTER_SHARE, 0.0])
    else:
        prim = CLUSTER_SHARE * PRIMARY_SHARE_WITH_SECONDARY
        shares = np.cumsum([FAV_SHARE, prim, CLUSTER_SHARE - prim])
    n_fav = int(np.clip(round(rng.lognormal(np.log(20), 0.5)), 5, 120))
    n_fav = max(1, min(n_fav, int(cat.cluster_size(clusters).sum()) // 2))
    src = np.where(rng.random(4 * n_fav) < 0.75, clusters[0], clusters[-1])
    cand = cat.zipf_pick(src, rng, FAV_GAMMA)
    _, first = np.unique(cand, return_index=True)
    favourites = cand[np.sort(first)][:n_fav]
    return Taste(clusters=clusters, shares=shares, favourites=favourites)


def draw_tracks(cat: Catalog, taste: Taste, rng: np.random.Generator, n: int) -> np.ndarray:
    """n plays of one user (vectorized mixture of favourites / own clusters / global popularity)."""
    u = rng.random(n)
    kind = np.searchsorted(taste.shares, u, side="right")  # 0 fav, 1 primary, 2 secondary, 3 global
    clusters = np.where(kind == 2, taste.clusters[-1], taste.clusters[0])
    glob = kind == 3
    clusters[glob] = cat.global_clusters(rng, int(glob.sum()))
    tracks = cat.zipf_pick(clusters, rng)
    fav = kind == 0
    n_f = len(taste.favourites)
    j = np.floor(np.power(n_f + 1.0, rng.random(int(fav.sum())))).astype(np.int64) - 1
    tracks[fav] = taste.favourites[np.clip(j, 0, n_f - 1)]
    return tracks.astype(np.int32)


def session_times(cat: Catalog, rng: np.random.Generator, tracks: np.ndarray, day_lo: int, day_hi: int, tz: int,
                  pin: bool = False) -> np.ndarray:
    """Start second (from the first day's midnight) of each play, in the order of ``tracks``.

    Sessions start on random days in [day_lo, day_hi] at diurnal local hours; within a session
    each play starts when the previous one ended (or was skipped). ``pin`` puts one session on
    the first and one on the last day so the log spans the whole date range.
    """
    n = len(tracks)
    lengths = rng.geometric(1.0 / SESSION_MEAN, size=n // 4 + 8)
    while lengths.sum() < n:
        lengths = np.concatenate([lengths, rng.geometric(1.0 / SESSION_MEAN, size=n // 4 + 8)])
    ends = np.cumsum(lengths)
    n_sess = int(np.searchsorted(ends, n)) + 1
    sess = np.searchsorted(ends[:n_sess], np.arange(n), side="right")
    day = rng.integers(day_lo, day_hi + 1, n_sess)
    hour = (np.searchsorted(HOUR_CDF, rng.random(n_sess), side="right").clip(0, 23) - tz) % 24
    start = day * 86400 + hour * 3600 + rng.integers(0, 3600, n_sess)
    if pin and n_sess >= 2:
        start[0] = day_lo * 86400 + 10 * 3600 + int(rng.integers(0, 3600))
        start[-1] = day_hi * 86400 + 17 * 3600 + int(rng.integers(0, 3600))
    dur = cat.duration[tracks].astype(np.int64)
    skipped = rng.random(n) < 0.25
    played = np.where(skipped, (dur * rng.uniform(0.05, 0.8, n)).astype(np.int64), dur) + rng.integers(1, 12, n)
    before = np.cumsum(played) - played  # seconds played before each play (exclusive)
    first_of_session = np.concatenate([[0], ends[: n_sess - 1]])
    offset = before - before[first_of_session][sess]
    # A session running past the end of the span starts earlier instead (no pile-up at the end).
    length = np.add.reduceat(played, first_of_session)
    start = np.maximum(day_lo * 86400, start - np.maximum(0, start + length - (day_hi + 1) * 86400))
    return start[sess] + offset


def strictly_increasing(t: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Sorted copy of t made strictly increasing (ties pushed forward) and kept inside [lo, hi]."""
    n = len(t)
    if n > hi - lo + 1:
        raise ValueError("more events than seconds in the span")
    idx = np.arange(n, dtype=np.int64)
    s = np.maximum(np.sort(t), lo)
    s = np.maximum.accumulate(s - idx) + idx
    return np.minimum(s, hi - (n - 1 - idx))


def user_events(cat: Catalog, users: Users, p: Preset, u: int, seed: int,
                taste: Taste | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(epoch seconds ascending, track indices) of user u's log lines (before planting)."""
    taste = taste or user_taste(cat, users, u, seed)
    n = int(users.events[u])
    tracks = draw_tracks(cat, taste, np.random.default_rng([seed, S_TRACKS, u]), n)
    rng = np.random.default_rng([seed, S_TIMES, u])
    rel = session_times(cat, rng, tracks, int(users.start_day[u]), int(users.end_day[u]), int(users.tz[u]),
                        pin=u == users.anchor)
    order = np.argsort(rel, kind="stable")
    t0 = epoch_day(p.start) * 86400
    ts = strictly_increasing(rel[order] + t0, t0, t0 + p.days * 86400 - 1)
    return ts, tracks[order]
