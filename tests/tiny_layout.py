"""The tiny official fixtures (``../shared/fixtures/seesr_tiny``) as seesr weights, described once.

``TINY_FILES`` maps each weights-manifest name to the fixture file standing in for it; the
weights-directory layout (:func:`lay_out_tiny_weights`) and the official in-place layout
(:func:`tiny_weight_paths`) are both derived from it.
"""

from __future__ import annotations

from pathlib import Path

from seesr.weights import WeightPaths

SD_TURBO_FILES = [
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "scheduler/scheduler_config.json",
]
SEESR_FILES = [
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "controlnet/config.json",
    "controlnet/diffusion_pytorch_model.safetensors",
]
TINY_FILES = {
    **{f"sd-turbo/{rel}": f"sd_turbo/{rel}" for rel in SD_TURBO_FILES},
    **{f"seesr/{rel}": f"seesr/{rel}" for rel in SEESR_FILES},
    "DAPE.pth": "ram/DAPE_tiny.pth",
    "ram_swin_large_14m.pth": "ram/ram_swin_large_14m_tiny.pth",
    "ram/ram_tag_list.txt": "ram/data/ram_tag_list.txt",
    "ram/ram_tag_list_chinese.txt": "ram/data/ram_tag_list_chinese.txt",
    "ram/ram_tag_list_threshold.txt": "ram/data/ram_tag_list_threshold.txt",
}
"""Manifest name -> the tiny fixture file standing in for it."""
TINY_RAM_CONFIGS = "ram/configs"
"""The fixtures' RAM configuration folder (Swin / BERT sizes of the tiny tagger), at the same place
in both layouts."""


def lay_out_tiny_weights(tiny: Path, root: Path, names=None, configs: bool = True) -> Path:
    """Symlink the tiny files (all, or the manifest ``names``) into the standard weights-directory
    layout under ``root``, with the RAM configs unless ``configs`` is false; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for name in TINY_FILES if names is None else names:
        link = root / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(tiny / TINY_FILES[name])
    if configs:
        (root / TINY_RAM_CONFIGS).parent.mkdir(parents=True, exist_ok=True)
        (root / TINY_RAM_CONFIGS).symlink_to(tiny / TINY_RAM_CONFIGS, target_is_directory=True)
    return root


def lay_out_tiny_sd2_base(tiny: Path, root: Path) -> Path:
    """Link the tiny sd_turbo folder (unet/ included) as ``root/sd-2-base``, SD-2-base's place in a
    weights directory: the tiny sd-turbo stands in for SD-2-base (the same architecture; only its
    scheduler config's timestep spacing differs). Returns ``root``."""
    (root / "sd-2-base").symlink_to(tiny / "sd_turbo", target_is_directory=True)
    return root


def tiny_weight_paths(tiny: Path) -> WeightPaths:
    """The fixtures where they are (the official folder layout), as a :class:`WeightPaths`."""

    def fixture(name: str) -> Path:
        return tiny / TINY_FILES[name]

    return WeightPaths(
        sd_turbo=fixture("sd-turbo/scheduler/scheduler_config.json").parents[1],
        seesr=fixture("seesr/unet/config.json").parents[1],
        ram_checkpoint=fixture("ram_swin_large_14m.pth"),
        dape_checkpoint=fixture("DAPE.pth"),
        ram_tag_list=fixture("ram/ram_tag_list.txt"),
        ram_tag_list_chinese=fixture("ram/ram_tag_list_chinese.txt"),
        ram_thresholds=fixture("ram/ram_tag_list_threshold.txt"),
        ram_configs=tiny / TINY_RAM_CONFIGS,
    )
