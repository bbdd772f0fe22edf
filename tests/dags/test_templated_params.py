"""The operators take every input as a templated argument: the DAGs' ``{{ params.x }}`` must render to
values that give the operators exactly what the params held (ints, floats, bools, JSON, lists)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from musicrec.als.params import AlsParams

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


def load_dag(name: str):
    spec = importlib.util.spec_from_file_location(f"_dag_{name}", DAGS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def rendered(name: str, task_id: str, **conf):
    """The task of a freshly parsed DAG (rendering changes the task in place) with its template fields
    rendered against the DAG's params (+ ``conf``)."""
    dag = load_dag(name)
    task = dag.get_task(task_id)
    params = {k: dag.params[k] for k in dag.params} | conf
    task.render_template_fields({"params": params})
    return task


@pytest.mark.parametrize("conf", [{}, {"factors": 8, "alpha": 3, "weight_skip": -0.5, "confidence": "log",
                                       "regularization": 0.25, "window_days": 30, "eval_days": 3}])
def test_als_train_gets_the_params(conf):
    dag = load_dag("als_training")
    params = {k: dag.params[k] for k in dag.params} | conf
    old = AlsParams.from_conf(params | {"weights": {a: params[f"weight_{a}"] for a in ("complete", "listen", "skip")}})
    task = rendered("als_training", "train", **conf)
    assert task.als_params() == old
    assert task.als_params().digest() == old.digest()  # the version name does not change
    assert task.backend == "auto"


def test_als_gate_and_index_get_the_params():
    from musicrec_airflow.operators.als import index_spec
    from musicrec_airflow.params import truthy

    gate = rendered("als_training", "gate", force=True, min_lift=1.5)
    assert (float(gate.min_lift), float(gate.tolerance), truthy(gate.force)) == (1.5, 0.02, True)
    assert truthy(rendered("als_training", "gate").force) is False
    upsert = rendered("als_training", "milvus_upsert")
    spec = index_spec(upsert.index_type, upsert.index_params)
    assert (spec.index_type, spec.metric_type, spec.params) == ("HNSW", "IP", {"M": 16, "efConstruction": 200})
    wait = rendered("als_training", "wait_for_listens", wait_for_daily=False, wait_timeout_hours=0.5)
    assert (truthy(wait.wait_for_daily), float(wait.wait_timeout_hours)) == (False, 0.5)


def test_store_audit_gets_the_params():
    from musicrec_airflow.operators.audit import audit_mode, selected_scopes
    from musicrec_airflow.params import truthy

    task = rendered("store_audit", "audit_als")
    assert selected_scopes(task.scopes) == ["lake", "als", "lyrics"]
    assert audit_mode(task.mode) == "audit"
    assert (float(task.grace_minutes), int(task.examples), truthy(task.lake_checksums), int(task.batch_size)) == \
        (60.0, 20, True, 500)
    task = rendered("store_audit", "audit_lyrics", scopes=["als"], mode="plan", lake_checksums=False, grace_minutes=1.5)
    assert selected_scopes(task.scopes) == ["als"] and audit_mode(task.mode) == "plan"
    assert (float(task.grace_minutes), truthy(task.lake_checksums)) == (1.5, False)
    assert selected_scopes(rendered("store_audit", "report", scopes=[]).scopes) == ["lake", "als", "lyrics"]
    assert int(rendered("store_audit", "check", max_findings=3).max_findings) == 3
