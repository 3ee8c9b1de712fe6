"""Where weights are: the weights-directory layout, the weights directory and the Hugging Face cache
(the lookup itself and its messages are shared privately: :mod:`seesr.weights._shared`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from seesr.io.files import user_cache_dir


logger = logging.getLogger("seesr.weights")

REPO_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
"""The checkout's ``weights/`` folder (absent when seesr is installed from a wheel)."""
DOWNLOAD_COMMAND = "seesr weights download"
DOWNLOAD_HINT = f"run `{DOWNLOAD_COMMAND}` (or see weights/README.md for where each file comes from)"

# Where each Status/VerifyResult was found.
EXPLICIT, WEIGHTS_DIR, HF_CACHE, MISSING = "explicit", "weights_dir", "hf_cache", "missing"
FOLDERS = {"sd_turbo": "sd-turbo", "seesr": "seesr", "sd2_base": "sd-2-base"}
"""WeightPaths folder fields -> their folder in the weights directory (= manifest path prefix)."""
OPTIONAL_FOLDERS = {"sd2_base"}
"""Folders only one model needs (SD-2-base: the non-turbo SeeSR): used when present, else None."""
OPTIONAL = {"dape_checkpoint", "ram_tag_list_chinese", "ram_configs", *OPTIONAL_FOLDERS}
"""WeightPaths fields that may be None."""
FILES = {
    "ram_checkpoint": "ram_swin_large_14m.pth",
    "dape_checkpoint": "DAPE.pth",
    "ram_tag_list": "ram/ram_tag_list.txt",
    "ram_tag_list_chinese": "ram/ram_tag_list_chinese.txt",
    "ram_thresholds": "ram/ram_tag_list_threshold.txt",
}
"""WeightPaths file fields -> manifest entry names."""
RAM_CONFIGS = "ram/configs"
LEGACY_NAMES = {
    "diffusion_pytorch_model.safetensors": "diffusion_pytorch_model.bin",
    "model.safetensors": "pytorch_model.bin",
}
"""A local folder may hold the pickle ``.bin`` weights instead of safetensors (the loaders read both)."""


def default_weights_dir() -> Path:
    """``$SEESR_WEIGHTS`` if set, else the checkout's ``weights/`` folder, else (an installed
    package) ``$XDG_CACHE_HOME/seesr/weights`` (``~/.cache/seesr/weights``)."""
    if "SEESR_WEIGHTS" in os.environ:
        return Path(os.environ["SEESR_WEIGHTS"])
    if REPO_WEIGHTS_DIR.is_dir():
        return REPO_WEIGHTS_DIR
    return user_cache_dir() / "weights"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (``HF_HUB_CACHE``,
    ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``/hub), else huggingface_hub's default."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[var])))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HOME"]))) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def offline_mode() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value, read at call time."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(var)
        if value is not None and value.strip():
            if value.strip().upper() in {"1", "ON", "YES", "TRUE"}:
                return True
    return False
