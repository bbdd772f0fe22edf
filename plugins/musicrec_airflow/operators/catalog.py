"""Thin operator of ``catalog_sync``: resolve the anchor and delegate to ``musicrec.catalog.sync``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from musicrec.catalog import sync
from musicrec_airflow.anchor import run_anchor
from musicrec_airflow.hooks.mongo import mongo_database
from musicrec_airflow.lake import lake_root
from musicrec_airflow.params import truthy


class CatalogSyncOperator(BaseOperator):
    """Upserts ``songs``/``users`` and recomputes their counters for the run's anchor."""

    template_fields: Sequence[str] = ("trending_days", "force")

    def __init__(self, *, trending_days: int | str = 7, force: bool | str = False,
                 mongo_conn_id: str = "mongo_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trending_days = trending_days
        self.force = force
        self.mongo_conn_id = mongo_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        db = mongo_database(self.mongo_conn_id)
        anchor = run_anchor(context, db)
        force = truthy(self.force)
        self.log.info("catalog sync as of %s (trending_days=%s, force=%s)", anchor, self.trending_days, force)
        result = sync.sync_catalog(lake_root(), db, anchor, trending_days=int(self.trending_days), force=force)
        return result.as_dict()
