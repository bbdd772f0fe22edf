"""The ``/musicrec`` app: Models, Store audit and Lyrics pages, the run tabs, and a JSON twin of each.

Plugin apps are mounted without auth, so every route carries Airflow's own dependencies
(``airflow.api_fastapi.core_api.security``): a signed-in user (``Authorization: Bearer`` or the UI's
``_token`` cookie, which the UI's iframe sends) with read access to the DAG the page is about — no
credential → 401, a user without that access → 403. The pages render server side with autoescaping
templates; the only script is the Models page's roll-back button, which calls Airflow's own REST API
(``POST /api/v2/dags/als_rollback/dagRuns``) with the same cookie, so the run is authorized and
audited as the user's like any trigger from the UI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from musicrec import views
from musicrec_airflow.ui import charts
from musicrec_airflow.ui import sources as src_mod
from musicrec_airflow.ui.sources import ALS_DAG, AUDIT_DAG, LYRICS_DAG, Sources, get_sources

ROLLBACK_DAG = "als_rollback"
PREFIX = "/musicrec"

templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(default=True, default_for_string=True))

SourcesDep = Annotated[Sources, Depends(get_sources)]


def _read(dag_id: str) -> list[Any]:
    """Read access to ``dag_id`` (the page's subject)."""
    return [Depends(requires_access_dag(method="GET", param_dag_id=dag_id))]


# run tabs: the DAG comes from the query (``?dag_id=``), which requires_access_dag reads itself
RUN_READ = [Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))]


def _run_id(run_id: str) -> str:
    # the UI fills {RUN_ID} into the tab's href unencoded: the '+' of '+00:00' arrives as a space
    return run_id.replace(" ", "+")


def _api_base(request: Request) -> str:
    """Airflow's root path as the browser sees it (the app is mounted at ``<root>/musicrec``)."""
    return request.scope.get("root_path", "").removesuffix(PREFIX)


def _page(name: str, request: Request, **ctx: Any) -> HTMLResponse:
    html = templates.get_template(name).render(base=_api_base(request), prefix=_api_base(request) + PREFIX, **ctx)
    return HTMLResponse(html)


def create_app() -> FastAPI:
    app = FastAPI(title="musicrec pages", docs_url=None, redoc_url=None, openapi_url=None)

    # ------------------------------------------------------------------ models
    def models_data(src: Sources) -> dict[str, Any]:
        return views.als_models(src.db, src.store) | {"store_error": src.store_error, "rollback_dag": ROLLBACK_DAG}

    @app.get("/api/models", dependencies=_read(ALS_DAG))
    def api_models(src: SourcesDep) -> JSONResponse:
        return JSONResponse(models_data(src))

    @app.get("/models", response_class=HTMLResponse, dependencies=_read(ALS_DAG))
    def models_page(request: Request, src: SourcesDep) -> HTMLResponse:
        data = models_data(src)
        chart = charts.line_chart([c["version"] for c in data["chart"]],
                                  {"ALS": [c["als"] for c in data["chart"]],
                                   "popularity": [c["popularity"] for c in data["chart"]]},
                                  title="ndcg@10 of ALS and popularity per version")
        return _page("models.html", request, data=data, chart=chart)

    def model_run_data(src: Sources, dag_id: str, run_id: str) -> dict[str, Any]:
        run_id = _run_id(run_id)
        if dag_id != ALS_DAG:
            return {"dag_id": dag_id, "run_id": run_id, "model": None,
                    "message": f"This tab shows the model of {ALS_DAG} runs; {dag_id} is another DAG."}
        version = src_mod.trained_version(run_id)
        model = views.model_of_run(src.db, run_id, src.store, version=version)
        return {"dag_id": dag_id, "run_id": run_id, "model": model,
                "message": None if model else "This run has not trained a model (yet)."}

    @app.get("/api/models/run", dependencies=RUN_READ)
    def api_model_run(src: SourcesDep, dag_id: str = Query(...), run_id: str = Query(...)) -> JSONResponse:
        return JSONResponse(model_run_data(src, dag_id, run_id))

    @app.get("/models/run", response_class=HTMLResponse, dependencies=RUN_READ)
    def model_run_page(request: Request, src: SourcesDep, dag_id: str = Query(...),
                       run_id: str = Query(...)) -> HTMLResponse:
        return _page("model_run.html", request, data=model_run_data(src, dag_id, run_id))

    # ------------------------------------------------------------------ store audit
    @app.get("/api/audits", dependencies=_read(AUDIT_DAG))
    def api_audits(src: SourcesDep) -> JSONResponse:
        return JSONResponse(views.audits(src.root, src.db))

    @app.get("/audits", response_class=HTMLResponse, dependencies=_read(AUDIT_DAG))
    def audits_page(request: Request, src: SourcesDep) -> HTMLResponse:
        data = views.audits(src.root, src.db)
        chart = charts.line_chart([t["at"][:16] if t["at"] else t["run_id"] for t in data["trend"]],
                                  {"findings": [t["findings"] for t in data["trend"]],
                                   "open after repair": [t["remaining"] for t in data["trend"]]},
                                  title="store audit findings per run", fmt="{:.0f}", integer=True)
        return _page("audits.html", request, data=data, chart=chart, dag_id=AUDIT_DAG)

    def audit_run_data(src: Sources, dag_id: str, run_id: str) -> dict[str, Any]:
        run_id = _run_id(run_id)
        if dag_id != AUDIT_DAG:
            return {"dag_id": dag_id, "run_id": run_id, "report": None,
                    "message": f"This tab shows the report of {AUDIT_DAG} runs; {dag_id} is another DAG."}
        try:
            report = views.audit_report(src.root, run_id)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return {"dag_id": dag_id, "run_id": run_id, "report": report,
                "message": None if report else "No report for this run (yet): its report task has not run."}

    @app.get("/api/audits/run", dependencies=RUN_READ)
    def api_audit_run(src: SourcesDep, dag_id: str = Query(...), run_id: str = Query(...)) -> JSONResponse:
        return JSONResponse(audit_run_data(src, dag_id, run_id))

    @app.get("/audits/run", response_class=HTMLResponse, dependencies=RUN_READ)
    def audit_run_page(request: Request, src: SourcesDep, dag_id: str = Query(...),
                       run_id: str = Query(...)) -> HTMLResponse:
        return _page("audit_run.html", request, data=audit_run_data(src, dag_id, run_id))

    # ------------------------------------------------------------------ lyrics
    def lyrics_data(src: Sources) -> dict[str, Any]:
        chunks = src_mod.lyrics_chunks()
        return views.lyrics(src.db, views.merge_runs(chunks) if chunks is not None else None)

    @app.get("/api/lyrics", dependencies=_read(LYRICS_DAG))
    def api_lyrics(src: SourcesDep) -> JSONResponse:
        return JSONResponse(lyrics_data(src))

    @app.get("/lyrics", response_class=HTMLResponse, dependencies=_read(LYRICS_DAG))
    def lyrics_page(request: Request, src: SourcesDep) -> HTMLResponse:
        data = lyrics_data(src)
        chart = charts.bar_chart(data["counts"], title="songs per lyrics status")
        return _page("lyrics.html", request, data=data, chart=chart)

    return app


app = create_app()
