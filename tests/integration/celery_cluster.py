"""A throw-away Airflow 3 CeleryExecutor cluster on this machine, for the distributed-run test.

Real processes against real services: a fresh PostgreSQL metadata database on 127.0.0.1:5432
(``musicrec_celery_<hex>``, dropped at the end), a Redis database number on 127.0.0.1:6379 that
nothing else uses (claimed with a marker key, flushed at the end), and ``airflow api-server``,
``scheduler``, ``dag-processor`` plus N ``airflow celery worker`` processes, each in its own
process group so :meth:`CeleryCluster.stop` can end it and everything it forked.

Each worker runs with ``MUSICREC_CELERY_WORKER=<name>`` and ``[core] hostname_callable`` pointing
at :func:`worker_hostname`, so ``task_instance.hostname`` tells which worker ran a task (both
workers share this machine's hostname otherwise). Keep this module's imports light: the task
supervisor of every worker imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_MARKER = "musicrec:celery-test:owner"
WORKER_ENV = "MUSICREC_CELERY_WORKER"
TERMINAL = ("success", "failed")


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the test workers: the worker's name, else the FQDN."""
    return os.environ.get(WORKER_ENV) or socket.getfqdn()


# ----------------------------------------------------------------------------- services

def services_unavailable() -> str | None:
    """Why the cluster cannot run here (PostgreSQL or Redis missing), or None when both answer."""
    try:
        import psycopg2

        conn = psycopg2.connect(dbname="test", connect_timeout=3, **PG)
        conn.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable here"
        return f"PostgreSQL on {PG['host']}:{PG['port']} not reachable: {str(exc).strip().splitlines()[0]}"
    try:
        import redis

        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=3, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis on {REDIS_HOST}:{REDIS_PORT} not reachable: {exc}"
    return None


def _admin_conn():
    import psycopg2

    conn = psycopg2.connect(dbname="test", connect_timeout=5, **PG)
    conn.autocommit = True
    return conn


def claim_redis_db(token: str) -> int:
    """An empty Redis database number (1..15), marked as ours so no other run picks it."""
    import random

    import redis

    numbers = list(range(1, 16))
    random.shuffle(numbers)
    for number in numbers:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
        try:
            if client.set(REDIS_MARKER, token, nx=True, ex=6 * 3600):
                if client.dbsize() == 1:
                    return number
                client.delete(REDIS_MARKER)  # somebody else's keys live here
        finally:
            client.close()
    raise RuntimeError(f"no empty Redis database among 1..15 on {REDIS_HOST}:{REDIS_PORT}")


def release_redis_db(number: int, token: str) -> None:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
    try:
        if client.get(REDIS_MARKER) == token.encode():
            client.flushdb()
    finally:
        client.close()


# ----------------------------------------------------------------------------- processes

def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - chars))
            return fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class CeleryCluster:
    """Start with :meth:`start`, always :meth:`stop` (a context manager does both)."""

    work: Path
    repo: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    dag_files: Iterable[str] = ()
    workers: int = 2
    concurrency: int = 1
    procs: list[Proc] = field(default_factory=list)
    database: str = ""
    redis_db: int | None = None
    api_port: int = 0

    def __post_init__(self) -> None:
        self.token = uuid.uuid4().hex
        self.database = f"musicrec_celery_{self.token[:12]}"
        self.logs = self.work / "logs"
        self.dags = self.work / "dags"
        self.env: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> CeleryCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.dags.mkdir(exist_ok=True)
        # Only the DAGs under test: other DAGs' scheduled runs would compete for 2 cores.
        for name in self.dag_files:
            (self.dags / name).write_bytes((self.repo / "dags" / name).read_bytes())
        conn = _admin_conn()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            conn.close()
        self.redis_db = claim_redis_db(self.token)
        self.api_port = _free_port()
        self.env = self._environment()

        self._check_celery_executor()
        self.airflow("db", "migrate", timeout_s=max(30, deadline - time.monotonic()))
        self.airflow("pools", "import", str(self.repo / "pools.json"), timeout_s=60)

        self._spawn("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port)])
        self._spawn("scheduler", ["scheduler"])
        self._spawn("dag-processor", ["dag-processor"])
        for i in range(1, self.workers + 1):
            name = f"worker{i}"
            self._spawn(name, ["celery", "worker", "--celery-hostname", f"{name}@%h", "--queues", "default",
                               "--concurrency", str(self.concurrency), "--skip-serve-logs"],
                        env={WORKER_ENV: name,
                             "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname"})
        self._wait(self._api_healthy, "the api-server's execution API to answer", deadline)
        for i in range(1, self.workers + 1):
            log = self.logs / f"worker{i}.log"
            self._wait(lambda log=log: " ready." in _tail(log, 200_000), f"worker{i} ready", deadline)
        self._wait(lambda: self._parsed(), "DAGs parsed by the dag-processor", deadline)

    def stop(self) -> None:
        """TERM every process group, KILL what is left after 20 s; drop the database; free Redis."""
        for proc in self.procs:
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
        for proc in self.procs:  # the whole group: also children that outlived their parent
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)
        if self.redis_db is not None:
            with contextlib.suppress(Exception):  # best effort
                release_redis_db(self.redis_db, self.token)
        with contextlib.suppress(Exception):
            conn = _admin_conn()
            try:
                with conn.cursor() as cur:
                    cur.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            finally:
                conn.close()

    def _environment(self) -> dict[str, str]:
        from cryptography.fernet import Fernet

        pg = f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{self.database}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.update({
            "AIRFLOW_HOME": str(self.repo),
            "PYTHONPATH": os.pathsep.join([str(self.repo), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{pg}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            "AIRFLOW__CELERY__OPERATION_TIMEOUT": "30",
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            # 2 busy cores: an execution API call can take longer than the default 5 s
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.work / "passwords.json"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "tasks"),
            "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(self.logs / "dag_processor"),
            "MUSICREC_RETRY_DELAY_S": "1",
            "MUSICREC_MAX_RETRY_DELAY_S": "2",
            "MUSICREC_STAGING_DIR": str(self.work / "staging"),
            "OPENBLAS_NUM_THREADS": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        })
        env.update(self.extra_env)
        return env

    def _check_celery_executor(self) -> None:
        """Fail fast, with the reason, when the installed Celery provider cannot load its executor."""
        proc = subprocess.run([sys.executable, "-c", "import airflow.providers.celery.executors.celery_executor"],
                              capture_output=True, text=True, env=self.env, cwd=self.work, timeout=120)
        if proc.returncode != 0:
            from importlib.metadata import version

            hint = ""
            if "cannot import name 'retry' from 'celery.backends.database'" in proc.stderr:
                hint = ("\n-> celery 5.7 removed celery.backends.database.retry, which this Celery provider still "
                        "imports: pin celery<5.7 in requirements.in and re-lock")
            raise RuntimeError(
                "the CeleryExecutor cannot be imported with the installed packages (celery "
                f"{version('celery')}, apache-airflow-providers-celery "
                f"{version('apache-airflow-providers-celery')}):\n{proc.stderr[-1500:]}{hint}")

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> None:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen([_bin("airflow"), *args], stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.work, env=self.env | dict(env or {}),
                                     start_new_session=True)
        self.procs.append(Proc(name, popen, log))

    def _wait(self, ready, what: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            dead = [p for p in self.procs if not p.alive()]
            if dead:
                raise RuntimeError(f"{', '.join(p.name for p in dead)} exited while waiting for {what}\n"
                                   + self.process_logs())
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - not ready yet (e.g. tables not there)
                pass
            time.sleep(1)
        raise TimeoutError(f"timed out waiting for {what}\n" + self.process_logs())

    def _api_healthy(self) -> bool:
        import urllib.request

        for path in ("/execution/health", "/api/v2/monitor/health"):
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}{path}", timeout=10) as resp:
                if resp.status != 200:
                    return False
        return True

    def _parsed(self) -> bool:
        wanted = {Path(name).stem for name in self.dag_files}
        rows = self.query("SELECT dag_id FROM serialized_dag")
        return wanted <= {r[0] for r in rows}

    # -- commands and queries --------------------------------------------------------------

    def airflow(self, *args: str, timeout_s: float = 120) -> str:
        """Run an ``airflow`` CLI command in the cluster's environment; its output, or an error."""
        proc = subprocess.run([_bin("airflow"), *args], capture_output=True, text=True, env=self.env,
                              cwd=self.work, timeout=timeout_s)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed (rc {proc.returncode}):\n{out[-4000:]}")
        return out

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        import psycopg2

        conn = psycopg2.connect(dbname=self.database, connect_timeout=5, **PG)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()

    def trigger(self, dag_id: str, conf: Mapping[str, object]) -> str:
        run_id = f"celery_test__{uuid.uuid4().hex[:8]}"
        self.airflow("dags", "trigger", dag_id, "-r", run_id, "-c", json.dumps(conf))
        return run_id

    def wait_runs(self, dag_id: str, where: str, params: tuple, expected: int, timeout_s: float) -> dict[str, str]:
        """Wait until ``expected`` runs of ``dag_id`` matching ``where`` are finished; {run_id: state}.

        Raises AssertionError with task states and log tails when one fails or time runs out.
        """
        deadline = time.monotonic() + timeout_s
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            rows = self.query(f"SELECT run_id, state FROM dag_run WHERE dag_id = %s AND {where}", (dag_id, *params))
            states = dict(rows)
            if any(s == "failed" for s in states.values()):
                break
            if len(states) >= expected and all(s in TERMINAL for s in states.values()):
                return states
            dead = [p.name for p in self.procs if not p.alive()]
            if dead:
                raise AssertionError(f"{', '.join(dead)} died while {dag_id} ran\n"
                                     + self.diagnostics(dag_id, list(states)))
            time.sleep(2)
        verdict = "failed" if any(s == "failed" for s in states.values()) else f"not done after {timeout_s:.0f} s"
        raise AssertionError(f"{dag_id} runs {verdict}: {states}\n" + self.diagnostics(dag_id, list(states)))

    def task_instances(self, dag_id: str, run_ids: list[str]) -> list[tuple]:
        """(run_id, task_id, map_index, state, try_number, hostname) of the given runs."""
        if not run_ids:
            return []
        return self.query(
            "SELECT run_id, task_id, map_index, state, try_number, hostname FROM task_instance "
            "WHERE dag_id = %s AND run_id = ANY(%s) ORDER BY run_id, task_id, map_index", (dag_id, run_ids))

    # -- diagnostics -----------------------------------------------------------------------

    def process_logs(self, chars: int = 2500) -> str:
        parts = []
        for proc in self.procs:
            state = "running" if proc.alive() else f"exited {proc.popen.returncode}"
            parts.append(f"----- {proc.name} ({state}), {proc.log} -----\n{_tail(proc.log, chars)}")
        return "\n".join(parts)

    def diagnostics(self, dag_id: str, run_ids: list[str]) -> str:
        lines = ["task instances (run_id, task_id, map_index, state, try_number, hostname):"]
        try:
            tis = self.task_instances(dag_id, run_ids)
            lines += [f"  {row}" for row in tis]
        except Exception as exc:  # noqa: BLE001
            tis = []
            lines.append(f"  <query failed: {exc}>")
        for run_id, task_id, map_index, state, *_ in tis:
            if state in ("success", "skipped"):
                continue
            folder = self.logs / "tasks" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
            if map_index >= 0:
                folder = folder / f"map_index={map_index}"
            for log in sorted(folder.glob("attempt=*.log"))[-1:]:
                lines.append(f"----- task log {log} -----\n{_tail(log, 3000)}")
        return "\n".join(lines) + "\n" + self.process_logs()
