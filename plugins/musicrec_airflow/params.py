"""Reading DAG params and rendered templates: Airflow hands them over as strings or JSON values."""

from __future__ import annotations

from typing import Any


def truthy(value: Any) -> bool:
    """A rendered template or param as a boolean (``"True"``, ``"1"``, ``"yes"``)."""
    return str(value).strip().lower() in {"true", "1", "yes"}
