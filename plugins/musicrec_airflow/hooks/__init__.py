from musicrec_airflow.hooks.milvus import MilvusHook
from musicrec_airflow.hooks.mongo import mongo_database
from musicrec_airflow.hooks.qdrant import QdrantLocalHook

__all__ = ["MilvusHook", "QdrantLocalHook", "mongo_database"]
