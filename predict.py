"""Cog runner for seesr: a thin adapter over :class:`seesr.api.Upscaler`.

Cog 0.23 conventions (``cog`` SDK docs): a ``BaseRunner`` subclass named ``Runner`` with ``setup()``
and ``run()``, referenced from cog.yaml as ``run: "predict.py:Runner"`` (``BasePredictor``,
``Predictor`` and ``predict()`` are the deprecated names).

Weights are not baked into the image: ``setup()`` resolves them in ``$SEESR_WEIGHTS`` (else the
repository's ``weights/``) and the Hugging Face cache, and downloads what is missing. If that fails
(no network, ``HF_HUB_OFFLINE``), setup logs why and carries on: every prediction then runs the
bundled Real-ESRGAN and says so in its logs (``Result.fallback_reason``).

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

import inspect
import logging
import os
import tempfile
import typing
import uuid
from typing import Optional

from cog import BaseRunner, Input, Path

from seesr.api import Upscaler
from seesr.runtime.devices import resolve_device
from seesr.errors import ConfigError, InputError, SeesrError
from seesr.io.files import checked_file, write_atomically
from seesr.io.naming import DEFAULT_SINGLE_TAG, SUFFIX_FORMATS, concrete_format, output_file
from seesr.io.read import input_file_limit, read_sent_image
from seesr.settings.declare import setting_info
from seesr.settings.resolve import resolve_settings
from seesr.weights import WeightPaths, default_weights_dir

logger = logging.getLogger("seesr.cog")


class Runner(BaseRunner):
    def setup(self) -> None:
        """Find (or download) the weights and load SeeSR; fall back to Real-ESRGAN if that fails."""
        logging.basicConfig(
            level=os.environ.get("SEESR_LOG_LEVEL", "INFO").upper(),
            format="%(levelname)s %(name)s: %(message)s",
        )
        # A device this machine does not have fails setup, so the server never reports READY
        # for predictions it cannot run.
        resolve_device(resolve_settings().device)
        weights_dir = default_weights_dir()
        self.weights_problem: Optional[str] = None
        paths = None
        try:
            paths = WeightPaths.resolve(weights_dir, download=False, progress=False)
            logger.info("SeeSR weights found (%s)", weights_dir)
        except Exception as missing:  # noqa: BLE001 - any failure here must leave setup running
            logger.info("SeeSR weights are not all in %s; downloading the missing files (%s)",
                        weights_dir, _first_line(missing))
            try:
                paths = WeightPaths.resolve(weights_dir, download=True, progress=False)
                logger.info("SeeSR weights downloaded into %s", weights_dir)
            except Exception as error:  # noqa: BLE001 - no network, disk full, checksum: fall back
                self.weights_problem = str(error)
                logger.warning(
                    "SeeSR weights are unavailable, predictions will use the bundled Real-ESRGAN:\n%s", error
                )
        # Outputs go here; each run removes the previous run's file (already sent: with a sync run()
        # the next prediction starts only after the last one's output was encoded or uploaded).
        self.outputs = Path(tempfile.mkdtemp(prefix="seesr-cog-"))
        # With paths the pipeline loads from them; without, the Upscaler looks in weights_dir again
        # (without downloading) on each prediction and falls back to Real-ESRGAN, naming the reason.
        self.upscaler = Upscaler(paths if paths is not None else weights_dir)
        defaults = self.upscaler.settings({})
        try:
            if paths is not None:
                self.upscaler.pipeline(defaults)  # load the networks now, not in the first prediction
            else:
                self.upscaler.realesrgan(defaults)
        except Exception as error:  # noqa: BLE001 - e.g. a checkpoint that does not match
            logger.warning("could not load the networks in setup (predictions will retry or fall back): %s", error)

    def run(
        self,
        image: Path = Input(
            description="Low-resolution input image (PNG, JPEG, WebP, TIFF, BMP, ...).", accept="image/*"
        ),
        preset: str = Input(
            description="Named set of settings (the table in the README); explicit settings override it.",
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
            description="Upscaling factor (excludes width and height).",
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
    ) -> Path:
        """Upscale one image; a bad value fails the prediction with seesr's message."""
        settings = _settings(locals())
        check_settings(settings)
        result = self.upscaler.upscale(request_image_bytes(image), **settings)
        for previous in self.outputs.iterdir():
            previous.unlink(missing_ok=True)
        name = f"upscaled-{uuid.uuid4().hex[:12]}"
        target = result.save(output_file(self.outputs, name, result.output_format))
        print(f"seesr: {result.summary()}")
        print(f"seesr: engine {result.engine}; seed {result.seed}; tags: {result.tags or '-'}")
        if result.fallback_reason:
            print(f"seesr: fell back to {result.engine}: {result.fallback_reason}")
        self.record_metric("engine", result.engine)
        if result.seed is not None:
            self.record_metric("seed", result.seed)
        return Path(target)


def _setting_inputs() -> list:
    """run()'s inputs that are seesr settings: every input but the image, named as the setting."""
    return [p for p in inspect.signature(Runner.run).parameters.values() if p.name not in ("self", "image")]


def _settings(inputs: dict) -> dict:
    """The settings among run()'s local variables, by name."""
    return {p.name: inputs[p.name] for p in _setting_inputs()}


def check_settings(settings: dict) -> None:
    """Refuse what seesr refuses (ConfigError), and any model but a named one: never a file on the server."""
    model = settings.get("model")
    if model is not None and model not in setting_info("model").choices:
        raise InputError(f"model must be one of: {', '.join(setting_info('model').choices)}")
    resolve_settings(settings)


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


def _target(source: Path, fmt: str) -> Path:
    """Where the command line writes its result: ``IMAGE_seesr.<format>`` beside the input."""
    return output_file(source.parent, source.stem + DEFAULT_SINGLE_TAG, fmt)


def _refuse_existing(target: Path, overwrite: bool) -> None:
    if not overwrite and (target.exists() or target.is_symlink()):
        raise ConfigError(f"{target} exists; pass {OVERWRITE_FLAG} to replace it, or move it away")


def command_line(arguments: list) -> Path:
    """``predict.py IMAGE [name=value ...] [--overwrite]``: check the image, the values and the
    output before any model loads, run the prediction, write ``IMAGE_seesr.<format>`` beside the
    image (never over an existing file without ``--overwrite``); returns the file written."""
    overwrite = OVERWRITE_FLAG in arguments
    arguments = [a for a in arguments if a != OVERWRITE_FLAG]
    if not arguments or arguments[0].startswith("-"):
        raise SystemExit(f"usage: predict.py IMAGE [name=value ...] [{OVERWRITE_FLAG}], names: the inputs of "
                         "Runner.run (preset=quality scale=2 ...)")  # fmt: skip
    source = Path(arguments[0])
    values = _command_line_inputs(arguments[1:])
    check_settings(values)
    checked_file(source, "input", input_file_limit(), InputError)
    # `auto` follows the decoded input's format: the one its suffix names is a guess, checked again below
    guess = concrete_format(values["output_format"], SUFFIX_FORMATS.get(source.suffix.lower()))
    _refuse_existing(_target(source, guess), overwrite)
    runner = Runner()
    runner.setup()
    produced = runner.run(image=source, **values)
    target = _target(source, SUFFIX_FORMATS[produced.suffix])
    _refuse_existing(target, overwrite)
    write_atomically(target, produced.read_bytes(), overwrite=overwrite)
    return target


if __name__ == "__main__":
    # `./start_seesr.sh predict IMAGE [name=value ...]`: the Cog path without Docker or a server.
    import sys

    try:
        print(command_line(sys.argv[1:]))
    except SeesrError as error:
        sys.exit(f"seesr: {error}")
