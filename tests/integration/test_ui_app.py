"""The ``/musicrec`` pages (issue 17) inside Airflow's own API app (``create_app``: the plugin is loaded
from the plugins folder by Airflow's plugin manager) with Airflow's own auth manager and tokens: no
token → 401, a user without a role → 403, a viewer/admin → 200; the pages render what the test put in
Mongo and the lake, escaped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from upath import UPath

from musicrec.als.params import collection_name
from tests import ui_data

pytestmark = pytest.mark.integration

EVIL = "<script>alert(1)</script>"
PAGES = ["/musicrec/models", "/musicrec/api/models", "/musicrec/audits", "/musicrec/api/audits", "/musicrec/lyrics",
         "/musicrec/api/lyrics", "/musicrec/models/run?dag_id=als_training&run_id=x",
         "/musicrec/api/models/run?dag_id=als_training&run_id=x",
         "/musicrec/audits/run?dag_id=store_audit&run_id=x", "/musicrec/api/audits/run?dag_id=store_audit&run_id=x"]


@pytest.fixture(scope="module")
def airflow_app(airflow_db):
    from airflow.api_fastapi.app import create_app, purge_cached_app

    app = create_app("core")
    yield app
    purge_cached_app()


@pytest.fixture
def client(airflow_app, mongo_db, tmp_path):
    """Airflow's app with the pages' stores pointed at this test's database, lake and an in-memory
    vector store (the one FastAPI dependency the pages read their clients from)."""
    from fastapi.testclient import TestClient

    from musicrec_airflow.ui import app as ui_app
    from musicrec_airflow.ui.sources import Sources, get_sources

    ui_data.register_memory()
    store = ui_data.memory_store_of("ui")
    lake = tmp_path / "lake"
    sources = Sources(db=mongo_db, root=UPath(lake), store=store)
    ui_app.app.dependency_overrides[get_sources] = lambda: sources
    try:
        with TestClient(airflow_app) as c:
            c.sources, c.lake = sources, lake
            yield c
    finally:
        ui_app.app.dependency_overrides.clear()
        ui_data.unregister_memory()


def token(role: str | None, name: str = "someone") -> dict[str, str]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    jwt = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=name, role=role))
    return {"Authorization": f"Bearer {jwt}"}


def test_the_plugin_shows_its_views_on_the_plugins_page(client):
    """Airflow's own ``/api/v2/plugins`` (the UI's Plugins page and navigation read it)."""
    plugins = client.get("/api/v2/plugins", headers=token("admin", "admin")).json()["plugins"]
    plugin = next(p for p in plugins if p["name"] == "musicrec")
    views = {v["name"]: v for v in plugin["external_views"]}
    assert {n for n, v in views.items() if v["destination"] == "nav"} == {"Models", "Store audit", "Lyrics"}
    assert {v["href"] for v in views.values() if v["destination"] == "dag_run"} == {
        "/musicrec/models/run?dag_id={DAG_ID}&run_id={RUN_ID}", "/musicrec/audits/run?dag_id={DAG_ID}&run_id={RUN_ID}"}
    assert all(v.get("url_route") for v in plugin["external_views"])
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/musicrec"]


@pytest.mark.parametrize("path", PAGES)
def test_every_route_needs_an_authorized_user(client, path):
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer not-a-jwt"}).status_code in (401, 403)
    assert client.get(path, headers=token(None)).status_code == 403  # signed in, no role: no DAG access
    assert client.get(path, headers=token("viewer")).status_code == 200
    # the UI's iframe authenticates with the session cookie
    jwt = token("admin")["Authorization"].removeprefix("Bearer ")
    client.cookies.set("_token", jwt)
    try:
        assert client.get(path).status_code == 200
    finally:
        client.cookies.clear()


def test_models_page_renders_the_data_escaped(client):
    db, store = client.sources.db, client.sources.store
    ui_data.publish_two(db, client.sources.root, client.lake, store, title=EVIL)
    ui_data.embedding_model(db)
    # untrusted text in a model document (a backend name written by some other tool) comes out escaped
    db["models"].update_one({"_id": ui_data.OLD}, {"$set": {"backend.used": EVIL}})
    admin = token("admin", "admin")

    data = client.get("/musicrec/api/models", headers=admin).json()
    assert data["active"] == ui_data.NEW and data["retained"] == [ui_data.OLD]
    assert data["alias"]["target"] == collection_name(ui_data.NEW)

    page = client.get("/musicrec/models", headers=admin).text
    assert 'id="active-version">' + ui_data.NEW in page
    assert f'data-version="{ui_data.OLD}" data-state="retained"' in page
    assert f'<button class="rollback" data-version="{ui_data.OLD}">' in page  # only the retained one
    assert page.count('class="rollback"') == 1
    # the chart: one point per version and series, with the numbers
    assert page.count('class="point"') == 4 and 'data-series="ALS" data-value="0.09"' in page
    assert "tiny-bge" in page
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page

    run = client.get(f"/musicrec/models/run?dag_id=als_training&run_id=manual__{ui_data.OLD}", headers=admin)
    assert run.status_code == 200 and f"<code>{ui_data.OLD}</code>" in run.text and EVIL not in run.text
    other = client.get("/musicrec/api/models/run?dag_id=store_audit&run_id=x", headers=admin).json()
    assert other["model"] is None and "another DAG" in other["message"]


def test_audit_pages_render_the_report_escaped(client):
    root = client.sources.root
    run_id = "scheduled__2026-12-01T00:00:00+00:00"
    ui_data.audit_run(root, run_id, findings=2, title=EVIL)
    admin = token("admin", "admin")
    listing = client.get("/musicrec/audits", headers=admin).text
    assert run_id in listing and EVIL not in listing and "&lt;script&gt;" in listing
    assert "2 open findings" in listing
    # the UI fills {RUN_ID} in unencoded: '+' arrives as a space and is read back as '+'
    tab = client.get("/musicrec/audits/run?dag_id=store_audit&run_id=scheduled__2026-12-01T00:00:00+00:00",
                     headers=admin)
    assert tab.status_code == 200 and "2 open findings" in tab.text and "t0, t1" in tab.text
    assert EVIL not in tab.text and "&lt;script&gt;" in tab.text
    js = client.get("/musicrec/api/audits/run", params={"dag_id": "store_audit", "run_id": run_id}, headers=admin)
    assert js.json()["report"]["findings"] == 2
    assert client.get("/musicrec/audits/run?dag_id=store_audit&run_id=..", headers=admin).status_code == 400


def test_lyrics_page(client):
    ui_data.lyrics_songs(client.sources.db, datetime.now(UTC))
    admin = token("admin", "admin")
    data = client.get("/musicrec/api/lyrics", headers=admin).json()
    assert data["counts"]["error"] == 3 and data["counts"]["found"] == 4
    page = client.get("/musicrec/lyrics", headers=admin).text
    assert "&lt;b&gt;err 0&lt;/b&gt;" in page and "<b>err 0</b>" not in page and "no more tries" in page
