"""The plugin's pages inside the Airflow UI (issue 17): a FastAPI app mounted at ``/musicrec`` by
``musicrec_airflow.plugin``, server-side HTML (Jinja2, autoescaped) with inline SVG charts, and a JSON
twin of each page under ``/musicrec/api``. The read models are ``musicrec.views``."""
