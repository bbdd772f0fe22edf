"""Listen events posted to the API → Mongo ``listen_events`` (design §8). No Airflow imports.

Each event is checked on its own with the landing files' rules (:mod:`musicrec.lake.daily`: the
same timestamp parser, id rules and actions), so one bad event is reported by its index and the
others are still taken. A stored event is
``{_id, user_id, track_id, artist, title, ts, action, received_at}`` where ``_id`` is
:func:`event_id` — the sha256 of (user_id, ts, track_id, action) — and the write is an upsert that
only sets fields on insert: a replayed event (a client retry) is a no-op and keeps its first
``received_at``.

Rejection reasons, first that applies: ``not_an_object``, ``empty_user``, ``bad_user_id``,
``bad_timestamp``, ``future_timestamp`` (more than 5 minutes ahead of the server clock),
``empty_track`` (neither ``track_id`` nor ``artist`` + ``title``), ``bad_track_id``, ``too_long``
(``artist``/``title`` over 1024 bytes), ``bad_action``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.database import Database

# the listen_events contract (collection, event key) lives in musicrec.events.listens, which the lake
# uses too; re-exported here under the names the API and its tests use
from musicrec.events.listens import COLLECTION, event_id  # noqa: F401
from musicrec.ids import derived_track_id, id_problem

# the landing files' timestamp rules (ISO-8601, offset → UTC, none = UTC; or epoch milliseconds),
# so an event means the same whether it came through the API or a landing file
from musicrec.lake.daily import parse_ts
from musicrec.lake.schema import ACTIONS

FUTURE_SLACK = timedelta(minutes=5)
MAX_TEXT_BYTES = 1024


@dataclass(frozen=True)
class Checked:
    doc: dict[str, Any] | None
    reason: str | None


def _text(obj: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def check(obj: Any, now: datetime | None = None) -> Checked:
    """One posted event → the document to store, or the reason it is rejected."""
    if not isinstance(obj, dict):
        return Checked(None, "not_an_object")
    user = _text(obj, "user_id")
    if not user:
        return Checked(None, "empty_user")
    if id_problem(user):
        return Checked(None, "bad_user_id")
    ts = parse_ts(obj.get("ts"))
    if ts is None:
        return Checked(None, "bad_timestamp")
    ts = ts.replace(microsecond=ts.microsecond // 1000 * 1000)  # the lake keeps milliseconds
    if ts > (now or datetime.now(UTC)) + FUTURE_SLACK:
        return Checked(None, "future_timestamp")
    track = _text(obj, "track_id")
    artist, title = _text(obj, "artist", "artist_name"), _text(obj, "title", "track_name")
    if not track and not (artist and title):
        return Checked(None, "empty_track")
    if track and id_problem(track):
        return Checked(None, "bad_track_id")
    if len(artist.encode()) > MAX_TEXT_BYTES or len(title.encode()) > MAX_TEXT_BYTES:
        return Checked(None, "too_long")
    action = (_text(obj, "action") or "listen").lower()
    if action not in ACTIONS:
        return Checked(None, "bad_action")
    track = track or derived_track_id(artist, title)
    return Checked({"_id": event_id(user, ts, track, action), "user_id": user, "track_id": track,
                    "artist": artist or None, "title": title or None, "ts": ts, "action": action}, None)


def ensure_indexes(db: Database) -> None:
    # listens_daily reads a day's events by ts; the TTL on received_at is set by that DAG's side
    db[COLLECTION].create_index([("ts", ASCENDING)])
    db[COLLECTION].create_index([("user_id", ASCENDING), ("ts", ASCENDING)])


def store(db: Database, docs: list[dict[str, Any]], received_at: datetime | None = None) -> int:
    """Upsert the events (insert-only fields): returns how many were new."""
    if not docs:
        return 0
    received_at = received_at or datetime.now(UTC)
    ops = [UpdateOne({"_id": d["_id"]}, {"$setOnInsert": d | {"received_at": received_at}}, upsert=True)
           for d in docs]
    res = db[COLLECTION].bulk_write(ops, ordered=False)
    return res.upserted_count
