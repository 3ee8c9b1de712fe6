"""Image-quality metrics for super-resolution: the numbers SR papers print, declared once.

PSNR and SSIM are BasicSR's ``calculate_psnr`` / ``calculate_ssim`` (``basicsr/metrics/psnr_ssim.py``)
written again here: images on the [0, 255] scale; with ``y_channel`` a 3-channel image becomes its
ITU-R BT.601 luma on [16, 235] (BasicSR's ``to_y_channel``, whose Y plane passes through float32),
a 1-channel image is taken as it is; ``crop_border`` pixels leave every edge; float64 from there
on; PSNR with a peak of 255 (inf for identical images); SSIM per channel with an 11x11 Gaussian
window (sigma 1.5) over the valid region only, averaged over the map and the channels. These need
numpy and OpenCV only, never torch.

The learned metrics come from their own libraries, loaded on first use (then cached per device):
LPIPS from ``lpips`` and DISTS from ``DISTS_pytorch`` (the authors' packages, which ship their
learned layers; the VGG / AlexNet trunks are torchvision's ImageNet weights), FID from
``clean-fid`` ("clean" mode), NIQE / MUSIQ / MANIQA / CLIP-IQA from ``pyiqa``, an opt-in extra
under a non-commercial licence. Weights that are not in their cache are downloaded there (torch
hub, pyiqa's folder under it, the Hugging Face cache); with ``HF_HUB_OFFLINE=1`` nothing is
downloaded. A metric that cannot be had raises :class:`MetricUnavailable` with one line naming it
and the file it lacks. :func:`score_pair` scores one SR / HR pair as ``seesr evaluate``, training
validation and the Real-ESRGAN benchmark all do.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from seesr.errors import InputError, SeesrError
from seesr.io.read import InputImage, read_image

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

BT601_Y_WEIGHTS = (65.481, 128.553, 24.966)
"""ITU-R BT.601 luma weights of R, G, B in [0, 1] giving Y on the [16, 235] scale (BasicSR's
``rgb2ycbcr`` / MATLAB's ``rgb2ycbcr``)."""
BT601_Y_OFFSET = 16.0
PEAK = 255.0
"""The scale every metric here reads images on (PSNR's peak, SSIM's dynamic range)."""
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
"""The Gaussian window of Wang et al. 2004, as BasicSR and the authors' MATLAB code use it."""
SSIM_C1, SSIM_C2 = (0.01 * PEAK) ** 2, (0.03 * PEAK) ** 2

FORMULA = "seesr (BasicSR's formula)"
PYIQA_EXTRA = "iqa"
PYIQA_LICENCE = "PolyForm Noncommercial 1.0.0"


class MetricUnavailable(SeesrError):
    """A metric cannot run here: its package is not installed or its weights are missing."""


# --------------------------------------------------------------------------- PSNR / SSIM


def to_y_channel(image: np.ndarray) -> np.ndarray:
    """HxWx3 RGB on [0, 255] -> HxWx1 BT.601 Y on [16, 235] as BasicSR's ``to_y_channel`` computes
    it: the image as float32 / 255, the weighted sum in float64, the result rounded to float32."""
    unit = np.asarray(image).astype(np.float32) / 255.0
    luma = (unit @ np.array(BT601_Y_WEIGHTS) + BT601_Y_OFFSET) / 255.0
    return (luma.astype(np.float32) * 255.0)[..., None]


def crop(image: np.ndarray, border: int) -> np.ndarray:
    """``image`` without ``border`` pixels on every edge (BasicSR's ``crop_border``)."""
    if border < 0:
        raise InputError(f"the border crop must be 0 or more pixels, got {border}")
    if border and min(image.shape[:2]) <= 2 * border:
        raise InputError(f"a {image.shape[1]}x{image.shape[0]} image has nothing left after a {border} px border crop")
    return image[border:-border, border:-border] if border else image


def _planes(sr: np.ndarray, hr: np.ndarray, crop_border: int, y_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 HxWxC after the border crop and (3 channels, ``y_only``) Y conversion."""
    sr, hr = np.asarray(sr), np.asarray(hr)
    sr, hr = (a[..., None] if a.ndim == 2 else a for a in (sr, hr))
    if sr.shape != hr.shape:
        raise InputError(f"images differ in shape: {sr.shape} and {hr.shape}")
    sr, hr = crop(sr, crop_border), crop(hr, crop_border)
    if y_only and sr.shape[2] == 3:
        sr, hr = to_y_channel(sr), to_y_channel(hr)
    return sr.astype(np.float64), hr.astype(np.float64)


def psnr(sr: np.ndarray, hr: np.ndarray, *, crop_border: int = 0, y_channel: bool = True) -> float:
    """PSNR in dB of two HxW(xC) images on [0, 255] (BasicSR's ``calculate_psnr``); inf when equal."""
    a, b = _planes(sr, hr, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(PEAK * PEAK / mse))


def ssim(sr: np.ndarray, hr: np.ndarray, *, crop_border: int = 0, y_channel: bool = True) -> float:
    """Mean SSIM of two HxW(xC) images on [0, 255] (BasicSR's ``calculate_ssim``): per channel,
    then averaged."""
    a, b = _planes(sr, hr, crop_border, y_channel)
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise InputError(f"a {a.shape[1]}x{a.shape[0]} image is smaller than SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window")
    return float(np.mean([_ssim_plane(a[..., c], b[..., c]) for c in range(a.shape[2])]))


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    import cv2

    kernel = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA)
    window = kernel @ kernel.T
    edge = SSIM_WINDOW // 2

    def blur(x: np.ndarray) -> np.ndarray:  # the valid region of the window's correlation
        return cv2.filter2D(x, -1, window)[edge:-edge, edge:-edge]

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)) / ((mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2))
    return float(ssim_map.mean())


# --------------------------------------------------------------------------- the declaration


class Scorer(Protocol):
    """A loaded per-image metric: ``sr`` and ``hr`` are HxWx3 float arrays on [0, 255] (``hr`` is
    None for a no-reference metric)."""

    def __call__(self, sr: np.ndarray, hr: np.ndarray | None) -> float: ...


@dataclass(frozen=True)
class WeightFile:
    """A file a metric downloads on first use: its name, where it is kept, and its address."""

    name: str
    cache: str
    """``torch hub``, ``pyiqa`` (a folder of the torch hub directory), ``Hugging Face`` or ``clip``."""
    url: str | None = None

    def folder(self) -> Path:
        if self.cache == "Hugging Face":
            from huggingface_hub.constants import HF_HUB_CACHE

            return Path(HF_HUB_CACHE)
        if self.cache == "clip":
            return Path.home() / ".cache" / "clip"
        hub = Path(_torch_hub_dir())
        return hub / "pyiqa" if self.cache == "pyiqa" else hub / "checkpoints"

    def present(self) -> bool:
        if self.cache == "Hugging Face":  # a model folder, not a file
            return any(self.folder().glob(f"models--{self.name.replace('/', '--')}/snapshots/*/*"))
        return (self.folder() / self.name).is_file()


@dataclass(frozen=True)
class Metric:
    """One metric, with everything the command line, the README and the loaders need."""

    name: str
    description: str
    kind: str
    """``full-reference`` (SR against HR), ``no-reference`` (SR alone) or ``set`` (two folders)."""
    higher_is_better: bool
    package: str
    """Where the numbers come from: :data:`FORMULA` or the PyPI package (with its licence)."""
    load: Callable[[Metric, str], Any]
    """(metric, device) -> a :class:`Scorer` (a :class:`FrechetInception` for ``set``)."""
    weights: tuple[WeightFile, ...] = ()
    extra: str | None = None
    """The pip extra of seesr that installs ``package`` (None: the default install has it)."""

    @property
    def arrow(self) -> str:
        return "higher" if self.higher_is_better else "lower"

    @property
    def learned(self) -> bool:
        """A network with downloaded weights (torch), not a formula."""
        return bool(self.weights)


def _formula(function: Callable[..., float], y_only: bool) -> Callable[[Metric, str], Scorer]:
    """A PSNR / SSIM scorer; a gray pair (R = G = B everywhere in both) is compared on its one
    channel, as BasicSR compares one-channel images (no Y conversion)."""

    def score(sr: np.ndarray, hr: np.ndarray) -> float:
        if _gray(sr) and _gray(hr):
            sr, hr = sr[..., :1], hr[..., :1]
        return function(sr, hr, y_channel=y_only)

    return lambda metric, device: score


def _gray(image: np.ndarray) -> bool:
    return image.ndim == 2 or image.shape[2] == 1 or bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())


_TV = "https://download.pytorch.org/models/"  # torchvision's IMAGENET1K_V1 weights of AlexNet and VGG-16
ALEXNET = WeightFile("alexnet-owt-7be5be79.pth", "torch hub", _TV + "alexnet-owt-7be5be79.pth")
VGG16 = WeightFile("vgg16-397923af.pth", "torch hub", _TV + "vgg16-397923af.pth")
INCEPTION = WeightFile(
    "inception-2015-12-05.pt", "torch hub",
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
)  # fmt: skip


def _lpips(trunk: str) -> Callable[[Metric, str], Scorer]:
    """The LPIPS loader with the ``alex`` or ``vgg`` trunk."""

    def load(metric: Metric, device: str) -> Scorer:
        import lpips
        import torch

        _fetch(metric)
        with _quiet():
            net = lpips.LPIPS(net=trunk, verbose=False).to(device).eval()

        def score(sr: np.ndarray, hr: np.ndarray | None) -> float:
            with torch.no_grad():
                return float(net(_tensor(sr, device), _tensor(hr, device), normalize=True).item())

        return score

    return load


def _load_dists(metric: Metric, device: str) -> Scorer:
    import DISTS_pytorch
    import torch

    _fetch(metric)
    with _quiet():
        net = DISTS_pytorch.DISTS(load_weights=False)
    learned = torch.load(Path(DISTS_pytorch.__file__).parent / "weights.pt", map_location="cpu", weights_only=True)
    net.alpha.data, net.beta.data = learned["alpha"], learned["beta"]
    net = net.to(device).eval()

    def score(sr: np.ndarray, hr: np.ndarray | None) -> float:
        with torch.no_grad():
            return float(net(_tensor(sr, device), _tensor(hr, device)).item())

    return score


class FrechetInception:
    """FID between two sets of images, clean-fid's "clean" mode (PIL bicubic to 299x299 in float,
    Inception-v3 pool features of the TensorFlow weights): :meth:`add` each pair, then :meth:`value`."""

    def __init__(self, metric: Metric, device: str) -> None:
        from cleanfid.inception_torchscript import InceptionV3W
        from cleanfid.resize import build_resizer

        _fetch(metric)
        self.device = device
        self.resize = build_resizer("clean")
        self.model = InceptionV3W(str(INCEPTION.folder()), download=False).to(device).eval()
        self.features: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])

    def _features(self, image: np.ndarray) -> np.ndarray:
        import torch

        resized = self.resize(np.clip(np.rint(image), 0, 255).astype(np.uint8))
        with torch.no_grad():
            batch = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))[None].to(self.device)
            return self.model(batch).cpu().numpy()[0]

    def add(self, sr: np.ndarray, hr: np.ndarray) -> None:
        self.features[0].append(self._features(sr))
        self.features[1].append(self._features(hr))

    def value(self) -> float | None:
        """The FID of the images added (None with fewer than 2 pairs: no covariance)."""
        from cleanfid.fid import fid_from_feats

        if len(self.features[0]) < 2:
            return None
        return float(fid_from_feats(np.stack(self.features[0]), np.stack(self.features[1])))


PYIQA_WEIGHTS = {
    "niqe": (WeightFile("niqe_modelparameters.mat", "pyiqa"),),
    "musiq": (WeightFile("musiq_koniq_ckpt-e95806b9.pth", "pyiqa"),),
    "maniqa": (WeightFile("timm/vit_base_patch8_224.augreg2_in21k_ft_in1k", "Hugging Face"),
               WeightFile("ckpt_koniq10k.pt", "pyiqa")),
    "clipiqa": (WeightFile("RN50.pt", "clip"),),
}  # fmt: skip
"""The files pyiqa (the version pinned in constraints.txt) downloads for each metric, named in the
one line that says a metric is unavailable."""


def _load_pyiqa(metric: Metric, device: str) -> Scorer:
    try:
        import pyiqa
    except ImportError:
        raise MetricUnavailable(
            f"{metric.name}: needs pyiqa ({PYIQA_LICENCE} licence, not installed by default): "
            f"pip install 'seesr[{metric.extra}]'"
        ) from None
    import torch

    if _offline():
        _fetch(metric)  # names the first missing file
    try:
        with _quiet():
            net = pyiqa.create_metric(metric.name, device=torch.device(device), as_loss=False)
    except ImportError as error:  # e.g. CLIP-IQA's pkg_resources, gone from setuptools 81 on
        raise MetricUnavailable(f"{metric.name}: pyiqa needs the module {error.name}, which is not installed here") from None
    except Exception as error:  # noqa: BLE001 - pyiqa raises whatever its downloads and loaders raise
        missing = [w for w in metric.weights if not w.present()] or list(metric.weights)
        files = ", ".join(f"{w.name} ({w.cache} cache, {w.folder()})" for w in missing)
        raise MetricUnavailable(f"{metric.name}: could not load {files}: {_first_line(error)}") from None

    def score(sr: np.ndarray, hr: np.ndarray | None) -> float:  # noqa: ARG001 - no-reference
        with torch.no_grad():
            return float(net(_tensor(sr, device)).item())

    return score


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("psnr", "PSNR (dB) on the BT.601 Y channel", "full-reference", True, FORMULA, _formula(psnr, True)),
        Metric("ssim", "SSIM on the BT.601 Y channel", "full-reference", True, FORMULA, _formula(ssim, True)),
        Metric("psnr_rgb", "PSNR (dB) on R, G and B", "full-reference", True, FORMULA, _formula(psnr, False)),
        Metric("ssim_rgb", "SSIM on R, G and B (mean of the channels)", "full-reference", True, FORMULA, _formula(ssim, False)),
        Metric("lpips", "LPIPS v0.1, AlexNet trunk", "full-reference", False, "lpips (BSD-2-Clause)", _lpips("alex"), (ALEXNET,)),
        Metric("lpips_vgg", "LPIPS v0.1, VGG-16 trunk", "full-reference", False, "lpips (BSD-2-Clause)", _lpips("vgg"), (VGG16,)),
        Metric("dists", "DISTS", "full-reference", False, "DISTS_pytorch (MIT)", _load_dists, (VGG16,)),
        Metric("fid", "FID between the SR and HR sets (clean-fid, clean mode)", "set", False, "clean-fid (MIT)",
               FrechetInception, (INCEPTION,)),
        *(Metric(name, description, "no-reference", higher, f"pyiqa ({PYIQA_LICENCE})", _load_pyiqa,
                 PYIQA_WEIGHTS[name], PYIQA_EXTRA)
          for name, description, higher in (("niqe", "NIQE", False), ("musiq", "MUSIQ (KonIQ-10k)", True),
                                            ("maniqa", "MANIQA (KonIQ-10k)", True), ("clipiqa", "CLIP-IQA", True))),
    )
}  # fmt: skip
"""Every metric ``seesr evaluate --metrics`` knows, in the order of its columns."""

METRIC_GROUPS = {
    "default": ("psnr", "ssim"),
    "paper": ("psnr", "ssim", "lpips", "dists", "fid", "niqe", "musiq", "maniqa", "clipiqa"),
    "all": tuple(METRICS),
}
"""Names that stand for several metrics; ``paper``: the columns of SeeSR's Table 1."""


def parse_metrics(text: str) -> tuple[str, ...]:
    """``psnr,ssim,lpips`` (or a :data:`METRIC_GROUPS` name among them) -> metric names, in
    :data:`METRICS` order, without repeats; an unknown name is a one-line ConfigError."""
    from seesr.errors import ConfigError

    asked: list[str] = []
    for word in (w.strip().lower() for w in text.split(",") if w.strip()):
        if word not in METRICS and word not in METRIC_GROUPS:
            known = ", ".join((*METRICS, *METRIC_GROUPS))
            raise ConfigError(f"unknown metric {word!r}; choose from {known}")
        asked += METRIC_GROUPS.get(word, (word,))
    if not asked:
        raise ConfigError("no metric named; --metrics takes a comma-separated list such as psnr,ssim,lpips")
    return tuple(name for name in METRICS if name in asked)


_LOADED: dict[tuple[str, str], Any] = {}


def load_metric(name: str, device: str = "cpu") -> Any:
    """The loaded metric ``name`` on ``device`` (a :class:`Scorer`, or a fresh
    :class:`FrechetInception` for FID), cached; raises :class:`MetricUnavailable` (also cached, so
    a missing file is looked for once per process)."""
    metric = METRICS[name]
    if metric.kind == "set":
        return metric.load(metric, device)
    key = (name, device)
    if key not in _LOADED:
        try:
            _LOADED[key] = metric.load(metric, device)
        except MetricUnavailable as error:
            _LOADED[key] = error
        except ImportError as error:
            _LOADED[key] = MetricUnavailable(f"{name}: needs {metric.package.split()[0]}, which is not installed ({error.name})")
    loaded = _LOADED[key]
    if isinstance(loaded, MetricUnavailable):
        raise loaded
    return loaded


# --------------------------------------------------------------------------- helpers


def metric_pixels(image: InputImage) -> np.ndarray:
    """HxWx3 float64 on [0, 255] of an input image: its 8-bit values, or its 16-bit values scaled
    by 255/65535 (not rounded); alpha is not part of it, gray is three equal channels."""
    if image.high_bit_rgb is not None:
        return image.high_bit_rgb.astype(np.float64) * (255.0 / 65535.0)
    return np.asarray(image.rgb, dtype=np.float64)


def score_pair(sr: InputImage | Image.Image, hr: InputImage | Image.Image, scorers: dict[str, Any],
               crop_border: int = 0) -> dict[str, float]:  # fmt: skip
    """Every per-image metric of ``scorers`` (name -> loaded metric) on one SR / HR pair, after
    ``crop_border`` pixels leave every edge of both; a size mismatch is an InputError."""
    sr, hr = (image if isinstance(image, InputImage) else read_image(image) for image in (sr, hr))
    if sr.size != hr.size:
        raise InputError(f"SR {sr.size[0]}x{sr.size[1]} and HR {hr.size[0]}x{hr.size[1]} differ in size")
    a, b = crop(metric_pixels(sr), crop_border), crop(metric_pixels(hr), crop_border)
    return {name: scorer(a, b) for name, scorer in scorers.items()}


def load_scorers(metrics: Sequence[str], device: str = "cpu") -> tuple[dict[str, Any], dict[str, str]]:
    """(name -> loaded per-image metric, name -> why it is unavailable) for ``metrics`` (FID, a
    metric of sets, is left to the caller)."""
    scorers, unavailable = {}, {}
    for name in metrics:
        if METRICS[name].kind == "set":
            continue
        try:
            scorers[name] = load_metric(name, device)
        except MetricUnavailable as error:
            unavailable[name] = str(error)
    return scorers, unavailable


def _torch_hub_dir() -> str:
    import torch

    return torch.hub.get_dir()


def _offline() -> bool:
    """Downloads are off (``HF_HUB_OFFLINE=1``, the switch seesr's weights already obey)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _fetch(metric: Metric) -> None:
    """Put the metric's files in their caches (pyiqa's: only check them, offline), or raise one
    line naming the first that is missing and why it could not be had."""
    for weight in metric.weights:
        if weight.present():
            continue
        where = f"{weight.name} is not in {weight.folder()}"
        if _offline() or weight.url is None:  # pyiqa's files (no url here) are only looked for offline
            raise MetricUnavailable(f"{metric.name}: {where} and downloads are off (HF_HUB_OFFLINE=1)")
        import torch

        target = weight.folder() / weight.name
        logger.info("%s: downloading %s to %s (first use)", metric.name, weight.url, target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(weight.url, str(target), progress=False)
        except Exception as error:  # noqa: BLE001 - urllib, SSL and file-system errors alike
            raise MetricUnavailable(f"{metric.name}: {where} and could not be downloaded: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


@contextlib.contextmanager
def _quiet():
    """Keep the libraries' prints, warnings and log lines out of our output while a metric loads
    (its failure is one line of ours; the prints are logged at debug)."""
    chatter, disabled = io.StringIO(), logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)
        if chatter.getvalue().strip():
            logger.debug("%s", chatter.getvalue().strip())


def _tensor(image: np.ndarray, device: str) -> torch.Tensor:
    """HxWx3 on [0, 255] -> 1x3xHxW float32 on [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0))[None].to(device)


def metric_table(names: Sequence[str] | None = None) -> str:
    """The metrics as Markdown rows (name, what, better, package, weights), for docs and ``--help``."""
    rows = ["| metric | what | better | from | downloads on first use |", "|---|---|---|---|---|"]
    for metric in (METRICS[n] for n in names or METRICS):
        files = ", ".join(f"`{w.name}`" for w in metric.weights) or "nothing"
        package = metric.package + (f", extra `seesr[{metric.extra}]`" if metric.extra else "")
        rows.append(f"| `{metric.name}` | {metric.description} | {metric.arrow} | {package} | {files} |")
    return "\n".join(rows)
