"""Settings files: a YAML mapping of setting names to plain values (``seesr upscale --config``,
``seesr train --config``, the training degradation files). Light: no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seesr.errors import ConfigError
from seesr.io.files import read_text

CONFIG_FILE_MAX_BYTES = 1 << 20
"""A settings file is a few lines; anything larger is refused before parsing."""


def config_file_settings(path: str | Path | None) -> dict[str, Any]:
    """Settings from a YAML file (a mapping of setting names to values). Anything that is not a small
    UTF-8 file of plain values (a folder, binary data, YAML anchors/aliases, which can expand into
    billions of values) is a ConfigError."""
    if path is None:
        return {}
    import yaml

    path = Path(path)
    text = read_text(path, "config file", CONFIG_FILE_MAX_BYTES, ConfigError)
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise ConfigError(f"config file {path} uses YAML aliases (*name); write each value out")
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of setting names to values")
    return data
