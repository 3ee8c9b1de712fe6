"""Hostile or broken download servers (issue 29): a file is installed whole or not at all.

A file the manifest gives no size or sha256 for (``--trust-unverified``) is installed only when the
transfer stated its length and met it; a resume appends only what answers the range asked for;
every file has a size cap and a deadline; a redirect loop is one line; credentials in a source URL
are never printed; a sources list that is not text is one line (and ``upscale`` falls back)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seesr import weights as w
from seesr.errors import MissingWeightsError
from seesr.weights import fetch
from test_weights_sources import hub, isolated_env  # noqa: F401 - the same loopback hub and clean environment

REPO_ROOT = Path(__file__).resolve().parents[1]
BLOB = bytes(range(256)) * 400  # 102400 bytes
NAME = "model/x.bin"


def manifest(tmp_path: Path, url: str, *, size: int | None = None, name: str = NAME) -> Path:
    """One file from ``url`` (a mirror), with no sha256 and ``size`` (None: unknown)."""
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"format": 2, "files": [
        {"path": name, "group": "test", "size": size, "sha256": None, "sources": [{"url": url}]},
    ]}))  # fmt: skip
    return path


def download(tmp_path: Path, manifest_path: Path) -> list[w.Status]:
    return w.download(["test"], tmp_path / "weights", progress=False, manifest=manifest_path, trust_unverified=True)


def failure(tmp_path: Path, manifest_path: Path) -> str:
    """The one line saying why the only source failed."""
    with pytest.raises(MissingWeightsError) as raised:
        download(tmp_path, manifest_path)
    (line,) = [line.strip() for line in str(raised.value).splitlines() if line.strip().startswith("http://")]
    return line


def left_in(tmp_path: Path) -> list[str]:
    folder = tmp_path / "weights" / "model"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ------------------------------------------------------------------ misbehaving servers
def close_delimited(body: bytes):
    """200 without Content-Length: the body ends when the connection closes."""

    def answer(handler) -> None:
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def chunked(body: bytes, complete: bool = True):
    """200 with Transfer-Encoding: chunked; ``complete=False`` hangs up before the last chunk."""

    def answer(handler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for start in range(0, len(body), 4096):
            piece = body[start:start + 4096]
            handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        if complete:
            handler.wfile.write(b"0\r\n\r\n")

    return answer


def endless(length: str | None = None):
    """200 whose body never ends (``length``: the Content-Length it claims)."""

    def answer(handler) -> None:
        handler.send_response(200)
        if length is not None:
            handler.send_header("Content-Length", length)
        handler.end_headers()
        while True:
            handler.wfile.write(b"\0" * 65536)

    return answer


def drip(total: int, every_s: float):
    """A stated length, then one byte every ``every_s`` seconds."""

    def answer(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(total))
        handler.end_headers()
        for _ in range(total):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(every_s)

    return answer


def resume_then_full(range_answer):
    """``range_answer`` for a request with Range; the whole BLOB (200, with its length) without."""

    def answer(handler) -> None:
        if handler.headers.get("Range"):
            range_answer(handler)
            return
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(BLOB)))
        handler.end_headers()
        handler.wfile.write(BLOB)

    return answer


def status_416(handler) -> None:
    handler.send_response(416)
    handler.send_header("Content-Range", f"bytes */{len(BLOB)}")
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def range_from_zero(handler) -> None:
    """206, but the body (and its Content-Range) start at byte 0 whatever was asked."""
    handler.send_response(206)
    handler.send_header("Content-Range", f"bytes 0-{len(BLOB) - 1}/{len(BLOB)}")
    handler.send_header("Content-Length", str(len(BLOB)))
    handler.end_headers()
    handler.wfile.write(BLOB)


# ------------------------------------------------------------------ whole or absent
def test_a_close_delimited_body_cut_short_is_refused_as_incomplete(tmp_path, hub):
    hub.custom["/m/x.bin"] = close_delimited(BLOB[: len(BLOB) // 2])
    line = failure(tmp_path, manifest(tmp_path, hub.url + "/m/x.bin"))
    assert "refused as incomplete" in line and "no Content-Length" in line
    assert left_in(tmp_path) == []  # neither the file nor a partial one


def test_a_chunked_body_is_delimited_by_its_last_chunk(tmp_path, hub):
    hub.custom["/m/x.bin"] = chunked(BLOB)
    (status,) = download(tmp_path, manifest(tmp_path, hub.url + "/m/x.bin"))
    assert (tmp_path / "weights" / NAME).read_bytes() == BLOB and status.downloaded

    hub.custom["/m/y.bin"] = chunked(BLOB, complete=False)
    line = failure(tmp_path, manifest(tmp_path, hub.url + "/m/y.bin", name="model/y.bin"))
    assert "interrupted" in line and "y.bin" not in left_in(tmp_path) and "y.bin.partial" not in left_in(tmp_path)


def test_a_416_on_resume_never_installs_the_stale_partial(tmp_path, hub, caplog):
    hub.custom["/m/x.bin"] = resume_then_full(status_416)
    partial = tmp_path / "weights" / "model" / "x.bin.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"stale half of another release" * 100)
    download(tmp_path, manifest(tmp_path, hub.url + "/m/x.bin"))
    assert (tmp_path / "weights" / NAME).read_bytes() == BLOB
    assert hub.requests == [("/m/x.bin", "bytes=2900-"), ("/m/x.bin", None)]
    assert "cannot resume at byte 2900 (HTTP 416)" in caplog.text and left_in(tmp_path) == ["x.bin"]


def test_a_206_for_another_range_is_not_appended(tmp_path, hub, caplog):
    hub.custom["/m/x.bin"] = resume_then_full(range_from_zero)
    partial = tmp_path / "weights" / "model" / "x.bin.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(BLOB[:1000])
    download(tmp_path, manifest(tmp_path, hub.url + "/m/x.bin"))
    assert (tmp_path / "weights" / NAME).read_bytes() == BLOB  # not BLOB[:1000] + BLOB
    assert hub.requests == [("/m/x.bin", "bytes=1000-"), ("/m/x.bin", None)]
    assert f"answered the range bytes=1000- with 'bytes 0-{len(BLOB) - 1}/{len(BLOB)}'" in caplog.text


def test_a_resume_that_answers_the_range_is_appended(tmp_path, hub):
    """The honest server of fake_hub: 206 with the matching Content-Range; the partial is kept."""
    hub.files = {"/m/x.bin": BLOB}
    partial = tmp_path / "weights" / "model" / "x.bin.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(BLOB[:1000])
    download(tmp_path, manifest(tmp_path, hub.url + "/m/x.bin"))
    assert (tmp_path / "weights" / NAME).read_bytes() == BLOB and hub.requests == [("/m/x.bin", "bytes=1000-")]


# ------------------------------------------------------------------ size caps and the deadline
def test_an_endless_body_stops_at_the_manifest_size(tmp_path, hub):
    hub.custom["/m/config.json"] = endless()
    line = failure(tmp_path, manifest(tmp_path, hub.url + "/m/config.json", size=655, name="model/config.json"))
    assert "sent more than the 655-byte limit for this file (deleted)" in line
    assert left_in(tmp_path) == []


def test_an_endless_body_without_a_size_stops_at_the_ceiling(tmp_path, hub, monkeypatch):
    assert fetch.size_cap(w.load_manifest().select(["sd-turbo/unet/config.json"])[0]) == fetch.TEXT_CEILING_BYTES
    monkeypatch.setattr(fetch, "TEXT_CEILING_BYTES", 3 * 2**20)
    hub.custom["/m/config.json"] = endless()
    line = failure(tmp_path, manifest(tmp_path, hub.url + "/m/config.json", name="model/config.json"))
    assert f"sent more than the {3 * 2**20}-byte limit" in line and left_in(tmp_path) == []


def test_a_huge_content_length_is_refused_before_writing(tmp_path, hub):
    hub.custom["/m/x.bin"] = endless(length=str(10**15))
    line = failure(tmp_path, manifest(tmp_path, hub.url + "/m/x.bin"))
    assert f"offers {10**15} bytes, over the {fetch.DOWNLOAD_CEILING_BYTES}-byte limit" in line
    assert left_in(tmp_path) == []


def test_a_dripping_server_meets_the_deadline_and_the_partial_is_kept(tmp_path, hub, monkeypatch):
    monkeypatch.setattr(fetch, "DEADLINE_GRACE_S", 0.5)
    monkeypatch.setattr(fetch, "MIN_RATE_BYTES_S", 1000)
    hub.custom["/m/x.bin"] = drip(100, every_s=0.1)  # 10 bytes/s: each read is quick, the whole is not
    line = failure(tmp_path, manifest(tmp_path, hub.url + "/m/x.bin"))
    assert "too slow" in line and "again to resume" in line
    kept = tmp_path / "weights" / "model" / "x.bin.partial"
    assert left_in(tmp_path) == ["x.bin.partial"] and 0 < kept.stat().st_size < 100


# ------------------------------------------------------------------ messages
def test_a_redirect_loop_is_one_line(tmp_path, hub):
    def loop(handler) -> None:
        handler.send_response(302)
        handler.send_header("Location", "/m/x.bin")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    hub.custom["/m/x.bin"] = loop
    line = failure(tmp_path, manifest(tmp_path, hub.url + "/m/x.bin"))
    assert line == f"{hub.url}/m/x.bin: HTTP 302: a redirect loop (the server keeps redirecting)"


SECRETS = ("hunter2secret", "tok3nVALUE9", "hf_AbCdEf0123456789")


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seesr.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env})  # fmt: skip


def test_credentials_in_a_source_url_are_never_printed(tmp_path, hub):
    weights = tmp_path / "weights"
    weights.mkdir()
    host = hub.url.removeprefix("http://")
    (weights / w.USER_SOURCES_FILE).write_text(
        f"http://alice:{SECRETS[0]}@{host}/private\n"  # user-info: never sent as such, never printed
        f"{hub.url}/signed?token={SECRETS[1]}&v={SECRETS[2]}\n"
    )
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"format": 2, "files": [
        {"path": NAME, "group": "test", "size": None, "sha256": None, "sources": [{"url": hub.url + "/gone"}]},
    ]}))  # fmt: skip
    env = {"SEESR_WEIGHTS_MANIFEST": str(path), "SEESR_LOG_LEVEL": "INFO"}
    done = run_cli("weights", "download", "test", "--weights", str(weights), "--trust-unverified", env=env)
    printed = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in printed, printed
    assert f"{hub.url}/signed/model/x.bin?token=***&v=***: HTTP 404" in printed
    assert "http://***@" in printed
    for secret in SECRETS:
        assert secret not in printed, printed
    assert ("/signed/model/x.bin?token=" + SECRETS[1] + "&v=" + SECRETS[2], None) in hub.requests  # but used


# ------------------------------------------------------------------ the sources list
def test_a_sources_list_that_is_not_text_is_one_line_and_upscale_falls_back(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / w.USER_SOURCES_FILE).write_bytes(b"http://mirror.example/\xff\xfe\n")
    env = {"HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "hf"), "SEESR_PROCESS_SIZE": "0"}
    done = run_cli("weights", "download", "--weights", str(weights), env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == (
        f"seesr: cannot download weights: weights sources list {weights / w.USER_SOURCES_FILE} is not UTF-8 text "
        "(byte 22)"
    )

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(photo)
    done = run_cli("upscale", str(photo), "--weights", str(weights), "--download", "--json", "--scale", "2",
                   "--device", "cpu", env=env)  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    (record,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["status"] == "done" and record["engine"] == "realesrgan"
    assert "is not UTF-8 text (byte 22)" in record["fallback_reason"]
    assert Image.open(tmp_path / "photo_seesr.png").size == (16, 16)
