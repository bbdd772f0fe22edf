"""Sample sizes: the named presets and their scaling to an explicit event count."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date


@dataclass(frozen=True)
class Preset:
    """Sizes of one sample. ``events`` counts event LINES of the TSV (malformed and duplicates included)."""

    name: str
    users: int
    tracks: int  # catalog size; the distinct tracks actually played are fewer (Zipf tail)
    artists: int
    events: int
    start: date  # first UTC date of the listening log
    end: date  # last UTC date of the listening log
    clusters: int  # taste clusters ("genres")
    malformed_each: int  # planted lines per quarantine reason
    duplicates: int  # planted exact duplicate lines
    landing_days: int  # days of app events after ``end``
    with_lrclib: bool  # default of generate(with_lrclib=None)
    with_landing: bool  # default of generate(with_landing=None)
    compresslevel: int  # gzip level of the archive (speed matters for the big one)
    truth: bool  # write truth.json (per-user/per-track answers; too big for lastfm1k)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def with_events(self, n_events: int) -> Preset:
        """The same shape scaled to ``n_events`` lines: catalog and planted counts scale with it."""
        if n_events < 100:
            raise ValueError(f"n_events must be >= 100, got {n_events}")
        f = n_events / self.events
        malformed = max(2, round(self.malformed_each * f))
        duplicates = max(2, round(self.duplicates * f))
        return replace(
            self,
            events=int(n_events),
            users=max(1, min(self.users, n_events // 30)),
            tracks=max(200, round(self.tracks * f)),
            artists=max(40, round(self.artists * f)),
            malformed_each=malformed,
            duplicates=duplicates,
            truth=self.truth or n_events <= 2_000_000,
        )


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny", users=20, tracks=300, artists=60, events=3_000,
        start=date(2009, 4, 5), end=date(2009, 5, 4), clusters=8,
        malformed_each=4, duplicates=5, landing_days=3,
        with_lrclib=True, with_landing=True, compresslevel=6, truth=True,
    ),
    "small": Preset(
        name="small", users=200, tracks=3_000, artists=500, events=150_000,
        start=date(2009, 1, 5), end=date(2009, 5, 4), clusters=16,
        malformed_each=50, duplicates=60, landing_days=5,
        with_lrclib=True, with_landing=True, compresslevel=6, truth=True,
    ),
    # Shaped like the real Last.fm-1K dump (reference.md): 992 users, 19,150,868 lines.
    "lastfm1k": Preset(
        name="lastfm1k", users=992, tracks=1_150_000, artists=175_000, events=19_150_868,
        start=date(2005, 2, 14), end=date(2009, 5, 4), clusters=30,
        malformed_each=300, duplicates=500, landing_days=5,
        with_lrclib=False, with_landing=False, compresslevel=1, truth=False,
    ),
}

# ``generate(preset="custom", n_events=N)``: the lastfm1k shape scaled to N lines.
CUSTOM_BASE = "lastfm1k"


def resolve(preset: str, n_events: int | None = None) -> Preset:
    if preset == "custom":
        if not n_events:
            raise ValueError("preset 'custom' needs n_events")
        return replace(PRESETS[CUSTOM_BASE].with_events(n_events), name="custom")
    try:
        base = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)} or 'custom'") from None
    if n_events is None or n_events == base.events:
        return base
    return base.with_events(n_events)
