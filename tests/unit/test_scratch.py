"""Scratch folders of killed runs are swept at the next start of the same step; a live owner's are not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from musicrec import scratch
from tests.conftest import REPO

OWN = """
import os, signal, sys
from pathlib import Path
from musicrec import scratch
folder = scratch.make(sys.argv[1], Path(sys.argv[2]))
(folder / "part-00000.parquet").write_bytes(b"x" * 1000)
print(folder, flush=True)
if sys.argv[3] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()  # a live owner: runs until its stdin closes
"""


def _owner(prefix: str, base: Path, mode: str) -> tuple[subprocess.Popen, Path]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(REPO) / "include"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", OWN, prefix, str(base), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    folder = Path(proc.stdout.readline().strip())
    assert folder.is_dir()
    if mode == "kill":
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
    return proc, folder


def test_sweep_removes_dead_owners_folders_and_keeps_live_ones(tmp_path):
    _, dead = _owner("clean-", tmp_path, "kill")
    live_proc, live = _owner("clean-", tmp_path, "live")
    try:
        legacy_old = tmp_path / "clean-tiny-old"  # older code's folder: no owner file
        legacy_old.mkdir()
        two_days = time.time() - 2 * 86400
        os.utime(legacy_old, (two_days, two_days))
        legacy_new = tmp_path / "clean-tiny-new"
        legacy_new.mkdir()
        other_step = tmp_path / "partition-x"
        other_step.mkdir()
        os.utime(other_step, (two_days, two_days))
        mine = scratch.make("clean-", tmp_path)
        assert not dead.exists() and not legacy_old.exists()
        assert live.is_dir() and legacy_new.is_dir() and other_step.is_dir() and mine.is_dir()
        assert f"p{os.getpid()}-" in mine.name
    finally:
        live_proc.communicate(timeout=60)
    scratch.sweep("clean-", tmp_path)  # the live owner has ended now
    assert not live.exists() and mine.exists()


def test_a_reused_pid_is_not_taken_for_the_owner(tmp_path):
    folder = scratch.make("partition-", tmp_path)
    owner = (folder / scratch.OWNER_FILE).read_text()
    (folder / scratch.OWNER_FILE).write_text(owner.replace('"start": ', '"start": 1'))  # another start time
    scratch.sweep("partition-", tmp_path)
    assert not folder.exists()


@pytest.mark.integration
def test_the_next_clean_sweeps_the_folder_a_sigkilled_clean_left(tiny_sample, tmp_path, monkeypatch):
    from upath import UPath

    from musicrec.lake import download, importer

    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setenv("MUSICREC_STAGING_DIR", str(staging))
    _, dead = _owner("clean-", staging, "kill")
    live_proc, live = _owner("clean-", staging, "live")
    try:
        root = UPath(tmp_path / "lake")
        download.download(tiny_sample.archive.as_uri(), root / "raw" / "tiny", open_source=UPath)
        importer.clean_raw(root, "tiny")
        assert not dead.exists()
        assert live.is_dir()
        assert sorted(p.name for p in staging.glob("clean-*")) == [live.name]  # its own was removed too
    finally:
        live_proc.communicate(timeout=60)
