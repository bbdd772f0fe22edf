"""``make run``: the whole pipeline on the embedded default, then a summary read from the stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from musicrec.embeddings.encoder import DEFAULT_MODEL
from musicrec.local import envfile, keys, services

# DAGs in pipeline order with the run conf make run gives them; later issues append theirs.
PIPELINE: list[tuple[str, dict[str, Any]]] = [
    ("listens_import", {"dataset": "lastfm-1k"}),
    ("catalog_sync", {}),
    ("als_training", {}),
    ("lyrics_enrichment", {}),
    ("lyrics_embeddings", {"model": DEFAULT_MODEL}),
    ("store_audit", {}),
]


def airflow_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(envfile.embedded_env())
    venv_bin = os.fspath(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    return env


def airflow(*args: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [os.fspath(Path(sys.executable).parent / "airflow"), *args]
    kwargs: dict[str, Any] = {"env": airflow_env(), "text": True}
    if quiet:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc = subprocess.run(cmd, check=False, **kwargs)
    if check and proc.returncode != 0:
        if quiet:
            print(proc.stdout[-5000:])
        raise SystemExit(f"`airflow {' '.join(args)}` failed with exit code {proc.returncode}")
    return proc


def setup_airflow() -> None:
    (services.data_dir() / "airflow").mkdir(parents=True, exist_ok=True)
    print("airflow: migrating the metadata database (sqlite) ...")
    airflow("db", "migrate", quiet=True)
    airflow("pools", "import", os.fspath(services.repo_root() / "pools.json"), quiet=True)


def ensure_sample(preset: str, seed: int) -> Path:
    from musicrec.sample import generate

    out = services.data_dir() / "sample"
    manifest = out / "sample.json"
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        if meta.get("preset") == preset and meta.get("seed") == seed:
            print(f"sample: reusing {out} ({preset}, seed {seed})")
            return out
    started = time.monotonic()
    generate(preset=preset, out_dir=out, seed=seed)
    print(f"sample: generated the {preset!r} preset in {time.monotonic() - started:.1f} s -> {out}")
    return out


def run(preset: str = "small", seed: int = 42, dags: list[str] | None = None) -> None:
    envfile.write()
    services.start_all()
    setup_airflow()
    sample = ensure_sample(preset, seed)
    for dag_id, conf in PIPELINE:
        if dags and dag_id not in dags:
            continue
        if dag_id == "listens_import":
            conf = conf | {"source_url": (sample / "lastfm-dataset-1K.tar.gz").as_uri()}
        print(f"\n=== airflow dags test {dag_id} ===")
        started = time.monotonic()
        proc = airflow("dags", "test", dag_id, "-c", json.dumps(conf), check=False, quiet=True)
        if proc.returncode != 0 or "state=failed" in proc.stdout:
            print(proc.stdout[-8000:])
            raise SystemExit(f"{dag_id} failed (exit {proc.returncode})")
        print(f"{dag_id}: success in {time.monotonic() - started:.1f} s")
    from musicrec.local.summary import print_summary

    print_summary()


def start_standalone(port: int = 8080) -> None:
    """``airflow standalone`` in the background (pid file, so ``make stop`` ends it)."""
    import urllib.request

    envfile.write()
    services.start_all()
    setup_airflow()
    env = airflow_env() | {"AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port)}

    def ready(p: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{p}/api/v2/monitor/health", timeout=2) as resp:
                return resp.status == 200
        except Exception:
            return False

    svc = services.Service("airflow", port, [os.fspath(Path(sys.executable).parent / "airflow"), "standalone"], ready)
    services.start(svc, env=env, timeout_s=240)
    passwords = keys.secrets_dir(services.data_dir()) / keys.PASSWORDS
    print(f"Airflow UI: http://127.0.0.1:{port}  (user admin; password in {passwords})")
    print("logs: data/logs/airflow.log; stop everything with `make stop`")
