"""Structure-fidelity report: edge F1 against the bicubic-upscaled input, low-frequency colour error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from seesr.imaging.fidelity import FidelityReport, edge_f1, fidelity_report

INPUTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "inputs"


@pytest.fixture(scope="module", params=["0014.jpg", "179.png"])
def reference(request) -> Image.Image:
    """A real photo, bicubic-upscaled x4 as the pipeline's reference would be."""
    path = INPUTS / request.param
    if not path.is_file():
        pytest.fail(f"test image not found: {path}")
    lr = Image.open(path).convert("RGB")
    return lr.resize((lr.width * 4, lr.height * 4), Image.Resampling.BICUBIC)


def shifted(image: Image.Image, pixels: int) -> Image.Image:
    """Content moved right by ``pixels``; the left border repeats the first column."""
    array = np.asarray(image)
    return Image.fromarray(np.pad(array[:, :-pixels], ((0, 0), (pixels, 0), (0, 0)), mode="edge"))


def colour_shifted(image: Image.Image, levels: int) -> Image.Image:
    array = np.asarray(image).astype(np.int16) + levels
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def test_identical_images_score_perfect(reference):
    report = fidelity_report(reference, reference.copy())
    assert report.structure == 1.0
    assert report.color_error == 0.0
    assert (report.edge_precision, report.edge_recall) == (1.0, 1.0)


def test_lr_input_is_bicubic_upscaled_to_the_output_size(reference):
    lr = reference.resize((reference.width // 4, reference.height // 4), Image.Resampling.BICUBIC)
    upscaled = lr.resize(reference.size, Image.Resampling.BICUBIC)
    assert fidelity_report(lr, upscaled) == fidelity_report(upscaled, upscaled)


def test_more_blur_scores_worse(reference):
    scores = [fidelity_report(reference, reference.filter(ImageFilter.GaussianBlur(s))).structure for s in (1, 2, 4)]
    assert 1.0 > scores[0] > scores[1] > scores[2]
    assert scores[2] < 0.7


def test_larger_shift_scores_worse(reference):
    scores = [fidelity_report(reference, shifted(reference, s)).structure for s in (1, 3, 6)]
    assert scores[0] >= 0.98  # within the 2 px tolerance: by design, resampling jitter is not a change
    assert scores[0] - scores[1] > 0.1 and scores[1] - scores[2] > 0.1


def test_larger_colour_shift_has_larger_colour_error(reference):
    errors = [fidelity_report(reference, colour_shifted(reference, c)).color_error for c in (5, 20, 60)]
    assert 0 < errors[0] < errors[1] < errors[2]
    for error, levels in zip(errors, (5, 20, 60)):
        assert 0.5 * levels < error <= levels + 1e-6  # in 8-bit levels; clipping only lowers it


def test_detail_changes_leave_colour_error_small(reference):
    for damaged in (reference.filter(ImageFilter.GaussianBlur(2)), shifted(reference, 1)):
        assert fidelity_report(reference, damaged).color_error < 2.0


def test_edge_f1_tolerance_and_orientation_by_hand():
    reference = np.zeros((20, 20), dtype=bool)
    reference[2:18, 10] = True  # a vertical line
    near, far = np.zeros_like(reference), np.zeros_like(reference)
    near[2:18, 12] = True  # 2 px away: within the tolerance
    far[2:18, 13] = True  # 3 px away
    assert edge_f1(reference, near, tolerance=2) == (1.0, 1.0, 1.0)
    assert edge_f1(reference, far, tolerance=2) == (0.0, 0.0, 0.0)
    vertical = np.full(reference.shape, 0, dtype=np.int8)  # bin 0: gradient along x
    crossing = np.full(reference.shape, 4, dtype=np.int8)  # bin 4: 90 degrees away
    assert edge_f1(reference, near, vertical, vertical, tolerance=2)[2] == 1.0
    assert edge_f1(reference, near, vertical, crossing, tolerance=2)[2] == 0.0
    # half of the output's pixels matched, all of the reference's: P = 0.5, R = 1, F1 = 2/3
    doubled = near.copy()
    doubled[2:18, 16] = True
    precision, recall, f1 = edge_f1(reference, doubled, tolerance=2)
    assert (precision, recall) == (0.5, 1.0)
    assert f1 == pytest.approx(2 / 3)


def test_an_input_without_edges_has_no_structure_score_and_lost_edges_score_zero():
    flat = Image.new("RGB", (64, 64), (120, 130, 140))
    square = flat.copy()
    ImageDraw.Draw(square).rectangle((16, 16, 47, 47), fill=(250, 250, 250))
    for output in (flat.copy(), square):
        report = fidelity_report(flat, output)
        assert report.structure is None and report.edge_recall is None
        assert report.summary().startswith("structure n/a (the input has no edges), colour error ")
    assert fidelity_report(flat, square).edge_precision == 0.0
    assert fidelity_report(square, flat).structure == 0.0


def test_summary_names_both_numbers():
    text = FidelityReport(structure=0.8123, color_error=3.456, edge_precision=0.7, edge_recall=0.95).summary()
    assert "structure 0.812" in text and "colour error 3.46" in text and "recall 0.950" in text
