"""LRCLIB hook in the providers' style: ``lrclib_default`` (conn type ``lrclib``, host = the site; the
form is declared in ``musicrec_airflow.provider_info``). Only the connection's fields are read, never its
type, so a definition with the old type ``http`` works the same."""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.sdk.bases.hook import BaseHook

from musicrec.lyrics.lrclib import DEFAULT_BASE_URL, USER_AGENT, LrclibApi
from musicrec.lyrics.match import Song


class LrclibHook(BaseHook):
    """Connection: ``host`` = ``https://lrclib.net`` (or a full API base ending in ``/api``); extra
    ``rate_per_s``, ``concurrency``, ``timeout_s``, ``user_agent`` are the client's defaults.

    :param conn_id: the Airflow connection (conn type ``lrclib``; may be absent: the public service).
    :param kwargs: passed to ``BaseHook``.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "lrclib_default"
    conn_type = "lrclib"
    hook_name = "LRCLIB"

    def __init__(self, conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def settings(self) -> dict[str, Any]:
        try:
            conn = self.get_connection(self.conn_id)
        except Exception:  # no such connection: the public service with the defaults
            return {"base_url": DEFAULT_BASE_URL, "user_agent": USER_AGENT}
        host = (conn.host or "").rstrip("/")
        if host and "://" not in host:
            host = f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")
        base = host or DEFAULT_BASE_URL
        if not base.endswith("/api"):
            base += "/api"
        extra = conn.extra_dejson
        out: dict[str, Any] = {"base_url": base, "user_agent": extra.get("user_agent", USER_AGENT)}
        for key, cast in (("rate_per_s", float), ("concurrency", int), ("timeout_s", float)):
            if extra.get(key) not in (None, ""):
                out[key] = cast(extra[key])
        return out

    def base_url(self) -> str:
        return self.settings()["base_url"]

    def test_connection(self) -> tuple[bool, str]:
        """One search request: any 200/404 answer means the API is reachable. The host must be allowed
        (Variable ``musicrec_allowed_sources``) like a task's ``base_url``: the UI button is no way around it."""
        from musicrec.sources import SourceNotAllowed, check_url
        from musicrec_airflow.sources import allowed_sources

        settings = self.settings()
        try:
            check_url(settings["base_url"], allowed_sources(), what="base_url")
        except SourceNotAllowed as exc:
            return False, str(exc)

        async def probe() -> str:
            async with LrclibApi(settings["base_url"], rate_per_s=0, tries=1, timeout_s=10,
                                 user_agent=settings["user_agent"]) as api:
                outcome = await api.lookup(Song("probe", "Bohemian Rhapsody", "Queen"))
                if outcome.status == "error":
                    raise RuntimeError(outcome.error)
                return outcome.status

        try:
            status = asyncio.run(probe())
        except Exception as exc:  # the UI shows the message
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"LRCLIB answered ({status}) at {settings['base_url']}"
