"""Bucketed comparison of ``(id, fingerprint)`` streams in bounded memory (issue 6).

No store is ever loaded whole. Each side (what a source of truth expects, what a store holds) is
consumed **once**, as a stream:

* every id goes to bucket ``xxh3_64(id) >> (64 - bits)`` (a hash prefix: the same id lands in the same
  bucket on every side); per bucket the side keeps ``count`` and ``checksum = Σ xxh3_64(fingerprint,
  seed=xxh3_64(id)) mod 2^64`` — a sum, so it is independent of the order the store returns rows in,
  and (unlike XOR) a pair seen twice does not cancel out;
* every pair is also **spilled** to one of ``partitions`` temp files (contiguous bucket ranges) as a
  text line ``<bucket hex>\0<id>\0<fingerprint>\n`` (a value holding ``\0`` or a newline is written
  escaped); memory holds at most ``flush_rows`` pending lines plus the two summary arrays.

Then only the buckets whose ``(count, checksum)`` differ are compared id by id: for each spill
partition holding such buckets, the rows of *those* buckets (and no others: a line whose bucket
prefix is not wanted is skipped without being parsed) are read back from both sides into dicts and
diffed. Memory is bounded by the differing buckets of one partition, never by the
store; a clean audit reads no spill back at all. One pass over each store was chosen over a two-pass
design (summaries first, then a filtered re-scan of the differing buckets) because the embedded
vector stores enumerate slowly (Qdrant local mode, Milvus Lite: see bench/audit.py) and a re-scan
would double that; the price is writing each pair once to local disk (~60 bytes a pair).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash

from musicrec import scratch as scratch_dirs

DEFAULT_BITS = 16  # 65,536 buckets: ~15 ids a bucket at 1M ids, ~1,500 at 100M
DEFAULT_PARTITIONS = 64
FLUSH_ROWS = 50_000
MASK = (1 << 64) - 1

_h64 = xxhash.xxh3_64_intdigest


@dataclass(frozen=True)
class Difference:
    """One id whose presence or fingerprint differs between the expected and the actual side."""

    id: str
    expected: str | None  # None: the id should not be there (orphan)
    actual: str | None  # None: the id is not there (missing)
    duplicate: bool = False  # the store holds the id more than once (Milvus: an insert of an existing pk)


class Side:
    """One stream's bucket summaries and its spill (a context manager: the spill is deleted on exit)."""

    def __init__(self, name: str, *, bits: int = DEFAULT_BITS, partitions: int = DEFAULT_PARTITIONS,
                 spill_dir: str | os.PathLike[str] | None = None, flush_rows: int = FLUSH_ROWS) -> None:
        if not 1 <= partitions <= (1 << bits) or partitions & (partitions - 1):
            raise ValueError(f"partitions must be a power of two <= 2^bits, got {partitions}")
        self.name = name
        self.bits = bits
        self.partitions = partitions
        self.counts = [0] * (1 << bits)
        self.sums = [0] * (1 << bits)
        self.rows = 0
        self._shift = 64 - bits
        self._pshift = bits - partitions.bit_length() + 1
        self._flush_rows = flush_rows
        self._dir = scratch_dirs.make("audit-spill-", Path(spill_dir or tempfile.gettempdir()))  # sweeps killed runs' spills
        self._width = (bits + 3) // 4
        self._buffers: list[list[str]] = [[] for _ in range(partitions)]
        self._pending = 0
        self._files = [self._dir / f"{p:04d}.txt" for p in range(partitions)]

    # ------------------------------------------------------------------ writing
    def feed(self, pairs: Iterable[tuple[str, str]]) -> Side:
        """Consume ``(id, fingerprint)`` pairs; may be called several times (the stream in parts)."""
        counts, sums, buffers = self.counts, self.sums, self._buffers
        shift, pshift, h64, width = self._shift, self._pshift, _h64, self._width
        pending = self._pending
        n = 0
        for key, fp in pairs:
            hid = h64(key.encode())
            b = hid >> shift
            counts[b] += 1
            sums[b] = (sums[b] + h64(fp.encode(), hid)) & MASK
            if not (key.isprintable() and fp.isprintable()):  # \n, \0, other controls: escaped
                key, fp = _escape(key), _escape(fp)
            buffers[b >> pshift].append(f"{b:0{width}x}\0{key}\0{fp}\n")
            pending += 1
            n += 1
            if pending >= self._flush_rows:
                self._flush()
                pending = 0
        self._pending = pending
        self.rows += n
        return self

    def _flush(self) -> None:
        for p, buf in enumerate(self._buffers):
            if buf:
                with open(self._files[p], "a", encoding="utf-8", newline="\n") as fh:
                    fh.write("".join(buf))
                self._buffers[p] = []
        self._pending = 0

    def finish(self) -> Side:
        self._flush()
        return self

    # ------------------------------------------------------------------ reading
    def partition_of(self, bucket: int) -> int:
        return bucket >> self._pshift

    def load(self, partition: int, buckets: set[int]) -> tuple[dict[str, str], set[str]]:
        """id -> fingerprint of the spilled rows of ``buckets`` (all in ``partition``), and the ids seen
        more than once."""
        out: dict[str, str] = {}
        dups: set[str] = set()
        path = self._files[partition]
        if not path.exists():
            return out, dups
        width = self._width
        wanted = {f"{b:0{width}x}" for b in buckets}
        with open(path, encoding="utf-8", newline="\n") as fh:
            for line in fh:
                if line[:width] in wanted:
                    _, key, fp = line[:-1].split("\0")
                    if key.startswith(_ESC) or fp.startswith(_ESC):
                        key, fp = _unescape(key), _unescape(fp)
                    if key in out:
                        dups.add(key)
                    out[key] = fp
        return out, dups

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Side:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ESC = "\x01esc:"


def _escape(value: str) -> str:
    return _ESC + value.encode("unicode_escape").decode("ascii")


def _unescape(value: str) -> str:
    return value[len(_ESC):].encode("ascii").decode("unicode_escape") if value.startswith(_ESC) else value


def differing_buckets(expected: Side, actual: Side) -> list[int]:
    if expected.bits != actual.bits or expected.partitions != actual.partitions:
        raise ValueError("both sides must use the same bits and partitions")
    ec, es, ac, as_ = expected.counts, expected.sums, actual.counts, actual.sums
    return [b for b in range(len(ec)) if ec[b] != ac[b] or es[b] != as_[b]]


def diff(expected: Side, actual: Side) -> Iterator[Difference]:
    """The ids whose presence or fingerprint differ, bucket by differing bucket (both sides finished)."""
    expected.finish()
    actual.finish()
    by_partition: dict[int, set[int]] = {}
    for b in differing_buckets(expected, actual):
        by_partition.setdefault(expected.partition_of(b), set()).add(b)
    for partition in sorted(by_partition):
        buckets = by_partition[partition]
        want, _ = expected.load(partition, buckets)
        have, dups = actual.load(partition, buckets)
        for key in sorted(want.keys() | have.keys()):
            e, a = want.get(key), have.get(key)
            if e != a or key in dups:
                yield Difference(key, e, a, key in dups)


def naive_diff(expected: Iterable[tuple[str, str]], actual: Iterable[tuple[str, str]]) -> Iterator[Difference]:
    """The baseline the benchmark measures against: both sides loaded whole into dicts."""
    want = dict(expected)
    have = dict(actual)
    for key in sorted(want.keys() | have.keys()):
        e, a = want.get(key), have.get(key)
        if e != a:
            yield Difference(key, e, a)
