"""listens_import through ``airflow dags test`` with hostile trigger-form values (issue 13): the
download task fails with the rule's message, at once (no retries), and nothing is written."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from tests.conftest import airflow_dags_test

pytestmark = pytest.mark.integration


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802  every path answers a small "planted" Python file
        self.server.paths.append(self.path)
        body = b"print('planted')\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def planting_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.paths = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("case", ["traversal", "environ"])
def test_hostile_source_url_fails_the_task_and_writes_nothing(case, planting_server, tmp_path, airflow_db):
    repo = tmp_path / "repo"  # the embedded default's layout: ../../../../ from raw/<dataset> is the repo
    (repo / "dags").mkdir(parents=True)
    port = planting_server.server_address[1]
    env = {
        "AIRFLOW_VAR_MUSICREC_LAKE_ROOT": (repo / "data" / "lake").as_uri(),
        "MUSICREC_STAGING_DIR": str(repo / "data" / "staging"),
        # the loopback server is allowed explicitly: the traversal is refused by the name rule
        "AIRFLOW_VAR_MUSICREC_ALLOWED_SOURCES": json.dumps([f"http://127.0.0.1:{port}/",
                                                            (repo / "data" / "sample").as_uri() + "/"]),
    }
    if case == "traversal":
        conf = {"source_url": f"http://127.0.0.1:{port}/x/..%2F..%2F..%2F..%2Fdags%2Fz.py", "dataset": "lastfm-1k"}
        rule = "refused by rule 'file-name': '../../../../dags/z.py'"
    else:
        conf = {"source_url": "file:///proc/self/environ", "dataset": "lastfm-1k"}
        rule = "refused by rule 'allowed-prefix': 'file:///proc/self/environ'"
    with pytest.raises(AssertionError) as failed:
        airflow_dags_test("listens_import", conf, env, timeout_s=300)
    out = str(failed.value)
    assert rule in out
    assert "AirflowFailException" in out  # failed at once: a refusal is not retried
    assert "task_id=clean" not in out or "state=upstream_failed" in out
    assert not (repo / "dags" / "z.py").exists()
    assert _files(repo) == []  # no raw file, no manifest, no partial download
    downloads = repo / "data" / "staging" / "downloads"
    assert not downloads.exists() or list(downloads.iterdir()) == []  # nor a staging folder for it
    assert planting_server.paths == []  # refused before any request


def test_dump_path_outside_the_allowed_folders_fails_lyrics_enrichment(tmp_path, airflow_db):
    """``dump_path`` follows the same rule: a symlink in an allowed folder to a file elsewhere is refused
    by its real path, before anything is unpacked, indexed or written beside it."""
    allowed, elsewhere = tmp_path / "dumps", tmp_path / "elsewhere"
    allowed.mkdir()
    elsewhere.mkdir()
    (elsewhere / "lrclib.sqlite3").write_bytes(b"SQLite format 3\0")
    (allowed / "lrclib.sqlite3").symlink_to(elsewhere / "lrclib.sqlite3")
    env = {"AIRFLOW_VAR_MUSICREC_LAKE_ROOT": (tmp_path / "lake").as_uri(),
           "AIRFLOW_VAR_MUSICREC_ALLOWED_SOURCES": json.dumps([allowed.as_uri() + "/"])}
    conf = {"provider": "dump", "dump_path": str(allowed / "lrclib.sqlite3")}
    with pytest.raises(AssertionError) as failed:
        airflow_dags_test("lyrics_enrichment", conf, env, timeout_s=300)
    out = str(failed.value)
    assert f"refused by rule 'allowed-prefix': '{(allowed / 'lrclib.sqlite3').as_uri()}'" in out
    assert "AirflowFailException" in out
    assert sorted(p.name for p in allowed.iterdir()) == ["lrclib.sqlite3"]  # no index, no lock beside it
    assert sorted(p.name for p in elsewhere.iterdir()) == ["lrclib.sqlite3"]
