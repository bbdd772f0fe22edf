"""The pages' clients (``musicrec_airflow.ui.sources``): made once per process; a down vector store is
retried after ``RETRY_S``, never by reopening Mongo on every request."""

from __future__ import annotations

from musicrec_airflow.ui import sources


def test_a_down_store_is_retried_after_the_delay(monkeypatch):
    opened, tried = [], []
    monkeypatch.setattr(sources, "_open", lambda: opened.append(1) or sources.Sources(db="db", root="root",
                                                                                       store=None, store_error="down"))
    up = {"now": False}

    def store():
        tried.append(1)
        return ("store", None) if up["now"] else (None, "down")

    monkeypatch.setattr(sources, "_serving_store", store)
    clock = {"t": 1000.0}
    monkeypatch.setattr(sources.time, "monotonic", lambda: clock["t"])
    sources.reset()
    try:
        first = sources.get_sources()
        assert first.store is None and first.store_error == "down"
        assert sources.get_sources() is first and tried == []  # within RETRY_S: no new attempt
        up["now"] = True
        clock["t"] += sources.RETRY_S + 1
        again = sources.get_sources()
        assert again is first and again.store == "store" and again.store_error is None and tried == [1]
        assert opened == [1]  # Mongo and the lake root were opened once
    finally:
        sources.reset()
