"""Side-by-side pictures: the ``--compare`` image (input bicubic | output, labelled) and the panels
of training validation."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont, features

from seesr.errors import ConfigError
from seesr.imaging.convert import resize

DIVIDER_COLOUR = (128, 128, 128)
"""Mid grey between the halves of a side-by-side image."""
COMPARE_DIVIDER = 4
"""Width in pixels of the divider of a ``--compare`` image."""
INPUT_LABEL = "input (bicubic)"


def side_by_side(left: Image.Image, right: Image.Image, gap: int = 0) -> Image.Image:
    """``left | right`` on one RGB canvas; ``left`` is bicubic-resized to ``right``'s height;
    ``gap`` pixels of :data:`DIVIDER_COLOUR` separate them."""
    if gap < 0:
        raise ConfigError(f"gap must be >= 0, got {gap}")
    right = right.convert("RGB")
    left = left.convert("RGB")
    if left.height != right.height:
        width = max(1, round(left.width * right.height / left.height))
        left = left.resize((width, right.height), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (left.width + gap + right.width, right.height), DIVIDER_COLOUR)
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + gap, 0))
    return canvas


def compare_image(source: Image.Image, output: Image.Image, output_label: str) -> Image.Image:
    """The ``--compare`` picture: ``source`` bicubic-upscaled to the output's size | ``output``, a
    :data:`COMPARE_DIVIDER` px divider between them, and a black strip above each half naming it
    (:data:`INPUT_LABEL`, ``output_label``) in Pillow's built-in font, clipped to its half."""
    halves = side_by_side(resize(source.convert("RGB"), output.size), output, gap=COMPARE_DIVIDER)
    font = _label_font(max(10, min(48, output.height // 40)))
    left, top, _, bottom = font.getbbox(INPUT_LABEL + output_label)
    pad = max(2, (bottom - top) // 3)
    strip = bottom - top + 2 * pad
    canvas = Image.new("RGB", (halves.width, halves.height + strip), DIVIDER_COLOUR)
    canvas.paste(halves, (0, strip))
    for x, text in ((0, INPUT_LABEL), (output.width + COMPARE_DIVIDER, output_label)):
        label = Image.new("RGB", (output.width, strip), (0, 0, 0))
        ImageDraw.Draw(label).text((pad - left, pad - top), text, fill=(255, 255, 255), font=font)
        canvas.paste(label, (x, 0))
    return canvas


def _label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` px (its fixed bitmap font without FreeType)."""
    return ImageFont.load_default(size) if features.check_module("freetype2") else ImageFont.load_default()
