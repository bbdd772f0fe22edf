"""App events for the days after the dump: ``landing/date=YYYY-MM-DD/events-0001.jsonl.gz``.

Same users, catalog and taste model as the dump. One JSON object per line with the listens
fields; ``ts`` is ISO-8601 UTC with milliseconds on about half the lines and epoch
milliseconds (an integer) on the rest; ``track_id`` is the MusicBrainz id where the track has
one (and is omitted otherwise, so a reader derives the same id as the dump import does).
All lines are valid; (user_id, ts, track) never repeats.
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from musicrec.sample.presets import Preset
from musicrec.sample.taste import (
    S_LANDING,
    Catalog,
    Taste,
    Users,
    draw_tracks,
    epoch_day,
    session_times,
    strictly_increasing,
    user_taste,
)

LANDING = "landing"
FILE_NAME = "events-0001.jsonl.gz"
ACTIONS = np.array(["listen", "complete", "skip"])
ACTION_P = np.array([0.60, 0.25, 0.15])


@dataclass
class LandingResult:
    dates: list[str] = field(default_factory=list)
    events: int = 0
    per_date: dict[str, int] = field(default_factory=dict)
    played: set[int] = field(default_factory=set)


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def landing_dates(p: Preset) -> list[date]:
    return [p.end + timedelta(days=i + 1) for i in range(p.landing_days)]


def write_landing(root: Path, p: Preset, cat: Catalog, users: Users, seed: int,
                  tastes: dict[int, Taste] | None = None, *, skip_days: int = 0,
                  events_per_day: int | None = None, files_per_day: int = 1) -> LandingResult:
    """Write ``root/date=D/events-0001.jsonl.gz`` for each landing date; return what was written.

    ``skip_days`` leaves the first landing days out (``simulate`` continues after them);
    ``events_per_day`` overrides the dump's average rate; ``files_per_day`` > 1 splits each day
    round-robin into ``events-0001 … events-000N.jsonl.gz`` (as several app servers would).
    Day i's events depend only on (seed, i), so a day is the same whichever call writes it.
    """
    tastes = tastes if tastes is not None else {}
    result = LandingResult()
    per_day = events_per_day or max(10, round(p.events / p.days))
    # Users still active at the end of the dump keep listening in the app, at their own rate.
    active = np.flatnonzero(users.end_day == p.days - 1)
    weight = users.events[active] / users.events[active].sum()
    t0 = epoch_day(p.start) * 86400
    for i, day in enumerate(landing_dates(p)):
        if i < skip_days:
            continue
        rng = np.random.default_rng([seed, S_LANDING, i])
        counts = rng.multinomial(per_day, weight)
        day_off = p.days + i
        lo_ms, hi_ms = (t0 + day_off * 86400) * 1000, (t0 + (day_off + 1) * 86400) * 1000 - 1
        rows: list[tuple[int, int, int, int, float]] = []  # (ms, user, track, action index, style draw)
        for u, c in zip(active.tolist(), counts.tolist(), strict=True):
            if c == 0:
                continue
            taste = tastes.get(u)
            if taste is None:
                taste = tastes[u] = user_taste(cat, users, u, seed)
            urng = np.random.default_rng([seed, S_LANDING, i, u])
            tracks = draw_tracks(cat, taste, urng, c)
            rel = session_times(cat, urng, tracks, day_off, day_off, int(users.tz[u]))
            order = np.argsort(rel, kind="stable")
            ms = strictly_increasing((rel[order] + t0) * 1000 + urng.integers(0, 1000, c), lo_ms, hi_ms)
            acts = np.searchsorted(np.cumsum(ACTION_P), urng.random(c), side="right").clip(0, 2)
            style = urng.random((c, 3))
            rows.extend(zip(ms.tolist(), [u] * c, tracks[order].tolist(), acts.tolist(), style.tolist(),
                            strict=True))
        rows.sort(key=lambda r: (r[0], r[1]))
        bufs = [io.StringIO() for _ in range(max(1, files_per_day))]
        for n, (ms_, u, t, act, (s_ts, s_album, s_dur)) in enumerate(rows):
            mbid, artist_mbid = cat.mbid(t), cat.artist_mbid_of(t)
            rec: dict[str, object] = {"user_id": users.user_id(u)}
            if mbid:
                rec["track_id"] = mbid
            rec.update({
                "artist_id": artist_mbid or None,
                "artist_name": cat.artist(t),
                "track_name": cat.titles[t],
                "album": cat.album(t) if s_album < 0.5 else None,
                "duration_s": float(cat.duration[t]) if s_dur < 0.6 else None,
                "ts": iso_ms(ms_) if s_ts < 0.5 else ms_,
                "action": str(ACTIONS[act]),
                "source": "app",
            })
            bufs[n % len(bufs)].write(json.dumps(rec, ensure_ascii=False) + "\n")
            result.played.add(t)
        d = day.isoformat()
        folder = root / f"date={d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, buf in enumerate(bufs):
            name = FILE_NAME if k == 0 else f"events-{k + 1:04d}.jsonl.gz"
            tmp = folder / (name + ".tmp")
            with open(tmp, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
                gz.write(buf.getvalue().encode())
            tmp.replace(folder / name)
        result.dates.append(d)
        result.per_date[d] = len(rows)
        result.events += len(rows)
    return result
