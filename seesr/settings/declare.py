"""Every user-facing setting, declared once.

:class:`Settings` is the one declaration: each field carries its help text, allowed range or
choices, the engines it applies to, whether it is a Cog input, and which keyword of which callee
it feeds (:meth:`Settings.arguments_for`). Everything else is derived from it: validation, the
``SEESR_<NAME>`` environment variables, the keys of a ``--config`` YAML file, the ``seesr
upscale`` flags (``--name-with-dashes``) and their help (:func:`describe`); a test holds Cog's
literal ``Input`` list equal to it. Defaults that come from the official scripts say so in their
help: the prompts (``--added_prompt``, ``--negative_prompt``), ``--process_size``, ``--start_steps``.
Where the values come from and which wins: :mod:`seesr.settings.resolve`. Light: no torch.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable

from seesr.errors import ConfigError
from seesr.settings.fields import Scope, Setting, field_kind, setting, setting_of
from seesr.settings.models import (
    DEFAULT_TILE_PAD, ENGINES, MODEL_ALIASES, MODEL_FILE_SUFFIXES, MODELS, REALESRGAN_MODELS, SAMPLERS,
)  # fmt: skip
from seesr.settings.presets import DEFAULT_SCALE, ENGINE_DEFAULTS, MODEL_DEFAULTS, MODEL_RANGES, PRESETS, TURBO

if TYPE_CHECKING:  # light module: the command line reads the declaration before torch is needed
    import torch

SEESR_ONLY = ("seesr",)
DTYPES = ("auto", "float32", "float16", "bfloat16")
OUTPUT_FORMATS = ("png", "jpg", "webp", "tiff", "auto")
START_POINTS = ("lr", "noise")
ATTENTIONS = ("auto", "sdpa")
"""Attention of the SeeSR networks: ``auto`` (the rule of :func:`seesr.engines.seesr.models.attention.attention_kernel`)
or ``sdpa`` (torch's ``scaled_dot_product_attention`` everywhere)."""
COLOR_FIX_METHODS: tuple[str, ...] = ("wavelet", "adain", "none")
"""Colour fixes (:mod:`seesr.imaging.colorfix`): the official wavelet and AdaIN, or none."""


def _per_model(name: str) -> str:
    """What the models other than the default one set ``name`` to, for help texts (``seesr: 50``)."""
    return ", ".join(f"{model}: {values[name]:g}" if isinstance(values[name], float) else f"{model}: {values[name]}"
                     for model, values in MODEL_DEFAULTS.items() if name in values)  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """Every user-facing setting, with the same names in the API, the CLI, ``SEESR_*``, YAML and Cog.
    Declaration order is the order of ``--help`` and of the Cog inputs."""

    preset: str = setting(
        "balanced", "Named set of settings (the table in docs/cli.md); explicit settings override it.",
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
        choices=(*MODELS, *REALESRGAN_MODELS), cog="empty", feeds="load", extra_flags=("-n",),
        aliases=MODEL_ALIASES, file_suffixes=MODEL_FILE_SUFFIXES,
    )  # fmt: skip
    scale: float = setting(
        DEFAULT_SCALE,
        f"Upscaling factor (excludes width and height); empty: the model's ({_per_model('scale')}), else {DEFAULT_SCALE:g}.",
        range=(1.0, 8.0), cog="empty", feeds="pipeline", extra_flags=("-s",),
    )  # fmt: skip
    width: int | None = setting(
        None, "Output width in pixels, instead of a scale: the height keeps the aspect (with height: the largest "
        "size that fits inside both).", range=(1, 32768), cog="empty",
    )  # fmt: skip
    height: int | None = setting(
        None, "Output height in pixels, instead of a scale: the width keeps the aspect (with width: the largest "
        "size that fits inside both).", range=(1, 32768), cog="empty",
    )  # fmt: skip
    steps: int = setting(
        TURBO.steps, f"Denoising steps; empty: the model's ({_per_model('steps')}), else the preset's.",
        range=(1, 8), engines=SEESR_ONLY, cog="empty", feeds="pipeline:num_inference_steps",
    )  # fmt: skip
    seed: int | None = setting(
        None, "Random seed; empty: a random one (the seed used is reported).",
        range=(0, 2**63 - 1), engines=SEESR_ONLY, cog="empty",
    )  # fmt: skip
    num_samples: int = setting(
        1, "SeeSR results per input, with the seeds seed, seed+1, ... (written as NAME_s<seed>.EXT when several; "
        "Real-ESRGAN is deterministic: 1 only).",
        range=(1, 8), engines=SEESR_ONLY, cog="default", feeds="pipeline", cog_range=(1, 4),
    )  # fmt: skip
    prompt: str = setting(
        "", "Extra text added to the prompt after the image's tags.", engines=SEESR_ONLY, cog="default", feeds="pipeline"
    )
    positive_prompt: str = setting(
        "clean, high-resolution, 8k", "Text appended to the prompt after the tags and the extra text.",
        engines=SEESR_ONLY, cog="default", feeds="pipeline",
    )  # fmt: skip
    negative_prompt: str = setting(
        "dotted, noise, blur, lowres, smooth", "Negative prompt; used only with guidance (guidance_scale above 1).",
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
        512, "Inputs whose short side is below process_size/scale are enlarged first (0: never).",
        range=(0, 4096), engines=SEESR_ONLY, cog="empty", feeds="pipeline",
    )  # fmt: skip
    output_format: str = setting(
        "png", "Format of the output file (auto: the input's own when it is PNG, JPEG, WebP or TIFF, else PNG).",
        choices=OUTPUT_FORMATS, cog="default", extra_flags=("--ext",),
    )  # fmt: skip
    quality: int = setting(95, "JPEG and WebP quality (PNG and TIFF are lossless).", range=(1, 100), cog="default")
    strip_metadata: bool = setting(
        False, "Write no metadata: no EXIF, XMP, ICC profile, DPI or PNG text (else each output keeps what its "
        "format can hold of the input's).", cog="default",
    )  # fmt: skip
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
    denoise: float = setting(0.0, "Non-local-means denoising strength before upscaling (0: off).", range=(0.0, 30.0))
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
        """The dtype this ``dtype`` setting means on ``device`` (:func:`~seesr.runtime.devices.requested_dtype`)."""
        from seesr.runtime.devices import requested_dtype

        return requested_dtype(self.dtype, device)

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
def setting_info(name: str) -> Setting:
    """The declaration of one setting."""
    return setting_of(DECLARED[name])


def settings_in_scope(scope: Scope) -> tuple[str, ...]:
    """The settings of one :data:`~seesr.settings.fields.Scope`, in declaration order."""
    return tuple(name for name in DECLARED if setting_info(name).scope == scope)


def env_name(name: str) -> str:
    """The environment variable of a setting: ``steps`` -> ``SEESR_STEPS``."""
    return f"SEESR_{name.upper()}"


def value_kind(name: str) -> tuple[type, bool]:
    """The setting's value type (bool, int, float or str) and whether it may be unset (None)."""
    return field_kind(DECLARED[name])


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
