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
CHECKER_COLOURS = ((255, 255, 255), (204, 204, 204))
"""The squares transparent pixels are shown over in a ``--compare`` image, as image viewers do."""


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


def over_checkerboard(image: Image.Image) -> Image.Image:
    """``image`` as RGB; one with transparency composited over :data:`CHECKER_COLOURS` squares (the
    colours stored under transparent pixels are not shown)."""
    if "A" not in image.getbands() and "transparency" not in image.info:
        return image.convert("RGB")
    square = max(8, min(image.size) // 16)
    columns, rows = -(-image.width // square), -(-image.height // square)
    cells = Image.new("RGB", (columns, rows), CHECKER_COLOURS[0])
    cells.putdata([CHECKER_COLOURS[(x + y) % 2] for y in range(rows) for x in range(columns)])
    board = cells.resize((columns * square, rows * square), Image.Resampling.NEAREST).crop((0, 0, *image.size))
    return Image.alpha_composite(board.convert("RGBA"), image.convert("RGBA")).convert("RGB")


def compare_image(source: Image.Image, output: Image.Image, output_label: str) -> Image.Image:
    """The ``--compare`` picture: ``source`` bicubic-upscaled to the output's size | ``output``, a
    :data:`COMPARE_DIVIDER` px divider between them, and a black strip above each half naming it
    (:data:`INPUT_LABEL`, ``output_label``) in Pillow's built-in font, clipped to its half. Images
    with transparency are shown over a checkerboard (:func:`over_checkerboard`)."""
    upscaled = resize(source if source.mode in ("RGBA", "LA") else source.convert("RGB"), output.size)
    halves = side_by_side(over_checkerboard(upscaled), over_checkerboard(output), gap=COMPARE_DIVIDER)
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
