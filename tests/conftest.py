"""Shared test fixtures: where the official tiny golden files live, and how to read them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# torch's OpenMP threads spin-wait by default, which starves the other core of a 2-core machine
# running a second process (server, accelerate workers): ~10x slower tests under contention.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch
from safetensors.torch import load_file
from tiny_layout import lay_out_tiny_weights, tiny_weight_paths

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEESR_SHARED", REPO_ROOT.parent / "shared"))
TINY = SHARED / "fixtures" / "seesr_tiny"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def run_seesr(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """The ``seesr`` command as a user types it, in a subprocess that imports this checkout."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_WAIT_POLICY": "PASSIVE", **env}
    command = [str(Path(sys.executable).parent / "seesr"), *args]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


def shared_input(name: str) -> Path:
    """A real test image from ``../shared/data/inputs`` (fails the test when the folder is missing)."""
    path = SHARED / "data" / "inputs" / name
    if not path.is_file():
        pytest.fail(f"shared input {path} not found; set SEESR_SHARED to the shared/ folder")
    return path


@pytest.fixture(scope="session")
def tiny() -> Path:
    """Root of the official tiny fixtures (``../shared/fixtures/seesr_tiny``)."""
    if not TINY.is_dir():
        pytest.fail(f"shared fixtures not found at {TINY}; set SEESR_SHARED to the shared/ folder")
    return TINY


@pytest.fixture(scope="session")
def refs(tiny: Path):
    """Loader for ``refs/*.safetensors`` by stem name, cached per session."""
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def load(name: str) -> dict[str, torch.Tensor]:
        if name not in cache:
            cache[name] = load_file(str(tiny / "refs" / f"{name}.safetensors"))
        return cache[name]

    return load


@pytest.fixture(scope="session")
def tiny_weights(tiny: Path):
    """The tiny fixtures described as a :class:`seesr.weights.WeightPaths` (official layout)."""
    return tiny_weight_paths(tiny)


@pytest.fixture(scope="session")
def tiny_pipe(tiny_weights):
    """The SeeSR pipeline on the tiny official fixtures, CPU float32 (loaded once)."""
    from seesr.engines.seesr.pipeline import SeesrPipeline

    return SeesrPipeline.from_pretrained(tiny_weights, device="cpu")


@pytest.fixture()
def lr_image(tiny: Path):
    """A small real LR photo (RGB), the fixtures' ``pipeline_lr_crop.png``."""
    from PIL import Image

    return Image.open(tiny / "inputs" / "pipeline_lr_crop.png").convert("RGB")


@pytest.fixture(scope="session")
def tiny_weights_dir(tiny: Path, tmp_path_factory) -> Path:
    """A weights directory (standard layout) holding the tiny fixtures."""
    return lay_out_tiny_weights(tiny, tmp_path_factory.mktemp("weights"))
