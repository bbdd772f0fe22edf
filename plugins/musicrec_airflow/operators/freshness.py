"""Thin operator of ``user_refresh`` (issue 18): fold users' new listens into the active model."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException

from musicrec.als import foldin
from musicrec.events import stream
from musicrec_airflow.lake import lake_root
from musicrec_airflow.operators.base import MongoStep
from musicrec_airflow.params import string_list
from musicrec_airflow.triggers.mongo_change_stream import triggering_extras


class FoldInUsersOperator(MongoStep):
    """New vectors for the users named by the triggering change-stream events (or the ``user_ids``
    param, or every user with events received in the last ``since_hours``) in the active ALS model,
    under ``users.latent_vectors.<active version>``. Skips when no ALS model is active.

    :param changes_stream: the change stream whose asset events name the users (``listen_users``).
    :param user_ids: users to refresh in a manual run (JSON list or comma-separated); empty = by time.
    :param since_hours: without events or ``user_ids``: users with events received this recently.
    :param mongo_conn_id: the MongoDB connection (:class:`MongoStep`).
    """

    template_fields: Sequence[str] = ("user_ids", "since_hours")

    def __init__(self, *, changes_stream: str, user_ids: Any = "", since_hours: float | str = 24,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.changes_stream = changes_stream
        self.user_ids = user_ids
        self.since_hours = since_hours

    def execute(self, context: Any) -> dict[str, Any]:
        ids = stream.watched_ids(self.db, triggering_extras(context), self.changes_stream)
        if ids is None and string_list(self.user_ids):
            ids = string_list(self.user_ids)
        since = datetime.now(UTC) - timedelta(hours=float(self.since_hours))
        try:
            return foldin.refresh(self.db, lake_root(), ids, since=since)
        except foldin.NoActiveModel as exc:
            raise AirflowSkipException(str(exc)) from None
