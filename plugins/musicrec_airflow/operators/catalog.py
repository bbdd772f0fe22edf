"""Thin operator of ``catalog_sync``: resolve the anchor and delegate to ``musicrec.catalog.sync``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from musicrec.catalog import sync
from musicrec_airflow.anchor import run_anchor
from musicrec_airflow.lake import lake_root
from musicrec_airflow.operators.base import MongoStep
from musicrec_airflow.params import truthy


class CatalogSyncOperator(MongoStep):
    """Upserts ``songs``/``users`` and recomputes their counters for the run's anchor.

    :param trending_days: the window of the trending counters, in days.
    :param force: let a run older than a song's ``catalog_as_of`` (a backfill) overwrite its counters
        (bool or rendered text).
    :param mongo_conn_id: the MongoDB connection (:class:`MongoStep`).
    """

    template_fields: Sequence[str] = ("trending_days", "force")

    def __init__(self, *, trending_days: int | str = 7, force: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trending_days = trending_days
        self.force = force

    def execute(self, context: Any) -> dict[str, Any]:
        db = self.db
        anchor = run_anchor(context, db)
        force = truthy(self.force)
        self.log.info("catalog sync as of %s (trending_days=%s, force=%s)", anchor, self.trending_days, force)
        result = sync.sync_catalog(lake_root(), db, anchor, trending_days=int(self.trending_days), force=force)
        return result.as_dict()
