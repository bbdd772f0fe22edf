"""The provider entry point (issue 15, item 6): Airflow's providers manager, and through it the UI's
connection form (``/ui/connections/hook_meta``), know the project's connection types."""

from __future__ import annotations

import importlib
import json
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINT = "musicrec_airflow.provider_info:get_provider_info"

# connection type -> (hook class, hidden standard fields, extra fields of the form)
EXPECTED = {
    "milvus": ("musicrec_airflow.hooks.milvus.MilvusHook", {"login"}, {"uri", "timeout"}),
    "lrclib": ("musicrec_airflow.hooks.lrclib.LrclibHook", {"login", "password"},
               {"user_agent", "rate_per_s", "concurrency", "timeout_s"}),
    "musicrec_embedding": ("musicrec_airflow.hooks.embedding.EmbeddingHook",
                           {"host", "port", "login", "password", "schema"},
                           {"model", "device", "max_length", "bge_m3_path"}),
}


def _provider_info() -> dict:
    from musicrec_airflow.provider_info import get_provider_info

    return get_provider_info()


def _hook_class(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_provider_info_is_valid_and_names_this_distribution():
    import airflow
    import jsonschema

    info = _provider_info()
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # Airflow refuses (ValueError, every provider lost) a package-name that is not the distribution's
    assert info["package-name"] == canonicalize_name(project["name"])
    assert project["entry-points"]["apache_airflow_provider"] == {"provider_info": ENTRY_POINT}
    assert {c["connection-type"]: c["hook-class-name"] for c in info["connection-types"]} == {
        ct: hook for ct, (hook, _, _) in EXPECTED.items()}


@pytest.mark.parametrize("conn_type", sorted(EXPECTED))
def test_hooks_agree_with_the_provider_info(conn_type):
    entry = next(c for c in _provider_info()["connection-types"] if c["connection-type"] == conn_type)
    hook = _hook_class(entry["hook-class-name"])
    assert (hook.conn_type, hook.hook_name) == (conn_type, entry["hook-name"])
    # one source for the form: Airflow 3.2+ ignores (and deprecates) these once provider info has them
    assert "get_ui_field_behaviour" not in hook.__dict__
    assert "get_connection_form_widgets" not in hook.__dict__


def test_installed_distribution_declares_the_entry_point():
    eps = [ep for ep in metadata.entry_points(group="apache_airflow_provider")
           if ep.dist is not None and canonicalize_name(ep.dist.name) == "musicrec"]
    assert [ep.value for ep in eps] == [ENTRY_POINT], (
        "the installed musicrec distribution lacks the provider entry point: re-install it (make install)")


def test_providers_manager_lists_the_connection_types():
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    pm, runtime = ProvidersManager(), ProvidersManagerTaskRuntime()
    assert "musicrec" in pm.providers
    for conn_type, (hook_class, hidden, fields) in EXPECTED.items():
        hook = pm.hooks[conn_type]  # imports the hook class, as a test-connection does
        assert hook is not None, conn_type
        assert (hook.hook_class_name, hook.connection_type, hook.package_name) == (hook_class, conn_type, "musicrec")
        assert hook.connection_testable
        assert set(pm.field_behaviours[conn_type]["hidden_fields"]) == hidden
        # the workers' side (task SDK): Connection.get_hook in a task resolves through this one
        runtime_hook = runtime.hooks[conn_type]
        assert (runtime_hook.hook_class_name, runtime_hook.connection_type) == (hook_class, conn_type)
        prefix = f"extra__{conn_type}__"
        assert {k[len(prefix):] for k in pm.connection_form_widgets if k.startswith(prefix)} == fields


def test_hook_meta_serves_the_connection_form():
    """What ``GET /ui/connections/hook_meta`` returns: the providers' types and the project's, with fields."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    metas = {m.connection_type: m for m in HookMetaService.hook_meta_data()}
    assert {"http", "mongo", "qdrant", *EXPECTED} <= set(metas)
    for conn_type, (hook_class, hidden, fields) in EXPECTED.items():
        meta = metas[conn_type]
        assert meta.hook_class_name == hook_class
        assert set(meta.extra_fields) == fields
        standard = meta.standard_fields.model_dump()
        assert {name for name, f in standard.items() if f and f["hidden"]} == {
            "url_schema" if h == "schema" else h for h in hidden}
    assert metas["milvus"].standard_fields.password.title == "Token"
    assert metas["lrclib"].standard_fields.host.title == "Base URL"
    assert metas["lrclib"].extra_fields["concurrency"]["schema"]["type"] == ["integer", "null"]


def test_connection_of_a_new_type_builds_its_hook():
    from airflow.models.connection import Connection

    from musicrec_airflow.hooks.embedding import EmbeddingHook
    from musicrec_airflow.hooks.lrclib import LrclibHook

    assert isinstance(Connection(conn_id="lrclib_x", conn_type="lrclib", host="https://lrclib.net").get_hook(),
                      LrclibHook)
    assert isinstance(Connection(conn_id="embedding_x", conn_type="musicrec_embedding").get_hook(), EmbeddingHook)


def _form_values(conn_type: str) -> dict:
    """One value per extra field the form offers, as the form saves them (typed JSON)."""
    samples = {"string": "form-value", "number": 1.5, "integer": 3}
    entry = next(c for c in _provider_info()["connection-types"] if c["connection-type"] == conn_type)
    return {name: samples[f["schema"]["type"][0]] for name, f in entry["conn-fields"].items()}


@pytest.mark.parametrize("old_type", ["lrclib", "http"])
def test_lrclib_form_fields_reach_the_hook(monkeypatch, old_type):
    """Every field of the form is read; the old ``http`` definitions keep working."""
    from musicrec_airflow.hooks.lrclib import LrclibHook

    extra = _form_values("lrclib")
    monkeypatch.setenv("AIRFLOW_CONN_LRCLIB_FORM", json.dumps(
        {"conn_type": old_type, "host": "https://lyrics.example", "extra": extra}))
    assert LrclibHook("lrclib_form").settings() == {
        "base_url": "https://lyrics.example/api", "user_agent": "form-value",
        "rate_per_s": 1.5, "concurrency": 3, "timeout_s": 1.5}


def test_embedding_and_milvus_form_fields_reach_the_hooks(monkeypatch):
    from musicrec_airflow.hooks.embedding import EmbeddingHook
    from musicrec_airflow.hooks.milvus import MilvusHook

    monkeypatch.setenv("AIRFLOW_CONN_EMBEDDING_FORM", json.dumps(
        {"conn_type": "musicrec_embedding", "extra": _form_values("musicrec_embedding")}))
    assert EmbeddingHook("embedding_form").settings() == {
        "model": "form-value", "device": "form-value", "max_length": 3, "bge_m3_path": "form-value"}
    monkeypatch.setenv("AIRFLOW_CONN_MILVUS_FORM", json.dumps(
        {"conn_type": "milvus", "password": "tok", "schema": "db1", "extra": _form_values("milvus")}))
    assert MilvusHook("milvus_form").client_kwargs() == {
        "uri": "form-value", "token": "tok", "db_name": "db1", "timeout": 1.5}


def test_plugins_folder_loads_the_plugin_once_and_no_module_twice():
    """The package is imported by name (entry point, DAGs); the plugins-folder loader must not import
    its modules a second time as top-level ``milvus``, ``lake``, ``provider_info``... (plugins/.airflowignore)."""
    from airflow._shared.plugins_manager.plugins_manager import _load_plugins_from_plugin_directory

    folder = REPO / "plugins"
    plugins, errors = _load_plugins_from_plugin_directory(str(folder))
    assert errors == {}
    assert [(p.name, str(p.source)) for p in plugins] == [("musicrec", "$PLUGINS_FOLDER/musicrec_airflow/plugin.py")]
    stems = {p.stem for p in (folder / "musicrec_airflow").rglob("*.py")} - {"plugin"}
    loaded_twice = sorted(s for s in stems
                          if folder in Path(getattr(sys.modules.get(s), "__file__", None) or "/").parents)
    assert loaded_twice == []


def test_image_installs_the_distribution_with_its_entry_point():
    """PYTHONPATH alone imports the code but declares no entry point: the image must pip-install the project."""
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(r"pip install [^\n]*--no-deps -e /opt/airflow\b", text)
    assert ENTRY_POINT in text  # the build fails if the installed metadata lacks it
