"""Every Asset of the project (design §5), defined once."""

from airflow.sdk import Asset

LAKE_LISTENS = Asset(name="lake_listens", uri="musicrec://lake/listens", group="musicrec")
MONGO_SONGS = Asset(name="mongo_songs", uri="musicrec://mongo/songs", group="musicrec")
MONGO_LYRICS = Asset(name="mongo_lyrics", uri="musicrec://mongo/lyrics", group="musicrec")
MILVUS_MUSIC_COLLECTION = Asset(name="milvus_music_collection", uri="musicrec://milvus/music_collection",
                                group="musicrec")
MILVUS_LYRICS_EMBEDDINGS = Asset(name="milvus_lyrics_embeddings", uri="musicrec://milvus/lyrics_embeddings",
                                 group="musicrec")
