"""Rendered templates back to values: a DAG passes ``"{{ params.x }}"`` to an operator's templated
argument, and Airflow hands the operator a string (the argument's value when it was no template)."""

from __future__ import annotations

import json
from typing import Any


def truthy(value: Any) -> bool:
    """A rendered template or param as a boolean (``"True"``, ``"1"``, ``"yes"``)."""
    return str(value).strip().lower() in {"true", "1", "yes"}


def json_value(value: Any) -> Any:
    """A JSON string (``{{ params.x }}`` of a JSON-text param, or ``{{ params.x | tojson }}``) parsed;
    an empty string is None; a value that is no string (not templated) is returned as it is."""
    if isinstance(value, str):
        return json.loads(value) if value.strip() else None
    return value


def string_list(value: Any) -> list[str]:
    """A list param: a JSON list (``{{ params.x | tojson }}``), comma-separated text, or a list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return [str(v) for v in json.loads(text)]
        return [s.strip() for s in text.split(",") if s.strip()]
    return [str(v) for v in (value or [])]
