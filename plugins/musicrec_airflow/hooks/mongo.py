"""MongoDB through the official provider's ``MongoHook`` (conn type ``mongo``, db = the conn schema);
the database handle comes from the factory ``musicrec.stores``."""

from __future__ import annotations

from airflow.providers.mongo.hooks.mongo import MongoHook
from pymongo.database import Database

from musicrec import stores

DEFAULT_DB = stores.DEFAULT_DB


def mongo_database(conn_id: str = "mongo_default") -> Database:
    hook = MongoHook(mongo_conn_id=conn_id)
    return stores.mongo_database(hook.get_conn(), hook.connection.schema or DEFAULT_DB)
