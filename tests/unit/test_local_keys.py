"""The embedded default's secrets: made once under data/secrets/ (0600), shared by every Airflow component."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from musicrec.local import envfile, keys


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MUSICREC_HOME", str(tmp_path))
    return tmp_path


def test_secrets_are_private_and_made_once(home: Path) -> None:
    first = keys.ensure(home / "data")
    folder = home / "data" / "secrets"
    assert _mode(folder) == 0o700
    for name in (keys.JWT_SECRET, keys.FERNET_KEY, keys.API_SECRET_KEY, keys.PASSWORDS):
        assert _mode(folder / name) == 0o600, name
    assert keys.ensure(home / "data") == first  # idempotent: every make target sees the same values
    assert len(first["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 32
    from cryptography.fernet import Fernet

    Fernet(first["AIRFLOW__CORE__FERNET_KEY"].encode())  # a valid key
    passwords = json.loads((folder / keys.PASSWORDS).read_text())
    assert passwords == {"admin": keys.admin_password(home / "data")}
    assert first["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(folder / keys.PASSWORDS)


def test_deleting_a_file_rotates_only_that_secret(home: Path) -> None:
    first = keys.ensure(home / "data")
    (home / "data" / "secrets" / keys.JWT_SECRET).unlink()
    second = keys.ensure(home / "data")
    assert second["AIRFLOW__API_AUTH__JWT_SECRET"] != first["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert second["AIRFLOW__CORE__FERNET_KEY"] == first["AIRFLOW__CORE__FERNET_KEY"]


def test_loose_file_mode_is_tightened(home: Path) -> None:
    keys.ensure(home / "data")
    path = home / "data" / "secrets" / keys.JWT_SECRET
    os.chmod(path, 0o644)
    keys.ensure(home / "data")
    assert _mode(path) == 0o600


def test_env_file_is_private_and_carries_the_secrets(home: Path) -> None:
    path = envfile.write()
    assert path == home / "data" / "musicrec.env"
    assert _mode(path) == 0o600
    text = path.read_text()
    secret = (home / "data" / "secrets" / keys.JWT_SECRET).read_text().strip()
    assert f"export AIRFLOW__API_AUTH__JWT_SECRET={secret}" in text
    assert "AIRFLOW__CORE__FERNET_KEY=" in text
    assert "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=" in text


def _airflow_config_value(env: dict[str, str], section: str, key: str) -> str:
    proc = subprocess.run([str(Path(sys.executable).parent / "airflow"), "config", "get-value", section, key],
                          capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def test_every_airflow_process_signs_with_the_same_jwt_secret(home: Path) -> None:
    """Two separate Airflow processes (as the scheduler and the API server are) read one JWT secret.

    Without it, Airflow makes a random secret per process because the repo ships airflow.cfg,
    and every task the scheduler starts fails with ``Invalid auth token``.
    """
    from musicrec.local.pipeline import airflow_env

    env = airflow_env()
    values = {_airflow_config_value(env, "api_auth", "jwt_secret") for _ in range(2)}
    assert values == {(home / "data" / "secrets" / keys.JWT_SECRET).read_text().strip()}
    assert _airflow_config_value(env, "core", "fernet_key") == (
        home / "data" / "secrets" / keys.FERNET_KEY).read_text().strip()
