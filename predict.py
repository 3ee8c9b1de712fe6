"""Cog runner for seesr: a thin adapter over :class:`seesr.api.Upscaler`.

Cog 0.23 conventions (``cog`` SDK docs): a ``BaseRunner`` subclass named ``Runner`` with ``setup()``
and ``run()``, referenced from cog.yaml as ``run: "predict.py:Runner"`` (``BasePredictor``,
``Predictor`` and ``predict()`` are the deprecated names).

Weights are not baked into the image unless you copy them into the build (README, "Serving and scaling"):
``setup()`` looks for the server's model (``SEESR_MODEL``, default seesr-turbo) in ``$SEESR_WEIGHTS``
(else the repository's ``weights/``) and the Hugging Face cache, and downloads what is missing. If
they cannot be had, setup fails (Cog's SETUP_FAILED, the reason in its logs: which files, where
they were looked for, which sources were tried), so the server never reports READY for a model it
cannot run, unless it was started to serve Real-ESRGAN in their place (``SEESR_ALLOW_FALLBACK=1``:
each output then says so) or asked for Real-ESRGAN (``SEESR_ENGINE=realesrgan``). Running out of
memory during a prediction still falls back, and the output says so (``fallback_reason``).

A prediction writes progress lines (stage, step x tile, elapsed time, ETA:
:class:`seesr.progress.LogProgress`) to stdout, which Cog keeps as the prediction's ``logs``, and
returns an :class:`Output`: the image of each sample and how they were made.

The inputs after ``image`` are the settings that ``seesr.settings.declare.Settings`` declares for Cog, with
the same names, in the same order. They are plain literals (one string literal per description:
no implicit concatenation, no escapes) because ``cog build`` reads them statically with
tree-sitter; ``tests/test_cog.py`` holds them equal to the declaration (types, defaults, ranges,
choices, descriptions) and ``.cog/openapi_schema.json`` equal to this signature. An input left
empty leaves its value to the preset, the model or the server's ``SEESR_*`` environment; settings
that are not inputs (``device``, ``dtype``, tiles, ...) come from ``SEESR_*`` variables only.
Every value is validated by seesr as well (a server started without the schema does not enforce
``Input`` constraints): a bad value fails the prediction with seesr's ``ConfigError`` message.
"""

import dataclasses
import inspect
import logging
import os
import random
import tempfile
import typing
import uuid
from typing import Optional

from cog import BaseModel, BaseRunner, Input, Path

from seesr.api import Result, Upscaler
from seesr.runtime.devices import resolve_device
from seesr.errors import ConfigError, InputError, MissingWeightsError, SeesrError, WeightsError
from seesr.io.files import checked_file, write_atomically
from seesr.io.naming import DEFAULT_SINGLE_TAG, SUFFIX_FORMATS, concrete_format, output_file, sample_file
from seesr.io.read import input_file_limit, read_sent_image
from seesr.progress import LogProgress
from seesr.settings.declare import Settings, env_name, setting_info
from seesr.settings.fields import problem
from seesr.settings.resolve import resolve_settings
from seesr.weights import default_weights_dir, missing_summary, offline_mode

logger = logging.getLogger("seesr.cog")


ALLOW_FALLBACK = "SEESR_ALLOW_FALLBACK"
"""Set to 1 (true, yes, on) to let a server without the SeeSR weights start and serve the bundled
Real-ESRGAN in their place; each output then names the reason (``fallback_reason``)."""


def fallback_allowed() -> bool:
    """Whether this server was started with :data:`ALLOW_FALLBACK`."""
    return os.environ.get(ALLOW_FALLBACK, "").strip().lower() in ("1", "true", "yes", "on")


class Output(BaseModel):
    """What a prediction returns: one image per sample, and how they were made."""

    images: list[Path]
    seeds: list[int]
    """The seed of each image (SeeSR); empty when Real-ESRGAN made them (it draws no noise)."""
    engine: str
    model: str
    tags: Optional[str]
    fallback_reason: Optional[str]
    """Why Real-ESRGAN stood in for SeeSR (weights missing with SEESR_ALLOW_FALLBACK, or out of memory); else null."""
    timings: dict[str, float]
    """Seconds per stage and in ``total``, for the samples together (they share the tags, the prompt and the encoding)."""


class Runner(BaseRunner):
    def setup(self) -> None:
        """Check the device, find (or download) the server's SeeSR weights and load the networks;
        fail when the weights cannot be had, unless :data:`ALLOW_FALLBACK` is set."""
        logging.basicConfig(
            level=os.environ.get("SEESR_LOG_LEVEL", "INFO").upper(),
            format="%(levelname)s %(name)s: %(message)s",
        )
        settings = resolve_settings()  # the server's SEESR_* environment
        # A device this machine does not have fails setup, so the server never reports READY
        # for predictions it cannot run.
        resolve_device(settings.device)
        # Outputs go here; each run removes the previous run's files (already sent: with a sync run()
        # the next prediction starts only after the last one's output was encoded or uploaded).
        self.outputs = Path(tempfile.mkdtemp(prefix="seesr-cog-"))
        self.progress = LogProgress(lambda line: print(f"seesr: {line}", flush=True))
        self.upscaler = Upscaler(default_weights_dir(), progress=self.progress)
        self.weights_problem = self._find_seesr_weights(settings) if settings.engine == "seesr" else None
        if self.weights_problem is None and settings.engine == "seesr":
            self.upscaler.pipeline(settings)  # load the networks now, not in the first prediction
        else:
            self.upscaler.realesrgan(settings)

    def _find_seesr_weights(self, settings: Settings) -> Optional[str]:
        """None when the weights of the server's model are there (downloading what is missing);
        else, with :data:`ALLOW_FALLBACK`, why not; else a WeightsError naming the files and sources."""
        seesr = self.upscaler.engines["seesr"]
        where = default_weights_dir()
        try:
            seesr.check(settings, download=False)
            logger.info("SeeSR weights found (%s)", where)
            return None
        except MissingWeightsError as missing:
            then = "HF_HUB_OFFLINE is set, so no download" if offline_mode() else f"downloading them into {where}"
            logger.info("SeeSR weights are not all in %s (missing: %s); %s", where, missing_summary(missing.missing), then)
        try:
            seesr.check(settings, download=True)
            logger.info("SeeSR weights downloaded into %s", where)
            return None
        except (SeesrError, OSError) as error:  # offline, unreachable, disk full, a checksum that does not match
            details = str(error)
            reason = seesr.missing_reason(error) if isinstance(error, MissingWeightsError) else _first_line(error)
            # missing weights: one line (what was tried; each output names the files); any other fault: all of it
            tried = error.tried if isinstance(error, MissingWeightsError) else None
        if not fallback_allowed():
            raise WeightsError(
                f"{reason}. This server does not serve Real-ESRGAN in SeeSR's place unless it is started with "
                f"{ALLOW_FALLBACK}=1 (each output then says so), or with {env_name('engine')}=realesrgan.\n{details}"
            )
        said = f" ({tried})" if tried else f":\n{details}"
        logger.warning("%s=1: predictions run the bundled Real-ESRGAN, and each output says why%s", ALLOW_FALLBACK, said)
        return reason

    def run(
        self,
        image: Path = Input(
            description="Low-resolution input image (PNG, JPEG, WebP, TIFF, BMP, ...).", accept="image/*"
        ),
        preset: str = Input(
            description="Named set of settings (the table in docs/cli.md); explicit settings override it.",
            default="balanced",
            choices=["speed", "balanced", "quality", "memory"],
        ),
        engine: Optional[str] = Input(
            description="Upscaling engine (realesrgan: fast, with bundled weights); empty: realesrgan for a Real-ESRGAN model, else seesr.",
            default=None,
            choices=["seesr", "realesrgan"],
        ),
        model: Optional[str] = Input(
            description="Model: SeeSR weights (seesr: the original on SD-2-base, with steps 50, guidance_scale 5.5, sampler ddpm, latent_overlap 4) or a Real-ESRGAN model (implies engine realesrgan; engine realesrgan alone: realesrgan-x4plus).",
            default=None,
            choices=["seesr-turbo", "seesr", "realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3-x2", "realesr-animevideov3-x3", "realesr-animevideov3-x4"],
        ),
        scale: Optional[float] = Input(
            description="Upscaling factor (excludes width and height); empty: the model's (realesr-animevideov3-x2: 2, realesr-animevideov3-x3: 3), else 4.",
            default=None,
            ge=1.0,
            le=8.0,
        ),
        width: Optional[int] = Input(
            description="Output width in pixels, instead of a scale: the height keeps the aspect (with height: the largest size that fits inside both).",
            default=None,
            ge=1,
            le=32768,
        ),
        height: Optional[int] = Input(
            description="Output height in pixels, instead of a scale: the width keeps the aspect (with width: the largest size that fits inside both).",
            default=None,
            ge=1,
            le=32768,
        ),
        steps: Optional[int] = Input(
            description="Denoising steps; empty: the model's (seesr: 50), else the preset's.",
            default=None,
            ge=1,
            le=100,
        ),
        seed: Optional[int] = Input(
            description="Random seed; empty: a random one (the seed used is reported).",
            default=None,
            ge=0,
            le=9223372036854775807,
        ),
        num_samples: int = Input(
            description="SeeSR results per input, with the seeds seed, seed+1, ... (written as NAME_s<seed>.EXT when several; Real-ESRGAN is deterministic: 1 only).",
            default=1,
            ge=1,
            le=4,
        ),
        prompt: str = Input(
            description="Extra text added to the prompt after the image's tags.",
            default="",
        ),
        positive_prompt: str = Input(
            description="Text appended to the prompt after the tags and the extra text.",
            default="clean, high-resolution, 8k",
        ),
        negative_prompt: str = Input(
            description="Negative prompt; used only with guidance (guidance_scale above 1).",
            default="dotted, noise, blur, lowres, smooth",
        ),
        guidance_scale: Optional[float] = Input(
            description="Classifier-free guidance scale (1: off, as SeeSR-Turbo runs); empty: the model's (seesr: 5.5).",
            default=None,
            ge=1.0,
            le=20.0,
        ),
        conditioning_scale: Optional[float] = Input(
            description="ControlNet conditioning strength (how closely the output follows the input).",
            default=None,
            ge=0.0,
            le=2.0,
        ),
        color_fix: Optional[str] = Input(
            description="Colour correction from the input (wavelet: ours; the official scripts default to adain); empty: the engine's.",
            default=None,
            choices=["wavelet", "adain", "none"],
        ),
        process_size: Optional[int] = Input(
            description="Inputs whose short side is below process_size/scale are enlarged first (0: never).",
            default=None,
            ge=0,
            le=4096,
        ),
        output_format: str = Input(
            description="Format of the output file (auto: the input's own when it is PNG, JPEG, WebP or TIFF, else PNG).",
            default="png",
            choices=["png", "jpg", "webp", "tiff", "auto"],
        ),
        quality: int = Input(
            description="JPEG and WebP quality (PNG and TIFF are lossless).",
            default=95,
            ge=1,
            le=100,
        ),
        strip_metadata: bool = Input(
            description="Write no metadata: no EXIF, XMP, ICC profile, DPI or PNG text (else each output keeps what its format can hold of the input's).",
            default=False,
        ),
        sampler: Optional[str] = Input(
            description="Sampler (ddim: deterministic, ours; ddpm: the official scripts' stochastic step); empty: the model's (seesr-turbo: ddim, seesr: ddpm).",
            default=None,
            choices=["ddim", "ddpm"],
        ),
        start_point: str = Input(
            description="Where denoising starts: lr (the noised input latent, official) or noise (pure noise).",
            default="lr",
            choices=["lr", "noise"],
        ),
        start_steps: int = Input(
            description="Denoising runs the timesteps up to this one, from the input latent noised to it when start_point is lr (999, the official default: every step runs).",
            default=999,
            ge=1,
            le=999,
        ),
        kds_particles: Optional[int] = Input(
            description="Kernel Density Steering particles (1: off); empty: the preset's (quality: 4).",
            default=None,
            ge=1,
            le=16,
        ),
        kds_strength: Optional[float] = Input(
            description="KDS step towards the ensemble mode, 0-1.",
            default=None,
            ge=0.0,
            le=1.0,
        ),
        kds_bandwidth: Optional[float] = Input(
            description="KDS kernel bandwidth (per-element RMS distance in latent units); empty: median heuristic.",
            default=None,
            ge=1e-06,
            le=1000000.0,
        ),
        kds_patch: Optional[int] = Input(
            description="KDS patch side in latent pixels (8 image pixels each).",
            default=None,
            ge=1,
            le=64,
        ),
        offload: Optional[bool] = Input(
            description="Keep the networks on the CPU between stages (less GPU memory, slower); empty: the planner decides.",
            default=None,
        ),
    ) -> Output:
        """Upscale one image (``num_samples`` results); a bad value fails the prediction with seesr's message."""
        settings = _settings(locals())
        check_settings(settings)
        data = request_image_bytes(image)
        self.progress.image()
        results = self.upscaler.upscale_samples(data, **settings)
        if self.weights_problem is not None:  # SeeSR cannot run here: its reason is setup's, with what was tried
            results = [dataclasses.replace(r, fallback_reason=self.weights_problem) if r.fallback_reason else r
                       for r in results]  # fmt: skip
        for previous in self.outputs.iterdir():
            previous.unlink(missing_ok=True)
        for result in results:
            print(f"seesr: {result.summary()}")
        return output_of(results, self.outputs)


def output_of(results: list[Result], folder: Path) -> Output:
    """The samples saved into ``folder`` (each under a new name) and what they share, as an :class:`Output`."""
    images = [result.save(output_file(folder, f"upscaled-{uuid.uuid4().hex[:12]}", result.output_format)) for result in results]
    first = results[0]
    return Output(
        images=[Path(image) for image in images],
        seeds=[result.seed for result in results if result.seed is not None],
        engine=first.engine,
        model=first.model,
        tags=first.tags,
        fallback_reason=first.fallback_reason,
        timings=first.timings,
    )


def _setting_inputs() -> list:
    """run()'s inputs that are seesr settings: every input but the image, named as the setting."""
    return [p for p in inspect.signature(Runner.run).parameters.values() if p.name not in ("self", "image")]


def _settings(inputs: dict) -> dict:
    """The settings among run()'s local variables, by name."""
    return {p.name: inputs[p.name] for p in _setting_inputs()}


def check_settings(settings: dict) -> None:
    """Refuse what seesr refuses (ConfigError), a value outside a setting's narrower Cog range
    (``cog_range``), and any model but a named one: never a file on the server."""
    model = settings.get("model")
    if model is not None and model not in setting_info("model").choices:
        raise InputError(f"model must be one of: {', '.join(setting_info('model').choices)}")
    resolve_settings(settings)
    narrower = [problem(name, value, setting_info(name), setting_info(name).cog_range)
                for name, value in settings.items() if setting_info(name).cog_range and value is not None]  # fmt: skip
    if any(narrower):
        raise ConfigError("invalid settings: " + "; ".join(line for line in narrower if line))


NOT_SENT = (
    "the image must be sent with the request, as a data: URI or an http(s) URL; "
    "the server does not read files from its own disk"
)


def request_image_bytes(image: object) -> bytes:
    """The bytes of an image the request carried. Cog 0.23 downloads a data URI or an http(s) URL
    into a temporary file and passes it as a ``cog.Path``; anything else (a plain string such as
    ``/etc/passwd`` or ``file:///...``) is a path on the server and is refused with the same
    message whether it exists or not. Errors about the data never name the server's temp file."""
    if not isinstance(image, Path):
        raise InputError(NOT_SENT)
    return read_sent_image(image)


def _first_line(error: BaseException) -> str:
    lines = str(error).splitlines()
    return lines[0] if lines else type(error).__name__


def _command_line_inputs(arguments: list) -> dict:
    """``name=value`` arguments as run() inputs: every other input at its ``Input`` default, each
    value converted to its input's type (the ``Optional`` inner type; an empty value: None; a
    boolean stays text, which seesr reads as true/false/yes/no/1/0)."""
    hints = typing.get_type_hints(Runner.run)
    values = {p.name: p.default.default for p in _setting_inputs()}
    for argument in arguments:
        name, equals, text = argument.partition("=")
        if not equals or name not in values:
            raise SystemExit(f"predict.py: {argument!r} is not NAME=VALUE with NAME one of: {', '.join(values)}")
        kind = next((t for t in typing.get_args(hints[name]) if t is not type(None)), hints[name])
        try:
            values[name] = None if text == "" else text if kind is bool else kind(text)
        except ValueError:
            raise SystemExit(f"predict.py: {name}={text!r} is not a {kind.__name__}") from None
    return values


OVERWRITE_FLAG = "--overwrite"


def _targets(source: Path, fmt: str, values: dict) -> list[Path]:
    """Where the command line writes its results: ``IMAGE_seesr.<format>`` beside the input, or
    ``IMAGE_seesr_s<seed>.<format>`` for each of several samples."""
    target = output_file(source.parent, source.stem + DEFAULT_SINGLE_TAG, fmt)
    if values["num_samples"] == 1:
        return [target]
    return [sample_file(target, values["seed"] + sample) for sample in range(values["num_samples"])]


def _refuse_existing(targets: list[Path], overwrite: bool) -> None:
    for target in targets:
        if not overwrite and (target.exists() or target.is_symlink()):
            raise ConfigError(f"{target} exists; pass {OVERWRITE_FLAG} to replace it, or move it away")


def command_line(arguments: list) -> list[Path]:
    """``predict.py IMAGE [name=value ...] [--overwrite]``: check the image, the values and the
    outputs before any model loads, run the prediction, write ``IMAGE_seesr.<format>`` (one per
    sample: ``IMAGE_seesr_s<seed>.<format>``) beside the image (never over an existing file
    without ``--overwrite``); returns the files written."""
    overwrite = OVERWRITE_FLAG in arguments
    arguments = [a for a in arguments if a != OVERWRITE_FLAG]
    if not arguments or arguments[0].startswith("-"):
        raise SystemExit(f"usage: predict.py IMAGE [name=value ...] [{OVERWRITE_FLAG}], names: the inputs of "
                         "Runner.run (preset=quality scale=2 ...)")  # fmt: skip
    source = Path(arguments[0])
    values = _command_line_inputs(arguments[1:])
    check_settings(values)
    if values["num_samples"] > 1 and values["seed"] is None:  # the seeds name the outputs: known first
        values["seed"] = random.randrange(2**32)
    checked_file(source, "input", input_file_limit(), InputError)
    # `auto` follows the decoded input's format: the one its suffix names is a guess, checked again below
    guess = concrete_format(values["output_format"], SUFFIX_FORMATS.get(source.suffix.lower()))
    _refuse_existing(_targets(source, guess, values), overwrite)
    runner = Runner()
    runner.setup()
    produced = runner.run(image=source, **values).images
    targets = _targets(source, SUFFIX_FORMATS[produced[0].suffix], values)
    _refuse_existing(targets, overwrite)
    for image, target in zip(produced, targets, strict=True):
        write_atomically(target, image.read_bytes(), overwrite=overwrite)
    return targets


if __name__ == "__main__":
    # `./start_seesr.sh predict IMAGE [name=value ...]`: the Cog path without Docker or a server.
    import sys

    try:
        print(*command_line(sys.argv[1:]), sep="\n")
    except SeesrError as error:
        sys.exit(f"seesr: {_first_line(error)}")
