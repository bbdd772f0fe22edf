"""lyrics_embeddings: changed lyrics → embeddings → Milvus (hybrid: dense, sparse, BM25) + Qdrant mirror.

Runs when ``mongo_lyrics`` is updated, and within seconds of an edit of a song's title, artist or plain
lyrics in Mongo (the ``mongo_songs_text_changes`` change stream, issue 18): such a run embeds exactly the
songs the triggering events name (events that arrive during a run are served by the next run); any
other run scans for every changed song (the safety net). ``embed`` (pool ``gpu``, the GPU queue) encodes the songs with
found lyrics whose ``songs.embedding`` (model id, lyrics hash) differs from the current model and
lyrics — unchanged lyrics are never re-embedded, edited ones always are — into delta parts
``embeddings/<model_slug>/run=<run_id>/part-*.parquet`` (registered). Then: ``milvus_upsert`` into
``lyrics_embeddings_<model_slug>`` (a dense-index change on the live collection goes to a new physical
``lyrics_embeddings_<model_slug>_ix<hex>``, filled with every current vector) → ``milvus_index`` (dense HNSW/IP, sparse inverted/IP, BM25 on
``text_bm25``; each checked as really built) → ``qdrant_mirror`` → ``activate`` (models document,
alias ``lyrics_embeddings`` in Milvus and Qdrant; a new model or a new index = a new collection behind
the alias, a new index checked by recall first) →
``stamp`` (``songs.embedding``) → ``prune`` (songs whose lyrics are gone leave both stores; emits
``milvus_lyrics_embeddings``). A second run embeds and writes nothing; a retried ``embed`` resumes
from the parts it wrote.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from musicrec import settings
from musicrec.embeddings.encoder import DEFAULT_MODEL
from musicrec_airflow.assets import (
    MILVUS_LYRICS_EMBEDDINGS,
    MONGO_LYRICS,
    MONGO_SONGS_TEXT_CHANGES,
    SONGS_TEXT_STREAM,
)
from musicrec_airflow.defaults import POOL_GPU, POOL_QDRANT_LOCAL, default_args
from musicrec_airflow.operators.embeddings import (
    EmbedLyricsOperator,
    LyricsActivateOperator,
    LyricsMilvusIndexOperator,
    LyricsMilvusUpsertOperator,
    LyricsPruneOperator,
    LyricsQdrantMirrorOperator,
    LyricsStampOperator,
)

EMBED = "{{ ti.xcom_pull(task_ids='embed')"

with DAG(
    dag_id="lyrics_embeddings",
    description="Embed changed lyrics into the hybrid Milvus collection and the Qdrant mirror",
    # lyrics_enrichment's updates, or a change stream on songs (title/artist/lyrics edits): a run
    # triggered only by the stream embeds exactly the songs its events name
    schedule=(MONGO_LYRICS | MONGO_SONGS_TEXT_CHANGES),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["musicrec", "lyrics", "embeddings", "milvus", "qdrant", "gpu"],
    params={
        "model": Param(DEFAULT_MODEL, type="string",
                       description="minilm | bge-m3 | bge-m3:<dir> | a local sentence-transformers directory"),
        "batch_size": Param(32, type="integer", minimum=1, maximum=4096, description="texts per forward pass"),
        "device": Param("auto", type="string", description="auto (CUDA when present) | cpu | cuda | cuda:N"),
        "max_length": Param(0, type="integer", minimum=0, maximum=8192,
                            description="tokens per text (0 = the model's: 256 MiniLM, 512 BGE-M3)"),
        "max_songs": Param(0, type="integer", minimum=0, description="embed at most this many (0 = all)"),
        "part_size": Param(1024, type="integer", minimum=16, maximum=100000,
                           description="songs per delta file (the unit a retried embed resumes from)"),
        "index_type": Param("HNSW", type="string", description="dense index type"),
        "index_params": Param('{"M": 16, "efConstruction": 200}', type="string", description="JSON"),
    },
    doc_md=__doc__,
) as dag:
    embed = EmbedLyricsOperator(task_id="embed", model="{{ params.model }}", batch_size="{{ params.batch_size }}",
                                device="{{ params.device }}", max_length="{{ params.max_length }}",
                                max_songs="{{ params.max_songs }}", part_size="{{ params.part_size }}",
                                changes_stream=SONGS_TEXT_STREAM, pool=POOL_GPU, queue=settings.gpu_queue())
    milvus_upsert = LyricsMilvusUpsertOperator(task_id="milvus_upsert", collection=EMBED + "['collection'] }}",
                                               upstream_task_id="embed", index_type="{{ params.index_type }}",
                                               index_params="{{ params.index_params }}")
    milvus_index = LyricsMilvusIndexOperator(task_id="milvus_index",
                                             collection="{{ ti.xcom_pull(task_ids='milvus_upsert')['collection'] }}",
                                             index_type="{{ params.index_type }}", metric_type="IP",
                                             index_params="{{ params.index_params }}")
    qdrant = LyricsQdrantMirrorOperator(task_id="qdrant_mirror", pool=POOL_QDRANT_LOCAL)
    activate = LyricsActivateOperator(task_id="activate", pool=POOL_QDRANT_LOCAL)
    stamp = LyricsStampOperator(task_id="stamp")
    prune = LyricsPruneOperator(task_id="prune", pool=POOL_QDRANT_LOCAL, outlets=[MILVUS_LYRICS_EMBEDDINGS])
    embed >> milvus_upsert >> milvus_index >> qdrant >> activate >> stamp >> prune
