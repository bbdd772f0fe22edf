"""The embedded default's secrets, generated once and kept under ``data/secrets/`` (mode 0600).

Airflow generates a random ``[api_auth] jwt_secret`` (and ``[core] fernet_key``) in every process
when ``airflow.cfg`` does not set one. The repo ships ``airflow.cfg``, so the scheduler, the
dag-processor, the triggerer and the API server would each sign task tokens with their own key,
and every task the scheduler starts fails with ``Invalid auth token``. Here the values are made
once, stored on disk, and handed to every component through the same environment
(``data/musicrec.env`` and the env of the processes ``make airflow``/``make run`` start).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

# file name under data/secrets/ -> the Airflow setting (environment variable) it feeds
JWT_SECRET = "jwt_secret"
FERNET_KEY = "fernet_key"
API_SECRET_KEY = "api_secret_key"
PASSWORDS = "simple_auth_manager_passwords.json"
ADMIN_USER = "admin"


def secrets_dir(data: Path) -> Path:
    return data / "secrets"


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _read_or_create(path: Path, make: Callable[[], str]) -> str:
    """The file's content; created with mode 0600 (atomically, O_EXCL) when missing or empty."""
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = ""
    if value:
        os.chmod(path, 0o600)  # tighten a file restored or copied with a looser mode
        return value
    path.unlink(missing_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def ensure(data: Path) -> dict[str, str]:
    """Create the missing secrets under ``data/secrets/`` and return the Airflow settings that use them.

    Idempotent: existing values are kept, so every ``make`` target and every component sees the
    same ones. Delete a file (with everything stopped) to rotate it; see docs/operations.md.
    """
    folder = _private_dir(secrets_dir(data))
    jwt = _read_or_create(folder / JWT_SECRET, lambda: secrets.token_urlsafe(48))
    fernet = _read_or_create(folder / FERNET_KEY, _fernet_key)
    api_key = _read_or_create(folder / API_SECRET_KEY, lambda: secrets.token_urlsafe(32))
    # Pre-created so that Airflow's simple auth manager (which opens it with "a+" and the default
    # umask) finds the admin user and never writes a world-readable file of its own.
    passwords = folder / PASSWORDS
    _read_or_create(passwords, lambda: json.dumps({ADMIN_USER: secrets.token_urlsafe(12)}))
    return {
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt,
        "AIRFLOW__CORE__FERNET_KEY": fernet,
        "AIRFLOW__API__SECRET_KEY": api_key,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": os.fspath(passwords),
    }


def admin_password(data: Path) -> str:
    """The ``admin`` user's password of the embedded default's UI and REST API."""
    return json.loads((secrets_dir(data) / PASSWORDS).read_text())[ADMIN_USER]
