"""The audit report: ``audit/<run_id>/report.json`` + ``report.html`` in the lake, a text table for logs.

``audit/`` is not a registry-managed prefix: reports are the audit's own output, never findings.
Both files are written atomically (``musicrec.lake.storage``); the HTML page is self-contained
(inline CSS and an inline SVG bar chart, no network assets).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

from musicrec.audit.core import KINDS
from musicrec.audit.lake import run_path
from musicrec.audit.run import check_mode
from musicrec.lake import storage
from musicrec.lake.storage import LakePath

STATES = ("before", "after")


def build(run_id: str, parts: list[dict[str, Any]], *, mode: str, grace_minutes: float,
          max_findings: int, started: datetime | None = None, failed_scopes: list[str] | None = None
          ) -> dict[str, Any]:
    """One document from the scopes' parts (``musicrec.audit.run.run_scope`` results, all run in
    ``mode``; the document's ``params.mode`` is the one place the mode is recorded)."""
    rows = []
    for part in parts:
        for plan in part.get("plans", []):
            for state in STATES:
                summary = plan.get(state)
                if not summary:
                    continue
                for store, kinds in summary.get("counts", {}).items():
                    for kind, n in kinds.items():
                        rows.append({"scope": plan["name"], "store": store, "kind": kind, "count": n,
                                     "state": state})
    remaining = sum(((p.get("after") or p.get("before") or {}).get("total", 0))
                    for part in parts for p in part.get("plans", []))
    found = sum((p.get("before") or {}).get("total", 0) for part in parts for p in part.get("plans", []))
    return {
        "run_id": run_id, "generated_at": datetime.now(UTC).isoformat(),
        "started_at": started.isoformat() if started else None,
        "params": {"mode": check_mode(mode), "grace_minutes": grace_minutes,
                   "max_findings": max_findings},
        "findings": found, "remaining": remaining, "clean": remaining == 0 and not failed_scopes,
        "passed": remaining <= max_findings and not failed_scopes, "failed_scopes": failed_scopes or [],
        "counts": rows,
        "scopes": parts,
        "actions": [a for part in parts for p in part.get("plans", []) for a in p.get("actions", [])],
    }


def table(report: dict[str, Any]) -> str:
    """The summary table printed in the task log and by ``make run``."""
    lines = [f"{'scope':<11}{'store':<60}{'rows':>9}  " + " ".join(f"{k[:9]:>9}" for k in KINDS)]
    for part in report["scopes"]:
        for plan in part.get("plans", []):
            if plan.get("skipped"):
                lines.append(f"{plan['name']:<11}(skipped: {plan['skipped']})")
                continue
            for state in STATES:
                summary = plan.get(state)
                if not summary:
                    continue
                truth = summary.get("expected")
                stores = [truth] if truth in summary.get("rows", {}) else []
                stores += [s for s in summary.get("rows", {}) if s != truth]
                stores += [s for s in summary.get("counts", {}) if s not in stores]
                for store in stores:
                    kinds = summary.get("counts", {}).get(store, {})
                    label = f"{store} (truth)" if store == truth else store
                    label += " (after repair)" if state == "after" else ""
                    n = summary.get("rows", {}).get(store, "")
                    lines.append(f"{plan['name']:<11}{label[:59]:<60}{n!s:>9}  "
                                 + " ".join(f"{kinds.get(k, 0):>9}" for k in KINDS))
    verdict = "clean" if report["clean"] else f"{report['remaining']} open findings"
    if report.get("failed_scopes"):
        verdict += f", scopes FAILED: {', '.join(report['failed_scopes'])}"
    lines.append(f"total: {report['findings']} findings, {verdict}; "
                 f"{sum(a['count'] for a in report['actions'])} repair actions"
                 # .get: make run prints the newest report, which may predate the mode param
                 f"{' (mode plan: nothing written)' if report['params'].get('mode') == 'plan' else ''}")
    return "\n".join(lines)


def _chart(report: dict[str, Any]) -> str:
    """Horizontal bars: findings per store (before repair), stacked by kind."""
    colors = dict(zip(KINDS, ("#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"), strict=True))
    per_store: dict[str, dict[str, int]] = {}
    for row in report["counts"]:
        if row["state"] == "before":
            per_store.setdefault(f"{row['scope']} {row['store']}", {}).setdefault(row["kind"], 0)
            per_store[f"{row['scope']} {row['store']}"][row["kind"]] += row["count"]
    if not per_store:
        return '<p class="ok">No findings: every store matches its source of truth.</p>'
    top = max(sum(v.values()) for v in per_store.values()) or 1
    bar_w, label_w, row_h = 420, 330, 24
    height = row_h * len(per_store) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{max(label_w + bar_w + 80, 125 * len(KINDS))}" height="{height}" '
             'role="img" aria-label="findings per store">']
    for n, (store, kinds) in enumerate(sorted(per_store.items())):
        y = n * row_h + 4
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{html.escape(store[:52])}</text>')
        x = label_w
        for kind in KINDS:
            if kinds.get(kind):
                w = max(2, round(bar_w * kinds[kind] / top))
                parts.append(f'<rect x="{x}" y="{y}" width="{w}" height="{row_h - 6}" fill="{colors[kind]}">'
                             f'<title>{kind}: {kinds[kind]}</title></rect>')
                x += w
        parts.append(f'<text x="{x + 4}" y="{y + 15}" font-size="12">{sum(kinds.values())}</text>')
    ly = len(per_store) * row_h + 20
    for n, kind in enumerate(KINDS):
        parts.append(f'<rect x="{n * 125}" y="{ly}" width="10" height="10" fill="{colors[kind]}"/>'
                     f'<text x="{n * 125 + 14}" y="{ly + 10}" font-size="11">{kind}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: dict[str, Any]) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(r['scope'])}</td><td>{esc(r['store'])}</td><td>{esc(r['kind'])}</td>"
        f"<td>{esc(r['state'])}</td><td class=n>{r['count']}</td></tr>" for r in report["counts"])
    examples = []
    for part in report["scopes"]:
        for plan in part.get("plans", []):
            for key, ids in (plan.get("before") or {}).get("examples", {}).items():
                examples.append(f"<tr><td>{esc(plan['name'])}</td><td>{esc(key)}</td>"
                                f"<td><code>{esc(', '.join(ids))}</code></td></tr>")
            if plan.get("skipped"):
                examples.append(f"<tr><td>{esc(plan['name'])}</td><td>skipped</td><td>{esc(plan['skipped'])}</td></tr>")
    actions = "".join(
        f"<tr><td>{esc(a['scope'])}</td><td>{esc(a['store'])}</td><td>{esc(a['action'])}</td><td class=n>{a['count']}"
        f"</td><td><code>{esc(', '.join(map(str, a['ids'][:20])))}"
        f"{' …' if len(a['ids']) > 20 else ''}</code></td></tr>" for a in report["actions"])
    timings = []
    for part in report["scopes"]:
        for plan in part.get("plans", []):
            before = plan.get("before") or {}
            for store, t in ((before.get("timings") or {}).get("stores") or {}).items():
                timings.append(f"<tr><td>{esc(plan['name'])}</td><td>{esc(store)}</td>"
                               f"<td class=n>{before.get('rows', {}).get(store, '')}</td><td class=n>{t['list_s']}</td>"
                               f"<td class=n>{t['compare_s']}</td><td class=n>{t['ids_per_s'] or ''}</td></tr>")
    status = "clean" if report["clean"] else f"{report['remaining']} open findings"
    cls = "ok" if report["passed"] else "bad"
    text_table = esc(table(report))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>musicrec store audit {esc(report['run_id'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}th{{background:#f3f3f3}}.n{{text-align:right}}
.ok{{color:#2a7d2a}}.bad{{color:#b00020}}code{{font-size:12px}}pre{{background:#f7f7f7;padding:1em;overflow:auto}}</style>
</head><body>
<h1>Store audit <code>{esc(report['run_id'])}</code></h1>
<p class="{cls}"><b>{status}</b> — {report['findings']} findings before repair; threshold max_findings =
{report['params']['max_findings']}; mode={esc(report['params']['mode'])},
grace_minutes={report['params']['grace_minutes']}; generated {esc(report['generated_at'])}.</p>
<h2>Findings per store</h2>
{_chart(report)}
<h2>Summary</h2>
<pre>{text_table}</pre>
<table><tr><th>scope</th><th>store</th><th>kind</th><th>state</th><th>count</th></tr>{rows}</table>
<h2>Example ids</h2>
<table><tr><th>scope</th><th>store | kind</th><th>ids</th></tr>{''.join(examples)}</table>
<h2>Timings (before repair)</h2>
<table><tr><th>scope</th><th>store</th><th>ids</th><th>list s</th><th>compare s</th><th>ids/s</th></tr>{''.join(timings)}</table>
<h2>Repair actions{' (planned only: mode plan wrote nothing)' if report['params']['mode'] == 'plan' else ''}</h2>
<table><tr><th>scope</th><th>store</th><th>action</th><th>count</th><th>ids</th></tr>{actions}</table>
</body></html>
"""


def write(root: LakePath, report: dict[str, Any]) -> dict[str, str]:
    """``audit/<run_id>/report.json`` and ``report.html``, each published atomically; their lake paths."""
    base = run_path(report["run_id"])
    storage.write_json_atomic(root / f"{base}/report.json", report)
    storage.write_bytes_atomic(root / f"{base}/report.html", render_html(report).encode())
    return {"json": f"{base}/report.json", "html": f"{base}/report.html"}
