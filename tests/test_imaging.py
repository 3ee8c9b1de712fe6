"""seesr.imaging.prefilter and seesr.imaging.compare: the denoise pre-stage and side-by-side / comparison images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from seesr.errors import ConfigError
from seesr.imaging.compare import COMPARE_DIVIDER, DIVIDER_COLOUR, INPUT_LABEL, compare_image, side_by_side
from seesr.imaging.prefilter import nl_means

# --------------------------------------------------------------------------------------------
# denoise


def _noisy_flat(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    flat = np.full((64, 64, 3), 128.0) + rng.normal(0, 12, (64, 64, 3))
    return Image.fromarray(np.clip(np.rint(flat), 0, 255).astype(np.uint8), "RGB")


def test_denoise_reduces_noise():
    noisy = _noisy_flat()
    before = np.asarray(noisy, dtype=np.float64).std()
    after = np.asarray(nl_means(noisy, 10), dtype=np.float64).std()
    assert after < before / 2
    gray = noisy.convert("L")
    assert np.asarray(nl_means(gray, 10), dtype=np.float64).std() < np.asarray(gray, dtype=np.float64).std() / 2
    rgba = noisy.copy()
    rgba.putalpha(77)
    out = nl_means(rgba, 5)
    assert out.mode == "RGBA" and (np.asarray(out)[..., 3] == 77).all()


def test_denoise_strength_zero_is_identity():
    noisy = _noisy_flat(1)
    out = nl_means(noisy, 0)
    assert out is not noisy and np.array_equal(np.asarray(out), np.asarray(noisy))


@pytest.mark.parametrize("strength", [-1, 30.5, float("nan"), float("inf"), "5", True])
def test_denoise_strength_validated(strength):
    with pytest.raises(ConfigError):
        nl_means(_noisy_flat(), strength)


def test_side_by_side_scales_left_to_the_right_height():
    left = Image.new("RGB", (30, 20), (255, 0, 0))
    right = Image.new("RGB", (120, 80), (0, 0, 255))
    canvas = side_by_side(left, right)
    assert canvas.size == (240, 80)
    assert canvas.getpixel((60, 40)) == (255, 0, 0)
    assert canvas.getpixel((180, 40)) == (0, 0, 255)
    gapped = side_by_side(left.convert("L"), right, gap=4)
    assert gapped.size == (244, 80) and gapped.mode == "RGB"
    assert gapped.getpixel((121, 40)) == (128, 128, 128)
    assert np.array_equal(np.asarray(gapped)[:, 124:], np.asarray(right))


def _label_rows(canvas: Image.Image, output_height: int) -> np.ndarray:
    return np.asarray(canvas)[: canvas.height - output_height]


def test_compare_image_layout_divider_and_labels():
    source = Image.new("RGB", (40, 30), (200, 10, 10))
    output = Image.new("RGB", (160, 120), (10, 10, 200))
    canvas = compare_image(source, output, "output: seesr/seesr-turbo")
    strip = canvas.height - output.height
    assert canvas.mode == "RGB" and canvas.width == 2 * 160 + COMPARE_DIVIDER
    assert 10 <= strip <= 40  # one line of text, not a page
    pixels = np.asarray(canvas).astype(int)
    divider = pixels[:, 160 : 160 + COMPARE_DIVIDER]
    assert (divider == DIVIDER_COLOUR).all()  # the whole height, label strip included
    assert (pixels[strip:, :160] == (200, 10, 10)).all()  # input, bicubic-upscaled (flat stays flat)
    assert (pixels[strip:, 160 + COMPARE_DIVIDER :] == (10, 10, 200)).all()
    labels = _label_rows(canvas, output.height).astype(int)
    for half in (labels[:, :160], labels[:, 160 + COMPARE_DIVIDER :]):
        text = (half > 128).all(axis=2)  # white text on black
        assert 20 < text.sum() < text.size / 2, "a label is drawn in each half"
        assert ((half == 0).all(axis=2) | text | (half.std(axis=2) == 0)).all()  # gray levels only


def test_compare_shows_transparency_over_a_checkerboard_not_the_hidden_colours():
    """An RGBA input and output: transparent pixels show the checkerboard, whatever colour they store;
    opaque ones their own colour."""
    from seesr.imaging.compare import CHECKER_COLOURS

    source = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # red, fully transparent
    source.paste((0, 200, 0, 255), (20, 0, 40, 40))  # right half: opaque green
    output = source.resize((160, 160), Image.Resampling.NEAREST)
    canvas = compare_image(source, output, "output: realesrgan/realesrgan-x4plus")
    strip = canvas.height - 160
    for left in (0, 160 + COMPARE_DIVIDER):
        half = np.asarray(canvas)[strip:, left : left + 160].astype(int)
        seen = {tuple(pixel) for pixel in half[:, :64].reshape(-1, 3)}
        assert seen == set(CHECKER_COLOURS), seen  # no red: the hidden colour is not shown
        assert (half[:, 100:] == (0, 200, 0)).all()


def test_compare_labels_differ_with_the_output_name():
    source, output = Image.new("RGB", (32, 32), 90), Image.new("RGB", (128, 128), 90)
    one = _label_rows(compare_image(source, output, "output: seesr/seesr-turbo"), 128)
    other = _label_rows(compare_image(source, output, "output: realesrgan/RealESRGAN_x4plus"), 128)
    assert np.array_equal(one[:, :128], other[:, :128])  # the same input label
    assert not np.array_equal(one[:, 132:], other[:, 132:])
    assert INPUT_LABEL == "input (bicubic)"
