"""The AirflowPlugin: the ``/musicrec`` pages inside the Airflow UI (issue 17, design §8).

* ``fastapi_apps``: ``musicrec_airflow.ui.app`` mounted at ``/musicrec`` on the API server (every route
  behind Airflow's own auth dependencies, see that module);
* ``external_views``: nav entries *Models*, *Store audit*, *Lyrics*, and a tab on every DAG run page
  (the UI has no per-DAG filter for tabs: on other DAGs' runs the page says so) for the
  ``als_training`` model and the ``store_audit`` report. ``url_route`` makes the UI open each one in
  its own frame; ``{DAG_ID}``/``{RUN_ID}`` are filled in by the UI.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from musicrec_airflow.ui.app import PREFIX, app

CATEGORY = "musicrec"

EXTERNAL_VIEWS = [
    {"name": "Models", "href": f"{PREFIX}/models", "destination": "nav", "url_route": "musicrec-models",
     "category": CATEGORY},
    {"name": "Store audit", "href": f"{PREFIX}/audits", "destination": "nav", "url_route": "musicrec-audit",
     "category": CATEGORY},
    {"name": "Lyrics", "href": f"{PREFIX}/lyrics", "destination": "nav", "url_route": "musicrec-lyrics",
     "category": CATEGORY},
    {"name": "Model", "href": f"{PREFIX}/models/run?dag_id={{DAG_ID}}&run_id={{RUN_ID}}", "destination": "dag_run",
     "url_route": "musicrec-model-run"},
    {"name": "Audit report", "href": f"{PREFIX}/audits/run?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
     "destination": "dag_run", "url_route": "musicrec-audit-run"},
]


class MusicrecPlugin(AirflowPlugin):
    name = "musicrec"
    fastapi_apps = [{"app": app, "url_prefix": PREFIX, "name": "musicrec pages"}]
    external_views = EXTERNAL_VIEWS
