"""``airflow standalone`` (the embedded default's scheduler, dag-processor, triggerer and API server)
in the background on free loopback ports, driven through its REST API, for the e2e suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from musicrec.local import keys, sqlite

REPO = Path(__file__).resolve().parents[2]
FINISHED = {"success", "failed"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _tail(path: Path, chars: int) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"<{path}: {exc}>"


@dataclass
class Standalone:
    """One ``airflow standalone`` with its own data dir (SQLite db, lake, logs, secrets)."""

    home: Path
    base_env: Mapping[str, str]
    shared_secrets: bool = True  # False reproduces issue 13: every component signs with its own JWT secret
    api_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)
    _token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.data / "logs" / "airflow.log"

    def environment(self) -> dict[str, str]:
        data = self.data
        env = dict(os.environ) | dict(self.base_env)
        secrets = keys.ensure(data)
        if not self.shared_secrets:
            secrets.pop("AIRFLOW__API_AUTH__JWT_SECRET")
            env.pop("AIRFLOW__API_AUTH__JWT_SECRET", None)
        env |= secrets | sqlite.ENV | {  # the embedded default's SQLite busy timeout
            "AIRFLOW_HOME": str(REPO),
            # standalone starts its parts by the bare name `airflow`
            "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
            "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO / "plugins"),
                                           *filter(None, [env.get("PYTHONPATH")])]),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{data / 'airflow' / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
            # paused until a test unpauses what it needs: no surprise scheduled runs competing for 2 cores
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(data / "logs" / "tasks"),
            "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(data / "logs" / "dag_processor"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
            # each file is parsed once at start and not again every 30 s: re-parsing 7 files of 3-4 s
            # each kept one of the 2 cores busy for the whole suite (the DAG files do not change here)
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            "AIRFLOW_CONN_QDRANT_DEFAULT": json.dumps({"conn_type": "qdrant", "extra": {"path": str(data / "qdrant")}}),
            "AIRFLOW_CONN_LRCLIB_DEFAULT": json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9"}),
            "AIRFLOW_VAR_MUSICREC_LAKE_ROOT": (data / "lake").as_uri(),
            "MUSICREC_STAGING_DIR": str(data / "staging"),
            "MUSICREC_GPU_QUEUE": "default",
            "MUSICREC_RETRY_DELAY_S": "1",
            "MUSICREC_MAX_RETRY_DELAY_S": "2",
            "MUSICREC_DUCKDB_MEMORY": "1GB",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        return env

    # ------------------------------------------------------------------ lifecycle

    def airflow(self, *args: str, timeout_s: float = 300) -> str:
        """The ``airflow`` CLI with the same environment as the running components."""
        proc = subprocess.run([_bin("airflow"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout_s, cwd=self.home)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise AssertionError(f"`airflow {' '.join(args)}` failed (rc {proc.returncode}):\n{out[-4000:]}")
        return out

    def start(self, timeout_s: float = 300) -> None:
        (self.data / "airflow").mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.env = self.environment()
        self.airflow("db", "migrate")
        self.airflow("pools", "import", str(REPO / "pools.json"))  # else every task waits for its pool forever
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([_bin("airflow"), "standalone"], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.home,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        self._wait(self._healthy, "the API server and the scheduler to report healthy", deadline)
        self._wait(self._parsed, "the DAGs to be parsed", deadline)

    def _wait(self, ready, what: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited with {self.proc.returncode} while waiting for "
                                   f"{what}:\n{_tail(self.log_file, 6000)}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(1)
        raise RuntimeError(f"timed out waiting for {what}:\n{_tail(self.log_file, 6000)}")

    def _healthy(self) -> bool:
        health = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
        return all(health.get(part, {}).get("status") == "healthy"
                   for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"))

    def _parsed(self) -> bool:
        """Every DAG file is parsed (each ``dags/<name>.py`` defines the DAG ``<name>``): a test that
        unpauses a DAG the dag-processor has not reached yet gets a 404."""
        dags = self.get("/api/v2/dags", params={"limit": 100})["dags"]
        return {p.stem for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_")} <= {d["dag_id"] for d in dags}

    def stop(self, timeout_s: float = 30) -> list[int]:
        """SIGINT to the process group (standalone stops its parts), then SIGTERM, then SIGKILL.

        Returns the pids that needed SIGKILL. Descendants are collected first: a part that
        started a session of its own would escape the group.
        """
        import psutil

        if self.proc is None:
            return []
        try:
            procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        def running(ps: list) -> list:
            # a zombie has exited; only its parent can reap it, and waiting on it would use up the timeout
            out = []
            for p in ps:
                with contextlib.suppress(psutil.NoSuchProcess):
                    if p.status() != psutil.STATUS_ZOMBIE:
                        out.append(p)
            return out

        def wait(ps: list, timeout: float) -> list:
            deadline = time.monotonic() + timeout
            while (ps := running(ps)) and time.monotonic() < deadline:
                psutil.wait_procs(ps, timeout=0.5)
            return ps

        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGINT)
        alive = wait(procs, timeout_s)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not alive:
                break
            for p in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.send_signal(sig)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            alive = wait(alive, 10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        return [p.pid for p in alive]

    # ------------------------------------------------------------------ REST API

    def password(self) -> str:
        return keys.admin_password(self.data)

    def token(self) -> str:
        if self._token is None:
            resp = httpx.post(f"{self.url}/auth/token", timeout=30,
                              json={"username": keys.ADMIN_USER, "password": self.password()})
            assert resp.status_code in (200, 201), f"POST /auth/token: {resp.status_code} {resp.text[:500]}"
            self._token = resp.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = httpx.request(method, f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token()}"},
                             timeout=60, **kwargs)
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text[:2000]}"
        return resp.json() if resp.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def unpause(self, *dag_ids: str) -> None:
        for dag_id in dag_ids:
            self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def pause(self, *dag_ids: str) -> None:
        for dag_id in dag_ids:
            self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": True})

    def settle(self, *dag_ids: str, timeout_s: float = 300) -> None:
        """Wait until none of the DAGs has a queued or running run (a test leaves the scheduler idle
        for the next one: on SQLite, a busy scheduler makes another writer's transaction fail)."""
        deadline = time.monotonic() + timeout_s
        while any(r["state"] in ("queued", "running") for d in dag_ids for r in self.runs(d)):
            if time.monotonic() > deadline:
                raise AssertionError(f"runs of {dag_ids} still active after {timeout_s:.0f} s")
            time.sleep(2)

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, logical_date: str | None = None) -> str:
        run = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                           json={"logical_date": logical_date, "conf": dict(conf or {})})
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "run_after"})["dag_runs"]

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float = 300) -> dict[str, Any]:
        """Wait for a run to finish; fail with its task states and the failed tasks' logs unless it succeeded."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in FINISHED or time.monotonic() > deadline:
                break
            time.sleep(2)
        if run["state"] != "success":
            raise AssertionError(f"{dag_id} run {run_id} ended in state {run['state']!r} "
                                 f"(waited up to {timeout_s:.0f} s)\n{self.diagnostics(dag_id, run_id)}")
        return run

    def wait_runs(self, dag_id: str, run_type: str, count: int, timeout_s: float = 300,
                  since: str = "") -> list[dict[str, Any]]:
        """Wait until ``count`` runs of ``run_type`` (created after ``since``) exist and have all succeeded."""
        deadline = time.monotonic() + timeout_s
        while True:
            runs = [r for r in self.runs(dag_id) if r["run_type"] == run_type and (r.get("run_after") or "") >= since]
            done = [r for r in runs if r["state"] in FINISHED]
            failed = [r for r in done if r["state"] != "success"]
            if failed or (len(done) >= count) or time.monotonic() > deadline:
                break
            time.sleep(2)
        if failed or len(done) < count:
            detail = "\n".join(self.diagnostics(dag_id, r["dag_run_id"]) for r in (failed or runs))
            states = [(r["dag_run_id"], r["state"]) for r in runs]
            raise AssertionError(f"expected {count} successful {run_type} runs of {dag_id} within {timeout_s:.0f} s; "
                                 f"got {states}\n{detail}")
        return done

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 200})[
            "task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str) -> str:
        """Every attempt's log file of one task, as written by the task runner."""
        folder = self.data / "logs" / "tasks" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return "\n".join(log.read_text(errors="replace") for log in sorted(folder.rglob("*.log")))

    def diagnostics(self, dag_id: str, run_id: str, chars: int = 3000) -> str:
        """Task states of one run and the log tails of its failed tasks (and the standalone log)."""
        lines = [f"--- task instances of {dag_id} / {run_id}"]
        try:
            tis = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 200})
        except AssertionError as exc:
            return f"{lines[0]}: {exc}"
        for ti in tis["task_instances"]:
            lines.append(f"{ti['task_id']}[{ti.get('map_index', -1)}] {ti['state']} try {ti.get('try_number')}")
            if ti["state"] in {"failed", "upstream_failed", "up_for_retry"}:
                folder = self.data / "logs" / "tasks" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={ti['task_id']}"
                for log in sorted(folder.rglob("*.log")) if folder.exists() else []:
                    lines.append(f"    --- {log.relative_to(self.data)}\n{_tail(log, chars)}")
        log = _tail(self.log_file, 2_000_000).splitlines()
        errors = [line for line in log if "ServerResponseError" in line or "Invalid auth token" in line]
        if errors:
            lines.append(f"--- {len(errors)} API errors in the standalone log, the last ones:")
            lines += [line[:400] for line in errors[-5:]]
        lines.append(f"--- airflow standalone log (tail)\n{_tail(self.log_file, 2500)}")
        return "\n".join(lines)
