"""Where the weights come from, and strict checks that they match the architecture.

Layout of a weights directory (the official file names; ``weights/README.md``)::

    sd-turbo/            stabilityai/sd-turbo (unet, vae, text_encoder, tokenizer, scheduler)
    seesr/               SeeSR release: unet/ and controlnet/
    DAPE.pth             SeeSR's DAPE LoRA for RAM
    ram_swin_large_14m.pth
    ram/                 RAM data files: ram_tag_list.txt, ram_tag_list_chinese.txt,
                         ram_tag_list_threshold.txt
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable

from seesr.errors import WeightsError

REPO_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DOWNLOAD_HINT = "run `seesr weights download` (or see weights/README.md for where each file comes from)"


def default_weights_dir() -> Path:
    """``$SEESR_WEIGHTS`` if set, else the repository's ``weights/`` folder."""
    return Path(os.environ.get("SEESR_WEIGHTS", REPO_WEIGHTS_DIR))


@dataclass(frozen=True)
class WeightPaths:
    """Every file or folder the SeeSR pipeline reads. ``ram_configs`` is optional: without it
    the tagger uses the official full-size Swin-L / BERT configuration."""

    sd_turbo: Path
    seesr: Path
    ram_checkpoint: Path
    dape_checkpoint: Path | None
    ram_tag_list: Path
    ram_tag_list_chinese: Path | None
    ram_thresholds: Path
    ram_configs: Path | None = None

    @classmethod
    def from_dir(cls, root: str | Path | None = None) -> "WeightPaths":
        """The standard layout under ``root`` (default: :func:`default_weights_dir`)."""
        root = Path(root) if root is not None else default_weights_dir()
        data = root / "ram"
        return cls(
            sd_turbo=root / "sd-turbo",
            seesr=root / "seesr",
            ram_checkpoint=root / "ram_swin_large_14m.pth",
            dape_checkpoint=root / "DAPE.pth",
            ram_tag_list=data / "ram_tag_list.txt",
            ram_tag_list_chinese=data / "ram_tag_list_chinese.txt",
            ram_thresholds=data / "ram_tag_list_threshold.txt",
        )

    def required(self) -> dict[str, Path]:
        """Each required file, by field name (folders are checked by their config file)."""
        needed = {
            "sd_turbo": self.sd_turbo / "unet" / "config.json",
            "sd_turbo vae": self.sd_turbo / "vae" / "config.json",
            "sd_turbo text_encoder": self.sd_turbo / "text_encoder" / "config.json",
            "sd_turbo tokenizer": self.sd_turbo / "tokenizer",
            "sd_turbo scheduler": self.sd_turbo / "scheduler" / "scheduler_config.json",
            "seesr unet": self.seesr / "unet" / "config.json",
            "seesr controlnet": self.seesr / "controlnet" / "config.json",
        }
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name not in ("sd_turbo", "seesr") and value is not None:
                needed[field.name] = value
        return needed

    def check(self) -> "WeightPaths":
        """Raise one :class:`WeightsError` naming every missing file, else return self."""
        missing = [f"  {name}: {path}" for name, path in self.required().items() if not path.exists()]
        if missing:
            raise WeightsError("SeeSR weights not found:\n" + "\n".join(missing) + f"\nTo get them, {DOWNLOAD_HINT}.")
        return self


def check_state_dict_keys(
    what: str, missing: Iterable[str], unexpected: Iterable[str], allowed_missing: Iterable[str] = ()
) -> None:
    """Raise :class:`WeightsError` listing keys that differ from the architecture.

    Loading a checkpoint that lacks weights would silently leave random values in the model and
    produce garbage, so any difference is fatal, except keys named in ``allowed_missing``."""
    allowed = set(allowed_missing)
    missing = sorted(set(missing) - allowed)
    unexpected = sorted(set(unexpected))
    if not missing and not unexpected:
        return
    lines = [f"{what}: the checkpoint does not match the architecture."]
    if missing:
        lines.append(f"missing keys ({len(missing)}): " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    if unexpected:
        lines.append(
            f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected[:20]) + (" ..." if len(unexpected) > 20 else "")
        )
    lines.append(f"The file is incomplete or for another model; {DOWNLOAD_HINT}.")
    raise WeightsError("\n".join(lines))
