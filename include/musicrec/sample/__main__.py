"""CLI: ``python -m musicrec.sample generate --preset small --out data/sample [--seed 42] [--events N]
[--no-lrclib|--lrclib] [--no-landing|--landing]``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from musicrec.sample import DUMP, PRESETS, generate, simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m musicrec.sample", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write a deterministic sample into --out")
    gen.add_argument("--preset", default="small", choices=[*PRESETS, "custom"])
    gen.add_argument("--out", type=Path, default=Path("data/sample"))
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--events", type=int, default=None,
                     help="event lines of the TSV (overrides the preset; required for --preset custom)")
    gen.add_argument("--lrclib", dest="with_lrclib", action="store_true", default=None,
                     help="write the LRCLIB dump (default: on for tiny/small)")
    gen.add_argument("--no-lrclib", dest="with_lrclib", action="store_false")
    gen.add_argument("--landing", dest="with_landing", action="store_true", default=None,
                     help="write landing files (default: on for tiny/small)")
    gen.add_argument("--no-landing", dest="with_landing", action="store_false")
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress logging")
    sim = sub.add_parser("simulate", help="write --days more days of landing files (simulated app traffic)")
    sim.add_argument("--days", type=int, required=True)
    sim.add_argument("--out", type=Path, default=Path("data/lake/landing"),
                     help="the landing root (default: the embedded lake's data/lake/landing)")
    sim.add_argument("--preset", default="small", choices=[*PRESETS, "custom"])
    sim.add_argument("--seed", type=int, default=42)
    sim.add_argument("--events", type=int, default=None, help="event lines of the preset (custom)")
    sim.add_argument("--skip-days", type=int, default=None,
                     help="start after this many landing days (default: the preset's own landing days)")
    sim.add_argument("--events-per-day", type=int, default=None, help="default: the dump's average rate")
    sim.add_argument("--files-per-day", type=int, default=1)
    sim.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    started = time.monotonic()
    if args.command == "simulate":
        res = simulate(args.days, args.out, args.preset, args.seed, skip_days=args.skip_days,
                       events_per_day=args.events_per_day, files_per_day=args.files_per_day, n_events=args.events)
        print(f"simulated {res.events:,} events on {len(res.dates)} days {res.dates[0]} .. {res.dates[-1]}"
              f" -> {args.out}  [{time.monotonic() - started:.1f} s]")
        return 0
    res = generate(preset=args.preset, out_dir=args.out, seed=args.seed, with_lrclib=args.with_lrclib,
                   with_landing=args.with_landing, n_events=args.events)
    c = res.counts
    bad = ", ".join(f"{k} {v:,}" for k, v in c["malformed"].items())
    print(f"sample {c['preset']} (seed {c['seed']}) -> {res.out_dir}  [{time.monotonic() - started:.1f} s]")
    print(f"  archive   {res.archive.name}: {c['lines_total']:,} lines = {c['valid_events']:,} valid"
          f" + {c['duplicates']:,} duplicates + {c['malformed_total']:,} malformed ({bad})")
    print(f"            {c['users']:,} users, {c['tracks']:,} tracks, {c['artists']:,} artists,"
          f" {c['first_date']} .. {c['last_date']}")
    if c["lrclib"]:
        lr = c["lrclib"]
        print(f"  lrclib    {DUMP}: {lr['tracks_with_lyrics']:,}/{lr['sample_tracks']:,} tracks with an entry"
              f" ({lr['instrumental']:,} instrumental, {lr['variants']:,} spelled differently), {lr['decoys']:,} decoys")
    if c["landing"]:
        la = c["landing"]
        print(f"  landing   {la['events']:,} events on {len(la['dates'])} days {la['dates'][0]} .. {la['dates'][-1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
