"""Start/stop the embedded engines in the background, with pid files and readiness waits.

- MongoDB API: SecantusDB (``secantusd-py``) on 127.0.0.1:27117, data in ``data/mongo``
- Milvus: ``milvus-lite server`` on 127.0.0.1:19530, data in ``data/milvus``
Qdrant runs in-process (local mode) and needs no server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from musicrec.stores import DEFAULT_DB, StoreSettings, VectorStoreSettings, mongo_client, vector_store

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    pass


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    argv: list[str]
    ready: Callable[[int], bool]


def repo_root() -> Path:
    return Path(os.environ.get("MUSICREC_HOME") or Path(__file__).resolve().parents[3])


def data_dir() -> Path:
    return repo_root() / "data"


def mongo_port() -> int:
    return int(os.environ.get("MUSICREC_MONGO_PORT", "27117"))


def milvus_port() -> int:
    return int(os.environ.get("MUSICREC_MILVUS_PORT", "19530"))


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return os.fspath(here) if here.exists() else (shutil.which(name) or name)


def store_settings(data: Path | None = None, kinds: tuple[str, ...] = ("milvus", "qdrant")) -> StoreSettings:
    """The embedded default's stores as the factory's plain settings (``musicrec.stores``): what the env
    file hands Airflow as connections, and what the local tooling opens directly. ``kinds``: the vector
    stores wanted, in order (the summary reads Milvus only: Qdrant's local folder may be held by Airflow)."""
    data = data or data_dir()
    known = {"milvus": VectorStoreSettings("milvus", uri=f"http://127.0.0.1:{milvus_port()}"),
             "qdrant": VectorStoreSettings("qdrant", path=os.fspath(data / "qdrant"))}
    return StoreSettings(mongo_uri=f"mongodb://127.0.0.1:{mongo_port()}/", mongo_db=DEFAULT_DB,
                         lake_root=os.fspath(data / "lake"), vectors=tuple(known[k] for k in kinds))


def mongo_ready(port: int) -> bool:
    try:
        with mongo_client(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=500) as client:
            client.admin.command("ping")
        return True
    except Exception:
        return False


def milvus_ready(port: int) -> bool:
    if not port_in_use(port):
        return False
    try:
        # dedicated: later clients must not inherit a pooled handler with this 2 s timeout
        client = vector_store(VectorStoreSettings("milvus", uri=f"http://127.0.0.1:{port}",
                                                  options={"timeout": 2, "dedicated": True})).client
        client.list_collections()
        client.close()
        return True
    except Exception:
        return False


def services(data: Path | None = None) -> list[Service]:
    data = data or data_dir()
    return [
        Service("mongo", mongo_port(), [_bin("secantusd-py"), "--host", "127.0.0.1", "--port", str(mongo_port()),
                                        "--storage-path", os.fspath(data / "mongo"), "--log-level", "WARNING"],
                mongo_ready),
        Service("milvus", milvus_port(), [_bin("milvus-lite"), "server", "--data-dir", os.fspath(data / "milvus"),
                                          "--host", "127.0.0.1", "--port", str(milvus_port())], milvus_ready),
    ]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def start(service: Service, data: Path | None = None, timeout_s: float = 60.0,
          env: dict[str, str] | None = None) -> int:
    """Start ``service`` unless our pid file says it runs; returns its pid."""
    data = data or data_dir()
    run_dir, log_dir = data / "run", data / "logs"
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    pid_file = run_dir / f"{service.name}.pid"
    pid = _read_pid(pid_file)
    if pid is not None:
        if service.ready(service.port):
            print(f"{service.name}: already running (pid {pid}, 127.0.0.1:{service.port})")
            return pid
        raise ServiceError(f"{service.name}: pid {pid} is alive but not answering on port {service.port}; "
                           "run `make stop` and try again")
    if port_in_use(service.port):
        raise ServiceError(f"{service.name}: port 127.0.0.1:{service.port} is taken by another process; stop it "
                           f"or set MUSICREC_{service.name.upper()}_PORT to a free port")
    logfile = open(log_dir / f"{service.name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(service.argv, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=data, env=env)
    pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{service.name} exited with {proc.returncode}; see {log_dir / service.name}.log")
        if service.ready(service.port):
            print(f"{service.name}: started (pid {proc.pid}, 127.0.0.1:{service.port})")
            return proc.pid
        time.sleep(0.3)
    stop_pid(proc.pid)
    raise ServiceError(f"{service.name} did not become ready in {timeout_s:.0f} s; see its log in {log_dir}")


def stop_pid(pid: int, timeout_s: float = 15.0) -> None:
    """SIGTERM the process, its process group and every descendant, then SIGKILL what is left.

    Descendants are collected first: ``airflow standalone`` starts its components in sessions
    of their own, so the process group alone would leave them running.
    """
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)


def stop_all(data: Path | None = None) -> list[str]:
    data = data or data_dir()
    stopped = []
    run_dir = data / "run"
    if not run_dir.exists():
        return stopped
    for pid_file in sorted(run_dir.glob("*.pid")):
        pid = _read_pid(pid_file)
        if pid is not None:
            stop_pid(pid)
            stopped.append(f"{pid_file.stem} (pid {pid})")
        pid_file.unlink(missing_ok=True)
    return stopped


def start_all(data: Path | None = None) -> None:
    for service in services(data):
        start(service, data)
