"""Choosing a Real-ESRGAN model: names and aliases, model files for spandrel, the engine that
follows the model, and the commands as a user types them."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seesr.settings import models
import seesr.engines.realesrgan.sources as sources
from conftest import REPO_ROOT, SHARED
from seesr.errors import ConfigError, WeightsError
from seesr.settings.resolve import resolve_settings


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40x32 crop of a real photo."""
    path = tmp_path_factory.mktemp("photos") / "photo.png"
    shared = SHARED / "data" / "realsr" / "lr"
    Image.open(sorted(shared.glob("*.png"))[0]).convert("RGB").crop((10, 20, 50, 52)).save(path)
    return path


@pytest.fixture(scope="module")
def compact_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random SRVGGNetCompact x2 saved as safetensors, as a chaiNNer user might have."""
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2)
    path = tmp_path_factory.mktemp("models") / "tiny_compact_x2.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


# ------------------------------------------------------------------ the model table


def test_bundled_models_are_declared_once() -> None:
    from seesr.settings.declare import setting_info

    info = setting_info("model")
    assert set(models.REALESRGAN_MODELS) <= set(info.choices)
    assert info.aliases == {
        "RealESRGAN_x4plus": "realesrgan-x4plus",
        "RealESRGAN_x4plus_anime_6B": "realesrgan-x4plus-anime",
        "realesr-animevideov3": "realesr-animevideov3-x4",
    }
    assert [spec.scale for spec in models.REALESRGAN_MODELS.values()] == [4, 4, 2, 3, 4]
    # the three anime-video models are one network: converted and cached once
    assert len({spec.cache_file for spec in models.REALESRGAN_MODELS.values()}) == 3


@pytest.mark.parametrize(
    ("given", "engine", "model"),
    [
        ({"model": "RealESRGAN_x4plus_anime_6B"}, "realesrgan", "realesrgan-x4plus-anime"),
        ({"model": "realesr-animevideov3"}, "realesrgan", "realesr-animevideov3-x4"),
        ({"engine": "realesrgan"}, "realesrgan", "realesrgan-x4plus"),
        ({"engine": "realesrgan", "model": "realesr-animevideov3-x2"}, "realesrgan", "realesr-animevideov3-x2"),
        ({}, "seesr", "seesr-turbo"),
        ({"model": "seesr"}, "seesr", "seesr"),
    ],
)
def test_the_engine_follows_the_model(given: dict, engine: str, model: str) -> None:
    settings = resolve_settings(given, environ={})
    assert (settings.engine, settings.model) == (engine, model)
    assert settings.color_fix == ("adain" if engine == "realesrgan" else "wavelet")


def test_a_model_file_means_realesrgan(compact_file: Path) -> None:
    settings = resolve_settings({"model": str(compact_file)}, environ={})
    assert (settings.engine, settings.model) == ("realesrgan", str(compact_file))


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"engine": "seesr", "model": "realesrgan-x4plus"}, "is a Real-ESRGAN model but engine='seesr' (drop engine"),
        ({"engine": "realesrgan", "model": "seesr"}, "is a SeeSR model but engine='realesrgan'"),
        ({"model": "missing.pth"}, "model='missing.pth' (it does not exist; give a model file)"),
        ({"model": "x4plus"}, "or a file (.pth, .safetensors, .ckpt)"),
    ],
)
def test_contradictions_say_what_to_do(given: dict, says: str) -> None:
    with pytest.raises(ConfigError, match="invalid settings") as error:
        resolve_settings(given, environ={})
    assert says in str(error.value)


def test_environment_engine_with_a_realesrgan_model_flag_is_refused() -> None:
    with pytest.raises(ConfigError, match="engine='seesr'"):
        resolve_settings({"model": "realesrgan-x4plus"}, environ={"SEESR_ENGINE": "seesr"})


# ------------------------------------------------------------------ model files through spandrel


def test_model_file_is_loaded_with_its_architecture_and_scale(compact_file: Path, photo: Path) -> None:
    engine = sources.load_realesrgan(model=str(compact_file), device="cpu")
    assert engine.scale == 2 and engine.name == "tiny_compact_x2.safetensors (RealESRGAN Compact x2)"
    assert engine.source == compact_file
    image = Image.open(photo)
    assert engine.upscale(image, scale=2).size == (80, 64)
    assert engine.upscale(image, scale=3, tile=16).size == (120, 96)  # x2, then PIL bicubic to x3


def test_a_file_spandrel_cannot_read_is_a_weights_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    bad = tmp_path / "not_a_model.safetensors"
    save_file({"whatever.weight": torch.zeros(2, 2)}, str(bad))
    with pytest.raises(WeightsError, match="not a model spandrel can load"):
        sources.load_realesrgan(model=str(bad), device="cpu")


def test_api_names_the_model(compact_file: Path, photo: Path, weights: Path) -> None:
    import seesr

    upscaler = seesr.Upscaler(weights, device="cpu")
    result = upscaler.upscale(photo, model=str(compact_file), scale=2)
    assert result.engine == "realesrgan" and result.image.size == (80, 64)
    assert "RealESRGAN Compact x2" in result.model and "RealESRGAN Compact x2" in result.summary()
    anime = upscaler.upscale(photo, model="realesr-animevideov3-x3", scale=3)
    assert anime.model == "realesr-animevideov3-x3" and anime.image.size == (120, 96)
    assert anime.settings.color_fix == "adain"
    plain = upscaler.upscale(photo, model="realesr-animevideov3-x3", scale=3, color_fix="none")
    assert not np.array_equal(np.asarray(anime.image), np.asarray(plain.image))  # the colour fix ran
    engine = upscaler.realesrgan(plain.settings)
    expected = engine.upscale(Image.open(photo), scale=3)
    assert np.array_equal(np.asarray(plain.image), np.asarray(expected))


# ------------------------------------------------------------------ as a user types it


def seesr_command(*args: str, cwd: Path, weights: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SEESR_WEIGHTS": str(weights), "SEESR_DEVICE": "cpu"}
    seesr = Path(sys.executable).parent / "seesr"
    return subprocess.run([str(seesr), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_upscale_with_realesrgan_flags(photo: Path, weights: Path, tmp_path: Path) -> None:
    done = seesr_command(
        "upscale", str(photo), "--model", "realesrgan-x4plus-anime", "-t", "16", "--tile-pad", "10", "-s", "2",
        "-o", "out.png", cwd=tmp_path, weights=weights,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "engine realesrgan (realesrgan-x4plus-anime)" in done.stdout
    with Image.open(tmp_path / "out.png") as out:
        assert (out.format, out.size) == ("PNG", (80, 64))


def test_upscale_with_an_alias_and_a_model_file(photo: Path, weights: Path, compact_file: Path, tmp_path: Path) -> None:
    done = seesr_command("upscale", str(photo), "-n", "realesr-animevideov3", "-s", "3", "--fp32", "-o", "a.jpg",
                         cwd=tmp_path, weights=weights)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "realesr-animevideov3-x4" in done.stdout
    with Image.open(tmp_path / "a.jpg") as out:
        assert (out.format, out.size) == ("JPEG", (120, 96))
    done = seesr_command("upscale", str(photo), "--model", str(compact_file), "-o", "b.png", cwd=tmp_path, weights=weights)
    assert done.returncode == 0, done.stderr
    assert "tiny_compact_x2.safetensors (RealESRGAN Compact x2)" in done.stdout
    with Image.open(tmp_path / "b.png") as out:
        assert out.size == (160, 128)  # the default scale 4: x2 network, then resized


def test_contradiction_is_one_line(photo: Path, weights: Path, tmp_path: Path) -> None:
    done = seesr_command("upscale", str(photo), "--engine", "seesr", "-n", "realesrgan-x4plus", cwd=tmp_path,
                         weights=weights)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "is a Real-ESRGAN model but engine='seesr'" in done.stderr
    assert "Traceback" not in done.stderr


def test_readme_table_is_the_declaration() -> None:
    """The model table (docs/realesrgan.md) lists exactly the declared models, scales, networks and aliases."""
    lines = (REPO_ROOT / "docs" / "realesrgan.md").read_text().splitlines()
    header = lines.index("| `--model` / `-n` | scale | network | also accepted |")
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), lines[header + 2 :]))
    expected = [
        f"| `{name}` | x{spec.scale} | {spec.architecture} | {', '.join(f'`{a}`' for a in spec.aliases)} |"
        for name, spec in models.REALESRGAN_MODELS.items()
    ]
    assert [" ".join(row.split()) for row in rows] == [" ".join(row.split()) for row in expected]
