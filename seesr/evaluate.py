"""``seesr evaluate``: the quality table of super-resolved images against their HR references.

Images are paired by name (the file stem: ``out/0001.png`` with ``hr/0001.jpg``). Each row of the
table is one way of making the SR images: a folder of them, the bicubic baseline from the LR images
(``lr_dir``), or an engine / model / preset run on the LR images now (``runs``, through
:class:`~seesr.api.Upscaler` without its fallback, so a row is what it says). Every pair gets every
metric asked (:mod:`seesr.imaging.metrics`), then each row its mean; FID compares the row's set with the HR
set. What cannot be done is one line each (an unpaired file, a size mismatch, an unreadable image,
a metric without its weights, a row whose weights are missing) and the rest is still reported:
the evaluation is then ``partial``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from seesr.errors import ConfigError, InputError, SeesrError
from seesr.io.inputs import IMAGE_SUFFIXES
from seesr.io.read import InputImage, read_image
from seesr.imaging.metrics import METRICS, MetricUnavailable, crop, load_metric, load_scorers, metric_pixels, score_pair

BICUBIC = "bicubic"
"""The row (and ``--run`` name) of the LR images upscaled to the HR size with PIL bicubic."""
REALESRGAN_ENGINE = "realesrgan"
RUN_SETTINGS_LEFT_OUT = frozenset({"scale", "no_fallback", "output_format", "quality", "suffix"})
"""Settings a ``--run`` row fixes itself (the scale is HR / LR, never a fallback) or never uses (output files)."""
Progress = Callable[[str, int, int, str], None]
"""(row, image number from 1, images, image name): called before each image of a row."""


@dataclass(frozen=True)
class Pair:
    """An HR image and the image of the same name in the other folder (SR, or LR to upscale)."""

    name: str
    source: Path
    hr: Path


@dataclass
class Row:
    """One way of making the SR images, with its scores per image (by name) and its FID."""

    name: str
    kind: str
    """``folder``, ``bicubic`` or ``run``."""
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    fid: float | None = None
    missing: str | None = None
    """Why the row has no numbers (its weights are missing), else None."""

    def mean(self, metric: str) -> float | None:
        """The mean over the row's images (FID: the set's), None when there is none."""
        if METRICS[metric].kind == "set":
            return self.fid
        values = [scores[metric] for scores in self.scores.values() if metric in scores]
        return float(np.mean(values)) if values else None


@dataclass
class Evaluation:
    """The rows of one evaluation, the metrics it ran, and everything that could not be done."""

    metrics: tuple[str, ...]
    crop_border: int
    rows: list[Row] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    """Metric name -> the one line saying why it could not run."""
    problems: list[str] = field(default_factory=list)
    """One line per pair or file left out."""

    @property
    def computed(self) -> tuple[str, ...]:
        """The metrics that ran (the table's columns)."""
        return tuple(m for m in self.metrics if m not in self.unavailable)

    @property
    def partial(self) -> bool:
        return bool(self.unavailable or self.problems or any(row.missing for row in self.rows))

    def table(self) -> str:
        """Per-image rows of every row, then the means (with the image count), as plain text."""
        columns = self.computed
        per_image = [m for m in columns if METRICS[m].kind != "set"]
        width = max([len("method"), *(len(row.name) for row in self.rows)])
        names = [name for row in self.rows for name in row.scores]
        image_width = max([len("image"), *map(len, names)])
        lines = []
        if per_image and names:
            lines.append(f"{'method':{width}s}  {'image':{image_width}s}" + "".join(f"  {m:>10s}" for m in per_image))
            for row in self.rows:
                for name, scores in row.scores.items():
                    lines.append(f"{row.name:{width}s}  {name:{image_width}s}" + "".join(f"  {_number(scores.get(m)):>10s}" for m in per_image))
            lines.append("")
        lines.append(f"{'method':{width}s}  {'images':>6s}" + "".join(f"  {m:>10s}" for m in columns))
        for row in self.rows:
            if row.missing:
                lines.append(f"{row.name:{width}s}  {'-':>6s}  {row.missing}")
                continue
            lines.append(f"{row.name:{width}s}  {len(row.scores):6d}" + "".join(f"  {_number(row.mean(m)):>10s}" for m in columns))
        better = {b: [m for m in columns if METRICS[m].arrow == b] for b in ("higher", "lower")}
        lines.append("; ".join(f"{b} is better: {', '.join(ms)}" for b, ms in better.items() if ms)
                     + (f"; border crop {self.crop_border} px" if self.crop_border else ""))  # fmt: skip
        return "\n".join(lines)

    def record(self) -> dict[str, Any]:
        """Everything as JSON-ready data (an infinite PSNR is the string ``"inf"``)."""
        return {
            "status": "partial" if self.partial else "complete",
            "metrics": list(self.computed),
            "crop_border": self.crop_border,
            "rows": [
                {"name": row.name, "kind": row.kind, "images": len(row.scores), "missing_weights": row.missing,
                 "mean": {m: _json_number(row.mean(m)) for m in self.computed},
                 "per_image": {name: {m: _json_number(v) for m, v in scores.items()} for name, scores in row.scores.items()}}
                for row in self.rows
            ],
            "unavailable": self.unavailable,
            "problems": self.problems,
        }  # fmt: skip

    def csv(self) -> str:
        """One line per image and row, then each row's ``mean`` line; empty where there is no number."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["method", "image", *self.computed])
        for row in self.rows:
            for name, scores in row.scores.items():
                writer.writerow([row.name, name, *(_csv_number(scores.get(m)) for m in self.computed)])
        for row in self.rows:
            writer.writerow([row.name, "mean", *(_csv_number(row.mean(m)) for m in self.computed)])
        return out.getvalue()


# --------------------------------------------------------------------------- pairing


def image_files(folder: Path, role: str) -> dict[str, list[Path]]:
    """The images of ``folder`` (by suffix, hidden files left out) grouped by stem."""
    if not folder.is_dir():
        raise InputError(f"{role} folder {folder} {'is not a folder' if folder.exists() else 'does not exist'}")
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(path.stem, []).append(path)
    return found


def pair_by_name(source_dir: Path, hr_dir: Path, role: str = "SR") -> tuple[list[Pair], list[str]]:
    """The images of ``source_dir`` and ``hr_dir`` with the same stem, sorted by name, and one
    line per kind of file left out (no partner, several files of one name)."""
    sources, references = image_files(source_dir, role), image_files(hr_dir, "HR")
    if not references:
        raise InputError(f"HR folder {hr_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    pairs, problems = [], []
    for folder, files in ((source_dir, sources), (hr_dir, references)):
        for stem, paths in files.items():
            if len(paths) > 1:
                problems.append(f"{stem}: several files of that name in {folder} ({', '.join(p.name for p in paths)}); pair skipped")
    for what, only in ((f"no HR image for {role} image", sources.keys() - references.keys()),
                       (f"no {role} image for HR image", references.keys() - sources.keys())):  # fmt: skip
        if only:
            problems.append(f"{what}{'s' if len(only) > 1 else ''} {_names(sorted(only))}; skipped")
    for stem in sorted(sources.keys() & references.keys()):
        if len(sources[stem]) == 1 and len(references[stem]) == 1:
            pairs.append(Pair(stem, sources[stem][0], references[stem][0]))
    return pairs, problems


def _names(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


# --------------------------------------------------------------------------- scoring


class _Scoring:
    """The metrics of one evaluation, loaded once, and the rows it scores."""

    def __init__(self, metrics: Sequence[str], crop_border: int, device: str | None) -> None:
        self.evaluation = Evaluation(tuple(metrics), crop_border)
        learned = any(METRICS[m].learned for m in metrics)
        self.device = _device(device) if learned else "cpu"
        self.per_image, self.evaluation.unavailable = load_scorers(metrics, self.device)

    def score_row(self, row: Row, pairs: list[Pair], make_sr: Callable[[Pair, InputImage], InputImage | Image.Image],
                  progress: Progress | None) -> None:  # fmt: skip
        """Score ``make_sr(pair, hr)`` against each pair's HR image; a pair that fails is one line."""
        fid, border = self._fid(), self.evaluation.crop_border
        for index, pair in enumerate(pairs):
            if progress is not None:
                progress(row.name, index + 1, len(pairs), pair.name)
            try:
                hr = read_image(pair.hr)
                sr = make_sr(pair, hr)
                sr = sr if isinstance(sr, InputImage) else read_image(sr)
                row.scores[pair.name] = score_pair(sr, hr, self.per_image, border)
                if fid is not None:
                    fid.add(crop(metric_pixels(sr), border), crop(metric_pixels(hr), border))
            except SeesrError as error:
                self.evaluation.problems.append(f"{row.name} {pair.name}: {_first_line(error)}; pair skipped")
        if fid is not None:
            row.fid = fid.value()
        self.evaluation.rows.append(row)

    def _fid(self):
        if "fid" not in self.evaluation.metrics or "fid" in self.evaluation.unavailable:
            return None
        try:
            return load_metric("fid", self.device)
        except MetricUnavailable as error:
            self.evaluation.unavailable["fid"] = str(error)
            return None


def _device(name: str | None) -> str:
    """The device of the learned metrics: ``name`` checked, or cuda when there is one."""
    from seesr.runtime.devices import resolve_device

    return str(resolve_device(name))


def _first_line(error: BaseException) -> str:
    return (str(error).strip() or type(error).__name__).splitlines()[0]


def _bicubic(pair: Pair, hr: InputImage) -> Image.Image:
    """The LR image of ``pair`` upscaled to the size of its HR image with PIL bicubic."""
    return read_image(pair.source).rgb.resize(hr.size, Image.Resampling.BICUBIC)


def evaluate_folder(
    sr_dir: str | Path, hr_dir: str | Path, *, lr_dir: str | Path | None = None, metrics: Sequence[str] = ("psnr", "ssim"),
    crop_border: int = 0, device: str | None = None, progress: Progress | None = None,
) -> Evaluation:  # fmt: skip
    """Score the images of ``sr_dir`` against those of the same name in ``hr_dir`` (and, with
    ``lr_dir``, the bicubic baseline of its LR images as a second row)."""
    scoring = _Scoring(metrics, crop_border, device)
    pairs, problems = pair_by_name(Path(sr_dir), Path(hr_dir))
    scoring.evaluation.problems += problems
    scoring.score_row(Row(Path(sr_dir).name or str(sr_dir), "folder"), pairs, lambda pair, hr: read_image(pair.source), progress)
    if lr_dir is not None:
        lr_pairs, problems = pair_by_name(Path(lr_dir), Path(hr_dir), role="LR")
        scoring.evaluation.problems += problems
        scoring.score_row(Row(BICUBIC, "bicubic"), lr_pairs, _bicubic, progress)
    return _checked(scoring.evaluation)


# --------------------------------------------------------------------------- runs


def run_choices() -> tuple[str, ...]:
    """What ``--run`` accepts: presets (SeeSR-Turbo), SeeSR models, Real-ESRGAN models, the engine
    name ``realesrgan`` (x4plus) and ``bicubic``."""
    from seesr.settings.models import MODELS, REALESRGAN_MODELS
    from seesr.settings.presets import PRESETS

    return (*PRESETS, *MODELS, *REALESRGAN_MODELS, REALESRGAN_ENGINE, BICUBIC)


def run_arguments(name: str) -> dict[str, Any]:
    """The settings a ``--run`` name stands for (``balanced`` -> preset, ``realesrgan-x4plus`` ->
    model, ...); an unknown name is a one-line ConfigError."""
    from seesr.settings.models import MODELS, canonical_model, is_realesrgan_model
    from seesr.settings.presets import PRESETS

    if name in PRESETS:
        return {"preset": name, "engine": "seesr"}
    if name in MODELS:
        return {"model": name, "engine": "seesr"}
    if name == REALESRGAN_ENGINE:
        return {"engine": REALESRGAN_ENGINE}
    if is_realesrgan_model(name):
        return {"model": canonical_model(name), "engine": REALESRGAN_ENGINE}
    raise ConfigError(f"--run: unknown engine, model or preset {name!r}; choose from {', '.join(run_choices())} or a model file")


def evaluate_runs(
    runs: Sequence[str], lr_dir: str | Path, hr_dir: str | Path, *, metrics: Sequence[str] = ("psnr", "ssim"),
    crop_border: int = 0, weights: str | Path | None = None, progress: Progress | None = None, **settings: Any,
) -> Evaluation:  # fmt: skip
    """Upscale the LR images of ``lr_dir`` with each of ``runs`` (presets, models, ``bicubic``)
    to the size of their HR images and score them, one row per run. ``settings`` apply to every
    run (the run's own preset / model / engine win). A run never falls back: a SeeSR row whose
    weights are missing says so and has no numbers."""
    from seesr.api import Upscaler

    arguments = {name: {} if name == BICUBIC else run_arguments(name) for name in runs}
    upscaler = Upscaler(weights, **settings)
    device = upscaler.settings({}).device
    scoring = _Scoring(metrics, crop_border, device)
    pairs, problems = pair_by_name(Path(lr_dir), Path(hr_dir), role="LR")
    scoring.evaluation.problems += problems
    for name, row_arguments in arguments.items():
        if name == BICUBIC:
            scoring.score_row(Row(name, "bicubic"), pairs, _bicubic, progress)
            continue
        row = Row(name, "run")
        row.missing = _missing_weights(upscaler, pairs, row_arguments)
        if row.missing:
            scoring.evaluation.rows.append(row)
            scoring.evaluation.problems.append(f"{name}: not run, {row.missing}")
            continue

        def upscaled(pair: Pair, hr: InputImage, row_arguments: dict[str, Any] = row_arguments) -> Image.Image:
            scale = hr.size[0] / read_image(pair.source).size[0]
            return upscaler.upscale(pair.source, scale=scale, no_fallback=True, **row_arguments).image

        scoring.score_row(row, pairs, upscaled, progress)
        upscaler.unload()
    return _checked(scoring.evaluation)


def _missing_weights(upscaler: Any, pairs: list[Pair], arguments: dict[str, Any]) -> str | None:
    """Why a SeeSR row cannot run (its weights are missing), from the dry run of its first image."""
    if arguments.get("engine") != "seesr" or not pairs:
        return None
    return upscaler.dry_run(pairs[0].source, **arguments, no_fallback=False).fallback_reason


def _checked(evaluation: Evaluation) -> Evaluation:
    """The evaluation, unless nothing at all could be scored (then one InputError line)."""
    scored = any(row.scores for row in evaluation.rows)
    if not scored and not any(row.missing for row in evaluation.rows):
        reasons = "; ".join(evaluation.problems[:3]) or "no image pairs"
        raise InputError(f"nothing to evaluate: {reasons}")
    return evaluation


# --------------------------------------------------------------------------- formatting


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.4f}"


def _json_number(value: float | None) -> float | str | None:
    return "inf" if value is not None and math.isinf(value) else value


def _csv_number(value: float | None) -> str:
    return "" if value is None else _number(value) if math.isinf(value) else repr(value)
