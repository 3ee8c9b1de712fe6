"""Photo metadata an output keeps from its input: EXIF, XMP, DPI and PNG text (the ICC profile is
:attr:`seesr.io.read.InputImage.icc_profile`).

Read once with the input (:func:`read_metadata`), already as the upright picture the model sees:
orientation 1 (the pixels were rotated on reading), resolutions swapped when the rotation swapped
the axes, the embedded thumbnail and the tags that describe the source file's own layout (strips,
compression, ...) left out. Written per output (:meth:`Metadata.for_output`) with the pixel
dimensions of the output and its DPI scaled by the upscale, so the print size stays the picture's
own: a 6x4 inch scan at 300 dpi upscaled 4x is a 6x4 inch picture at 1200 dpi.

Everything here is Pillow's (``Image.Exif``, ``info["xmp"]``, ``info["dpi"]``, ``PngInfo``); what
each format can hold is decided in :mod:`seesr.io.write`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from fractions import Fraction

from PIL import ExifTags, Image

logger = logging.getLogger(__name__)

ORIENTATION_NORMAL = 1
TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
"""EXIF orientations whose rotation swaps width and height (and x and y resolution)."""
SUB_IFDS = (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo)
"""The EXIF sub-directories kept (date taken, exposure, ...; GPS); the interoperability and
thumbnail directories are not."""
LAYOUT_TAGS = frozenset({
    0x00FE, 0x00FF, 0x0100, 0x0101, 0x0102, 0x0103, 0x0106, 0x0107, 0x0108, 0x0109, 0x010A, 0x0111,
    0x0115, 0x0116, 0x0117, 0x0118, 0x0119, 0x011C, 0x013D, 0x0140, 0x0142, 0x0143, 0x0144, 0x0145,
    0x0152, 0x0153, 0x0201, 0x0202, 0x014A, 0x02BC, 0x8773, 0x83BB, 0x8649, 0x935C,
})  # fmt: skip
"""IFD0 tags that describe how a file stores its pixels (size, bits, compression, strips, tiles,
colour map, extra samples, sample format, sub-IFDs, JPEG thumbnail) or that seesr writes from its own
fields (XMP 0x02BC, ICC 0x8773) or cannot keep true (IPTC, Photoshop resources): a TIFF input's EXIF
is its first IFD, and none of these may pass to another file."""
TEXT_NOT_KEPT = frozenset({"XML:com.adobe.xmp", "Raw profile type exif", "Raw profile type APP1", "icc_profile"})
"""PNG text keys that hold metadata kept by other means (XMP, EXIF) or no longer true."""
RESOLUTION_TAGS = (ExifTags.Base.XResolution, ExifTags.Base.YResolution)
PIXEL_DIMENSION_TAGS = (ExifTags.Base.ExifImageWidth, ExifTags.Base.ExifImageHeight)
XMP_ORIENTATION = re.compile(rb"(tiff:Orientation\s*=\s*[\"']|<tiff:Orientation>)\s*\d+")
XMP_PIXEL_DIMENSIONS = (
    re.compile(rb"(exif:PixelXDimension\s*=\s*[\"']|<exif:PixelXDimension>)\s*\d+"),
    re.compile(rb"(exif:PixelYDimension\s*=\s*[\"']|<exif:PixelYDimension>)\s*\d+"),
)


@dataclass(frozen=True)
class Metadata:
    """An input's metadata, for the upright picture of ``size`` (width, height)."""

    size: tuple[int, int]
    exif: bytes | None = None
    """EXIF as ``Exif\\0\\0`` + TIFF data (Pillow's ``Exif.tobytes``), orientation 1, no thumbnail."""
    xmp: bytes | None = None
    dpi: tuple[float, float] | None = None
    text: tuple[tuple[str, str], ...] = ()
    """PNG text chunks (tEXt, zTXt, iTXt) as (key, text), in the file's order."""

    def __bool__(self) -> bool:
        return bool(self.exif or self.xmp or self.dpi or self.text)

    def for_output(self, size: tuple[int, int]) -> Metadata:
        """This metadata for an output of ``size``: EXIF pixel dimensions and (EXIF and file) DPI
        scaled with the picture, XMP's pixel dimensions too."""
        factors = (size[0] / self.size[0], size[1] / self.size[1])
        dpi = None if self.dpi is None else (self.dpi[0] * factors[0], self.dpi[1] * factors[1])
        exif = None
        if self.exif:
            parsed = Image.Exif()
            parsed.load(self.exif)
            for tag, factor in zip(RESOLUTION_TAGS, factors):
                if tag in parsed:
                    parsed[tag] = _scaled_rational(parsed[tag], factor)
            details = parsed.get_ifd(ExifTags.IFD.Exif)
            if details or ExifTags.IFD.Exif in parsed:
                details.update(zip(PIXEL_DIMENSION_TAGS, size))
            exif = parsed.tobytes()
        xmp = self.xmp
        if xmp:
            for pattern, value in zip(XMP_PIXEL_DIMENSIONS, size):
                xmp = pattern.sub(lambda found, value=value: found.group(1) + str(value).encode(), xmp)
        return replace(self, size=size, exif=exif, xmp=xmp, dpi=dpi)

    def exif_tags(self) -> Image.Exif | None:
        """The EXIF as Pillow's ``Exif`` (for a TIFF's own tags), or None."""
        if not self.exif:
            return None
        parsed = Image.Exif()
        parsed.load(self.exif)
        return parsed


def read_metadata(image: Image.Image, size: tuple[int, int], name: str) -> Metadata:
    """What a decoded (not yet rotated) file carries, as metadata of its upright picture of
    ``size``. Unreadable EXIF is left out with a warning, never an error."""
    try:
        exif = image.getexif()
        orientation = exif.get(ExifTags.Base.Orientation, ORIENTATION_NORMAL)
        clean = _upright_exif(exif, orientation in TRANSPOSING_ORIENTATIONS) if len(exif) else None
    except Exception as error:  # noqa: BLE001 - malformed EXIF must not sink the image
        logger.warning("%s: unreadable EXIF (%s); it is not kept", name, error)
        orientation, clean = ORIENTATION_NORMAL, None
    swapped = orientation in TRANSPOSING_ORIENTATIONS
    dpi = image.info.get("dpi")
    if isinstance(dpi, tuple) and len(dpi) == 2 and all(float(v) > 0 for v in dpi):
        dpi = (float(dpi[1]), float(dpi[0])) if swapped else (float(dpi[0]), float(dpi[1]))
    else:
        dpi = None
    xmp = image.info.get("xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode()
    if isinstance(xmp, bytes) and xmp:
        xmp = XMP_ORIENTATION.sub(lambda found: found.group(1) + b"1", xmp)
    else:
        xmp = None
    text = getattr(image, "text", None) if image.format == "PNG" else None
    kept = tuple(
        (key, value) for key, value in (text or {}).items() if key not in TEXT_NOT_KEPT and isinstance(value, str)
    )
    return Metadata(size=size, exif=clean, xmp=xmp, dpi=dpi, text=kept)


def _upright_exif(exif: Image.Exif, swapped: bool) -> bytes | None:
    """The EXIF of the rotated picture: orientation 1, the resolutions swapped with the axes, no
    layout tags, no thumbnail; None when nothing is left."""
    upright = Image.Exif()
    for tag, value in exif.items():
        if tag not in LAYOUT_TAGS and tag not in SUB_IFDS:
            upright[tag] = value
    for ifd in SUB_IFDS:
        entries = {tag: value for tag, value in exif.get_ifd(ifd).items() if tag != ExifTags.IFD.Interop}
        if entries:
            upright[ifd] = entries
    if not len(upright):
        return None
    if ExifTags.Base.Orientation in upright:
        upright[ExifTags.Base.Orientation] = ORIENTATION_NORMAL
    if swapped and all(tag in upright for tag in RESOLUTION_TAGS):
        x, y = RESOLUTION_TAGS
        upright[x], upright[y] = upright[y], upright[x]
    return upright.tobytes()


def _scaled_rational(value: object, factor: float) -> Fraction:
    return Fraction(float(value) * factor).limit_denominator(10_000)
