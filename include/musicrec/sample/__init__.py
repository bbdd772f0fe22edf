"""Deterministic sample data: a Last.fm-1K-format archive, an LRCLIB-dump-format SQLite file and
app landing files, all drawn from one learnable taste model (docs/sample-data.md).

    from musicrec.sample import generate
    res = generate(preset="tiny", out_dir=Path("data/sample"), seed=42)
    res.counts["valid_events"], res.archive, res.lrclib_dump, res.landing_dir

Plain Python (numpy + pyarrow), no Airflow imports. Same preset + seed => byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from musicrec.sample import landing as _landing
from musicrec.sample import lastfm as _lastfm
from musicrec.sample import lrclib_dump as _lrclib
from musicrec.sample.presets import PRESETS, Preset, resolve
from musicrec.sample.taste import build_catalog, build_users, user_taste

__all__ = ["PRESETS", "Preset", "SampleResult", "generate", "simulate", "ARCHIVE", "DUMP", "MANIFEST", "TRUTH", "LANDING"]

log = logging.getLogger(__name__)

ARCHIVE = _lastfm.ARCHIVE
DUMP = _lrclib.DUMP
LANDING = _landing.LANDING
MANIFEST = "sample.json"
TRUTH = "truth.json"
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SampleResult:
    out_dir: Path
    archive: Path  # lastfm-dataset-1K.tar.gz
    lrclib_dump: Path | None  # lrclib-dump.sqlite3 (None when not generated)
    landing_dir: Path | None  # landing/ holding date=YYYY-MM-DD/events-0001.jsonl.gz
    manifest: Path  # sample.json
    truth: Path | None  # truth.json (tiny/small presets)
    counts: dict[str, Any]  # the parsed sample.json


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _day(ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).date().isoformat()


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def generate(
    preset: str = "small",
    out_dir: Path | str = Path("data/sample"),
    seed: int = 42,
    with_lrclib: bool | None = None,
    with_landing: bool | None = None,
    n_events: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> SampleResult:
    """Generate a sample into ``out_dir`` (created; files this generator owns are replaced).

    ``preset``: a key of :data:`PRESETS`, or ``"custom"`` (the lastfm1k shape, needs ``n_events``).
    ``n_events``: event lines of the TSV (bad lines and duplicates included); overrides the
    preset's count and scales its catalog and planted counts with it.
    ``with_lrclib``/``with_landing``: ``None`` = the preset's default (on for tiny/small).
    """
    p = resolve(preset, n_events)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with_lrclib = p.with_lrclib if with_lrclib is None else with_lrclib
    with_landing = p.with_landing if with_landing is None else with_landing
    # A half-replaced directory must never look complete: delete the manifest now, write it last.
    for name in (MANIFEST, TRUTH, DUMP):
        (out / name).unlink(missing_ok=True)
    if (out / LANDING).is_dir():
        shutil.rmtree(out / LANDING)
    say = progress or (lambda _m: None)

    started = time.monotonic()
    cat = build_catalog(p, seed)
    users = build_users(p, cat, seed, p.events - p.duplicates)
    log.info("sample %s: catalog of %d tracks / %d artists, %d users (%.1f s)", p.name, cat.n_tracks,
             len(cat.artist_names), users.n, time.monotonic() - started)
    say(f"catalog: {cat.n_tracks:,} tracks, {len(cat.artist_names):,} artists, {users.n:,} users")

    stats, event_log, archive_bytes, archive_sha = _lastfm.write_archive(out / ARCHIVE, p, cat, users, seed,
                                                                         progress)
    played = np.flatnonzero(event_log.played)  # tracks of valid lines
    del event_log
    log.info("sample %s: archive written (%.1f s)", p.name, time.monotonic() - started)
    files: dict[str, dict[str, Any]] = {ARCHIVE: {"bytes": archive_bytes, "sha256": archive_sha,
                                                  "uncompressed_events_bytes": stats.bytes}}

    landing_counts: dict[str, Any] | None = None
    landing_played: set[int] = set()
    tastes: dict[int, Any] = {}
    if with_landing:
        lres = _landing.write_landing(out / LANDING, p, cat, users, seed, tastes)
        landing_counts = {"dates": lres.dates, "events": lres.events, "per_date": lres.per_date}
        landing_played = lres.played
        for d in lres.dates:
            rel = f"{LANDING}/date={d}/{_landing.FILE_NAME}"
            files[rel] = {"bytes": (out / rel).stat().st_size, "sha256": _sha256(out / rel)}

    lrclib_counts: dict[str, Any] | None = None
    lyrics_truth: dict[str, Any] | None = None
    if with_lrclib:
        # Every track a user can meet (archive + landing) gets an LRCLIB decision.
        sample_tracks = np.union1d(played, np.array(sorted(landing_played), dtype=np.int64))
        res = _lrclib.write_dump(out / DUMP, cat, sample_tracks, seed)
        lrclib_counts, lyrics_truth = res.counts, res.truth
        files[DUMP] = {"bytes": (out / DUMP).stat().st_size, "sha256": _sha256(out / DUMP)}
        log.info("sample %s: LRCLIB dump written (%.1f s)", p.name, time.monotonic() - started)

    counts: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "preset": p.name,
        "seed": seed,
        "sizes": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in asdict(p).items()},
        "lines_total": stats.lines,
        "valid_events": stats.valid,
        "duplicates": stats.duplicates,
        "malformed": dict(stats.malformed),
        "malformed_total": sum(stats.malformed.values()),
        "users": stats.users,
        "profiles": users.n,
        "tracks": len(played),
        "artists": len(np.unique(cat.track_artist[played])),
        "clusters": cat.k,
        "first_date": _day(stats.ts_min),
        "last_date": _day(stats.ts_max),
        "lrclib": lrclib_counts,
        "landing": landing_counts,
        "files": files,
    }
    truth_path: Path | None = None
    if p.truth:
        truth_path = out / TRUTH
        tracks = sorted(set(played.tolist()) | landing_played)
        _write_json(truth_path, {
            "preset": p.name,
            "seed": seed,
            "clusters": cat.k,
            "users": {users.user_id(u): {"primary": int(users.primary[u]),
                                         "secondary": None if users.secondary[u] < 0 else int(users.secondary[u])}
                      for u in range(users.n)},
            "tracks": {cat.track_id(t): int(cat.track_cluster[t]) for t in tracks},
            "favourites": {users.user_id(u): [cat.track_id(t) for t in
                                              (tastes.get(u) or user_taste(cat, users, u, seed)).favourites.tolist()]
                           for u in range(users.n)},
            "lyrics": lyrics_truth,
        })
    _write_json(out / MANIFEST, counts)
    log.info("sample %s: done in %.1f s -> %s", p.name, time.monotonic() - started, out)
    return SampleResult(
        out_dir=out,
        archive=out / ARCHIVE,
        lrclib_dump=out / DUMP if with_lrclib else None,
        landing_dir=out / LANDING if with_landing else None,
        manifest=out / MANIFEST,
        truth=truth_path,
        counts=counts,
    )


def simulate(
    days: int,
    out_dir: Path | str,
    preset: str = "small",
    seed: int = 42,
    *,
    skip_days: int | None = None,
    events_per_day: int | None = None,
    files_per_day: int = 1,
    n_events: int | None = None,
) -> _landing.LandingResult:
    """Simulated app traffic: ``days`` more days of landing files into ``out_dir`` (a ``landing/`` root).

    Same users, catalog and taste model as ``generate(preset, seed)``; the days continue after the
    preset's own landing days (``skip_days``, default the preset's ``landing_days``), so the result
    extends a generated sample without rewriting it. Deterministic in (preset, seed, day index).
    """
    if days < 1:
        raise ValueError("days must be >= 1")
    p = resolve(preset, n_events)
    skip = p.landing_days if skip_days is None else skip_days
    from dataclasses import replace

    p = replace(p, landing_days=skip + days)
    cat = build_catalog(p, seed)
    users = build_users(p, cat, seed, p.events - p.duplicates)
    result = _landing.write_landing(Path(out_dir), p, cat, users, seed, skip_days=skip,
                                    events_per_day=events_per_day, files_per_day=files_per_day)
    log.info("simulate: %d events on %d days (%s .. %s) -> %s", result.events, len(result.dates),
             result.dates[0], result.dates[-1], out_dir)
    return result
