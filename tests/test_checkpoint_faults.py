"""Weights that are present but unusable (issues 12.4 and 13.2): every checkpoint the pipeline reads,
truncated, garbage, a pickle payload, another architecture, a mis-shaped key: a WeightsError naming
the file and the fix (never torch's "weights_only=False" advice, never a silent Real-ESRGAN image);
an extra key is one warning; missing weights still fall back; checksum mismatches warn at load time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from seesr.errors import MissingWeightsError, WeightsError
from seesr.engines.seesr.pipeline import SeesrPipeline
from seesr.weights import WeightPaths

FILES = {
    "vae": "sd-turbo/vae/diffusion_pytorch_model.safetensors",
    "text_encoder": "sd-turbo/text_encoder/model.safetensors",
    "turbo_unet": "sd-turbo/unet/diffusion_pytorch_model.safetensors",
    "seesr_unet": "seesr/unet/diffusion_pytorch_model.safetensors",
    "controlnet": "seesr/controlnet/diffusion_pytorch_model.safetensors",
}
PTH = {"ram": "ram_swin_large_14m.pth", "dape": "DAPE.pth"}
LEGACY = {".safetensors": ".bin", "model.safetensors": "pytorch_model.bin"}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SEESR_WEIGHTS_MANIFEST", raising=False)


def weights_copy(tiny_weights_dir: Path, root: Path) -> Path:
    """The tiny weights directory with every file a symlink, so single files can be replaced."""
    shutil.copytree(tiny_weights_dir, root, symlinks=False, copy_function=os.symlink)
    return root


def replace(root: Path, name: str, data: bytes, new_name: str | None = None) -> Path:
    target = root / name
    target.unlink()
    target = target.with_name(new_name) if new_name else target
    target.write_bytes(data)
    return target


def load(root: Path) -> SeesrPipeline:
    return SeesrPipeline.from_pretrained(WeightPaths.from_dir(root), device="cpu")


def assert_clean_error(error: BaseException, path: Path) -> str:
    """One line naming the file, with what to do: these folders are the user's own (not the weights
    folder seesr downloads into), so download advice would not fix them."""
    message = str(error)
    assert str(path) in message, message
    assert "is a file of your own" in message and "replace it with an intact copy" in message, message
    assert "weights download" not in message, message
    assert "\n" not in message, message
    assert "weights_only" not in message, message
    return message


def test_a_damaged_file_where_seesr_downloads_gets_download_advice(tiny_weights_dir, tmp_path, monkeypatch):
    root = weights_copy(tiny_weights_dir, tmp_path / "w")
    monkeypatch.setenv("SEESR_WEIGHTS", str(root))  # the folder `seesr weights download` fills
    bad = replace(root, FILES["vae"], b"\x00" * 64)
    with pytest.raises(WeightsError) as err:
        load(root)
    message = str(err.value)
    assert str(bad) in message and "run `seesr weights verify`, then download it again (`seesr weights download " \
        "--force`)" in message and "of your own" not in message  # fmt: skip


class Payload:
    """Unpickling this would create a marker file (a weights-only load must refuse it)."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("component", sorted(FILES))
def test_truncated_safetensors_names_the_file(tiny_weights_dir, tmp_path, component):
    root = weights_copy(tiny_weights_dir, tmp_path / "w")
    data = (root / FILES[component]).read_bytes()
    bad = replace(root, FILES[component], data[: len(data) // 2])
    with pytest.raises(WeightsError) as err:
        load(root)
    assert not isinstance(err.value, MissingWeightsError)
    assert "not a complete safetensors file" in assert_clean_error(err.value, bad)


class SystemPayload:
    """Unpickling this would run a shell command (torch 2.14: "unsupported GLOBAL posix.system whose
    module posix is blocked", a wording of its own)."""

    marker: Path

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    ("component", "payload_class"),
    [("vae", Payload), ("text_encoder", Payload), ("controlnet", SystemPayload), ("turbo_unet", Payload)],
)
def test_refused_pickle_bin_names_the_file_and_never_runs(tiny_weights_dir, tmp_path, component, payload_class):
    root = weights_copy(tiny_weights_dir, tmp_path / "w")
    name = FILES[component]
    legacy = "pytorch_model.bin" if name.endswith("/model.safetensors") else "diffusion_pytorch_model.bin"
    Payload.marker = SystemPayload.marker = tmp_path / "payload-ran"
    payload = tmp_path / "payload.bin"
    torch.save({"weight": payload_class()}, payload)
    (root / name).unlink()
    bad = (root / name).with_name(legacy)
    shutil.copy(payload, bad)
    with pytest.raises(WeightsError) as err:
        load(root)
    assert "refused as unsafe: it holds Python objects" in assert_clean_error(err.value, bad)
    assert not Payload.marker.exists()


@pytest.mark.parametrize("which", sorted(PTH))
def test_random_bytes_pth_without_unsafe_advice(tiny_weights_dir, tmp_path, which):
    root = weights_copy(tiny_weights_dir, tmp_path / "w")
    bad = replace(root, PTH[which], np.random.default_rng(0).bytes(4096))
    with pytest.raises(WeightsError) as err:
        load(root)
    assert "not a PyTorch checkpoint" in assert_clean_error(err.value, bad)


def test_wrong_architecture_and_mis_shaped_key_name_the_keys(tiny_weights_dir, tmp_path):
    root = weights_copy(tiny_weights_dir, tmp_path / "w")
    controlnet = load_file(str(root / FILES["controlnet"]))
    bad = replace(root, FILES["vae"], b"")
    save_file(controlnet, str(bad))  # a ControlNet where the VAE should be
    with pytest.raises(WeightsError, match=r"sd-turbo VAE .* missing keys \(\d+\): decoder\.") as err:
        load(root)
    assert str(bad) in str(err.value)

    root = weights_copy(tiny_weights_dir, tmp_path / "w2")
    text = load_file(str(root / FILES["text_encoder"]))
    key = "text_model.final_layer_norm.weight"
    text[key] = torch.zeros(text[key].shape[0] + 1)
    save_file(text, str(replace(root, FILES["text_encoder"], b"")))
    with pytest.raises(WeightsError, match=r"shape mismatches \(1\): final_layer_norm\.weight \(file \(33,\), model \(32,\)\)"):
        load(root)


def test_extra_key_in_the_text_encoder_is_one_warning(tiny_weights_dir, tmp_path, caplog):
    root = weights_copy(tiny_weights_dir, tmp_path / "w")
    text = load_file(str(root / FILES["text_encoder"]))
    save_file({**text, "text_model.extra.weight": torch.zeros(3)}, str(replace(root, FILES["text_encoder"], b"")))
    with caplog.at_level(logging.WARNING):
        pipe = load(root)
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING and "unexpected key" in r.getMessage()]
    assert len(warnings) == 1 and "extra.weight" in warnings[0] and str(root / FILES["text_encoder"]) in warnings[0]
    assert pipe.text_encoder is not None


def test_checksum_mismatch_warns_at_load_time(tiny_weights_dir, tmp_path, caplog):
    """The real manifest pins the official DAPE.pth sha256 and RAM size; the tiny stand-ins differ."""
    with caplog.at_level(logging.WARNING, logger="seesr.weights"):
        WeightPaths.from_dir(tiny_weights_dir).warn_on_checksum_mismatch()
    lines = caplog.text.splitlines()
    assert any("DAPE.pth" in line and "sha256" in line and "seesr weights verify" in line for line in lines)
    assert any("ram_swin_large_14m.pth" in line and "bytes" in line for line in lines)
    remembered = json.loads((tmp_path / "xdg-cache" / "seesr" / "checksums.json").read_text())
    assert str((tiny_weights_dir / "DAPE.pth").resolve()) in remembered  # hashed once, remembered


# ------------------------------------------------------------------ the API and the command
@pytest.fixture
def lr_png(tmp_path) -> Path:
    path = tmp_path / "in" / "a.png"
    path.parent.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
    return path


def test_unusable_weights_never_fall_back_but_missing_ones_do(tiny_weights_dir, tmp_path, lr_png):
    from seesr.api import Upscaler

    fast = {"device": "cpu", "scale": 2, "steps": 1}
    root = weights_copy(tiny_weights_dir, tmp_path / "w")
    data = (root / FILES["seesr_unet"]).read_bytes()
    replace(root, FILES["seesr_unet"], data[:1000])
    with pytest.raises(WeightsError, match="seesr/unet/diffusion_pytorch_model.safetensors"):
        Upscaler(root).upscale(lr_png, **fast)

    (root / "DAPE.pth").unlink()
    result = Upscaler(root).upscale(lr_png, **fast)
    assert result.engine == "realesrgan" and "DAPE.pth" in result.fallback_reason


@pytest.mark.slow
def test_cli_folder_run_reports_each_file_in_one_line(tiny_weights_dir, tmp_path, lr_png):
    root = weights_copy(tiny_weights_dir, tmp_path / "w")
    data = (root / FILES["vae"]).read_bytes()
    bad = replace(root, FILES["vae"], data[: len(data) // 3])
    shutil.copy(lr_png, lr_png.with_name("b.png"))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "seesr.cli", "upscale", str(lr_png.parent), "-o", str(out), "--weights", str(root),
         "--device", "cpu", "--scale", "2", "--steps", "1"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 1, done.stderr
    failed = [line for line in done.stderr.splitlines() if ": failed: " in line]
    assert len(failed) == 2 and all(str(bad) in line for line in failed), done.stderr
    assert "Traceback" not in done.stderr and "weights_only" not in done.stderr
    assert not list(out.glob("*.png"))


def test_a_mistyped_weights_dir_is_never_created(tmp_path, lr_png, monkeypatch):
    """`--weights /typo/dir`: missing weights (fallback, naming the folder), no tree, no 64 MB cache there."""
    from seesr.api import Upscaler

    typo = tmp_path / "typo" / "dir"
    result = Upscaler(typo).upscale(lr_png, device="cpu", scale=2, steps=1)
    assert result.engine == "realesrgan" and f"(sd-turbo 11, seesr 5, ram 4) not found in {typo}" in result.fallback_reason
    assert not (tmp_path / "typo").exists()
    assert (tmp_path / "xdg-cache" / "seesr" / "RealESRGAN_x4plus_from_ncnn.safetensors").is_file()
    with pytest.raises(MissingWeightsError, match=f"the weights directory {typo} does not exist"):
        WeightPaths.resolve(typo)
