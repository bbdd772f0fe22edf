"""MongoDB through the official provider's ``MongoHook`` (conn type ``mongo``, db = the conn schema)."""

from __future__ import annotations

from airflow.providers.mongo.hooks.mongo import MongoHook
from pymongo.database import Database

DEFAULT_DB = "musicrec"


def mongo_database(conn_id: str = "mongo_default") -> Database:
    hook = MongoHook(mongo_conn_id=conn_id)
    return hook.get_conn()[hook.connection.schema or DEFAULT_DB]
