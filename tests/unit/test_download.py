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
        self.redirects: dict[str, str] = {}  # raw request path -> Location
        self.bodies: dict[str, bytes] = {}  # raw request path -> body (besides PAYLOAD's path)
        self.omit_length = False  # send bodies without Content-Length (read until close)

    def handle_error(self, request, client_address):  # a client hanging up on a refusal is expected here
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802
        srv: _Server = self.server
        rng = self.headers.get("Range")
        srv.requests.append({"path": self.path, "range": rng, "ua": self.headers.get("User-Agent")})
        if self.path in srv.redirects:
            self.send_response(302)
            self.send_header("Location", srv.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path in srv.bodies:
            self.send_response(200)
            if srv.omit_length:
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(srv.bodies[self.path])))
            self.end_headers()
            self.wfile.write(srv.bodies[self.path])
            return
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


# ----------------------------------------------------------------------------- untrusted input (issue 13)

from pathlib import Path  # noqa: E402

from musicrec.sources import SourceNotAllowed  # noqa: E402

TRAVERSAL = "/x/..%2F..%2F..%2F..%2Fdags%2Fz.py"


def _base(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def _nothing_under(root: Path) -> list[str]:
    """Files under ``root`` (the raw dir, the staging dir…): what a refused download must not leave."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def deep_raw(tmp_path, monkeypatch):
    """The embedded default's layout under tmp/repo: raw/<dataset> and the staging downloads are four
    levels below the repo, so '../../../../dags/z.py' lands in tmp/repo/dags (as it did on main)."""
    (tmp_path / "repo" / "dags").mkdir(parents=True)
    monkeypatch.setenv("MUSICREC_STAGING_DIR", str(tmp_path / "repo" / "data" / "staging"))
    return UPath(tmp_path / "repo" / "data" / "lake" / "raw" / "lastfm-1k")


@pytest.mark.parametrize("allowed", [None, "loopback"])
def test_traversal_in_an_encoded_file_name_is_refused_and_writes_nothing(server, deep_raw, tmp_path, allowed):
    server.bodies[TRAVERSAL] = b"import os  # planted\n"
    kwargs = {"allowed": [f"{_base(server)}/"]} if allowed else {}  # the name rule holds with or without a list
    with pytest.raises(SourceNotAllowed, match="'file-name'.*path separator"):
        dl.download(_base(server) + TRAVERSAL, deep_raw, **kwargs)
    assert not (tmp_path / "repo" / "dags" / "z.py").exists()
    assert [p for p in tmp_path.rglob("z.py*")] == []
    assert server.requests == []  # refused before any request


@pytest.mark.parametrize("name", ["..", "%2E%2E", "a%00b.tsv", "a%0Ab.tsv", "a%5Cb.tsv", ".hidden", "_manifest.json",
                                  "", "x" * 300])
def test_bad_decoded_names_are_refused(name):
    with pytest.raises(SourceNotAllowed, match="'file-name'"):
        dl.file_name_of(f"http://example.org/d/{name}")


def test_file_outside_the_allowed_prefixes_is_refused(tmp_path, raw_dir):
    allowed = [(tmp_path / "sample").as_uri() + "/"]
    with pytest.raises(SourceNotAllowed, match="'allowed-prefix'.*/proc/self/environ"):
        dl.download("file:///proc/self/environ", raw_dir, allowed=allowed)
    assert _nothing_under(Path(raw_dir.path)) == []
    assert not dl._part_path("file:///proc/self/environ", "environ").exists()


def test_file_dotdot_and_symlink_escapes_are_refused(tmp_path, raw_dir):
    sample = tmp_path / "sample"
    sample.mkdir()
    secret = tmp_path / "secret.env"
    secret.write_text("AWS_SECRET_ACCESS_KEY=x\n")
    (sample / "dump.tsv").symlink_to(secret)
    (sample / "environ.tsv").symlink_to("/proc/self/environ")
    allowed = [sample.as_uri() + "/"]
    for url in ((sample / "dump.tsv").as_uri(), (sample / "environ.tsv").as_uri(),
                sample.as_uri() + "/../secret.env", sample.as_uri() + "/%2E%2E/secret.env"):
        with pytest.raises(SourceNotAllowed, match="'allowed-prefix'"):
            dl.download(url, raw_dir, allowed=allowed)
    assert _nothing_under(Path(raw_dir.path)) == []
    # a file really inside is read (by its resolved path)
    (sample / "ok.tsv").write_bytes(b"a\tb\n")
    assert dl.download((sample / "ok.tsv").as_uri(), raw_dir, allowed=allowed).bytes == 4


def test_redirect_to_a_disallowed_prefix_is_refused(server, raw_dir):
    base = _base(server)
    server.redirects["/data/latest.tar.gz"] = f"{base}/private/lastfm.tar.gz"
    server.bodies["/private/lastfm.tar.gz"] = PAYLOAD
    with pytest.raises(SourceNotAllowed, match="'redirect'.*/private/lastfm.tar.gz"):
        dl.download(f"{base}/data/latest.tar.gz", raw_dir, allowed=[f"{base}/data/"])
    assert [r["path"] for r in server.requests] == ["/data/latest.tar.gz"]  # the target never requested
    assert _nothing_under(Path(raw_dir.path)) == []
    # a redirect to an allowed prefix is followed (checked hop by hop)
    server.redirects["/data/latest.tar.gz"] = f"{base}/data/lastfm.tar.gz"
    got = dl.download(f"{base}/data/latest.tar.gz", raw_dir, allowed=[f"{base}/data/"], sha256=SHA)
    assert got.file == "latest.tar.gz" and got.sha256 == SHA


def test_loopback_address_needs_an_explicit_allow_entry(server, raw_dir):
    port = server.server_address[1]
    url = f"http://localhost:{port}/data/lastfm.tar.gz"
    # a host name that resolves to loopback: the name alone is not an explicit allow
    with pytest.raises(SourceNotAllowed, match="'private-address'.*127.0.0.1"):
        dl.download(url, raw_dir, allowed=[f"http://localhost:{port}/"],
                    resolve=lambda host, port: ["127.0.0.1"])
    # DNS said "public" to the check, the connection reached loopback: refused after connecting
    with pytest.raises(SourceNotAllowed, match="'private-address'.*connected to"):
        dl.download(url, raw_dir, allowed=[f"http://localhost:{port}/"], resolve=lambda host, port: ["93.184.216.34"])
    assert _nothing_under(Path(raw_dir.path)) == []
    # explicit: the entry names the address, or says private
    assert dl.download(_url(server), raw_dir, allowed=[f"http://127.0.0.1:{port}/data/"]).sha256 == SHA
    ok = dl.download(url, UPath(Path(raw_dir.path).parent / "other"),
                     allowed=[{"prefix": f"http://localhost:{port}/", "private": True}])
    assert ok.sha256 == SHA


@pytest.mark.parametrize("omit_length", [False, True])
def test_oversized_download_is_refused_and_leaves_nothing(server, raw_dir, omit_length):
    server.bodies["/data/big.bin"] = PAYLOAD
    server.omit_length = omit_length  # without Content-Length the bound is counted while writing
    url = f"{_base(server)}/data/big.bin"
    with pytest.raises(SourceNotAllowed, match="'max_bytes'"):
        dl.download(url, raw_dir, allowed=[f"{_base(server)}/data/"], max_bytes=100_000)
    assert _nothing_under(Path(raw_dir.path)) == []
    folder = dl.staging_dir() / "downloads" / hashlib.sha1(url.encode()).hexdigest()[:16]
    assert not folder.exists()  # neither the partial file nor its staging folder is left


def test_oversized_file_source_is_refused(tmp_path, raw_dir):
    src = tmp_path / "big.tsv"
    src.write_bytes(b"x" * 5000)
    with pytest.raises(SourceNotAllowed, match="'max_bytes'"):
        dl.download(src.as_uri(), raw_dir, allowed=[tmp_path.as_uri() + "/"], max_bytes=4999)
    assert _nothing_under(Path(raw_dir.path)) == []
