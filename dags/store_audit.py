"""store_audit: cross-store sync audit (and optional repair) of the lake, MongoDB, Milvus and Qdrant.

Daily on a data interval (and manually); deliberately not asset-triggered, so its own repairs cannot
trigger it again. Each scope compares a source of truth (design §4) with the stores that mirror it,
in hash-prefix buckets (count + order-independent checksum; only differing buckets are compared id
by id):

* ``lake``: ``lake_partitions`` + ``models.artifacts`` ↔ the files under the registry-managed prefixes;
* ``als``: the active ALS model's artifacts ↔ Milvus ``music_collection`` ↔ the Qdrant mirror, and
  the users' vectors of the active version (``users.latent_vectors.<version>``);
* ``lyrics``: ``songs.lyrics`` (found) + the active embedding model ↔ Milvus ``lyrics_embeddings`` ↔
  the Qdrant mirror, and ``songs.embedding``.

Param ``mode``: ``audit`` (the default) records the findings; ``repair`` fixes them (re-upserts from
the lake's Parquet, deletes orphans older than ``grace_minutes`` after re-checking the catalog,
re-uploads or flags lake files) and audits again; ``plan`` lists that repair and writes nothing.
``repair`` / ``dry_run`` (the two booleans ``mode`` replaced) are refused when a run's conf gives them. The report goes to
``audit/<run_id>/report.{json,html}``; ``check`` fails when more than ``max_findings`` remain open.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param

from musicrec.audit.run import DEFAULT_MODE, MODES
from musicrec_airflow.defaults import POOL_QDRANT_LOCAL, default_args
from musicrec_airflow.operators.audit import AuditCheckOperator, AuditReportOperator, StoreAuditOperator

with DAG(
    dag_id="store_audit",
    description="Audit (and optionally repair) drift between the lake, MongoDB, Milvus and Qdrant",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["musicrec", "audit", "milvus", "qdrant", "mongo", "lake"],
    params={
        "mode": Param(DEFAULT_MODE, type="string", enum=list(MODES),
                      values_display={"audit": "audit: record the findings",
                                      "plan": "plan: list the repair, write nothing",
                                      "repair": "repair: fix the findings, then audit again"},
                      description="what the run does with its findings"),
        # the two booleans mode replaced: a conf that still sends them fails validation at trigger time
        # (Airflow accepts unknown conf keys, so without these an old {"repair": true} would only audit)
        **{old: Param(None, type=["null"], section="Removed params",
                      title=f'{old} (removed): pass "mode": "{new}"',
                      description=f'removed: pass "mode": "{new}" instead')
           for old, new in (("repair", "repair"), ("dry_run", "plan"))},
        "grace_minutes": Param(60, type="number", minimum=0,
                               description="orphans younger than this (first seen by the audit) are kept"),
        "scopes": Param(["lake", "als", "lyrics"], type="array",
                        items={"type": "string", "enum": ["lake", "als", "lyrics"]}),
        "max_findings": Param(0, type="integer", minimum=0,
                              description="check fails when more findings than this remain open"),
        "examples": Param(20, type="integer", minimum=0, maximum=10000, description="example ids per type"),
        "lake_checksums": Param(True, type="boolean", description="hash every lake file (else sizes only)"),
        "batch_size": Param(500, type="integer", minimum=1, maximum=5000, description="ids per repair batch"),
    },
    doc_md=__doc__,
) as dag:
    # the lake first: its repair restores artifacts the vector scopes read; they still run if it failed
    run = {"scopes": "{{ params.scopes | tojson }}", "mode": "{{ params.mode }}",
           "grace_minutes": "{{ params.grace_minutes }}"}
    audit = run | {"examples": "{{ params.examples }}", "lake_checksums": "{{ params.lake_checksums }}",
                   "batch_size": "{{ params.batch_size }}"}
    lake = StoreAuditOperator(task_id="audit_lake", scope="lake", **audit)
    als = StoreAuditOperator(task_id="audit_als", scope="als", pool=POOL_QDRANT_LOCAL, trigger_rule="all_done",
                             **audit)
    lyrics = StoreAuditOperator(task_id="audit_lyrics", scope="lyrics", pool=POOL_QDRANT_LOCAL,
                                trigger_rule="all_done", **audit)
    report = AuditReportOperator(task_id="report", audit_task_ids={"lake": "audit_lake", "als": "audit_als",
                                                                   "lyrics": "audit_lyrics"},
                                 max_findings="{{ params.max_findings }}", trigger_rule="all_done", **run)
    check = AuditCheckOperator(task_id="check", report_task_id="report", max_findings="{{ params.max_findings }}")
    lake >> [als, lyrics] >> report >> check
