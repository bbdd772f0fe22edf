"""Scratch folders under the staging dir that a killed run cannot leak for ever.

A step makes its scratch folder with :func:`make`: the name carries the step's prefix and the
owner's pid (``clean-tiny-p1234-x8k2``), and an ``.owner`` file records pid, process start time
(so a reused pid is not taken for the owner) and host. The cleanup in each step's ``finally``
does not run on SIGKILL or OOM; so every :func:`make` first sweeps the folders of the same prefix
whose owner is gone: a folder whose owner process on this host is dead (or is another process
with that pid) is removed; a folder without an owner file (older code, another host) only once
it is older than ``max_age_s`` (a day by default). A live owner's folder is never touched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from musicrec.settings import staging_dir

log = logging.getLogger(__name__)

OWNER_FILE = ".owner"
MAX_AGE_S = 24 * 3600.0


def _start_ticks(pid: int) -> int | None:
    """The process' start time in clock ticks since boot (Linux), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name before ")" may hold spaces


def _alive(pid: int, start: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    # a reused pid (a later process) has another start time
    return start is None or (now := _start_ticks(pid)) is None or now == start


def _owner_gone(folder: Path, max_age_s: float, now: float) -> bool:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        pid, start, host = int(owner["pid"]), owner.get("start"), owner.get("host")
    except (OSError, ValueError, KeyError, TypeError):
        owner = None
    if owner is not None and host == socket.gethostname():
        return not _alive(pid, start)
    try:
        age = now - folder.stat().st_mtime
    except OSError:
        return False
    return age > max_age_s


def sweep(prefix: str, base: Path | None = None, max_age_s: float = MAX_AGE_S) -> list[str]:
    """Remove the ``prefix*`` folders under ``base`` (the staging dir) whose owner is gone."""
    base = base or staging_dir()
    removed = []
    now = time.time()
    for folder in sorted(base.glob(f"{prefix}*")):
        if not folder.is_dir() or folder.is_symlink():
            continue
        if _owner_gone(folder, max_age_s, now):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    if removed:
        log.info("swept %d stale scratch folder(s) of killed runs: %s", len(removed), ", ".join(removed[:10]))
    return removed


def make(prefix: str, base: Path | None = None, max_age_s: float = MAX_AGE_S) -> Path:
    """Sweep stale ``prefix*`` folders, then make a fresh one owned by this process."""
    base = base or staging_dir()
    sweep(prefix, base, max_age_s)
    pid = os.getpid()
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}p{pid}-", dir=base))
    (folder / OWNER_FILE).write_text(json.dumps({"pid": pid, "start": _start_ticks(pid),
                                                 "host": socket.gethostname()}))
    return folder
