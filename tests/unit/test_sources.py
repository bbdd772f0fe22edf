"""The source policy (musicrec.sources): prefixes by parts, addresses, names, containment, the
LRCLIB dump opened read-only whatever its name, and a .gz unpack bounded by what it writes."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from upath import UPath

from musicrec import sources
from musicrec.lyrics import dump, enrich
from musicrec.lyrics.match import Song
from musicrec.sources import SourceNotAllowed, check_url

PUBLIC = lambda host, port: ["93.184.216.34"]  # noqa: E731  a public address, no DNS needed


@pytest.mark.parametrize(("url", "ok"), [
    ("https://files.example.com/dumps/a.tar.gz", True),
    ("https://FILES.example.com:443/dumps/sub/a.tar.gz", True),
    ("https://files.example.com/dumps", True),
    ("https://files.example.com.evil.org/dumps/a.tar.gz", False),  # raw string prefix would admit this
    ("https://files.example.com/dumps-evil/a.tar.gz", False),  # segment boundary
    ("https://files.example.com:8443/dumps/a.tar.gz", False),
    ("http://files.example.com/dumps/a.tar.gz", False),
    ("https://files.example.com/other/a.tar.gz", False),
    ("https://files.example.com/dumps/../other/a.tar.gz", False),
    ("https://files.example.com/dumps/%2e%2e/other/a.tar.gz", False),
    ("https://user:pw@files.example.com/dumps/a.tar.gz", False),
    ("ftp://files.example.com/dumps/a.tar.gz", False),
    ("s3://aws_default@landing/dumps/a.tar.gz", True),
    ("s3://aws_default@landing/dumpsx/a.tar.gz", False),
    ("s3://other@landing/dumps/a.tar.gz", False),
    ("s3://aws_default@landing/dumps/../secret", False),
    ("gopher://files.example.com/dumps/a", False),
    ("https://files.example.com:99999/dumps/a", False),
    ("https://files.example.com:x/dumps/a", False),
])
def test_prefixes_match_by_parts(url, ok):
    allowed = ["https://files.example.com/dumps/", "s3://aws_default@landing/dumps/"]
    if ok:
        assert check_url(url, allowed, resolve=PUBLIC) == url
    else:
        with pytest.raises(SourceNotAllowed, match="refused by rule"):
            check_url(url, allowed, resolve=PUBLIC)


@pytest.mark.parametrize(("address", "public"), [
    ("93.184.216.34", True), ("2606:2800:220:1:248:1893:25c8:1946", True),
    ("127.0.0.1", False), ("127.8.9.10", False), ("10.1.2.3", False), ("172.16.0.1", False),
    ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False),
    ("::1", False), ("fe80::1", False), ("fc00::1", False), ("::", False),
    ("::ffff:127.0.0.1", False), ("::ffff:169.254.169.254", False), ("::ffff:93.184.216.34", True),
    ("224.0.0.1", False), ("fe80::1%eth0", False),
])
def test_public_addresses(address, public):
    assert sources.is_public(address) is public


def test_every_resolved_address_must_be_public_unless_allowed_explicitly():
    url = "https://files.example.com/dumps/a.tar.gz"
    mixed = lambda host, port: ["93.184.216.34", "::ffff:10.0.0.5"]  # noqa: E731
    with pytest.raises(SourceNotAllowed, match="'private-address'.*::ffff:10.0.0.5"):
        check_url(url, ["https://files.example.com/"], resolve=mixed)
    assert check_url(url, [{"prefix": "https://files.example.com/", "private": True}], resolve=mixed) == url
    # an entry naming the address itself is explicit
    assert check_url("http://10.0.0.5:9000/d/x", ["http://10.0.0.5:9000/d/"]) == "http://10.0.0.5:9000/d/x"
    with pytest.raises(SourceNotAllowed, match="'private-address'"):
        check_url("http://localhost:9000/d/x", ["http://localhost:9000/d/"])  # resolves to loopback


def test_allow_list_parsing_errors_name_the_variable():
    for bad in ("not json", '{"a": 1}', '["no-scheme"]', "[3]", '["http://h:x/"]'):
        with pytest.raises(SourceNotAllowed, match="allow-list"):
            sources.parse_allowed(bad)
    assert sources.parse_allowed("") == [] and sources.parse_allowed(None) == []
    with pytest.raises(SourceNotAllowed, match="allowed: nothing"):
        check_url("file:///etc/passwd", "[]")


def test_control_characters_in_a_url_are_refused():
    with pytest.raises(SourceNotAllowed, match="'control-character'"):
        check_url("https://files.example.com/dumps/a\x00.tar.gz", ["https://files.example.com/"], resolve=PUBLIC)


def test_contained_paths(tmp_path):
    base = tmp_path / "raw"
    base.mkdir()
    assert sources.contained(base, "x", "y.tsv") == base / "x" / "y.tsv"
    (base / "link").symlink_to(tmp_path)
    for parts in (("..", "z"), ("x/../../z",), ("/etc/passwd",), ("link", "z"), ("",)):
        with pytest.raises(SourceNotAllowed, match="'contained-path'"):
            sources.contained(base, *parts)
    # lake paths: local UPaths by real path, object stores by normalised keys
    assert sources.contained(UPath(base), "a").path.endswith("/raw/a")
    with pytest.raises(SourceNotAllowed):
        sources.contained(UPath(base), "..", "b")
    s3 = UPath("s3://bucket/lake/raw", anon=True)
    assert sources.contained(s3, "tiny", "f.tsv").path.endswith("lake/raw/tiny/f.tsv")
    with pytest.raises(SourceNotAllowed):
        sources.contained(s3, "../../x")


# ----------------------------------------------------------------------------- the LRCLIB dump

def _dump(path: Path) -> Path:
    from tests.integration.test_lyrics_dump import handmade_dump

    return handmade_dump(path, [("Blue Moon", "Ann", None, 200.0, "moon words", False)])


def _snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}


@pytest.mark.parametrize("name", ["lrclib?x=1.sqlite3", "lrclib?mode=rwc.sqlite3", "a#b%3F c?.sqlite3", "plain.sqlite3"])
def test_dump_with_special_characters_is_opened_read_only(tmp_path, name):
    """On main ``file:{path}?mode=ro`` cut the name at its '?': ``lrclib?x=1.sqlite3`` opened (and
    created) a read-write file ``lrclib`` beside the dump."""
    folder = tmp_path / "dumps"
    folder.mkdir()
    path = _dump(folder / name)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = _snapshot(folder)
    with dump.DumpProvider(path, use_sidecar=False, allowed=[folder.as_uri() + "/"]) as provider:
        assert provider.lookup(Song("s", "Blue Moon", "Ann")).status == "found"
        with pytest.raises(Exception, match="readonly"):
            provider.con.execute("CREATE TABLE main.planted (x)")
    assert _snapshot(folder) == before  # same files, same bytes, same mtimes: nothing created beside it


def test_dump_outside_the_allowed_folders_is_refused(tmp_path):
    path = _dump(tmp_path / "d.sqlite3")
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "link.sqlite3").symlink_to(path)
    for candidate in (path, tmp_path / "ok" / "link.sqlite3", tmp_path / "ok" / ".." / "d.sqlite3", "/proc/self/environ"):
        with pytest.raises(SourceNotAllowed, match="'allowed-prefix'"):
            dump.prepare(candidate, allowed=[(tmp_path / "ok").as_uri() + "/"])
    with pytest.raises(SourceNotAllowed, match="'allowed-prefix'"):
        enrich.run_dump_chunk(None, None, str(path), allowed=[(tmp_path / "ok").as_uri() + "/"])


def test_api_base_url_must_be_allowed():
    with pytest.raises(SourceNotAllowed, match="base_url.*musicrec_allowed_sources"):
        enrich.run_api_chunk(None, None, "http://169.254.169.254/latest", allowed=["https://lrclib.net/api/"])
    with pytest.raises(SourceNotAllowed, match="'private-address'"):  # a loopback API needs an explicit entry
        enrich.run_api_chunk(None, None, "http://localhost:9/api", allowed=["http://localhost:9/"])
    with pytest.raises(SourceNotAllowed, match="'allowed-prefix'"):  # lrclib.net/api/ does not admit /admin
        enrich.run_api_chunk(None, None, "https://lrclib.net/admin", allowed=["https://lrclib.net/api/"])


def test_gzip_bomb_is_refused_by_the_bytes_written(tmp_path):
    gz = tmp_path / "lrclib-dump.sqlite3.gz"
    with gzip.open(gz, "wb", compresslevel=9) as out:
        block = b"\0" * (1 << 20)
        for _ in range(64):  # 64 MiB of zeros in ~64 KiB
            out.write(block)
    data = bytearray(gz.read_bytes())
    data[-4:] = (1000).to_bytes(4, "little")  # the trailer claims 1000 bytes: not trusted
    gz.write_bytes(bytes(data))
    assert gz.stat().st_size < 200_000
    with pytest.raises(SourceNotAllowed, match="'max_unpacked_bytes'"):
        dump.ensure_unpacked(gz, max_unpacked_bytes=8 << 20)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["lrclib-dump.sqlite3.gz", "lrclib-dump.sqlite3.lock"]  # no target, no partial file


def test_gz_dump_within_the_bound_unpacks(tmp_path):
    src = _dump(tmp_path / "src.sqlite3")
    gz = tmp_path / "d" / "x.sqlite3.gz"
    gz.parent.mkdir()
    with gzip.open(gz, "wb") as out:
        out.write(src.read_bytes())
    got = dump.prepare(gz, allowed=[gz.parent.as_uri() + "/"], max_unpacked_bytes=src.stat().st_size)
    assert Path(got["dump"]).read_bytes() == src.read_bytes()


def test_lrclib_connection_test_refuses_a_host_that_is_not_allowed(monkeypatch):
    """The UI's "Test connection" button follows the same rule as a task (no request is sent)."""
    import json

    from musicrec_airflow.hooks.lrclib import LrclibHook

    monkeypatch.setenv("AIRFLOW_CONN_LRCLIB_TEST", json.dumps({"conn_type": "http", "host": "http://169.254.169.254"}))
    monkeypatch.setenv("AIRFLOW_VAR_MUSICREC_ALLOWED_SOURCES", '["https://lrclib.net/api/"]')
    ok, message = LrclibHook("lrclib_test").test_connection()
    assert not ok and "refused by rule 'allowed-prefix'" in message and "169.254.169.254" in message


def test_allowed_sources_variable_and_its_fallback(monkeypatch):
    from musicrec_airflow.sources import allowed_sources

    monkeypatch.setenv("AIRFLOW_VAR_MUSICREC_ALLOWED_SOURCES", '["s3://aws_default@landing/"]')
    assert [e.prefix for e in allowed_sources()] == ["s3://aws_default@landing/"]
    monkeypatch.delenv("AIRFLOW_VAR_MUSICREC_ALLOWED_SOURCES")
    monkeypatch.setenv("AIRFLOW_VAR_MUSICREC_LAKE_ROOT", "s3://aws_default@datalake")
    assert [e.prefix for e in allowed_sources()] == ["s3://aws_default@datalake/", "https://lrclib.net/api/"]


def test_embedded_default_allows_the_sample_folder_and_the_lake(tmp_path, monkeypatch):
    from musicrec.local.envfile import embedded_env

    monkeypatch.setenv("AIRFLOW_VAR_MUSICREC_ALLOWED_SOURCES", '["file:///srv/dumps/"]')
    assert embedded_env(tmp_path)["AIRFLOW_VAR_MUSICREC_ALLOWED_SOURCES"] == '["file:///srv/dumps/"]'  # exported
    monkeypatch.delenv("AIRFLOW_VAR_MUSICREC_ALLOWED_SOURCES")
    allowed = embedded_env(tmp_path)["AIRFLOW_VAR_MUSICREC_ALLOWED_SOURCES"]
    data = tmp_path / "data"
    (data / "sample").mkdir(parents=True)
    (data / "sample" / "lastfm-dataset-1K.tar.gz").write_bytes(b"x")
    assert check_url((data / "sample" / "lastfm-dataset-1K.tar.gz").as_uri(), allowed)
    assert sources.check_path(data / "sample" / "lrclib-dump.sqlite3", allowed)
    with pytest.raises(SourceNotAllowed):
        check_url("file:///proc/self/environ", allowed)
    with pytest.raises(SourceNotAllowed):
        check_url((tmp_path / "airflow.cfg").as_uri(), allowed)


@pytest.mark.parametrize("kind", ["tsv.gz", "tar.gz"])
def test_lake_archive_bomb_is_refused_by_the_bytes_unpacked(tmp_path, kind):
    """A small archive of the import that unpacks past ``max_unpacked_bytes`` (the header is not asked)."""
    import io
    import tarfile

    from musicrec.lake import download, importer

    line = b"user_000001\t2009-05-04T23:08:57Z\t\tSome Artist\t\tSome Track\n"
    payload = line * ((24 << 20) // len(line))  # 24 MiB of events
    src = tmp_path / "src" / f"lastfm.{kind}"
    src.parent.mkdir()
    if kind == "tsv.gz":
        with gzip.open(src, "wb", compresslevel=9) as out:
            out.write(payload)
    else:
        with tarfile.open(src, "w:gz") as tar:
            info = tarfile.TarInfo("lastfm-dataset-1K/userid-timestamp-artid-artname-traid-traname.tsv")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    assert src.stat().st_size < 1 << 20
    root = UPath(tmp_path / "lake")
    download.download(src.as_uri(), root / "raw" / "bomb", allowed=[src.parent.as_uri() + "/"])
    with pytest.raises(SourceNotAllowed, match="'max_unpacked_bytes'.*raw/bomb/"):
        importer.clean_raw(root, "bomb", max_unpacked_bytes=4 << 20)
    assert not (tmp_path / "lake" / "work").exists() or not any((tmp_path / "lake" / "work").rglob("*.parquet"))
    assert not (tmp_path / "lake" / "quarantine").exists()
    # the same archive within the bound is cleaned
    assert importer.clean_raw(root, "bomb", max_unpacked_bytes=32 << 20)["parts"]


def test_a_model_directory_param_must_be_allowed_before_anything_in_it_is_loaded(tmp_path, monkeypatch):
    """lyrics_embeddings' ``model`` param may name a local directory; loading a model runs its files,
    so a directory outside the allow-list fails the task before the encoder is touched."""
    from airflow.sdk.exceptions import AirflowFailException

    from musicrec.embeddings.encoder import BGE_M3, DEFAULT_MODEL, MINILM, model_directory
    from musicrec_airflow.operators.embeddings import EmbedLyricsOperator
    from musicrec_airflow.sources import check_model_param

    assert model_directory(MINILM) is None and model_directory(BGE_M3) is None
    assert model_directory("bge-m3:/models/m3") == "/models/m3" and model_directory("/models/st") == "/models/st"

    allowed, outside = tmp_path / "models", tmp_path / "elsewhere"
    (allowed / "st").mkdir(parents=True)
    outside.mkdir()
    (outside / "modules.json").write_text("[]")
    monkeypatch.setenv("AIRFLOW_VAR_MUSICREC_ALLOWED_SOURCES", json.dumps([allowed.as_uri() + "/"]))
    check_model_param(DEFAULT_MODEL)  # named models are the deployment's, not a path
    check_model_param(str(allowed / "st"))
    check_model_param(f"bge-m3:{allowed / 'st'}")
    for model in (str(outside), f"bge-m3:{outside}", str(allowed / ".." / "elsewhere")):
        with pytest.raises(SourceNotAllowed, match="refused by rule"):
            check_model_param(model)

    def never_load(*args, **kwargs):
        raise AssertionError("the encoder was loaded for a refused model directory")

    monkeypatch.setattr("musicrec_airflow.hooks.embedding.EmbeddingHook.get_conn", never_load)
    with pytest.raises(AirflowFailException, match="refused by rule 'allowed-prefix'"):
        EmbedLyricsOperator(task_id="embed", model=str(outside)).execute({"run_id": "manual__x"})
