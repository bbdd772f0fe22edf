"""Every Asset of the project (design §5), defined once.

The ``*_CHANGES`` assets are event-driven (issue 18): an ``AssetWatcher`` runs a
:class:`MongoChangeStreamTrigger` in the triggerer, and each debounced batch of changes becomes one
asset event whose payload names the changed ids (or a ``stream_batches`` document holding them).
The stream names are the keys of their resume tokens in ``stream_state``: renaming one starts that
stream from "now".
"""

from airflow.sdk import Asset, AssetWatcher

from musicrec_airflow.triggers.mongo_change_stream import MongoChangeStreamTrigger

LAKE_LISTENS = Asset(name="lake_listens", uri="musicrec://lake/listens", group="musicrec")
MONGO_SONGS = Asset(name="mongo_songs", uri="musicrec://mongo/songs", group="musicrec")
MONGO_LYRICS = Asset(name="mongo_lyrics", uri="musicrec://mongo/lyrics", group="musicrec")
MILVUS_MUSIC_COLLECTION = Asset(name="milvus_music_collection", uri="musicrec://milvus/music_collection",
                                group="musicrec")
MILVUS_LYRICS_EMBEDDINGS = Asset(name="milvus_lyrics_embeddings", uri="musicrec://milvus/lyrics_embeddings",
                                 group="musicrec")

# ----------------------------------------------------------------------------- change streams (issue 18)
# debounce: a batch closes 2 s after the last change, 10 s after its first, or at 1,000 ids
STREAM_TIMING = {"debounce_s": 2.0, "max_wait_s": 10.0, "max_batch": 1000}

SONGS_TEXT_STREAM = "songs_text"  # what the lyrics index holds: title, artist, plain lyrics
MONGO_SONGS_TEXT_CHANGES = Asset(
    name="mongo_songs_text_changes", uri="musicrec://mongo/songs/text_changes", group="musicrec",
    watchers=[AssetWatcher(name="songs_text_changes", trigger=MongoChangeStreamTrigger(
        name=SONGS_TEXT_STREAM, collection="songs", operations=["insert", "update", "replace", "delete"],
        fields=["title", "artist", "lyrics.plain"], **STREAM_TIMING))])

SONGS_NEW_STREAM = "songs_new"  # new songs: queued for lyrics_enrichment
MONGO_SONGS_NEW = Asset(
    name="mongo_songs_new", uri="musicrec://mongo/songs/new", group="musicrec",
    watchers=[AssetWatcher(name="songs_inserted", trigger=MongoChangeStreamTrigger(
        name=SONGS_NEW_STREAM, collection="songs", operations=["insert"], **STREAM_TIMING))])

LISTEN_USERS_STREAM = "listen_users"  # users with new listen events: their vectors are folded in again
MONGO_LISTEN_EVENTS = Asset(
    name="mongo_listen_events", uri="musicrec://mongo/listen_events", group="musicrec",
    watchers=[AssetWatcher(name="listen_events_users", trigger=MongoChangeStreamTrigger(
        name=LISTEN_USERS_STREAM, collection="listen_events", operations=["insert"], key="user_id",
        **STREAM_TIMING))])
