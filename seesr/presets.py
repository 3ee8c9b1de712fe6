"""Every user-facing setting, declared once; presets as data; where settings come from.

:class:`Settings` is the one declaration: each field carries its help text, allowed range or
choices, the engines it applies to, whether it is a Cog input, and which keyword of which callee
it feeds (:meth:`Settings.arguments_for`). Everything else is derived from it: validation, the
``SEESR_<NAME>`` environment variables, the keys of a ``--config`` YAML file, the ``seesr
upscale`` flags (``--name-with-dashes``) and their help (:func:`describe`); a test holds Cog's
literal ``Input`` list equal to it.

Precedence, highest first: explicit arguments (API keyword / CLI flag / Cog input) -> ``SEESR_*``
environment variables -> a YAML config file -> the model's defaults -> the engine's -> the preset -> the
declared defaults. The winning value of each setting is the only one converted and validated (a
bad environment value overridden by a flag is no error); every problem is reported at once, each
with what is allowed.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

from seesr.defaults import (
    COLOR_FIX_METHODS, DEFAULT_NEGATIVE_PROMPT, DEFAULT_POSITIVE_PROMPT, DEFAULT_PROCESS_SIZE, MAX_DENOISE_STRENGTH,
)  # fmt: skip
from seesr.errors import ConfigError
from seesr.files import checked_file, read_text
from seesr.models import (
    DEFAULT_MODEL as REALESRGAN_DEFAULT_MODEL, DEFAULT_TILE_PAD, MODEL_ALIASES, MODEL_FILE_SUFFIXES, MODELS,
    REALESRGAN_MODELS, canonical_model, is_model_file, is_realesrgan_model,
)  # fmt: skip

if TYPE_CHECKING:  # light module: the command line reads the declaration before torch is needed
    import torch

    from seesr.kds import KdsConfig

PRESETS: dict[str, dict[str, Any]] = {
    "speed": {"steps": 1},
    "balanced": {"steps": 2},
    "quality": {"steps": 4, "latent_tile": 64, "latent_overlap": 16, "kds_particles": 4},
    "memory": {
        "steps": 2,
        "latent_tile": 48,
        "latent_overlap": 16,
        "tile_batch_size": 1,
        "vae_encoder_tile": 512,
        "vae_decoder_tile": 64,
        "dtype": "float16",
        "offload": True,
    },
}
"""What each preset changes from the defaults. The tile sizes are in latent pixels (denoiser, VAE
decoder) and image pixels (VAE encoder); the official latent tiles are 96 with overlap 32 (turbo
script) or 4 (``test_seesr.py``)."""

TURBO = MODELS["seesr-turbo"]
"""The default model, whose official defaults are the declared defaults of its settings."""
MODEL_SETTINGS = ("steps", "guidance_scale", "sampler", "max_latent_tile", "latent_overlap")
"""The settings a model brings (:class:`~seesr.models.ModelSpec` fields of the same names)."""
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    name: {key: getattr(spec, key) for key in MODEL_SETTINGS if getattr(spec, key) != getattr(TURBO, key)}
    for name, spec in MODELS.items()
}
"""What each model changes from the defaults (SeeSR-Turbo's), over the preset: a preset's latent
tiles keep the model's overlap (``--model seesr --preset quality``: tiles 64 with overlap 4)."""
MODEL_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    name: {"steps": (1, spec.max_steps)} for name, spec in MODELS.items() if spec.max_steps != TURBO.max_steps
}
"""Ranges that differ per model (everything else: the declared range)."""
ENGINE_DEFAULTS: dict[str, dict[str, Any]] = {"realesrgan": {"color_fix": "adain"}}
"""What each engine changes from the defaults, under the model's defaults (Real-ESRGAN: AdaIN,
which raised Y-PSNR and SSIM on RealSR; the README has the numbers)."""

ENGINES = ("seesr", "realesrgan")
SEESR_ONLY = ("seesr",)
DTYPES = ("auto", "float32", "float16", "bfloat16")
OUTPUT_FORMATS = ("png", "jpg", "webp", "auto")
SAMPLERS = ("ddim", "ddpm")
START_POINTS = ("lr", "noise")
Scope = Literal["image", "process", "naming"]
"""What a setting is about: ``image``, how one image is upscaled (chosen per request on every
surface: the web page's controls, its API); ``process``, the machine and how the networks are
held (device, precision, compilation: chosen by whoever starts a server, as ``seesr ui`` flags
and ``SEESR_*``, never per request); ``naming``, the files a folder run writes."""
ATTENTIONS = ("auto", "sdpa")
"""Attention of the SeeSR networks: ``auto`` (the rule of :func:`seesr.models.attention.attention_kernel`)
or ``sdpa`` (torch's ``scaled_dot_product_attention`` everywhere)."""
CogInput = Literal["default", "empty"]
"""How a setting is a Cog input: ``default`` (the input's default is the setting's) or ``empty``
(an Optional input whose default, empty, leaves the value to the preset, the model or the
server's ``SEESR_*`` environment)."""


def _per_model(name: str) -> str:
    """What the models other than the default one set ``name`` to, for help texts (``seesr: 50``)."""
    return ", ".join(f"{model}: {values[name]}" for model, values in MODEL_DEFAULTS.items() if name in values)


@dataclass(frozen=True)
class Setting:
    """What the surfaces need to know about one :class:`Settings` field.

    ``feeds``: ``"target"`` or ``"target:keyword"``, the callee the value is passed to (targets:
    ``pipeline`` = ``SeesrPipeline.__call__``, ``load`` = ``SeesrPipeline.from_pretrained``,
    ``plan`` = a :class:`RunPlan` field the user fixes, ``planner`` = ``plan_run``, ``kds`` =
    :class:`KdsConfig`); the keyword defaults to the setting's name. ``extra_flags``: more
    command-line flags for it (the names users of other upscalers know)."""

    help: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    engines: tuple[str, ...] = ENGINES
    cog: CogInput | None = None
    feeds: str | None = None
    extra_flags: tuple[str, ...] = ()
    """More flag names (``-n`` for ``--model``, ``--ext``): names their users know from Real-ESRGAN."""
    aliases: Mapping[str, str] | None = None
    """Other accepted names of choices (alias -> choice)."""
    file_suffixes: tuple[str, ...] | None = None
    """A value ending in one of these is a file path, accepted in place of a choice."""
    scope: Scope = "image"
    """What the setting is about (:data:`Scope`)."""


def setting(
    default: Any,
    help: str,  # noqa: A002
    *,
    range: tuple[float, float] | None = None,  # noqa: A002
    choices: tuple[str, ...] | None = None,
    engines: tuple[str, ...] = ENGINES,
    cog: CogInput | None = None,
    feeds: str | None = None,
    extra_flags: tuple[str, ...] = (),
    aliases: Mapping[str, str] | None = None,
    file_suffixes: tuple[str, ...] | None = None,
    scope: Scope = "image",
) -> Any:
    """A :class:`Settings` field with its :class:`Setting` description as metadata."""
    described = Setting(help, range, choices, engines, cog, feeds, extra_flags, aliases, file_suffixes, scope)
    return dataclasses.field(default=default, metadata={"setting": described})


@dataclass(frozen=True)
class Settings:
    """Every user-facing setting, with the same names in the API, the CLI, ``SEESR_*``, YAML and Cog.
    Declaration order is the order of ``--help`` and of the Cog inputs."""

    preset: str = setting(
        "balanced", "Named set of settings (the table in the README); explicit settings override it.",
        choices=tuple(PRESETS), engines=SEESR_ONLY, cog="default",
    )  # fmt: skip
    engine: str = setting(
        "seesr", "Upscaling engine (realesrgan: fast, with bundled weights); empty: realesrgan for a Real-ESRGAN model, else seesr.",
        choices=ENGINES, cog="empty",
    )  # fmt: skip
    model: str = setting(
        "seesr-turbo", "Model: SeeSR weights (seesr: the original on SD-2-base, with "
        + ", ".join(f"{key} {value}" for key, value in MODEL_DEFAULTS["seesr"].items())
        + ") or a Real-ESRGAN model (implies engine realesrgan; engine realesrgan alone: realesrgan-x4plus).",
        choices=(*MODEL_DEFAULTS, *REALESRGAN_MODELS), cog="empty", feeds="load", extra_flags=("-n",),
        aliases=MODEL_ALIASES, file_suffixes=MODEL_FILE_SUFFIXES,
    )  # fmt: skip
    scale: float = setting(4.0, "Upscaling factor.", range=(1.0, 8.0), cog="default", feeds="pipeline", extra_flags=("-s",))
    steps: int = setting(
        TURBO.steps, f"Denoising steps; empty: the model's ({_per_model('steps')}), else the preset's.",
        range=(1, 8), engines=SEESR_ONLY, cog="empty", feeds="pipeline:num_inference_steps",
    )  # fmt: skip
    seed: int | None = setting(
        None, "Random seed; empty: a random one (the seed used is reported).",
        range=(0, 2**63 - 1), engines=SEESR_ONLY, cog="empty",
    )  # fmt: skip
    prompt: str = setting(
        "", "Extra text added to the prompt after the image's tags.", engines=SEESR_ONLY, cog="default", feeds="pipeline"
    )
    positive_prompt: str = setting(
        DEFAULT_POSITIVE_PROMPT, "Text appended to the prompt after the tags and the extra text.",
        engines=SEESR_ONLY, cog="default", feeds="pipeline",
    )  # fmt: skip
    negative_prompt: str = setting(
        DEFAULT_NEGATIVE_PROMPT, "Negative prompt; used only with guidance (guidance_scale above 1).",
        engines=SEESR_ONLY, cog="default", feeds="pipeline",
    )  # fmt: skip
    guidance_scale: float = setting(
        TURBO.guidance_scale,
        f"Classifier-free guidance scale (1: off, as SeeSR-Turbo runs); empty: the model's ({_per_model('guidance_scale')}).",
        range=(1.0, 20.0), engines=SEESR_ONLY, cog="empty", feeds="pipeline",
    )  # fmt: skip
    conditioning_scale: float = setting(
        1.0, "ControlNet conditioning strength (how closely the output follows the input).",
        range=(0.0, 2.0), engines=SEESR_ONLY, cog="empty", feeds="pipeline",
    )  # fmt: skip
    color_fix: str = setting(
        "wavelet", "Colour correction from the input (wavelet: ours; the official scripts default to adain); empty: the engine's.",
        choices=COLOR_FIX_METHODS, cog="empty", feeds="pipeline",
    )  # fmt: skip
    process_size: int = setting(
        DEFAULT_PROCESS_SIZE, "Inputs whose short side is below process_size/scale are enlarged first (0: never).",
        range=(0, 4096), engines=SEESR_ONLY, cog="empty", feeds="pipeline",
    )  # fmt: skip
    output_format: str = setting(
        "png", "Format of the output file (auto: the input's own when it is PNG, JPEG or WebP, else PNG).",
        choices=OUTPUT_FORMATS, cog="default", extra_flags=("--ext",),
    )  # fmt: skip
    quality: int = setting(95, "JPEG and WebP quality (PNG is lossless).", range=(1, 100), cog="default")
    suffix: str | None = setting(
        None, "Text added to the stem of each output named after its input; empty: _seesr for one input "
        "written beside it, nothing in an output folder.", scope="naming",
    )  # fmt: skip
    sampler: str = setting(
        TURBO.sampler, "Sampler (ddim: deterministic, ours; ddpm: the official scripts' stochastic step); empty: the "
        f"model's (seesr-turbo: {TURBO.sampler}, {_per_model('sampler')}).",
        choices=SAMPLERS, engines=SEESR_ONLY, cog="empty", feeds="pipeline",
    )  # fmt: skip
    start_point: str = setting(
        "lr", "Where denoising starts: lr (the noised input latent, official) or noise (pure noise).",
        choices=START_POINTS, engines=SEESR_ONLY, cog="default", feeds="pipeline",
    )  # fmt: skip
    start_steps: int = setting(
        999, "Denoising runs the timesteps up to this one, from the input latent noised to it when start_point is "
        "lr (999, the official default: every step runs).",
        range=(1, 999), engines=SEESR_ONLY, cog="default", feeds="pipeline",
    )  # fmt: skip
    kds_particles: int = setting(
        1, "Kernel Density Steering particles (1: off); empty: the preset's (quality: 4).",
        range=(1, 16), engines=SEESR_ONLY, cog="empty", feeds="kds:particles",
    )  # fmt: skip
    kds_strength: float = setting(
        1.0, "KDS step towards the ensemble mode, 0-1.",
        range=(0.0, 1.0), engines=SEESR_ONLY, cog="empty", feeds="kds:strength",
    )  # fmt: skip
    kds_bandwidth: float | None = setting(
        None, "KDS kernel bandwidth (per-element RMS distance in latent units); empty: median heuristic.",
        range=(1e-6, 1e6), engines=SEESR_ONLY, cog="empty", feeds="kds:bandwidth",
    )  # fmt: skip
    kds_patch: int = setting(
        4, "KDS patch side in latent pixels (8 image pixels each).",
        range=(1, 64), engines=SEESR_ONLY, cog="empty", feeds="kds:patch",
    )  # fmt: skip
    offload: bool | None = setting(
        None, "Keep the networks on the CPU between stages (less GPU memory, slower); empty: the planner decides.",
        engines=SEESR_ONLY, cog="empty", feeds="plan",
    )  # fmt: skip
    device: str | None = setting(None, "Device: cuda, cuda:1, cpu, ...; empty: cuda when available.", scope="process")
    dtype: str = setting(
        "auto", "Precision; auto: float16 on CUDA, bfloat16 on a CPU with native bf16, else float32.",
        choices=DTYPES, engines=SEESR_ONLY, scope="process",
    )  # fmt: skip
    latent_tile: int | None = setting(
        None, "Denoiser tile in latent pixels (8 image pixels each); empty: the planner's.",
        range=(8, 1024), engines=SEESR_ONLY, feeds="plan",
    )  # fmt: skip
    latent_overlap: int | None = setting(
        TURBO.latent_overlap,
        f"Overlap of denoiser tiles in latent pixels; empty: the model's ({_per_model('latent_overlap')}), else a third "
        "of the tile, at most 32.",
        range=(0, 512), engines=SEESR_ONLY, feeds="plan",
    )  # fmt: skip
    max_latent_tile: int = setting(
        TURBO.max_latent_tile, "Largest denoiser tile the planner chooses, in latent pixels (96: the official tile).",
        range=(8, 1024), engines=SEESR_ONLY, feeds="planner",
    )  # fmt: skip
    tile_batch_size: int | None = setting(
        None, "Denoiser tiles run together; empty: the planner's.", range=(1, 64), engines=SEESR_ONLY, feeds="plan"
    )
    vae_encoder_tile: int | None = setting(
        None, "VAE encoder tile in image pixels; empty: the planner's.",
        range=(64, 8192), engines=SEESR_ONLY, feeds="plan",
    )  # fmt: skip
    vae_decoder_tile: int | None = setting(
        None, "VAE decoder tile in latent pixels; empty: the planner's.",
        range=(8, 1024), engines=SEESR_ONLY, feeds="plan",
    )  # fmt: skip
    compile: bool = setting(
        False, "torch.compile ControlNet and UNet (minutes on the first image; measured slower on the CPU).",
        engines=SEESR_ONLY, scope="process",
    )  # fmt: skip
    attention: str = setting(
        "auto", "Attention kernel: auto (seesr's AVX512-BF16 kernel for bfloat16 on CPUs with AVX512-BF16 and no AMX, "
        "measured faster there; elsewhere torch's) or sdpa (torch's scaled_dot_product_attention everywhere).",
        choices=ATTENTIONS, engines=SEESR_ONLY, scope="process",
    )  # fmt: skip
    tile: int = setting(
        0, "Real-ESRGAN tile size in input pixels (0: untiled when the image fits the free memory, else 256, 128, 64).",
        range=(0, 8192), engines=("realesrgan",), extra_flags=("-t",),
    )  # fmt: skip
    tile_pad: int = setting(
        DEFAULT_TILE_PAD, "Pixels of neighbouring image around each Real-ESRGAN tile, cut off after the network.",
        range=(0, 256), engines=("realesrgan",),
    )  # fmt: skip
    fp32: bool = setting(
        False, "Real-ESRGAN in float32 (else float16 on CUDA, bfloat16 on a CPU with native bf16).",
        engines=("realesrgan",), scope="process",
    )  # fmt: skip
    denoise: float = setting(0.0, "Non-local-means denoising strength before upscaling (0: off).", range=(0.0, MAX_DENOISE_STRENGTH))
    no_fallback: bool = setting(
        False, "Fail instead of falling back to Real-ESRGAN when SeeSR cannot run.", engines=SEESR_ONLY
    )

    def arguments_for(self, target: str, accepts: Callable[..., Any] | None = None) -> dict[str, Any]:
        """The keyword arguments these settings give to ``target`` (see :class:`Setting`'s ``feeds``);
        unset (None) values are left to the callee.

        ``accepts``: the callee; keywords it does not take are left out when their setting is at its
        declared default (the callee's behaviour is that default) and refused otherwise."""
        chosen = [
            (name, keyword, getattr(self, name))
            for name, fed, keyword in FEEDS
            if fed == target and getattr(self, name) is not None
        ]
        if accepts is not None:
            taken = inspect.signature(accepts).parameters
            refused = [f"{name}={value!r}" for name, keyword, value in chosen if keyword not in taken and value != DECLARED[name].default]
            if refused:
                raise ConfigError(f"{', '.join(refused)}: this SeeSR pipeline does not take it; leave it at its default")
            chosen = [(name, keyword, value) for name, keyword, value in chosen if keyword in taken]
        return {keyword: value for _, keyword, value in chosen}

    def plan_overrides(self) -> dict[str, Any]:
        """The tiling settings the user (or preset) fixed; the planner chooses the rest."""
        return self.arguments_for("plan")

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        """``auto``: float16 on CUDA, bfloat16 on a CPU with native bf16, float32 elsewhere. float16
        on the CPU becomes bfloat16 (same size, but with fast CPU kernels and no overflow)."""
        import torch

        from seesr.devices import default_dtype

        if self.dtype == "auto":
            return default_dtype(device)
        if self.dtype == "float16" and device.type == "cpu":
            return torch.bfloat16
        return getattr(torch, self.dtype)

    def kds_config(self) -> KdsConfig | None:
        """Kernel Density Steering settings, None with a single particle (plain sampling)."""
        if self.kds_particles <= 1:
            return None
        from seesr.kds import KdsConfig

        return KdsConfig(**self.arguments_for("kds"))

    def batch_multiplier(self) -> int:
        """How many latents go through the denoiser at once per tile: x2 with guidance, x particles."""
        return (2 if self.guidance_scale > 1.0 else 1) * self.kds_particles


DECLARED: dict[str, dataclasses.Field] = {f.name: f for f in fields(Settings)}
"""The declaration, by name."""
FEEDS: tuple[tuple[str, str, str], ...] = tuple(
    (name, target, keyword or name)
    for name, f in DECLARED.items()
    if f.metadata["setting"].feeds
    for target, _, keyword in [f.metadata["setting"].feeds.partition(":")]
)
"""(setting, target, keyword) for every setting that is passed to a callee."""
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def setting_info(name: str) -> Setting:
    """The declaration of one setting."""
    return DECLARED[name].metadata["setting"]


def settings_in_scope(scope: Scope) -> tuple[str, ...]:
    """The settings of one :data:`Scope`, in declaration order."""
    return tuple(name for name in DECLARED if setting_info(name).scope == scope)


def env_name(name: str) -> str:
    """The environment variable of a setting: ``steps`` -> ``SEESR_STEPS``."""
    return f"SEESR_{name.upper()}"


def flag_name(name: str) -> str:
    """The command-line flag of a setting: ``kds_particles`` -> ``--kds-particles``."""
    return "--" + name.replace("_", "-")


def field_kind(declared: dataclasses.Field) -> tuple[type, bool]:
    """A settings field's value type (bool, int, float or str) and whether it may be unset (None)."""
    kind = str(declared.type)
    base = next(t for t in (bool, int, float, str) if kind.startswith(t.__name__))
    return base, "None" in kind


def value_kind(name: str) -> tuple[type, bool]:
    """The setting's value type (bool, int, float or str) and whether it may be unset (None)."""
    return field_kind(DECLARED[name])


def _range(name: str, model: str) -> tuple[float, float] | None:
    return MODEL_RANGES.get(model, {}).get(name, setting_info(name).range)


def _text(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "on" if value else "off"
    return repr(value) if value == "" else str(value)


def describe(name: str) -> str:
    """Help text with the default (and what presets and models change) and what is allowed."""
    info = setting_info(name)
    declared = DECLARED[name].default
    changed = [f"{preset} preset {_text(v[name])}" for preset, v in PRESETS.items() if v.get(name, declared) != declared]
    changed += [f"model {model} {_text(v[name])}" for model, v in MODEL_DEFAULTS.items() if v.get(name, declared) != declared]
    changed += [f"engine {engine} {_text(v[name])}" for engine, v in ENGINE_DEFAULTS.items() if v.get(name, declared) != declared]
    default = _text(declared) + (f" ({', '.join(changed)})" if changed else "")
    parts = [info.help, f"Default: {default}."]
    if info.choices:
        parts.append(f"One of: {', '.join(info.choices)}.")
        if info.aliases:
            parts.append(f"Also: {', '.join(f'{alias} (= {choice})' for alias, choice in info.aliases.items())}.")
        if info.file_suffixes:
            parts.append(f"Or a model file ({', '.join(info.file_suffixes)}).")
    elif info.range:
        allowed = f"{info.range[0]} to {info.range[1]}"
        per_model = [f"model {model} {r[name][0]} to {r[name][1]}" for model, r in MODEL_RANGES.items() if name in r]
        parts.append(f"Range: {allowed}" + (f" ({', '.join(per_model)})." if per_model else "."))
    return " ".join(parts)


def _convert(name: str, value: Any) -> Any:
    """Coerce strings (environment, YAML, CLI) to the field's type; raise ValueError if impossible."""
    return convert_value(value, *value_kind(name))


def convert_value(value: Any, kind: type, optional: bool = False) -> Any:
    """``value`` (text from the environment, a flag or YAML, or a typed value) as ``kind`` (bool,
    int, float or str): the one conversion rule of every settings surface (upscale settings,
    training settings, the degradation YAML). Numbers must be finite; an integer setting takes no
    fraction; text such as ``"none"`` is None where ``optional``. Raises ValueError saying what is
    allowed."""
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        if not optional:
            raise ValueError("may not be empty")
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError("must be true or false")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be an integer")
        try:
            return int(value)
        except ValueError:
            raise ValueError("must be an integer") from None
    if kind is float:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            number = float(value)
        except ValueError:
            raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        return number
    if not isinstance(value, str):
        raise ValueError("must be text")
    return value


def out_of_range(name: str, value: Any, allowed: tuple[float, float]) -> str:
    """The problem line of a value outside its declared range."""
    return f"{name}={value!r} (allowed: {allowed[0]} to {allowed[1]})"


def _validate(values: Mapping[str, Any]) -> list[str]:
    problems = []
    model = values.get("model", Settings.model)
    for name, value in values.items():
        if value is None:
            continue
        info, allowed = setting_info(name), _range(name, model)
        if allowed is not None and not allowed[0] <= value <= allowed[1]:
            problems.append(out_of_range(name, value, allowed))
        is_file = info.file_suffixes and isinstance(value, str) and value.lower().endswith(info.file_suffixes)
        if info.choices and value not in info.choices and not is_file:
            files = f", or a file ({', '.join(info.file_suffixes)})" if info.file_suffixes else ""
            problems.append(f"{name}={value!r} (allowed: {', '.join(info.choices)}{files})")
    tile, overlap = values.get("latent_tile"), values.get("latent_overlap")
    if tile is not None and overlap is not None and overlap >= tile:
        problems.append(f"latent_overlap={overlap} (must be smaller than latent_tile={tile})")
    return problems


def environment_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``SEESR_<NAME>`` variables that name a setting (``SEESR_STEPS=1`` -> steps)."""
    environ = os.environ if environ is None else environ
    return {name: environ[env_name(name)] for name in DECLARED if env_name(name) in environ}


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
    seesr_models = ", ".join(MODEL_DEFAULTS)
    if is_realesrgan_model(model):
        if engine == "seesr":
            return [f"model={model!r} is a Real-ESRGAN model but engine='seesr' (drop engine, or choose a SeeSR "
                    f"model: {seesr_models})"]  # fmt: skip
        if is_model_file(model):
            from seesr.weights.checkpoints import MODEL_FILE_MAX_BYTES

            try:
                checked_file(model, "it", MODEL_FILE_MAX_BYTES, ConfigError, shown="")
            except ConfigError as problem:
                return [f"model={model!r} ({problem}; give a model file)"]
        given["engine"] = "realesrgan"
    elif engine == "realesrgan" and model in MODEL_DEFAULTS:
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
    given: dict[str, Any] = {}
    for name, (where, value) in winners.items():
        try:
            given[name] = _convert(name, value)
        except (TypeError, ValueError) as error:
            problems.append(f"{name}={value!r} ({where}: {error})")
    problems += _engine_and_model(given)
    preset, model = given.get("preset", Settings.preset), given.get("model", Settings.model)
    engine = given.get("engine", Settings.engine)
    merged = {**PRESETS.get(preset, {}), **ENGINE_DEFAULTS.get(engine, {}), **MODEL_DEFAULTS.get(model, {}), **given}
    problems += _validate(merged)
    if problems:
        raise ConfigError("invalid settings: " + "; ".join(problems))
    return dataclasses.replace(Settings(), **merged)
