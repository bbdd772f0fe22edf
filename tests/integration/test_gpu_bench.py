"""The GPU bench's CPU dry run (issue 19): ``bash bench/gpu/run.sh --cpu-smoke DIR`` must keep working
between lent GPU machines.

Two runs of the same script: in this venv as it is, and with only the distributions the GPU machine
has (bench/gpu/machine_packages.txt) plus the carried wheels (bench/gpu/wheels.txt) importable — so an
import the device machine cannot satisfy (pymongo, duckdb, pymilvus, ...) fails here, not on a lent
machine with minutes of device time.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GPU = REPO / "bench" / "gpu"
# Distributions newer huggingface_hub releases need here (2.x uses httpx2); the GPU machine's
# huggingface_hub 1.33 uses httpx, which it has. Versions differ between the machines, names are what we check.
LOCAL_ONLY = {"httpx2", "httpcore2", "truststore"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(path: Path) -> set[str]:
    out = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            out.add(_norm(re.split(r"[=<>!~ ]", line)[0]))
    return out


def _gpu_machine_site(dest: Path) -> Path:
    """A folder of links to this venv's copies of the GPU machine's packages and the carried wheels only."""
    allowed = _names(GPU / "machine_packages.txt") | _names(GPU / "wheels.txt") | {_norm(n) for n in LOCAL_ONLY}
    dest.mkdir()
    for dist in md.distributions():
        if _norm(dist.metadata["Name"]) not in allowed:
            continue
        for top in {str(f).split("/")[0] for f in dist.files or []}:
            src = Path(dist.locate_file("")) / top
            if top.endswith(".pth") or top in ("", "..") or not src.exists() or (dest / top).exists():
                continue
            (dest / top).symlink_to(src)
    return dest


def _smoke(out: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run(["bash", str(GPU / "run.sh"), "--cpu-smoke", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc, json.loads((out / "gpu.json").read_text())


def _check_report(proc: subprocess.CompletedProcess, merged: dict, out: Path) -> None:
    assert "wheel install skipped" in proc.stdout
    assert merged["smoke"] is True and merged["failed"] == []
    als, emb = merged["als"], merged["embed"]
    assert als["status"] == "done" and emb["status"] == "done"
    for section in (als, emb):  # every figure says where it was measured
        m = section["machine"]
        assert m["cpu_count"] == os.cpu_count() and m["versions"]["torch"] and "cpu-smoke" in m["mode"]
    # ALS: the CPU reference and the three GPU runs (CPU stand-ins here), each with its loss compared
    assert set(als["runs"]) == {"cpu", "raw-implicit-gpu", "implicit-gpu", "torch-cuda"}
    assert als["runs"]["torch-cuda"] == als["runs"]["torch-cuda"] | {"ran": "torch-cpu", "stand_in": True}
    for name in ("raw-implicit-gpu", "implicit-gpu", "torch-cuda"):
        run = als["runs"][name]
        assert run["s_per_iteration"] > 0 and run["speedup_vs_cpu"] > 0
        assert run["loss_rel_diff"] <= 0.05  # the same objective, reached by each solver
        assert run["loss"] < als["matrix"]["zero_factor_loss"]  # and it fitted something
    loss_checks = [c for c in als["checks"] if "loss within" in c["check"]]
    assert len(loss_checks) == 3 and all(c["ok"] is True for c in loss_checks)
    # BGE-M3: both paths at the three lengths, the ratio, and the embed path's outputs checked
    assert [r["length"] for r in emb["rows"]] == [128, 256, 512]
    for row in emb["rows"]:
        assert row["tokens_per_doc"] == row["length"]  # every text truncated to exactly the length
        assert row["embed"]["docs_per_s"] > 0 and row["raw"]["docs_per_s"] > 0
        assert row["ratio"] == pytest.approx(row["embed"]["docs_per_s"] / row["raw"]["docs_per_s"])
    assert emb["encoder"]["kind"] == "bge-m3" and emb["encoder"]["sparse"] is True
    assert any(c["ok"] is True and "unit dense" in c["check"] for c in emb["checks"])
    assert any("raw forward" in c["check"] for c in emb["checks"])
    text = (out / "gpu.txt").read_text()
    assert "s/iteration" in text and "embed docs/s" in text and "cpu-smoke" in text
    assert text.strip() in proc.stdout  # the table is what the command prints at the end


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("OUT", None)
    env["PYTHON"] = sys.executable
    return env


def test_cpu_smoke_in_the_project_venv(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc, merged = _smoke(out, _env())
    _check_report(proc, merged, out)


def test_cpu_smoke_with_only_the_gpu_machines_packages(tmp_path: Path) -> None:
    site = _gpu_machine_site(tmp_path / "site")
    assert not (site / "pymongo").exists() and not (site / "duckdb").exists()  # the simulation hides them
    wrapper = tmp_path / "python"
    # -S: no site-packages of this venv; only the linked ones (and the repo's include/, added by run.sh)
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(0o755)
    env = _env() | {"PYTHON": str(wrapper), "PYTHONPATH": str(site)}
    out = tmp_path / "out"
    proc, merged = _smoke(out, env)
    _check_report(proc, merged, out)
