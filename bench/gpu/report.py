"""GPU bench report (issue 19): merge als.json + embed.json into gpu.json, write gpu.txt, print it.

Exit status 1 when a section is missing or failed, or a correctness check (ALS loss within 5 % of the
CPU's, the embed path's outputs) failed or, on the GPU, could not run (e.g. implicit's CUDA module did
not load); a missed speed target is reported (BELOW TARGET), not fatal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402

SECTIONS = ("als", "embed")


def load(out: Path, name: str) -> dict:
    path = out / f"{name}.json"
    if not path.exists():
        return {"section": name, "status": "missing", "error": f"{path.name} was not written (crash or timeout: see {name}.log)"}
    data = json.loads(path.read_text())
    if data.get("status") == "running":
        data["status"] = "incomplete"
        data.setdefault("error", f"the {name} section stopped before the end (timeout or crash: see {name}.log)")
    return data


def fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def table(merged: dict) -> list[str]:
    lines: list[str] = []
    als, emb = merged["als"], merged["embed"]
    m = als.get("machine") or emb.get("machine") or {}
    lines.append(f"GPU bench — machine: {machine_line(m) if m else 'unknown'}")
    lines.append("")
    if "matrix" in als:
        mx, p = als["matrix"], als["params"]
        lines.append(f"ALS ({p['scale']}: {mx['users']:,} users x {mx['items']:,} items, nnz {mx['nnz']:,}; factors "
                     f"{p['factors']}, {p['iterations']} iterations, {p['cg_steps']} CG steps; s/iteration = median "
                     "without the first)")
        lines.append(f"  {'run':18s} {'ran as':28s} {'s/iteration':>12s} {'vs CPU':>8s} {'loss/cell':>13s} {'loss diff':>10s}")
        runs = als.get("runs", {})
        order = ["cpu", "raw-implicit-gpu", "implicit-gpu", "torch-cuda"]
        for name, r in sorted(runs.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
            if "skipped" in r:
                lines.append(f"  {name:18s} {'SKIPPED':28s} {r['skipped']}")
            elif "error" in r:
                lines.append(f"  {name:18s} {r.get('ran', ''):28s} FAILED {r['error']}")
            else:
                ran = r["ran"] + (" (stand-in)" if r.get("stand_in") else "")
                sp = f"{r['speedup_vs_cpu']:.1f}x" if "speedup_vs_cpu" in r else "1.0x" if name == "cpu" else "-"
                diff = f"{r['loss_rel_diff']:.2%}" if "loss_rel_diff" in r else "-"
                lines.append(f"  {name:18s} {ran:28s} {fmt(r['s_per_iteration'], '.4f'):>12s} {sp:>8s} "
                             f"{r['loss']:13.8g} {diff:>10s}")
    else:
        lines.append(f"ALS: {als.get('status')} {als.get('error', '')}")
    lines.append("")
    if emb.get("rows"):
        p = emb["params"]
        c = p["config"]
        lines.append(f"BGE-M3 encoder ({c['num_hidden_layers']} layers, hidden {c['hidden_size']}, vocab "
                     f"{c['vocab_size']:,}, random weights, {p['dtype']} on {p['device']}; docs/s, best of {p['repeat']})")
        lines.append(f"  {'tokens':>6s} {'batch':>5s} {'docs':>5s} {'embed docs/s':>13s} {'raw docs/s':>11s} "
                     f"{'ratio':>6s} {'peak GiB':>9s} {'tokenize s':>10s}")
        for r in emb["rows"]:
            e, w = r.get("embed", {}), r.get("raw", {})
            peak = max([x for x in (e.get("peak_gib"), w.get("peak_gib")) if x is not None], default=None)
            lines.append(f"  {r['length']:6d} {r['batch']:5d} {r['docs']:5d} {fmt(e.get('docs_per_s'), ',.0f'):>13s} "
                         f"{fmt(w.get('docs_per_s'), ',.0f'):>11s} {fmt(r.get('ratio')):>6s} {fmt(peak, '.1f'):>9s} "
                         f"{fmt(r.get('tokenize_seconds'), '.2f'):>10s}"
                         + (f"  FAILED {r['error']}" if "error" in r else ""))
        if emb.get("embed_error"):
            lines.append(f"  the project's embed path did not load: {emb['embed_error']}")
    else:
        lines.append(f"BGE-M3: {emb.get('status')} {emb.get('error', emb.get('embed_error', ''))}")
    lines.append("")
    for c in merged["checks"]:
        word = {True: "ok", False: "FAIL" if c.get("kind") == "correctness" else "BELOW TARGET", None: "NOT RUN"}[c["ok"]]
        lines.append(f"{word:12s} {c['check']}: {c['detail']}")
    if merged["smoke"]:
        lines.append("(cpu-smoke: tiny sizes on the CPU, stand-ins for the GPU runs — a code-path check, not figures)")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    merged = {name: load(args.out, name) for name in SECTIONS}
    merged["smoke"] = any(merged[s].get("smoke") for s in SECTIONS)
    merged["checks"] = [c | {"section": s} for s in SECTIONS for c in merged[s].get("checks", [])]
    failed = [s for s in SECTIONS if merged[s].get("status") not in ("done", "partial")]
    failed += [c["check"] for c in merged["checks"] if c["ok"] is False and c.get("kind") == "correctness"]
    if not merged["smoke"]:  # on a GPU machine a check that could not run is a failed check
        failed += [f"{c['check']} (not run)" for c in merged["checks"] if c["ok"] is None]
    merged["failed"] = failed
    text = "\n".join(table(merged)) + "\n"
    if failed:
        text += f"FAIL: {'; '.join(failed)}\n"
    (args.out / "gpu.json").write_text(json.dumps(merged, indent=2, default=str) + "\n")
    (args.out / "gpu.txt").write_text(text)
    print(text, end="")
    print(f"figures written to {args.out}/gpu.json and {args.out}/gpu.txt")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
