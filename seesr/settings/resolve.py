"""Where settings come from, and which value wins.

Precedence, highest first: explicit arguments (API keyword / CLI flag / Cog input) -> ``SEESR_*``
environment variables -> a YAML config file -> the model's defaults -> the engine's -> the preset -> the
declared defaults. The winning value of each setting is the only one converted and validated (a
bad environment value overridden by a flag is no error); every problem is reported at once, each
with what is allowed. Light: no torch.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

from seesr.errors import ConfigError
from seesr.io.files import checked_file
from seesr.settings.config_file import config_file_settings
from seesr.settings.declare import DECLARED, env_name, setting_info, Settings, value_kind
from seesr.settings.presets import MODEL_RANGES
from seesr.settings.fields import parse_value, problem
from seesr.settings.models import (
    DEFAULT_MODEL as REALESRGAN_DEFAULT_MODEL, MODEL_FILE_MAX_BYTES, MODELS, REALESRGAN_MODELS, canonical_model,
    is_model_file, is_realesrgan_model,
)  # fmt: skip
from seesr.settings.presets import ENGINE_DEFAULTS, MODEL_DEFAULTS, PRESETS


def _range(name: str, model: str) -> tuple[float, float] | None:
    return MODEL_RANGES.get(model, {}).get(name, setting_info(name).range)


def _convert(name: str, value: Any) -> Any:
    """Coerce strings (environment, YAML, CLI) to the field's type; raise ValueError if impossible."""
    return parse_value(value, *value_kind(name))


def _validate(values: Mapping[str, Any], labels: Mapping[str, str]) -> list[str]:
    """Problems of the merged values, each named as the user gave it (``labels``: ``SEESR_STEPS`` for
    a value from the environment, else the setting's name)."""
    model = values.get("model", Settings.model)
    problems = [problem(labels.get(name, name), value, setting_info(name), _range(name, model))
                for name, value in values.items()]  # fmt: skip
    tile, overlap = values.get("latent_tile"), values.get("latent_overlap")
    if tile is not None and overlap is not None and overlap >= tile:
        problems.append(f"latent_overlap={overlap} (must be smaller than latent_tile={tile})")
    samples = values.get("num_samples", Settings.num_samples)
    if values.get("engine", Settings.engine) == "realesrgan" and isinstance(samples, int) and samples > 1:
        problems.append(f"num_samples={samples} (Real-ESRGAN is deterministic: every sample would be the same image; "
                        "use engine seesr for several, or 1)")  # fmt: skip
    return [line for line in problems if line is not None]


def _scale_or_size(given: Mapping[str, Any], where: Mapping[str, str]) -> list[str]:
    """A scale and a width or height exclude each other, wherever each was given."""
    sizes = [f"{name}={given[name]} ({where[name]})" for name in ("width", "height") if given.get(name) is not None]
    if "scale" not in given or not sizes:
        return []
    return [f"scale={given['scale']!r} ({where['scale']}) and {' and '.join(sizes)} exclude each other: give a scale, "
            "or a width and/or height"]  # fmt: skip


def environment_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``SEESR_<NAME>`` variables that name a setting (``SEESR_STEPS=1`` -> steps)."""
    environ = os.environ if environ is None else environ
    return {name: environ[env_name(name)] for name in DECLARED if env_name(name) in environ}


def _engine_and_model(given: dict[str, Any]) -> list[str]:
    """The engine follows from the model: a Real-ESRGAN model (name, alias or file) means engine
    realesrgan, engine realesrgan alone means its default model; a contradiction is a problem.
    Updates ``given`` (aliases become the model's short name)."""
    model, engine = given.get("model"), given.get("engine")
    if not isinstance(model, str):
        if engine == "realesrgan":
            given["model"] = REALESRGAN_DEFAULT_MODEL
        return []
    model = given["model"] = canonical_model(model)
    seesr_models = ", ".join(MODELS)
    if is_realesrgan_model(model):
        if engine == "seesr":
            return [f"model={model!r} is a Real-ESRGAN model but engine='seesr' (drop engine, or choose a SeeSR "
                    f"model: {seesr_models})"]  # fmt: skip
        if is_model_file(model):
            try:
                checked_file(model, "it", MODEL_FILE_MAX_BYTES, ConfigError, shown="")
            except ConfigError as problem:
                return [f"model={model!r} ({problem}; give a model file)"]
        given["engine"] = "realesrgan"
    elif engine == "realesrgan" and model in MODELS:
        return [f"model={model!r} is a SeeSR model but engine='realesrgan' (drop engine, or choose a Real-ESRGAN "
                f"model: {', '.join(REALESRGAN_MODELS)}, or a model file)"]  # fmt: skip
    return []


def resolve_settings(
    arguments: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Settings:
    """Merge arguments > environment > config file > model > engine > preset > defaults, then validate.

    ``None`` in ``arguments`` means "not given". Only the winning value of each setting is
    converted and checked; unknown names and bad values are reported together in one
    :class:`ConfigError`."""
    layers = [
        ("argument", {k: v for k, v in (arguments or {}).items() if v is not None}),
        ("environment", environment_settings(environ)),
        ("config file", config_file_settings(config_file)),
    ]
    problems = [f"unknown setting {name!r} ({where})" for where, layer in layers for name in layer if name not in DECLARED]
    winners: dict[str, tuple[str, Any]] = {}
    for where, layer in reversed(layers):
        winners.update((name, (where, value)) for name, value in layer.items() if name in DECLARED)
    labels = {name: env_name(name) for name, (where, _) in winners.items() if where == "environment"}
    given: dict[str, Any] = {}
    for name, (where, value) in winners.items():
        try:
            given[name] = _convert(name, value)
        except (TypeError, ValueError) as error:
            problems.append(f"{labels.get(name, name)}={value!r} ({where}: {error})")
    problems += _engine_and_model(given)
    problems += _scale_or_size(given, {name: where for name, (where, _) in winners.items()})
    preset, model = given.get("preset", Settings.preset), given.get("model", Settings.model)
    engine = given.get("engine", Settings.engine)
    merged = {**PRESETS.get(preset, {}), **ENGINE_DEFAULTS.get(engine, {}), **MODEL_DEFAULTS.get(model, {}), **given}
    problems += _validate(merged, labels)
    if problems:
        raise ConfigError("invalid settings: " + "; ".join(problems))
    return dataclasses.replace(Settings(), **merged)
