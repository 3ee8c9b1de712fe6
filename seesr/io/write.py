"""Writing results: the model's RGB output given back what the input had, then written atomically.

``recombine`` puts the input's alpha, grayness and ICC profile back on the model's RGB output,
``to_high_bit`` rebuilds 16-bit data for a 16-bit source, and ``save_image`` writes PNG / JPEG /
WebP / TIFF atomically, never over an existing file unless asked, with the input's metadata
(:mod:`seesr.io.metadata`) where the format holds it:

============  ====  ====  ===  ===  ========
format        EXIF  XMP   ICC  DPI  PNG text
============  ====  ====  ===  ===  ========
PNG           yes   yes   yes  yes  yes
JPEG          yes   yes*  yes  yes  no
WebP          yes   yes   yes  no   no
TIFF          yes   yes   yes  yes  no
============  ====  ====  ===  ===  ========

(*) up to the 65,502 bytes one JPEG segment holds; a longer XMP packet is left out with a warning.
WebP has no DPI field (its EXIF resolution, scaled as well, stands for it).

- A 16-bit output (PNG or TIFF) is ``257 * output8`` plus the source's sub-8-bit detail
  (bicubic-upscaled), so an unprocessed 16-bit image is written back bit-exactly.
- JPEG cannot store alpha: the image is composited on white (``background``) with a warning.
- TIFF is written by :func:`_encode_tiff` (Pillow writes no 16-bit colour TIFF): deflate with the
  horizontal predictor, alpha as an unassociated extra sample, the tags through Pillow's
  ``ImageFileDirectory_v2``.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from seesr.errors import ConfigError, InputError
from seesr.io.files import write_atomically
from seesr.io.metadata import SUB_IFDS, Metadata
from seesr.io.read import InputImage, icc_colour_space, u16_to_u8

logger = logging.getLogger(__name__)

_OUTPUT_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF", "tif": "TIFF"}
SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
JPEG_XMP_LIMIT = 65502
"""Bytes of XMP one JPEG APP1 segment holds (65,533 less its 29-byte namespace header and length)."""


def recombine(output_rgb: Image.Image, loaded: InputImage) -> Image.Image:
    """Give the model's RGB output back what the input had: gray -> "L", alpha -> "RGBA" / "LA".

    The source alpha is upscaled on its own to the output size (PIL bicubic, which clips to
    0..255). Gray outputs are the ITU-R 601 luma of the model output. The source's ICC profile
    is attached as ``info["icc_profile"]`` so :func:`save_image` writes it.
    """
    out = output_rgb if output_rgb.mode == "RGB" else output_rgb.convert("RGB")
    if loaded.is_gray:
        out = out.convert("L")
    if loaded.alpha is not None:
        alpha = loaded.alpha
        if alpha.size != out.size:
            alpha = alpha.resize(out.size, Image.Resampling.BICUBIC)
        out = out.copy() if out is output_rgb else out
        out.putalpha(alpha)  # L -> LA, RGB -> RGBA
    elif out is output_rgb:
        out = out.copy()
    if loaded.icc_profile is not None:
        out.info["icc_profile"] = loaded.icc_profile
    return out


def to_high_bit(image: Image.Image, loaded: InputImage | None) -> np.ndarray:
    """A recombined 8-bit output ("L", "LA", "RGB", "RGBA") -> uint16 HxW / HxWx2 / HxWx3 / HxWx4.

    ``257 * output`` plus, when ``loaded`` is a 16-bit source, the source's sub-8-bit detail
    ``bicubic(source16 - 257 * round(source16 / 257))`` at the output size: the result never
    moves more than about half an 8-bit step from the model output, restores the source's
    smooth 16-bit gradations, and is the source itself, bit for bit, when the output is the
    unprocessed input. The alpha comes from the 16-bit source alpha, bicubic-upscaled, when
    there is one.
    """
    mode = image.mode
    if mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in mode or "transparency" in image.info else "RGB")
        mode = image.mode
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    n_colour = 1 if mode in ("L", "LA") else 3
    colour8 = array[..., :n_colour]
    size = image.size

    out = colour8.astype(np.uint16) * np.uint16(257)
    source = loaded.high_bit_rgb if loaded is not None and loaded.bit_depth == 16 else None
    if source is not None and (n_colour == 3 or loaded.is_gray):
        source8 = np.asarray(loaded.rgb)
        for c in range(n_colour):
            # the quantisation error the model never saw, in 16-bit units (|e| <= 128)
            error = source[..., c].astype(np.float32) - 257.0 * source8[..., c].astype(np.float32)
            error = _resize_float(error, size)
            out[..., c] = np.clip(np.rint(out[..., c].astype(np.float32) + error), 0, 65535).astype(np.uint16)

    if mode in ("LA", "RGBA"):
        if loaded is not None and loaded.high_bit_alpha is not None:
            alpha = _resize_float(loaded.high_bit_alpha.astype(np.float32), size)
            alpha = np.clip(np.rint(alpha), 0, 65535).astype(np.uint16)
        else:
            alpha = array[..., n_colour].astype(np.uint16) * np.uint16(257)
        out = np.concatenate([out, alpha[..., None]], axis=2)
    return out[..., 0] if out.shape[2] == 1 else out


def _resize_float(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (array.shape[1], array.shape[0]) == tuple(size):
        return array
    resized = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), "F").resize(size, Image.Resampling.BICUBIC)
    return np.asarray(resized)


def save_image(
    image: Image.Image | np.ndarray,
    path: str | os.PathLike,
    *,
    format: str | None = None,  # noqa: A002 - mirrors PIL's Image.save
    quality: int = 95,
    sixteen_bit: bool = False,
    high_bit_source: InputImage | None = None,
    overwrite: bool = False,
    background: tuple[int, int, int] = (255, 255, 255),
    icc_profile: bytes | None = None,
    metadata: Metadata | None = None,
    strip_metadata: bool = False,
) -> Path:
    """Write ``image`` to ``path`` atomically (temp file in the same folder, then rename).

    Format: ``format`` ("png", "jpg"/"jpeg", "webp", "tiff"/"tif") or the path's suffix; anything
    else is a :class:`ConfigError`. ``quality`` (1-100) is used by JPEG (4:4:4 chroma at >= 90) and WebP.
    JPEG has no alpha: "RGBA" / "LA" images are composited on ``background`` (white) and a
    warning is logged. ``sixteen_bit=True`` writes a 16-bit PNG or TIFF (a ConfigError for
    JPEG/WebP): from ``high_bit_source`` via :func:`to_high_bit` when given, else ``257 * value``; a
    uint16 numpy array (HxW, HxWx3 RGB, HxWx4 RGBA) is written as is. 16-bit gray + alpha is
    written as 16-bit RGBA in PNG (OpenCV cannot write gray + alpha). The ICC profile
    (``icc_profile``, else ``image.info``, else the source's) is written when it matches the
    output's colour space; ``metadata`` (the input's) is written for this output's size where
    the format holds it (the table above). ``strip_metadata`` writes neither.
    With ``overwrite=False`` an existing file is never replaced (:class:`InputError`), even if
    it appears while we write. Returns the path written.
    """
    path = Path(path)
    fmt = _output_format(path, format)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ConfigError(f"quality must be an integer in 1..100, got {quality!r}")
    if sixteen_bit and fmt not in SIXTEEN_BIT_FORMATS:
        raise ConfigError(f"16-bit output needs PNG or TIFF; {fmt} stores 8 bits per channel: use a .png or .tiff path")
    if isinstance(image, np.ndarray) and not (sixteen_bit or image.dtype == np.uint8):
        raise ConfigError(f"a {image.dtype} array is written as 16-bit PNG: pass sixteen_bit=True")
    if path.is_dir():
        raise InputError(f"{path} is a directory; give an output file name")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; pass overwrite=True (--overwrite) to replace it, or choose another name")
    if not path.parent.is_dir():
        raise InputError(f"the output folder {path.parent} does not exist; create it first")

    if strip_metadata:
        icc_profile, metadata = None, None
    if icc_profile is None and isinstance(image, Image.Image) and not strip_metadata:
        icc_profile = image.info.get("icc_profile")
    if icc_profile is None and high_bit_source is not None and not strip_metadata:
        icc_profile = high_bit_source.icc_profile
    size = image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])
    kept = metadata.for_output(size) if metadata else None

    if sixteen_bit:
        array = _high_bit_array(image, high_bit_source)
        data = _encode_tiff(array, icc_profile, kept) if fmt == "TIFF" else _encode_png16(array, icc_profile, kept)
    else:
        if isinstance(image, np.ndarray):
            image = _array_to_pil(image)
        data = _encode_8bit(image, fmt, quality, background, icc_profile, path, kept)
    write_atomically(path, data, overwrite=overwrite)
    return path


def _output_format(path: Path, format: str | None) -> str:  # noqa: A002
    key = (format or path.suffix.lstrip(".")).lower().lstrip(".")
    if key not in _OUTPUT_FORMATS:
        given = f"format {format!r}" if format else f"suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise ConfigError(f"cannot write {path}: {given} is not an output format; use png, jpg, webp or tiff")
    return _OUTPUT_FORMATS[key]


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    modes = {2: "L", 3: {3: "RGB", 4: "RGBA", 2: "LA"}}
    mode = modes[2] if array.ndim == 2 else modes[3].get(array.shape[2]) if array.ndim == 3 else None
    if mode is None:
        raise ConfigError(f"cannot write an array of shape {array.shape} as an image")
    return Image.fromarray(np.ascontiguousarray(array), mode)


def _icc_matches(profile: bytes | None, mode: str) -> bytes | None:
    if profile is None:
        return None
    space = icc_colour_space(profile)
    wanted = "GRAY" if mode in ("L", "LA", "I;16") else "RGB "
    return profile if space == wanted else None


def _encode_8bit(
    image: Image.Image, fmt: str, quality: int, background: tuple[int, int, int], icc: bytes | None, path: Path,
    kept: Metadata | None,
) -> bytes:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        image = Image.fromarray(u16_to_u8(np.clip(np.asarray(image), 0, 65535).astype(np.uint16)), "L")
    elif image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA" if image.mode in ("PA", "RGBa", "La") or "transparency" in image.info else "RGB")
    options: dict = {}
    if fmt == "TIFF":
        return _encode_tiff(np.asarray(image), icc, kept)
    if fmt == "JPEG":
        if image.mode in ("LA", "RGBA"):
            logger.warning(
                "%s: JPEG has no alpha channel; compositing on %s (save as .png or .webp to keep it)",
                path,
                background,
            )
            image = _composite(image, background)
        options = {"quality": quality, "subsampling": 0 if quality >= 90 else 2}
    elif fmt == "WEBP":
        if image.mode in ("L", "LA"):
            image = image.convert("RGBA" if image.mode == "LA" else "RGB")
        options = {"quality": quality}
    options.update(_metadata_options(fmt, kept, _icc_matches(icc, image.mode), path))
    buffer = BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _composite(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    if image.mode == "LA":
        gray = round(0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2])
        base = Image.new("L", image.size, gray)
        base.paste(image.getchannel("L"), mask=image.getchannel("A"))
        return base
    base = Image.new("RGB", image.size, tuple(background))
    base.paste(image.convert("RGB"), mask=image.getchannel("A"))
    return base


def _high_bit_array(image: Image.Image | np.ndarray, source: InputImage | None) -> np.ndarray:
    """The uint16 data of a 16-bit output: HxW, or HxWx2 / 3 / 4 (gray + alpha, RGB, RGBA)."""
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype == np.uint8:
            array = array.astype(np.uint16) * np.uint16(257)
        elif array.dtype != np.uint16:
            raise ConfigError(f"a 16-bit image is written from uint8 or uint16 data, got {array.dtype}")
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (2, 3, 4))):
            raise ConfigError(f"cannot write an array of shape {array.shape} as an image")
        return array
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
    return to_high_bit(image, source)


def _metadata_options(fmt: str, kept: Metadata | None, icc: bytes | None, path: Path) -> dict:
    """Pillow's save options for the metadata ``fmt`` holds (the module's table); the ICC profile is
    always named (None: none, not the one Pillow would take from the image's ``info``)."""
    options: dict = {"icc_profile": icc}
    if kept is None:
        return options
    if kept.exif:
        options["exif"] = kept.exif
    if kept.dpi and fmt in ("PNG", "JPEG"):
        options["dpi"] = kept.dpi
    xmp = kept.xmp
    if xmp and fmt == "JPEG" and len(xmp) > JPEG_XMP_LIMIT:
        logger.warning("%s: the XMP packet (%d bytes) is longer than one JPEG segment holds; it is left out "
                       "(write PNG, WebP or TIFF to keep it)", path, len(xmp))  # fmt: skip
        xmp = None
    if xmp and fmt in ("JPEG", "WEBP"):
        options["xmp"] = xmp
    if fmt == "PNG" and (xmp or kept.text):
        from PIL.PngImagePlugin import PngInfo

        chunks = PngInfo()
        for key, value in kept.text:
            chunks.add_itxt(key, value) if not value.isascii() else chunks.add_text(key, value)
        if xmp:
            chunks.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
        options["pnginfo"] = chunks
    return options


def _encode_png16(array: np.ndarray, icc: bytes | None, kept: Metadata | None) -> bytes:
    import cv2

    gray = array.ndim == 2 or array.shape[2] == 2
    if array.ndim == 3 and array.shape[2] == 2:  # gray + alpha: OpenCV writes 1, 3 or 4 channels
        array = array[..., [0, 0, 0, 1]]
    if array.ndim == 3:
        array = array[..., [2, 1, 0, 3]] if array.shape[2] == 4 else array[..., ::-1]
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise InputError("OpenCV could not encode the 16-bit PNG")
    icc = _icc_matches(icc, "L" if array.ndim == 2 else "RGB")
    if gray and array.ndim == 3:
        icc = None
    return _png_with_chunks(encoded.tobytes(), _png_metadata_chunks(icc, kept, "L" if array.ndim == 2 else "RGB"))


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, whole chunk) of each chunk of a PNG file, in order."""
    chunks, position = [], 8
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        end = position + 12 + length
        chunks.append((png[position + 4 : position + 8], png[position:end]))
        position = end
    return chunks


def _png_metadata_chunks(icc: bytes | None, kept: Metadata | None, mode: str) -> bytes:
    """The metadata chunks Pillow writes for ``icc`` and ``kept``, the same for an 8- and a 16-bit PNG:
    taken from a 1x1 PNG that Pillow writes with them."""
    options = _metadata_options("PNG", kept, icc, Path("16-bit PNG"))
    if not any(options.values()):
        return b""
    buffer = BytesIO()
    Image.new(mode, (1, 1)).save(buffer, format="PNG", **options)
    return b"".join(chunk for kind, chunk in _png_chunks(buffer.getvalue()) if kind not in (b"IHDR", b"IDAT", b"IEND"))


def _png_with_chunks(png: bytes, chunks: bytes) -> bytes:
    """Insert ancillary chunks right after IHDR (before any IDAT, as iCCP and pHYs must be)."""
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    return png[:ihdr_end] + chunks + png[ihdr_end:]


TIFF_STRIP_BYTES = 1 << 18
"""Uncompressed bytes per TIFF strip (readers decode a strip at a time)."""
# TIFF 6.0 values: compression, predictor, photometric interpretation, sample format, extra sample,
# resolution unit, field type
TIFF_ADOBE_DEFLATE, TIFF_HORIZONTAL_PREDICTOR, TIFF_RGB, TIFF_BLACK_IS_ZERO = 8, 2, 2, 1
TIFF_UNSIGNED, TIFF_UNASSOCIATED_ALPHA, TIFF_INCH, TIFF_LONG = 1, 2, 2, 4


def _encode_tiff(array: np.ndarray, icc: bytes | None, kept: Metadata | None) -> bytes:
    """A TIFF of uint8 or uint16 data (HxW, HxWx2 gray + alpha, HxWx3 RGB, HxWx4 RGBA): deflate
    with the horizontal predictor, in strips, with the ICC profile, EXIF (its sub-IFDs nested),
    XMP and DPI as tags."""
    from PIL import TiffImagePlugin as tiff

    if array.ndim == 2:
        array = array[..., None]
    height, width, channels = array.shape
    data = np.ascontiguousarray(array, dtype="<u2" if array.dtype == np.uint16 else np.uint8)
    differences = data.copy()
    differences[:, 1:] -= data[:, :-1]  # the horizontal predictor, modulo 2**bits
    rows = max(1, TIFF_STRIP_BYTES // (width * channels * data.itemsize))
    strips = [zlib.compress(differences[top : top + rows].tobytes()) for top in range(0, height, rows)]
    colour = channels >= 3
    tags = tiff.ImageFileDirectory_v2(prefix=b"II")
    exif = kept.exif_tags() if kept is not None else None
    for tag in exif or ():
        tags[tag] = exif.get_ifd(tag) if tag in SUB_IFDS else exif[tag]
    if kept is not None and kept.xmp:
        tags[tiff.XMP] = kept.xmp
    if kept is not None and kept.dpi:
        tags[tiff.X_RESOLUTION], tags[tiff.Y_RESOLUTION] = kept.dpi
        tags[tiff.RESOLUTION_UNIT] = TIFF_INCH
    icc = _icc_matches(icc, "RGB" if colour else "L")
    if icc is not None:
        tags[tiff.ICCPROFILE] = icc
    tags[tiff.IMAGEWIDTH], tags[tiff.IMAGELENGTH] = width, height
    tags[tiff.BITSPERSAMPLE] = (data.itemsize * 8,) * channels
    tags[tiff.COMPRESSION], tags[tiff.PREDICTOR] = TIFF_ADOBE_DEFLATE, TIFF_HORIZONTAL_PREDICTOR
    tags[tiff.PHOTOMETRIC_INTERPRETATION] = TIFF_RGB if colour else TIFF_BLACK_IS_ZERO
    tags[tiff.SAMPLESPERPIXEL], tags[tiff.ROWSPERSTRIP], tags[tiff.PLANAR_CONFIGURATION] = channels, rows, 1
    tags[tiff.SAMPLEFORMAT] = (TIFF_UNSIGNED,) * channels
    if channels in (2, 4):
        tags[tiff.EXTRASAMPLES] = (TIFF_UNASSOCIATED_ALPHA,)
    tags[tiff.STRIPOFFSETS] = tuple(sum(len(strip) for strip in strips[:index]) for index in range(len(strips)))
    tags[tiff.STRIPBYTECOUNTS] = tuple(len(strip) for strip in strips)
    tags.tagtype[tiff.STRIPOFFSETS] = tags.tagtype[tiff.STRIPBYTECOUNTS] = TIFF_LONG  # offsets past 64 KiB
    header = b"II*\x00" + struct.pack("<I", 8)
    return header + tags.tobytes(8) + b"".join(strips)  # Pillow moves the strip offsets past the tags
