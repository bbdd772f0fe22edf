"""The production stack (docker-compose.yaml, docker/, .env.example; design §7).

No Docker engine or compose plugin is available here, so the file is loaded with PyYAML and
validated against the Compose Specification's JSON schema, then checked against the project's
own rules: services, health checks, dependencies, the GPU worker, the Airflow environment and
connection ids, the image's lock, loopback-only ports and the documented variables.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / "docker" / "Dockerfile.dockerignore"
SHARED_SCHEMA = Path(__file__).resolve().parents[2].parent / "shared" / "schemas" / "compose-spec.json"
BUNDLED_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-gpu",
}
OTHER_SERVICES = {"postgres", "redis", "mongodb", "mongodb-init", "minio", "minio-init", "etcd", "milvus", "qdrant"}
SERVING_SERVICES = {"serve", "serve-proxy"}  # the serving API (issue 16)
ONE_SHOT = {"airflow-init", "minio-init", "mongodb-init"}
STORES = {"postgres", "redis", "mongodb", "minio", "etcd", "milvus", "qdrant"}
CONNECTION_ENV = (
    "AIRFLOW_CONN_MONGO_DEFAULT",
    "AIRFLOW_CONN_MILVUS_DEFAULT",
    "AIRFLOW_CONN_QDRANT_DEFAULT",
    "AIRFLOW_CONN_AWS_DEFAULT",
    "AIRFLOW_CONN_LRCLIB_DEFAULT",
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET")


# ------------------------------------------------------------------ helpers ----------------


def schema_path() -> Path:
    return SHARED_SCHEMA if SHARED_SCHEMA.is_file() else BUNDLED_SCHEMA


def schema_errors(doc: Any, schema: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


_DOLLAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


class InterpolationError(ValueError):
    pass


def _references(text: str) -> Iterator[tuple[re.Match, str, str | None, str]]:
    """Yield (match, name, operator, argument) for every unescaped $VAR / ${VAR...} in text."""
    for match in _DOLLAR.finditer(text):
        if match["escaped"]:
            continue
        if match["named"]:
            yield match, match["named"], None, ""
            continue
        braced = _BRACED.fullmatch(match["braced"])
        if braced is None:
            raise InterpolationError(f"invalid interpolation {match[0]!r} in {text!r}")
        yield match, braced["name"], braced["op"], braced["arg"] or ""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation ($$, $V, ${V}, ${V:-d}, ${V-d}, ${V:?e}, ${V?e}, ${V:+r}, ${V+r})."""
    out, pos = [], 0
    for match in _DOLLAR.finditer(text):
        out.append(text[pos : match.start()])
        pos = match.end()
        if match["escaped"]:
            out.append("$")
            continue
        _, name, op, arg = next(_references(match[0]))
        value = env.get(name)
        present = value is not None and (value != "" or not (op or "").startswith(":"))
        if op in (":-", "-"):
            out.append(value if present else arg)
        elif op in (":?", "?"):
            if not present:
                raise InterpolationError(f"required variable {name} is missing: {arg}")
            out.append(value)
        elif op in (":+", "+"):
            out.append(arg if present else "")
        else:
            out.append(value or "")
    out.append(text[pos:])
    return "".join(out)


def walk_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from walk_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk_strings(value)


def interpolate_doc(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolate_doc(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_doc(value, env) for value in node]
    return node


def variables(doc: Any) -> dict[str, set[str | None]]:
    """Every variable the document interpolates, with the operators it is used with."""
    found: dict[str, set[str | None]] = {}
    for text in walk_strings(doc):
        for _, name, op, _ in _references(text):
            found.setdefault(name, set()).add(op)
    return found


def required_variables(doc: Any) -> set[str]:
    """Variables used at least once without a default (${V}, $V, ${V:?e}, ${V?e})."""
    return {name for name, ops in variables(doc).items() if ops & {None, ":?", "?"}}


def parse_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"{path.name}:{number}: {raw!r}"
        assert key not in env, f"{path.name}:{number}: {key} defined twice"
        env[key] = value.strip().strip("'\"")
    return env


def port_host_ip(entry: Any) -> str | None:
    """Host address a `ports` entry binds; None means every interface (0.0.0.0 / ::)."""
    if isinstance(entry, dict):
        return entry.get("host_ip") or None
    spec = str(entry).split("/", 1)[0]
    if spec.startswith("["):
        return spec[1 : spec.index("]")]
    parts = spec.split(":")
    return parts[0] if len(parts) == 3 else None


def has_healthcheck(service: dict) -> bool:
    check = service.get("healthcheck") or {}
    if check.get("disable") in (True, "true"):
        return False
    test = check.get("test")
    if isinstance(test, str):
        test = [test]
    return bool(test) and test[0] != "NONE"


def dependencies(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec["condition"] for name, spec in deps.items()}


def command_args(service: dict) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    logical, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue
        current = f"{current} {line}".strip()
        if current.endswith("\\"):
            current = current[:-1]
            continue
        if current:
            logical.append(current)
        current = ""
    if current:
        logical.append(current)
    result = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), " ".join(args.split())))
    return result


def copy_sources(instructions: list[tuple[str, str]]) -> list[str]:
    sources = []
    for keyword, args in instructions:
        if keyword not in ("COPY", "ADD"):
            continue
        words = [word for word in args.split() if not word.startswith("--")]
        sources += words[:-1]
    return sources


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def example_env(fill_secrets: bool = True) -> dict[str, str]:
    """The .env.example values, empty secrets replaced by recognisable dummies."""
    env = parse_env_file(ENV_EXAMPLE)
    if fill_secrets:
        env = {key: value or f"dummy-{key.lower().replace('_', '-')}" for key, value in env.items()}
    return env


# ------------------------------------------------------------------ fixtures ---------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def rendered(compose) -> dict:
    """The compose file as `docker compose config` would see it with a .env made from the example."""
    return interpolate_doc(compose, example_env())


@pytest.fixture(scope="module")
def schema() -> dict:
    path = schema_path()
    if not path.is_file():
        pytest.fail(f"compose schema missing: neither {SHARED_SCHEMA} nor {BUNDLED_SCHEMA}")
    return json.loads(path.read_text())


# ------------------------------------------------------------------ schema -----------------


def test_bundled_schema_is_a_copy_of_the_shared_one():
    assert BUNDLED_SCHEMA.is_file(), "tests/data/compose-spec.json lets a clone without shared/ test"
    if not SHARED_SCHEMA.is_file():
        pytest.skip("no shared/schemas here")
    assert BUNDLED_SCHEMA.read_bytes() == SHARED_SCHEMA.read_bytes(), "re-copy the shared schema"


def test_compose_file_matches_the_compose_specification(compose, rendered, schema):
    assert schema_errors(compose, schema) == []
    assert schema_errors(rendered, schema) == []


def _drop_gpu_capabilities(doc: dict) -> None:
    devices = doc["services"]["airflow-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    del devices[0]["capabilities"]


BREAKAGES: dict[str, Callable[[dict], None]] = {
    "misspelt service key": lambda d: d["services"]["postgres"].update(healthchek={}),
    "healthcheck interval not a duration string": lambda d: d["services"]["redis"]["healthcheck"].update(
        interval=10
    ),
    "unknown depends_on condition": lambda d: d["services"]["airflow-scheduler"]["depends_on"].update(
        postgres={"condition": "service_ready"}
    ),
    "device reservation without capabilities": _drop_gpu_capabilities,
    "unknown top-level key": lambda d: d.update(service={}),
    "port with an unknown field": lambda d: d["services"]["qdrant"]["ports"].append(
        {"target": 1, "hostip": "x"}
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES, ids=list(BREAKAGES))
def test_schema_check_rejects_a_broken_copy(compose, schema, breakage):
    broken = copy.deepcopy(compose)
    BREAKAGES[breakage](broken)
    assert schema_errors(broken, schema), f"schema accepted: {breakage}"


# ------------------------------------------------------------------ services ---------------


def test_every_service_of_the_design_exists(compose):
    assert set(compose["services"]) == AIRFLOW_SERVICES | OTHER_SERVICES | SERVING_SERVICES


def test_store_images(compose):
    images = {name: service.get("image", "") for name, service in compose["services"].items()}
    assert images["postgres"].startswith("postgres:16")
    assert images["redis"].startswith("redis:7")
    assert images["mongodb"].startswith("mongo:8")
    assert images["minio"].startswith("minio/minio:")
    assert images["minio-init"].startswith("minio/mc:")
    assert re.fullmatch(r"milvusdb/milvus:v2\.6\.\d+", images["milvus"])
    assert images["etcd"].startswith("quay.io/coreos/etcd:")
    assert images["qdrant"].startswith("qdrant/qdrant:")


def test_every_long_running_service_has_a_healthcheck(compose):
    missing = [
        name for name, svc in compose["services"].items() if name not in ONE_SHOT and not has_healthcheck(svc)
    ]
    assert missing == []
    for name in ONE_SHOT:
        assert compose["services"][name]["restart"] == "no", f"{name} is a one-shot"


def test_healthcheck_detection_can_fail():
    assert not has_healthcheck({})
    assert not has_healthcheck({"healthcheck": {"test": ["NONE"]}})
    assert not has_healthcheck({"healthcheck": {"disable": True, "test": ["CMD", "true"]}})
    assert has_healthcheck({"healthcheck": {"test": "pg_isready"}})


def test_dependencies_wait_for_health_or_completion(compose):
    services = compose["services"]
    for name, service in services.items():
        for target, condition in dependencies(service).items():
            assert target in services, f"{name} depends on unknown {target}"
            if condition == "service_healthy":
                assert has_healthcheck(services[target]), (
                    f"{name} waits for {target}, which has no healthcheck"
                )
            elif condition == "service_completed_successfully":
                assert target in ONE_SHOT, f"{name} waits for {target} to exit"
            else:
                pytest.fail(f"{name} -> {target}: wait for health or completion, not {condition}")
            if not service.get("profiles"):
                assert not services[target].get("profiles"), f"{name} needs {target}, which is in a profile"


def test_airflow_waits_for_init_and_workers_for_the_api_server_and_stores(compose):
    services = compose["services"]
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert dependencies(services[name]).get("airflow-init") == "service_completed_successfully", name
    for name in AIRFLOW_SERVICES:
        deps = dependencies(services[name])
        assert deps.get("postgres") == deps.get("redis") == "service_healthy", name
    for name in ("airflow-worker", "airflow-worker-gpu"):
        deps = dependencies(services[name])
        # Airflow 3 workers run tasks through the api-server's execution API.
        for target in ("airflow-apiserver", "mongodb", "milvus", "qdrant"):
            assert deps.get(target) == "service_healthy", f"{name} -> {target}"
        assert deps.get("minio-init") == "service_completed_successfully", name
    milvus = dependencies(services["milvus"])
    assert milvus == {"etcd": "service_healthy", "minio-init": "service_completed_successfully"}


def test_named_volumes_and_bind_mounts(compose):
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        named = []
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":", 1)[0]
            if source.startswith((".", "/")):
                assert source.startswith("./"), f"{name}: host path {source} outside the repository"
                assert (ROOT / source).exists(), f"{name}: bind mount {source} missing"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
                named.append(source)
        if name in STORES - {"redis"} or name in AIRFLOW_SERVICES:
            assert named, f"{name} keeps its data in a named volume"


# ------------------------------------------------------------------ Airflow ----------------


def test_airflow_services_share_the_project_image(compose):
    built = {
        name
        for name, service in compose["services"].items()
        if (service.get("build") or {}).get("dockerfile") == "docker/Dockerfile"
    }
    assert built == AIRFLOW_SERVICES | {"serve"}
    images = {compose["services"][name]["image"] for name in AIRFLOW_SERVICES | {"serve"}}
    assert len(images) == 1
    for name in AIRFLOW_SERVICES | {"serve"}:
        assert compose["services"][name]["build"]["context"] == "."


def test_airflow_commands(compose):
    services = compose["services"]
    expected = {
        "airflow-apiserver": ["airflow", "api-server"],
        "airflow-scheduler": ["airflow", "scheduler"],
        "airflow-dag-processor": ["airflow", "dag-processor"],
        "airflow-triggerer": ["airflow", "triggerer"],
    }
    for name, argv in expected.items():
        assert command_args(services[name]) == argv, name
    worker = command_args(services["airflow-worker"])
    assert worker[:3] == ["airflow", "celery", "worker"]
    assert worker[worker.index("--queues") + 1] == "default"


def test_gpu_worker_listens_on_gpu_and_reserves_an_nvidia_device(compose, rendered):
    service = compose["services"]["airflow-worker-gpu"]
    argv = command_args(service)
    assert argv[:3] == ["airflow", "celery", "worker"]
    assert argv[argv.index("--queues") + 1].split(",") == ["gpu"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(dev.get("driver") == "nvidia" and "gpu" in dev.get("capabilities", []) for dev in devices)
    # DAGs read the queue at parse time: every component sees `gpu`, not only the worker.
    for name in AIRFLOW_SERVICES:
        assert rendered["services"][name]["environment"]["MUSICREC_GPU_QUEUE"] == "gpu", name
    assert "deploy" not in compose["services"]["airflow-worker"], "the CPU worker reserves no GPU"


def test_airflow_environment(compose, rendered):
    for name in AIRFLOW_SERVICES:
        raw = compose["services"][name]["environment"]
        env = rendered["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        db = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert db.scheme.startswith("postgresql") and db.hostname == "postgres", name
        broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
        assert broker.scheme == "redis" and broker.hostname == "redis", name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://"), name
        # Shared secrets come from .env and are required.
        assert raw["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET:?"), name
        assert raw["AIRFLOW__CORE__FERNET_KEY"].startswith("${AIRFLOW_FERNET_KEY:?"), name
        assert raw["AIRFLOW__API__SECRET_KEY"].startswith("${AIRFLOW_API_SECRET_KEY:?"), name
        for key in CONNECTION_ENV:
            assert key in env, f"{name}: {key}"
        assert env["AIRFLOW_VAR_MUSICREC_LAKE_ROOT"] == "s3://aws_default@datalake"
        assert {"path": ".env", "required": False} in compose["services"][name]["env_file"]


def _connection(conn_id: str, value: str):
    from airflow.models.connection import Connection

    if value.lstrip().startswith("{"):
        return Connection.from_json(value, conn_id=conn_id)
    return Connection(conn_id=conn_id, uri=value)


def test_connections_point_at_the_stack(rendered):
    pytest.importorskip("airflow.models.connection")
    env = rendered["services"]["airflow-worker"]["environment"]
    services = rendered["services"]
    example = example_env()

    mongo = _connection("mongo_default", env["AIRFLOW_CONN_MONGO_DEFAULT"])
    assert (mongo.conn_type, mongo.host, mongo.port, mongo.schema) == ("mongo", "mongodb", 27017, "musicrec")
    assert mongo.extra_dejson == {"authSource": "admin"}
    assert (mongo.login, mongo.password) == (
        services["mongodb"]["environment"]["MUSICREC_MONGO_USER"],
        services["mongodb"]["environment"]["MUSICREC_MONGO_PASSWORD"],
    )
    assert parse_qs(urlsplit(env["AIRFLOW_CONN_MONGO_DEFAULT"]).query) == {"authSource": ["admin"]}

    milvus = _connection("milvus_default", env["AIRFLOW_CONN_MILVUS_DEFAULT"])
    assert milvus.conn_type == "milvus"
    assert milvus.extra_dejson == {"uri": "http://milvus:19530", "token": example["MILVUS_TOKEN"]}

    qdrant = _connection("qdrant_default", env["AIRFLOW_CONN_QDRANT_DEFAULT"])
    assert (qdrant.conn_type, qdrant.host, qdrant.port) == ("qdrant", "qdrant", 6333)
    assert "path" not in qdrant.extra_dejson, "production Qdrant is a server, not local mode"

    aws = _connection("aws_default", env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert aws.conn_type == "aws"
    assert aws.extra_dejson == {"endpoint_url": "http://minio:9000", "region_name": "us-east-1"}
    minio_init = services["minio-init"]["environment"]
    assert (aws.login, aws.password) == (
        minio_init["MINIO_AIRFLOW_ACCESS_KEY"],
        minio_init["MINIO_AIRFLOW_SECRET_KEY"],
    )
    assert minio_init["LAKE_BUCKET"] == "datalake"

    lrclib = _connection("lrclib_default", env["AIRFLOW_CONN_LRCLIB_DEFAULT"])
    assert (lrclib.conn_type, lrclib.host) == ("lrclib", "https://lrclib.net")

    milvus_env = services["milvus"]["environment"]
    assert milvus_env["MINIO_ADDRESS"] == "minio:9000"
    assert (milvus_env["MINIO_ACCESS_KEY_ID"], milvus_env["MINIO_SECRET_ACCESS_KEY"]) == (
        minio_init["MINIO_MILVUS_ACCESS_KEY"],
        minio_init["MINIO_MILVUS_SECRET_KEY"],
    )
    assert milvus_env["MINIO_BUCKET_NAME"] == minio_init["MILVUS_BUCKET"]


def test_airflow_init_migrates_creates_the_admin_and_imports_pools(compose):
    argv = command_args(compose["services"]["airflow-init"])
    script = ROOT / "docker" / "airflow-init.sh"
    assert argv == ["bash", "/opt/airflow/docker/airflow-init.sh"]
    text = script.read_text()
    for step in (
        "airflow db migrate",
        "airflow users create",
        "airflow pools import /opt/airflow/pools.json",
    ):
        assert step in text, step
    assert "--role Admin" in text
    destinations = [
        args.split()[-1] for keyword, args in dockerfile_instructions(DOCKERFILE) if keyword == "COPY"
    ]
    assert "/opt/airflow/docker/airflow-init.sh" in destinations
    assert (ROOT / "pools.json").is_file()


@pytest.mark.parametrize(
    ("shell", "script"),
    [("bash", "docker/airflow-init.sh"), ("sh", "docker/init-minio.sh")],
)
def test_helper_scripts_parse(shell, script):
    if shutil.which(shell) is None:
        pytest.skip(f"no {shell}")
    result = subprocess.run([shell, "-n", str(ROOT / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_mongo_init_script_parses():
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node")
    result = subprocess.run(
        [node, "--check", str(ROOT / "docker" / "mongo-init.js")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------ image ------------------


def test_image_installs_the_production_lock_only():
    instructions = dockerfile_instructions(DOCKERFILE)
    assert instructions[0] == ("FROM", "apache/airflow:3.3.2-python3.11")
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    assert any(re.search(r"pip install .*-r \S*requirements\.txt\b", args) for args in runs)
    assert not any("requirements-local" in args for _, args in instructions)
    lock = (ROOT / "requirements.txt").read_text()
    version = re.search(r"^apache-airflow==(\S+)$", lock, re.M)
    assert version and version[1] == "3.3.2", "the lock's Airflow must match the base image"


def test_image_carries_the_project():
    instructions = dockerfile_instructions(DOCKERFILE)
    sources = [source.rstrip("/") for source in copy_sources(instructions)]
    for needed in ("requirements.txt", "dags", "plugins", "include", "pools.json", "airflow.cfg"):
        assert needed in sources, needed
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert "/opt/airflow/include" in env or "pip install -e" in runs
    if DOCKERIGNORE.is_file():
        allowed = {
            line[1:].strip().rstrip("/")
            for line in DOCKERIGNORE.read_text().splitlines()
            if line.startswith("!")
        }
        assert not set(sources) - allowed, "COPY sources the dockerignore filters out"


def test_dockerfile_parser_sees_through_comments(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "# requirements-local.txt\nFROM x\nRUN pip install \\\n  # note\n  -r requirements-local.txt\n"
    )
    instructions = dockerfile_instructions(dockerfile)
    assert instructions == [("FROM", "x"), ("RUN", "pip install -r requirements-local.txt")]


# ------------------------------------------------------------------ network ----------------


def test_ports_are_published_on_loopback_only(compose):
    for name, service in compose["services"].items():
        for entry in service.get("ports", []):
            assert port_host_ip(entry) == "127.0.0.1", f"{name}: {entry!r}"
    assert "127.0.0.1:8080:8080" in compose["services"]["airflow-apiserver"]["ports"]
    assert any(
        port_host_ip(p) == "127.0.0.1" and str(p).endswith(":9001")
        for p in compose["services"]["minio"]["ports"]
    )
    for name in ("postgres", "redis", "mongodb", "etcd"):
        assert "ports" not in compose["services"][name], f"{name} stays on the compose network"


@pytest.mark.parametrize(
    ("entry", "host_ip"),
    [
        ("127.0.0.1:8080:8080", "127.0.0.1"),
        ("0.0.0.0:8080:8080", "0.0.0.0"),
        ("8080:8080", None),
        ("8080", None),
        (8080, None),
        ("127.0.0.1:5000-5010:5000-5010/udp", "127.0.0.1"),
        ("[::1]:8080:8080", "::1"),
        ({"target": 80, "published": "8080"}, None),
        ({"target": 80, "published": "8080", "host_ip": "127.0.0.1"}, "127.0.0.1"),
    ],
)
def test_port_parser(entry, host_ip):
    assert port_host_ip(entry) == host_ip


# ------------------------------------------------------------------ variables --------------


def test_env_example_defines_every_required_variable(compose):
    defined = parse_env_file(ENV_EXAMPLE)
    missing = required_variables(compose) - set(defined)
    assert missing == set()
    undocumented = set(variables(compose)) - set(defined)
    assert undocumented == set(), "document every variable in .env.example"


def test_secrets_are_required_and_not_committed(compose):
    used = variables(compose)
    secrets = {name for name in used if SECRET_NAME.search(name)}
    assert secrets, "the stack has secrets"
    for name in secrets:
        assert used[name] == {":?"}, f"{name} must be ${{{name}:?...}} everywhere"
    defined = parse_env_file(ENV_EXAMPLE)
    for name in secrets | {"MINIO_ROOT_USER"}:
        assert defined[name] == "", f".env.example must not carry a value for {name}"


def test_compose_refuses_to_start_without_secrets(compose):
    with pytest.raises(InterpolationError, match="AIRFLOW_FERNET_KEY|POSTGRES_PASSWORD|REDIS_PASSWORD"):
        interpolate_doc(compose, example_env(fill_secrets=False))


def test_interpolation_semantics():
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("$$HOSTNAME ${SET} $SET", env) == "$HOSTNAME v v"
    assert interpolate("${EMPTY:-d}|${EMPTY-d}|${UNSET-d}", env) == "d||d"
    assert interpolate("${SET:+r}|${EMPTY:+r}|${EMPTY+r}", env) == "r||r"
    assert interpolate("${SET:?need}", env) == "v"
    with pytest.raises(InterpolationError, match="need EMPTY"):
        interpolate("${EMPTY:?need EMPTY}", env)
    with pytest.raises(InterpolationError, match="invalid"):
        interpolate("${1BAD}", env)
    doc = {"a": ["${A:?x}", "${B:-d}", "$$C", "${D}", "$E"]}
    assert variables(doc) == {"A": {":?"}, "B": {":-"}, "D": {None}, "E": {None}}
    assert required_variables(doc) == {"A", "D", "E"}


def test_mongodb_is_a_one_node_replica_set_with_an_init_step(compose):
    """Change streams (issue 18) need a replica set: mongod runs with --replSet and a key file (auth is
    on), a one-shot initiates it idempotently, and the triggerer and workers wait for that step."""
    mongo = compose["services"]["mongodb"]
    script = "\n".join(mongo["entrypoint"])
    assert "--replSet rs0" in script and "--keyFile" in script and "docker-entrypoint.sh mongod" in script
    init = compose["services"]["mongodb-init"]
    text = "\n".join(init["entrypoint"])
    assert 'rs.initiate({_id: "rs0", members: [{_id: 0, host: "mongodb:27017"}]})' in text
    assert "NotYetInitialized" in text and "isWritablePrimary" in text
    assert init["depends_on"]["mongodb"]["condition"] == "service_healthy"
    for name in ("airflow-triggerer", "airflow-worker"):
        deps = compose["services"][name]["depends_on"]
        assert deps["mongodb-init"]["condition"] == "service_completed_successfully", name


# ------------------------------------------------------------------ serving API ------------


def test_serve_replicas_behind_a_loopback_proxy(compose, rendered):
    """Two replicas of the project image run `python -m musicrec.serve` on all interfaces of the
    compose network, unpublished; the proxy is the one published port, on 127.0.0.1."""
    serve, proxy = compose["services"]["serve"], compose["services"]["serve-proxy"]
    args = command_args(rendered["services"]["serve"])
    assert args[:3] == ["python", "-m", "musicrec.serve"], args
    assert args[args.index("--host") + 1] == "0.0.0.0" and args[args.index("--port") + 1] == "8000"
    assert int(args[args.index("--workers") + 1]) >= 1
    assert int(rendered["services"]["serve"]["deploy"]["replicas"]) == 2
    assert "ports" not in serve, "the replicas are reached through serve-proxy only"
    assert [port_host_ip(p) for p in proxy["ports"]] == ["127.0.0.1"]
    assert rendered["services"]["serve-proxy"]["ports"] == [{"target": 8000, "published": "8000",
                                                             "host_ip": "127.0.0.1"}]
    assert proxy["image"].startswith("nginx:")
    assert dependencies(proxy) == {"serve": "service_healthy"}
    assert dependencies(serve) == {"mongodb": "service_healthy", "mongodb-init": "service_completed_successfully",
                                   "milvus": "service_healthy"}


def test_serve_health_checks(compose):
    serve, proxy = compose["services"]["serve"], compose["services"]["serve-proxy"]
    assert "http://localhost:8000/healthz" in serve["healthcheck"]["test"]  # liveness
    assert "http://127.0.0.1:8000/readyz" in proxy["healthcheck"]["test"]  # readiness through the proxy


def test_serve_uses_the_workers_connection_settings(compose, rendered):
    """The same environment block as the Airflow workers: the same mongo_default / milvus_default."""
    serve = rendered["services"]["serve"]["environment"]
    worker = rendered["services"]["airflow-worker"]["environment"]
    for key in ("AIRFLOW_CONN_MONGO_DEFAULT", "AIRFLOW_CONN_MILVUS_DEFAULT"):
        assert serve[key] == worker[key], key
    from musicrec.serve.deps import Settings

    settings = Settings.from_env(serve)
    assert urlsplit(settings.mongo_uri).hostname == "mongodb" and settings.mongo_db == "musicrec"
    assert settings.milvus_uri == "http://milvus:19530"
    closed = interpolate_doc(compose, example_env() | {"MUSICREC_SERVE_CORS_ORIGINS": ""})
    assert Settings.from_env(closed["services"]["serve"]["environment"]).cors_origins == ()  # closed by default
    cors = interpolate_doc(compose, example_env() | {"MUSICREC_SERVE_CORS_ORIGINS": "https://app.example"})
    assert Settings.from_env(cors["services"]["serve"]["environment"]).cors_origins == ("https://app.example",)


def test_serve_proxy_config():
    """nginx re-resolves every replica, forwards the client address and logs no header (no key)."""
    conf = (ROOT / "docker" / "serve-proxy.conf").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    assert re.search(r"resolver\s+127\.0\.0\.11\b", code)
    assert re.search(r"server\s+serve:8000\s+resolve;", code)
    assert re.search(r"listen\s+8000;", code)
    assert re.search(r"proxy_pass\s+http://musicrec_serve;", code)
    assert "X-Forwarded-For" in code and "proxy_next_upstream" in code
    log_format = re.search(r"log_format\s+musicrec\s+(.*?);", code, re.S)[1]
    assert "$request" in log_format and "$http_authorization" not in code and "$http_" not in log_format
    assert code.count("{") == code.count("}")

