"""Download: file://, HTTP via a local server (Range resume, checksum), no-op on a matching manifest."""

import hashlib
import http.server
import json
import threading

import pytest
from upath import UPath

from musicrec.lake import download as dl

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, not compressible into nothing
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.cut_first_at: int | None = None  # close the first full response after this many bytes
        self.support_range = True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802
        srv: _Server = self.server
        rng = self.headers.get("Range")
        srv.requests.append({"path": self.path, "range": rng, "ua": self.headers.get("User-Agent")})
        if self.path != "/data/lastfm.tar.gz":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        if rng and srv.support_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_first_at is not None and start == 0:
            self.wfile.write(body[: srv.cut_first_at])
            self.wfile.flush()
            srv.cut_first_at = None
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def raw_dir(tmp_path):
    return UPath(tmp_path / "lake" / "raw" / "lastfm-1k")


def _url(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/data/lastfm.tar.gz"


def test_http_download_writes_file_and_manifest(server, raw_dir):
    result = dl.download(_url(server), raw_dir, sha256=SHA)
    assert not result.skipped and result.bytes == len(PAYLOAD) and result.sha256 == SHA
    assert (raw_dir / "lastfm.tar.gz").read_bytes() == PAYLOAD
    manifest = json.loads((raw_dir / dl.MANIFEST).read_text())
    assert manifest["sha256"] == SHA and manifest["url"] == _url(server) and manifest["file"] == "lastfm.tar.gz"
    assert server.requests[0]["ua"].startswith("musicrec")


def test_matching_manifest_makes_download_a_no_op(server, raw_dir):
    dl.download(_url(server), raw_dir, sha256=SHA)
    n = len(server.requests)
    again = dl.download(_url(server), raw_dir, sha256=SHA)
    assert again.skipped and again.sha256 == SHA
    assert len(server.requests) == n  # nothing fetched


def test_interrupted_transfer_resumes_with_a_range_request(server, raw_dir):
    server.cut_first_at = 300_000
    result = dl.download(_url(server), raw_dir, sha256=SHA)
    assert result.sha256 == SHA
    ranges = [r["range"] for r in server.requests]
    assert ranges[0] is None and ranges[1] is not None
    resumed_at = int(ranges[1].removeprefix("bytes=").split("-")[0])
    assert 0 < resumed_at <= 300_000


def test_partial_file_from_a_killed_task_is_continued(server, raw_dir):
    url = _url(server)
    part = dl._part_path(url, "lastfm.tar.gz")
    part.write_bytes(PAYLOAD[:123_456])  # what a killed attempt left behind
    result = dl.download(url, raw_dir, sha256=SHA)
    assert result.sha256 == SHA
    assert server.requests[0]["range"] == "bytes=123456-"
    assert not part.exists()


def test_server_without_range_support_restarts_cleanly(server, raw_dir):
    server.support_range = False
    url = _url(server)
    dl._part_path(url, "lastfm.tar.gz").write_bytes(b"garbage-prefix")
    assert dl.download(url, raw_dir, sha256=SHA).sha256 == SHA


def test_checksum_mismatch_is_an_error_and_publishes_nothing(server, raw_dir):
    with pytest.raises(dl.ChecksumMismatch, match="expected sha256"):
        dl.download(_url(server), raw_dir, sha256="0" * 64)
    assert not (raw_dir / "lastfm.tar.gz").exists()
    assert not (raw_dir / dl.MANIFEST).exists()
    assert not dl._part_path(_url(server), "lastfm.tar.gz").exists()  # a corrupt copy is not resumed


def test_http_404_is_a_clear_error(server, raw_dir):
    import httpx

    url = f"http://127.0.0.1:{server.server_address[1]}/missing.tar.gz"
    with pytest.raises(httpx.HTTPStatusError, match="404"):
        dl.download(url, raw_dir)


def test_file_source_and_changed_source_redownloads(tmp_path, raw_dir):
    src = tmp_path / "src" / "dump.tsv"
    src.parent.mkdir()
    src.write_bytes(b"a\tb\n")
    first = dl.download(src.as_uri(), raw_dir)
    assert (raw_dir / "dump.tsv").read_bytes() == b"a\tb\n" and not first.skipped
    assert dl.download(src.as_uri(), raw_dir).skipped
    # an expected checksum that differs from the manifest forces a fresh fetch
    src.write_bytes(b"a\tb\nc\td\n")
    new_sha = hashlib.sha256(src.read_bytes()).hexdigest()
    second = dl.download(src.as_uri(), raw_dir, sha256=new_sha)
    assert not second.skipped and (raw_dir / "dump.tsv").read_bytes() == b"a\tb\nc\td\n"


def test_missing_file_source_is_a_clear_error(tmp_path, raw_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dl.download((tmp_path / "nope.tsv").as_uri(), raw_dir)
