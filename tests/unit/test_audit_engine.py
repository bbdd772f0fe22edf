"""The bucketed comparison (musicrec.audit.engine) against the naive one, and the report's verdicts."""

from __future__ import annotations

import random

import pytest

from musicrec.audit import engine, report


def streams(n: int, drift: int, seed: int):
    rng = random.Random(seed)
    ids = [f"id{rng.getrandbits(48):x}-{i}" for i in range(n)]
    expected = [(i, f"v1:{hash(i) & 0xffff}") for i in ids]
    actual = list(expected)
    for _ in range(drift):  # delete, alter, add
        actual.pop(rng.randrange(len(actual)))
        k = rng.randrange(len(actual))
        actual[k] = (actual[k][0], "v0:altered")
        actual.append((f"orphan{rng.getrandbits(32)}", "v1:x"))
    rng.shuffle(actual)  # stores return rows in any order
    return expected, actual


@pytest.mark.parametrize(("bits", "partitions", "flush"), [(16, 64, 50_000), (8, 4, 7), (4, 16, 1)])
def test_bucketed_equals_naive(tmp_path, bits, partitions, flush):
    expected, actual = streams(5000, 40, seed=bits)
    with engine.Side("e", bits=bits, partitions=partitions, flush_rows=flush, spill_dir=tmp_path) as e, \
            engine.Side("a", bits=bits, partitions=partitions, flush_rows=flush, spill_dir=tmp_path) as a:
        e.feed(expected[:2000]).feed(expected[2000:])  # a stream fed in parts
        a.feed(actual)
        got = sorted(engine.diff(e, a), key=lambda d: d.id)
    want = sorted(engine.naive_diff(expected, actual), key=lambda d: d.id)
    assert got == want and 100 <= len(want) <= 120
    kinds = {(d.expected is None, d.actual is None) for d in got}
    assert kinds == {(True, False), (False, True), (False, False)}
    assert not list(tmp_path.iterdir())  # spills removed


def test_identical_streams_in_any_order_read_no_spill(tmp_path):
    expected, _ = streams(3000, 0, seed=1)
    shuffled = list(expected)
    random.Random(3).shuffle(shuffled)
    with engine.Side("e", spill_dir=tmp_path) as e, engine.Side("a", spill_dir=tmp_path) as a:
        e.feed(expected).finish()
        a.feed(shuffled).finish()
        assert engine.differing_buckets(e, a) == [] and list(engine.diff(e, a)) == []


def test_a_pair_seen_twice_is_not_cancelled_out(tmp_path):
    with engine.Side("e", spill_dir=tmp_path) as e, engine.Side("a", spill_dir=tmp_path) as a:
        e.feed([("x", "1")])
        a.feed([("x", "1"), ("x", "1"), ("x", "1")])
        assert engine.differing_buckets(e.finish(), a.finish())  # XOR would have hidden it


def test_report_verdicts_and_page():
    part = {"scope": "als", "plans": [{"name": "als_items", "info": {}, "before": {
        "counts": {"milvus:c": {"missing": 2}}, "total": 2, "examples": {"milvus:c|missing": ["a", "b"]},
        "rows": {"lake:x": 10, "milvus:c": 8}}}]}
    doc = report.build("r1", [part], mode="audit", grace_minutes=60, max_findings=1)
    assert doc["findings"] == doc["remaining"] == 2 and not doc["clean"] and not doc["passed"]
    assert report.build("r1", [part], mode="audit", grace_minutes=60, max_findings=2)["passed"]
    failed = report.build("r1", [], mode="audit", grace_minutes=60, max_findings=5,
                          failed_scopes=["lake"])
    assert not failed["passed"] and "FAILED: lake" in report.table(failed)
    text = report.table(doc)
    assert "milvus:c" in text and "2 open findings" in text
    page = report.render_html(doc)
    assert "<svg" in page and "<script" not in page and 'src="http' not in page
    assert doc["params"]["mode"] == "audit" and "mode=audit" in page  # the mode, recorded once


def test_report_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="unknown audit mode 'dry_run'"):
        report.build("r1", [], mode="dry_run", grace_minutes=60, max_findings=0)


def test_ids_with_control_characters_round_trip(tmp_path):
    odd = [("a\nb", "1"), ("c\x00d", "x\ny"), ("\x01esc:e", "2"), ("plain", "\x01esc:3"), ("tab\there", "é")]
    with engine.Side("e", spill_dir=tmp_path) as e, engine.Side("a", spill_dir=tmp_path) as a:
        e.feed(odd)
        a.feed([])
        assert sorted((d.id, d.expected) for d in engine.diff(e, a)) == sorted(odd)


def test_a_duplicated_id_is_found_and_rewritten(tmp_path):
    """A Milvus server keeps two rows for an insert of an existing primary key (milvus-lite does not, so
    this is tested on a stand-in store): the audit reports it, the repair rewrites it even though a
    point lookup sees one row with the right fingerprint."""
    from musicrec.audit import core

    truth = {"a": "1", "b": "2", "c": "3"}
    held = [("a", "1"), ("b", "2"), ("b", "2"), ("c", "3")]
    written: list[list[str]] = []
    plan = core.ScopePlan("t", expected_name="truth", expected=lambda: truth.items(),
                          expected_lookup=lambda ids: {i: truth[i] for i in ids if i in truth})
    plan.targets.append(core.Target("store", stream=lambda: iter(held), lookup=lambda ids: {i: truth[i] for i in ids},
                                    upsert=lambda ids: written.append(ids) or {"upsert": ids}))
    ctx = core.AuditContext(db=None, root=None, spill_dir=str(tmp_path))
    findings, _ = core.audit(plan, ctx)
    try:
        assert dict(findings.counts) == {("store", "duplicate"): 1} and findings.examples[("store", "duplicate")] == ["b"]
        actions = core.repair(plan, ctx, findings, grace_minutes=0)
    finally:
        findings.close()
    assert written == [["b"]] and [(a["action"], a["ids"]) for a in actions] == [("upsert", ["b"])]
