"""Session-scoped throw-away engines and the Airflow test environment.

Environment variables Airflow reads at import time are set here, before any test module
imports Airflow: the repo is AIRFLOW_HOME (dags/, plugins/, airflow.cfg), the metadata
database is a throw-away SQLite file, retries wait one second.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_TMP = Path(tempfile.mkdtemp(prefix="musicrec-tests-"))

os.environ.update(
    {
        "AIRFLOW_HOME": str(REPO),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_TMP / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(_TMP / "logs"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "MUSICREC_RETRY_DELAY_S": "1",
        "MUSICREC_MAX_RETRY_DELAY_S": "2",
        "MUSICREC_STAGING_DIR": str(_TMP / "staging"),
        "MUSICREC_DUCKDB_MEMORY": "1GB",
        "OPENBLAS_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        # tests read their sources from temp folders (musicrec.sources); refusal tests set their own list
        "AIRFLOW_VAR_MUSICREC_ALLOWED_SOURCES": f'["{Path(tempfile.gettempdir()).resolve().as_uri()}/"]',
    }
)
for path in (REPO / "include", REPO / "plugins", REPO / "dags"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, name: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port} within {timeout_s} s")


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    yield _TMP
    shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def mongo_uri(tmp_root: Path) -> Iterator[str]:
    """A throw-away SecantusDB server (MongoDB wire protocol) on a free loopback port."""
    port = free_port()
    log = open(tmp_root / "secantus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([_bin("secantusd-py"), "--host", "127.0.0.1", "--port", str(port), "--storage-path",
                             ":memory:", "--log-level", "WARNING"], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, "secantusd-py")
        uri = f"mongodb://127.0.0.1:{port}/"
        from pymongo import MongoClient

        with MongoClient(uri, serverSelectionTimeoutMS=10000) as client:
            client.admin.command("ping")
        os.environ["AIRFLOW_CONN_MONGO_DEFAULT"] = f"mongo://127.0.0.1:{port}/musicrec"
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def mongo_db(mongo_uri: str, request: pytest.FixtureRequest):
    """A fresh database per test (dropped after)."""
    from pymongo import MongoClient

    client = MongoClient(mongo_uri)
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:50]
    client.drop_database(name)
    yield client[name]
    client.drop_database(name)
    client.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (no AWS is ever reached)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ[key] = value
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = (
        '{"conn_type": "aws", "login": "testing", "password": "testing", '
        f'"extra": {{"endpoint_url": "{endpoint}", "region_name": "us-east-1"}}}}'
    )
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def airflow_db(tmp_root: Path) -> Path:
    """Migrate the throw-away Airflow metadata database once per session."""
    proc = subprocess.run([_bin("airflow"), "db", "migrate"], capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return tmp_root / "airflow.db"


@pytest.fixture(scope="session")
def tiny_sample(tmp_root: Path):
    """The ``tiny`` preset, generated once per session."""
    from musicrec.sample import generate

    return generate(preset="tiny", out_dir=tmp_root / "sample-tiny", seed=7)


def airflow_dags_test(dag_id: str, conf: dict, env: dict[str, str], timeout_s: int = 600,
                      logical_date: str | None = None) -> str:
    """Run ``airflow dags test`` in a subprocess (the real CLI path) and return its output.

    Fails the calling test unless the run finished in state ``success``.
    """
    import json

    full_env = dict(os.environ) | env
    cmd = [_bin("airflow"), "dags", "test", dag_id, *([logical_date] if logical_date else []), "-c", json.dumps(conf)]
    proc = subprocess.run(cmd,
                          capture_output=True, text=True, env=full_env, timeout=timeout_s)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or "state=success" not in out:
        raise AssertionError(f"airflow dags test {dag_id} failed (rc {proc.returncode}):\n{out[-6000:]}")
    return out


# ----------------------------------------------------------------------------- catalog / ALS fixtures

def import_sample_lake(archive: Path, lake: Path, mongo_uri: str, dataset: str) -> list[dict]:
    """Import a sample archive into a local lake with the library (no Airflow); returns the
    ``lake_partitions`` documents it wrote (tests copy them into their own database)."""
    from pymongo import MongoClient
    from upath import UPath

    from musicrec.lake import download, importer

    root = UPath(lake)
    with MongoClient(mongo_uri) as client:
        db = client[f"fixture_{dataset.replace('-', '_')}"]
        client.drop_database(db.name)
        download.download(archive.as_uri(), root / "raw" / dataset, open_source=UPath)
        importer.clean_raw(root, dataset)
        importer.partition_clean(root, dataset, db, run_id="fixture")
        docs = list(db["lake_partitions"].find())
        client.drop_database(db.name)
    return docs


@pytest.fixture(scope="session")
def tiny_lake(tiny_sample, tmp_root: Path, mongo_uri: str) -> tuple[Path, list[dict]]:
    """The ``tiny`` sample imported into a local lake once: (lake dir, registry documents)."""
    lake = tmp_root / "lake-tiny-fixture"
    return lake, import_sample_lake(tiny_sample.archive, lake, mongo_uri, "tiny")


@pytest.fixture(scope="session")
def small_sample(tmp_root: Path):
    """The ``small`` preset (ALS needs its signal), generated once per session, no dump/landing."""
    from musicrec.sample import generate

    return generate(preset="small", out_dir=tmp_root / "sample-small", seed=42, with_lrclib=False,
                    with_landing=False)


@pytest.fixture(scope="session")
def small_lake(small_sample, tmp_root: Path, mongo_uri: str) -> tuple[Path, list[dict]]:
    lake = tmp_root / "lake-small-fixture"
    return lake, import_sample_lake(small_sample.archive, lake, mongo_uri, "small")


@pytest.fixture(scope="session")
def milvus_uri(tmp_root: Path) -> Iterator[str]:
    """A throw-away ``milvus-lite server`` on a free loopback port with its own data dir."""
    port = free_port()
    data = tmp_root / "milvus"
    data.mkdir(parents=True, exist_ok=True)
    log = open(tmp_root / "milvus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([_bin("milvus-lite"), "server", "--data-dir", str(data), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=data)
    try:
        _wait_port(port, proc, "milvus-lite")
        uri = f"http://127.0.0.1:{port}"
        from musicrec.vectors.milvus import connect

        deadline = time.monotonic() + 60
        while True:
            try:
                connect(uri, timeout=5).list_collections()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# ----------------------------------------------------------------------------- embeddings fixtures

@pytest.fixture(scope="session")
def tiny_bge_m3(tmp_root: Path) -> Path:
    """A tiny random XLM-R saved as a BGE-M3 directory (tokenizer trained on the fly), once per session."""
    from tests.tiny_bge_m3 import build

    return build(tmp_root / "tiny-bge-m3")



# ----------------------------------------------------------------------------- pytest-xdist
# `make test` runs two workers (-n 2). Tests are scheduled a file at a time, so module-scoped
# fixtures (a Celery cluster, an Airflow database) start once; and the whole tests/e2e package is one
# unit, because its files share one package-scoped `airflow standalone`. (xdist's own `loadgroup`
# marks do not work on pytest 9: xdist 3.8 writes the group into `Node._nodeid`, which pytest 9
# no longer reads.) tests/e2e sorts before tests/integration and tests/unit, so the longest unit
# starts first.
try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # xdist is in the test lock; without it pytest simply runs serially
    LoadScopeScheduling = None

if LoadScopeScheduling is not None:

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/e2e" if path.startswith("tests/e2e/") else path

    def pytest_xdist_make_scheduler(config: pytest.Config, log) -> FileScheduling:
        return FileScheduling(config, log)
