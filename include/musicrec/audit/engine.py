"""Bucketed comparison of ``(id, fingerprint)`` streams in bounded memory (issue 6).

No store is ever loaded whole. Each side (what a source of truth expects, what a store holds) is
consumed **once**, as a stream:

* every id goes to bucket ``xxh3_64(id) >> (64 - bits)`` (a hash prefix: the same id lands in the same
  bucket on every side); per bucket the side keeps ``count`` and ``checksum = Σ xxh3_64(fingerprint,
  seed=xxh3_64(id)) mod 2^64`` — a sum, so it is independent of the order the store returns rows in,
  and (unlike XOR) a pair seen twice does not cancel out;
* every pair is also **spilled** to one of ``partitions`` temp files (contiguous bucket ranges), in
  ``marshal``-ed batches; memory holds at most ``flush_rows`` pending pairs plus the two summary arrays.

Then only the buckets whose ``(count, checksum)`` differ are compared id by id: for each spill
partition holding such buckets, the rows of *those* buckets (and no others) are read back from both
sides into dicts and diffed. Memory is bounded by the differing buckets of one partition, never by the
store; a clean audit reads no spill back at all. One pass over each store was chosen over a two-pass
design (summaries first, then a filtered re-scan of the differing buckets) because the embedded
vector stores enumerate slowly (Qdrant local mode, Milvus Lite: see bench/audit.py) and a re-scan
would double that; the price is writing each pair once to local disk (~60 bytes a pair).
"""

from __future__ import annotations

import marshal
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash

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
        self._dir = Path(tempfile.mkdtemp(prefix="audit-spill-", dir=spill_dir))
        self._buffers: list[list[tuple[int, str, str]]] = [[] for _ in range(partitions)]
        self._pending = 0
        self._files = [self._dir / f"{p:04d}.bin" for p in range(partitions)]

    # ------------------------------------------------------------------ writing
    def feed(self, pairs: Iterable[tuple[str, str]]) -> Side:
        """Consume ``(id, fingerprint)`` pairs; may be called several times (the stream in parts)."""
        counts, sums, buffers = self.counts, self.sums, self._buffers
        shift, pshift, h64 = self._shift, self._pshift, _h64
        pending = self._pending
        n = 0
        for key, fp in pairs:
            hid = h64(key.encode())
            b = hid >> shift
            counts[b] += 1
            sums[b] = (sums[b] + h64(fp.encode(), hid)) & MASK
            buffers[b >> pshift].append((b, key, fp))
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
                with open(self._files[p], "ab") as fh:
                    marshal.dump(buf, fh)
                self._buffers[p] = []
        self._pending = 0

    def finish(self) -> Side:
        self._flush()
        return self

    # ------------------------------------------------------------------ reading
    def partition_of(self, bucket: int) -> int:
        return bucket >> self._pshift

    def load(self, partition: int, buckets: set[int]) -> dict[str, str]:
        """id -> fingerprint of the spilled rows of ``buckets`` (all in ``partition``)."""
        out: dict[str, str] = {}
        path = self._files[partition]
        if not path.exists():
            return out
        with open(path, "rb") as fh:
            while True:
                try:
                    batch = marshal.load(fh)
                except EOFError:
                    break
                for b, key, fp in batch:
                    if b in buckets:
                        out[key] = fp
        return out

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Side:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        want = expected.load(partition, buckets)
        have = actual.load(partition, buckets)
        for key in sorted(want.keys() | have.keys()):
            e, a = want.get(key), have.get(key)
            if e != a:
                yield Difference(key, e, a)


def naive_diff(expected: Iterable[tuple[str, str]], actual: Iterable[tuple[str, str]]) -> Iterator[Difference]:
    """The baseline the benchmark measures against: both sides loaded whole into dicts."""
    want = dict(expected)
    have = dict(actual)
    for key in sorted(want.keys() | have.keys()):
        e, a = want.get(key), have.get(key)
        if e != a:
            yield Difference(key, e, a)
