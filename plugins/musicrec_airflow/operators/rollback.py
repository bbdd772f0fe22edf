"""The thin operator of ``als_rollback``: one call to ``musicrec.als.rollback``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from musicrec.als import rollback
from musicrec_airflow.lake import lake_root
from musicrec_airflow.operators.base import StoreStep
from musicrec_airflow.params import truthy


class AlsRollbackOperator(StoreStep):
    """Serve a retained ALS version again: check it (collection in every store, artifacts, the audit's ALS
    scope), then the alias swap and activation of a publish. A refused version fails the task without
    retries (nothing moved; retrying cannot help); a version that already serves skips it (no asset event).
    Runs in pool ``qdrant_local``: the swap moves the Qdrant mirror's alias too.

    :param to_version: the version to serve; empty = the version the active model replaced if retained,
        else the newest retained one.
    :param checksums: hash the version's artifacts against their sha256 (bool or rendered text).
    :param mongo_conn_id: the MongoDB connection.
    :param milvus_conn_id: the Milvus connection (the serving store).
    :param qdrant_conn_id: the Qdrant connection (the mirror).
    :param upstream_task_id: unused (the roll-back reads no upstream XCom).
    :param placement_task_id: unused.
    """

    template_fields: Sequence[str] = ("to_version", "checksums")

    def __init__(self, *, to_version: str | None = "", checksums: bool | str = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.to_version = to_version
        self.checksums = checksums

    def execute(self, context: Any) -> dict[str, Any]:
        try:
            out = rollback.rollback(self.db, lake_root(), self.stores(), str(self.to_version or "").strip() or None,
                                    checksums=truthy(self.checksums))
        except rollback.RollbackRefused as e:
            raise AirflowFailException(f"roll-back refused: {e}") from None
        if not out["changed"]:
            raise AirflowSkipException(f"model {out['version']} already serves: nothing to roll back")
        self.log.info("model %s serves again (was %s)", out["version"], out["previous"])
        return out
