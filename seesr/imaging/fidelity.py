"""Structure-fidelity report of a super-resolved image against its bicubic-upscaled input.

Two numbers, cheap enough to compute for every result:

- ``structure``: do the output's edges sit where the input's edges are? A boundary F1 score
  (Martin, Fowlkes & Malik 2004, the BSDS boundary benchmark) between Canny edge maps of the
  reference and of the output, with a tolerance in position (``EDGE_TOLERANCE``, 2 px) and in
  direction (same or neighbouring 22.5 degree bin): precision is the share of output edge
  pixels near a like-oriented reference edge, recall the share of reference edge pixels near a
  like-oriented output edge. In [0, 1]; 1 = the same structure. Shifts up to 2 px (resampling
  jitter) are forgiven by design. The direction check stops unrelated texture edges that happen
  to lie close from counting (a 40 px shift of a textured photo scores ~0.3 with it, ~0.5
  without). Recall falls when the output loses or moves the input's edges; precision falls when
  it adds edges the input does not support, which a super-resolver does on purpose for texture
  (an unsharp-masked bicubic image scores ~0.8-0.9), so compare runs with each other rather than
  reading the number as good or bad on its own.
- ``color_error``: mean absolute difference, in 8-bit levels (0-255) over pixels and RGB
  channels, between heavily low-passed copies of the two images (Gaussian blur with sigma =
  1/32 of the short side, computed on a copy area-downscaled to a short side of 64 px): the
  colour drift that SeeSR's colour fix is meant to remove; detail does not count.

Edges: OpenCV Canny on the luma, set up with the defaults of MATLAB's ``edge(I, 'canny')``:
Gaussian pre-smoothing with sigma sqrt(2), high threshold at the 70th percentile of the
reference's gradient magnitude ("PercentOfPixelsNotEdges" 0.7), low threshold 0.4 x high. The
thresholds come from the reference and are used for both images, so a blurred output (weaker
gradients) loses edges instead of having its thresholds lowered to match.

Why not ``controlnet_aux.CannyDetector``: it is only ``cv2.Canny`` with fixed thresholds (100,
200) and no smoothing, and it resizes the image to a multiple of 64 pixels before and after (a
179 px image comes back as a 192 px edge map), which breaks the pixel alignment a tolerance of
1-2 px depends on; importing ``controlnet_aux`` also loads timm and dozens of detectors (~7 s).
The edge detectors of controlnet_aux that do more (HED, PiDiNet, ...) need downloaded weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from seesr.errors import ConfigError

try:  # opencv-python(-headless) comes with controlnet-aux
    import cv2
except ImportError:  # pragma: no cover - depends on the environment
    cv2 = None

EDGE_SIGMA = math.sqrt(2.0)
"""Gaussian pre-smoothing of the luma before the gradients (MATLAB ``edge`` 'canny' default)."""
EDGE_NON_EDGE_FRACTION = 0.7
"""High threshold: this quantile of the reference's gradient magnitude (MATLAB default)."""
EDGE_LOW_RATIO = 0.4
"""Low threshold = this x the high one (MATLAB default)."""
EDGE_MIN_THRESHOLD = 16.0
"""Floor of the high threshold, in 3x3-Sobel units of 8-bit luma (a 4-level step), so that flat
references do not turn noise and JPEG blocks into edges."""
EDGE_TOLERANCE = 2
"""Edge pixels within this many pixels (a disc) of an edge of the other image count as matched."""
EDGE_ORIENTATION_BINS = 8
"""Edge directions (mod 180 degrees) in bins of 22.5 degrees; a match needs the same or a
neighbouring bin, so unrelated texture edges nearby do not count."""
COLOR_LOWPASS_SIZE = 64
"""Short side of the copy the colour error is computed on (area downscale; never upscaled)."""
COLOR_SIGMA_FRACTION = 1.0 / 32.0
"""Gaussian sigma of the colour low-pass, as a fraction of the short side."""


@dataclass(frozen=True)
class FidelityReport:
    """How well an output keeps the structure and colours of its (bicubic-upscaled) input.

    ``structure``: edge F1 in [0, 1] (1 = same edges within the tolerance); None when the input
    has no edges at all, so there is no structure to keep. ``color_error``: mean absolute
    low-frequency difference in 8-bit levels (0 = same colours). ``edge_precision`` /
    ``edge_recall``: the two halves of the F1 (recall is None with ``structure``).
    """

    structure: float | None
    color_error: float
    edge_precision: float = 1.0
    edge_recall: float | None = 1.0

    def summary(self) -> str:
        if self.structure is None:
            return f"structure n/a (the input has no edges), colour error {self.color_error:.2f}/255"
        return (
            f"structure {self.structure:.3f} (edge F1 within {EDGE_TOLERANCE} px; recall {self.edge_recall:.3f}, "
            f"precision {self.edge_precision:.3f}), colour error {self.color_error:.2f}/255"
        )


def fidelity_report(reference: Image.Image, output: Image.Image) -> FidelityReport:
    """Compare ``output`` with ``reference``, the bicubic-upscaled input.

    A reference of another size is bicubic-resized to the output's size first, so the LR input
    itself can be passed. Alpha is dropped; greyscale is compared as RGB.
    """
    _require_cv2()
    if not isinstance(reference, Image.Image) or not isinstance(output, Image.Image):
        raise ConfigError("fidelity_report takes two PIL images")
    out_rgb = output.convert("RGB")
    ref_rgb = reference.convert("RGB")
    if ref_rgb.size != out_rgb.size:
        ref_rgb = ref_rgb.resize(out_rgb.size, Image.Resampling.BICUBIC)
    ref_dx, ref_dy = luma_gradients(ref_rgb, EDGE_SIGMA)
    out_dx, out_dy = luma_gradients(out_rgb, EDGE_SIGMA)
    low, high = edge_thresholds(ref_dx, ref_dy)
    ref_edges = canny_edges(ref_dx, ref_dy, low, high)
    out_edges = canny_edges(out_dx, out_dy, low, high)
    precision, recall, f1 = edge_f1(
        ref_edges,
        out_edges,
        edge_orientation_bins(ref_dx, ref_dy, ref_edges),
        edge_orientation_bins(out_dx, out_dy, out_edges),
        EDGE_TOLERANCE,
    )
    no_reference_edges = not ref_edges.any()
    return FidelityReport(
        structure=None if no_reference_edges else f1,
        color_error=color_error(ref_rgb, out_rgb),
        edge_precision=precision,
        edge_recall=None if no_reference_edges else recall,
    )


# ---------------------------------------------------------------------------- edges
def luma_gradients(image: Image.Image, sigma: float = EDGE_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """3x3 Sobel x/y derivatives (int16, as ``cv2.Canny`` takes them) of the smoothed 8-bit luma."""
    _require_cv2()
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    if sigma > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    dx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
    dy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
    return np.rint(dx).astype(np.int16), np.rint(dy).astype(np.int16)


def edge_thresholds(dx: np.ndarray, dy: np.ndarray) -> tuple[float, float]:
    """(low, high) Canny thresholds from one image's gradients (MATLAB's default rule, floored)."""
    magnitude = np.hypot(dx.astype(np.float32), dy.astype(np.float32))
    high = max(float(np.quantile(magnitude, EDGE_NON_EDGE_FRACTION)), EDGE_MIN_THRESHOLD)
    return EDGE_LOW_RATIO * high, high


def canny_edges(dx: np.ndarray, dy: np.ndarray, low: float, high: float) -> np.ndarray:
    """Boolean edge map: Canny (L2 gradient, non-maximum suppression, hysteresis) on given gradients."""
    _require_cv2()
    return cv2.Canny(dx, dy, low, high, L2gradient=True) > 0


def edge_orientation_bins(
    dx: np.ndarray, dy: np.ndarray, edges: np.ndarray | None = None, bins: int = EDGE_ORIENTATION_BINS
) -> np.ndarray:
    """Gradient orientation modulo 180 degrees, quantised to ``bins`` equal bins (int8).

    With ``edges``, only edge pixels get a bin and every other pixel is -1.
    """
    if edges is None:
        gx, gy = dx.astype(np.float32), dy.astype(np.float32)
    else:
        gx, gy = dx[edges].astype(np.float32), dy[edges].astype(np.float32)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    binned = np.minimum((angle * (bins / np.pi)).astype(np.int8), bins - 1)
    if edges is None:
        return binned
    result = np.full(dx.shape, -1, dtype=np.int8)
    result[edges] = binned
    return result


def matched_fraction(
    edges: np.ndarray,
    orientation: np.ndarray | None,
    other: np.ndarray,
    other_orientation: np.ndarray | None,
    tolerance: int = EDGE_TOLERANCE,
    bins: int = EDGE_ORIENTATION_BINS,
) -> float:
    """Share of ``edges`` pixels with an ``other`` edge pixel of a similar orientation nearby.

    Nearby: within a disc of radius ``tolerance``. Similar: in the same or a neighbouring
    orientation bin (cyclic); without orientations (None) any edge nearby matches. No edges at
    all: 1.0 (nothing is unmatched).
    """
    _require_cv2()
    count = int(edges.sum())
    if count == 0:
        return 1.0
    size = 2 * tolerance + 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    if orientation is None or other_orientation is None:
        return int((edges & (cv2.dilate(other.astype(np.uint8), disc) > 0)).sum()) / count
    own = [edges & (orientation == k) for k in range(bins)]
    theirs = [other & (other_orientation == k) for k in range(bins)]
    matched = 0
    for k in range(bins):
        if not own[k].any():
            continue
        similar = theirs[(k - 1) % bins] | theirs[k] | theirs[(k + 1) % bins]
        matched += int((own[k] & (cv2.dilate(similar.astype(np.uint8), disc) > 0)).sum())
    return matched / count


def edge_f1(
    reference: np.ndarray,
    output: np.ndarray,
    reference_orientation: np.ndarray | None = None,
    output_orientation: np.ndarray | None = None,
    tolerance: int = EDGE_TOLERANCE,
) -> tuple[float, float, float]:
    """(precision, recall, F1) of two boolean edge maps, matching within ``tolerance`` pixels.

    With orientation bins (:func:`edge_orientation_bins`) a match also needs a similar edge
    direction; without them, any edge nearby matches. No edges in either map is a perfect match;
    edges in only one of them score 0.
    """
    precision = matched_fraction(output, output_orientation, reference, reference_orientation, tolerance)
    recall = matched_fraction(reference, reference_orientation, output, output_orientation, tolerance)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return precision, recall, f1


# ---------------------------------------------------------------------------- colour
def color_lowpass(image: Image.Image) -> np.ndarray:
    """(h, w, 3) float32 low-pass of an RGB image in 8-bit levels, on a copy with short side <= 64."""
    _require_cv2()
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    height, width = rgb.shape[:2]
    factor = min(1.0, COLOR_LOWPASS_SIZE / min(height, width))
    if factor < 1.0:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    sigma = min(rgb.shape[:2]) * COLOR_SIGMA_FRACTION
    return cv2.GaussianBlur(rgb, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)


def color_error(reference: Image.Image, output: Image.Image) -> float:
    """Mean absolute difference of the two low-passed images, in 8-bit levels (same sizes)."""
    if reference.size != output.size:
        raise ConfigError(f"colour error needs equal sizes, got {reference.size} and {output.size}")
    return float(np.abs(color_lowpass(reference) - color_lowpass(output)).mean())


def _require_cv2() -> None:
    if cv2 is None:
        raise ConfigError("the fidelity report needs OpenCV: pip install opencv-python-headless")
