"""Reading input images: every real-world file goes through here on its way in.

``read_image`` turns whatever the user has (a path, bytes, a PIL image, a numpy array) into
an :class:`InputImage`: the 8-bit RGB picture the model sees, plus what the model does not see
but the output should keep (alpha, "this was grayscale", 16-bit precision, the ICC profile);
:mod:`seesr.io.write` puts those back on the output and writes it.

Decisions (see the docstrings for details):

- Limits: ``max_pixels`` (default 4096 x 4096 = 16.8 MP of *input*) and ``min_side`` (default
  4 px) are checked from the file header, before any pixel is decoded. Pillow's own
  decompression-bomb error is reported as the same :class:`~seesr.errors.InputError`; its
  warning is silenced because ``max_pixels`` is the limit that counts.
- Alpha is always an 8-bit ``"L"`` image in :attr:`InputImage.alpha`; a 16-bit source alpha is
  kept, exactly, in :attr:`InputImage.high_bit_alpha` (uint16 HxW) for 16-bit PNG output.
- 16-bit sources (PNG / TIFF, read with OpenCV because Pillow reduces 16-bit RGB(A) to 8 bits)
  and float sources keep their data as uint16 in :attr:`InputImage.high_bit_rgb`; the model
  sees it rounded to 8 bits.
- ``is_gray``: the source has one colour channel (L, LA, I;16, 1, HxW arrays) *or* all three
  colour channels are exactly equal (gray palettes, gray stored as RGB). Gray in -> "L" out.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Union

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from seesr.errors import ConfigError, InputError
from seesr.io.files import read_bytes
from seesr.io.metadata import Metadata, read_metadata

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 4096 * 4096
"""Largest input accepted by default (16.8 MP). At x4 that is already a 268 MP output."""

DEFAULT_MIN_SIDE = 4
"""Smallest input side accepted by default. The pipeline itself needs >= 8 px after scaling and
enlarges tiny inputs (``process_size`` rule); below 4 px there is no picture to restore."""

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

_HIGH_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


@dataclass(frozen=True)
class InputImage:
    """An input image, normalised.

    ``rgb``: mode "RGB", 8 bits, EXIF orientation applied: what the model sees (for transparent
    pixels, the stored colour, not composited). ``alpha``: mode "L" (8 bits) or None.
    ``is_gray``: the picture has no colour (see module docstring). ``bit_depth``: 8, or 16 when
    the source had more than 8 bits per channel (16-bit PNG/TIFF, float data).
    ``high_bit_rgb``: uint16 HxWx3 (RGB order, gray replicated) when ``bit_depth == 16``.
    ``high_bit_alpha``: uint16 HxW when the source alpha had more than 8 bits.
    ``source_format``: Pillow's format name ("PNG", "JPEG", ...), "ndarray" for arrays, or None
    for an in-memory PIL image without one. ``source_mode``: the source's mode / dtype, for logs.
    ``icc_profile``: the source's ICC profile bytes when it describes the RGB / gray data we keep
    (CMYK profiles are dropped with the CMYK data). ``metadata``: the file's EXIF, XMP, DPI and PNG
    text, for the upright picture (:mod:`seesr.io.metadata`); None for arrays.
    """

    rgb: Image.Image
    alpha: Image.Image | None
    is_gray: bool
    bit_depth: int
    high_bit_rgb: np.ndarray | None = None
    high_bit_alpha: np.ndarray | None = None
    source_format: str | None = None
    source_mode: str | None = None
    icc_profile: bytes | None = None
    metadata: Metadata | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after EXIF orientation."""
        return self.rgb.size

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None



def read_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
) -> InputImage:
    """Read and normalise an input image; raise :class:`InputError` for anything unusable.

    ``source``: a path (str / PathLike), the encoded file as bytes, a PIL image, or a numpy array
    (HxW, HxWx1, HxWx3 RGB, HxWx4 RGBA; uint8, uint16, or float in [0, 1]).
    Files: anything Pillow decodes (PNG, JPEG, WebP, TIFF, BMP, GIF, ...); the first frame of
    animations and multi-page files; EXIF orientation applied; CMYK, palette, LA/PA/RGBA,
    16-bit and float data converted. A PIL image passed in is taken at its own precision (its
    16-bit RGB data, if any, is already lost: pass the path to keep it).
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ConfigError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    if isinstance(min_side, bool) or not isinstance(min_side, int) or min_side < 1:
        raise ConfigError(f"min_side must be a positive integer, got {min_side!r}")

    if isinstance(source, np.ndarray):
        return _load_array(source, max_pixels=max_pixels, min_side=min_side)
    if isinstance(source, Image.Image):
        _check_limits(source.size, max_pixels, min_side, "image")
        try:
            source.load()
        except Exception as err:  # noqa: BLE001 - Pillow raises many types for broken data
            raise InputError(f"cannot decode the image: {err}") from err
        return _from_pil(source, name="image", data=None, source_format=source.format)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise InputError("the image data is empty (0 bytes)")
        return _load_encoded(data, "image data", max_pixels, min_side)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return _load_encoded(_read_file(path, max_pixels), str(path), max_pixels, min_side)
    raise InputError(
        f"cannot read an image from a {type(source).__name__}; "
        "pass a path, bytes, a PIL image or a numpy array"
    )


def input_file_limit(max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Largest image file read for an input of at most ``max_pixels``: uncompressed 32-bit float
    RGBA (16 bytes a pixel, the largest layout Pillow reads) plus room for metadata."""
    return max_pixels * 16 + METADATA_ALLOWANCE


METADATA_ALLOWANCE = 16 * 2**20
"""Bytes an image file may hold beyond its pixels (EXIF, ICC profile, thumbnails, XMP)."""


def read_sent_image(path: str | os.PathLike[str]) -> bytes:
    """The bytes of an image a request sent, which a server (Cog, the web page) keeps in a temporary
    file: checked and bounded as every input file (:func:`input_file_limit`), and named in no
    message, since the path is the server's and not the sender's."""
    data = read_bytes(path, "the image file", input_file_limit(), InputError, shown="")
    if not data:
        raise InputError("the image data is empty (0 bytes)")
    return data


def _read_file(path: Path, max_pixels: int) -> bytes:
    """The bytes of an input file, checked first (a regular file of bounded size: a FIFO, a device
    or a symlink loop is one line, never a hang)."""
    data = read_bytes(path, "input", input_file_limit(max_pixels), InputError)
    if not data:
        raise InputError(f"input {path} is empty (0 bytes); it is not an image")
    return data


def _load_encoded(data: bytes, name: str, max_pixels: int, min_side: int) -> InputImage:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        logger.warning(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: a truncated %s would be padded with gray, "
            "not rejected; unset it to get an InputError for broken files",
            name,
        )
    try:
        with warnings.catch_warnings():
            # max_pixels is the limit that counts; Pillow's hard limit (2x MAX_IMAGE_PIXELS) still
            # raises DecompressionBombError, reported below with the same message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(BytesIO(data))
    except Image.DecompressionBombError as err:
        hard_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(found.group(1)) / 1e6:.1f} MP" if found else f"over {hard_limit / 1e6:.1f} MP"
        if max_pixels <= hard_limit:
            raise InputError(
                f"{name} is {size}, above the {max_pixels / 1e6:.1f} MP input limit "
                "(not decoded: Pillow flags it as a decompression bomb); downscale it or raise max_pixels"
            ) from err
        raise InputError(
            f"{name} is {size}, above Pillow's decompression-bomb limit of {hard_limit / 1e6:.1f} MP "
            "(2 x PIL.Image.MAX_IMAGE_PIXELS), and was not decoded; downscale it, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS too if the file is trusted"
        ) from err
    except UnidentifiedImageError as err:
        raise InputError(f"{name} is not an image file Pillow can read (unknown or corrupt format)") from err
    except Exception as err:  # noqa: BLE001 - broken headers raise SyntaxError, struct.error, ...
        raise InputError(f"cannot read {name} as an image: {err}") from err

    with image:
        # Header only so far: nothing has been decoded.
        _check_limits(image.size, max_pixels, min_side, name)
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            logger.info("%s has %d frames; using the first", name, frames)
        high = _sixteen_bit_colour(image)
        try:
            image.load()
        except Exception as err:  # noqa: BLE001
            raise InputError(f"cannot decode {name}: {err} (the file is truncated or corrupt)") from err
        if high:
            return _load_high_bit_with_cv2(image, data, name)
        return _from_pil(image, name=name, data=data, source_format=image.format)


def _check_limits(size: tuple[int, int], max_pixels: int, min_side: int, name: str) -> None:
    width, height = size
    pixels = width * height
    if pixels > max_pixels:
        raise InputError(
            f"{name} is {width}x{height} = {pixels / 1e6:.1f} MP, above the {max_pixels / 1e6:.1f} MP "
            "input limit; downscale it or raise max_pixels"
        )
    if min(width, height) < min_side:
        raise InputError(
            f"{name} is {width}x{height}, smaller than the {min_side} px minimum side; "
            "use a larger image or lower min_side"
        )


def _sixteen_bit_colour(image: Image.Image) -> bool:
    """True for files whose RGB / RGBA / LA data Pillow would reduce to 8 bits (16-bit PNG, TIFF)."""
    if image.format not in ("PNG", "TIFF") or image.mode not in ("RGB", "RGBA", "LA"):
        return False
    for tile in getattr(image, "tile", None) or []:
        args = tile.args if hasattr(tile, "args") else tile[3]
        rawmode = args[0] if isinstance(args, tuple) else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def _load_high_bit_with_cv2(image: Image.Image, data: bytes, name: str) -> InputImage:
    """16-bit colour files: OpenCV keeps the precision (BGR(A) order, no EXIF rotation applied)."""
    import cv2

    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.shape[:2] != (image.height, image.width):
        logger.warning("%s: OpenCV could not decode the 16-bit data; falling back to 8 bits", name)
        return _from_pil(image, name=name, data=data, source_format=image.format)
    if decoded.ndim == 2:
        colour, alpha = decoded, None
    elif decoded.shape[2] == 3:
        colour, alpha = decoded[..., ::-1], None
    elif decoded.shape[2] == 4:
        colour, alpha = decoded[..., 2::-1], decoded[..., 3]
    else:
        raise InputError(f"{name} has {decoded.shape[2]} channels; expected gray, RGB or RGBA")
    orientation = _orientation(image, name)
    colour = _orient_array(colour, orientation)
    alpha = None if alpha is None else _orient_array(alpha, orientation)
    rawmode_gray = any(
        isinstance(getattr(t, "args", None), str) and t.args.startswith("LA") for t in image.tile or []
    )
    return _from_arrays(
        np.ascontiguousarray(colour),
        None if alpha is None else np.ascontiguousarray(alpha),
        gray_source=rawmode_gray or colour.ndim == 2,
        source_format=image.format,
        source_mode=f"{image.mode};16",
        icc_profile=image.info.get("icc_profile"),
        metadata=read_metadata(image, (colour.shape[1], colour.shape[0]), name),
    )


def _orientation(image: Image.Image, name: str) -> int:
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as err:  # noqa: BLE001 - malformed EXIF must not sink the image
        logger.warning("%s: unreadable EXIF (%s); orientation ignored", name, err)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _orient_array(array: np.ndarray, orientation: int) -> np.ndarray:
    """numpy equivalent of ``ImageOps.exif_transpose`` for an EXIF orientation value."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return np.swapaxes(array, 0, 1)
    if orientation == 6:
        return np.rot90(array, -1)
    if orientation == 7:
        return np.swapaxes(array, 0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(array, 1)
    return array


def _from_pil(image: Image.Image, *, name: str, data: bytes | None, source_format: str | None) -> InputImage:
    source_mode = image.mode
    info = dict(image.info)
    try:
        oriented = ImageOps.exif_transpose(image)
    except Exception as err:  # noqa: BLE001
        logger.warning("%s: unreadable EXIF (%s); orientation ignored", name, err)
        oriented = image
    mode = oriented.mode
    has_transparency = "transparency" in info or "transparency" in oriented.info
    try:
        if mode in ("1", "L"):
            if has_transparency:
                la = np.asarray(oriented.convert("LA"))
                colour, alpha = la[..., 0], la[..., 1]
            else:
                colour, alpha = np.asarray(oriented.convert("L")), None
            gray = True
        elif mode in ("LA", "La"):
            la = np.asarray(oriented.convert("LA"))
            colour, alpha, gray = la[..., 0], la[..., 1], True
        elif mode in _HIGH_BIT_MODES:
            colour, alpha, gray = _high_bit_gray(oriented, name), None, True
            if has_transparency:
                value = info.get("transparency", oriented.info.get("transparency"))
                if isinstance(value, int):
                    alpha = np.where(np.asarray(oriented) == value, 0, 65535).astype(np.uint16)
        elif mode in ("RGBA", "RGBa", "PA") or (mode in ("P", "RGB") and has_transparency):
            rgba = np.asarray(oriented.convert("RGBA"))
            colour, alpha, gray = rgba[..., :3], rgba[..., 3], False
        else:  # RGB, P, CMYK (Pillow undoes Adobe inversion), YCbCr, LAB, HSV, RGBX, ...
            colour, alpha, gray = np.asarray(oriented.convert("RGB")), None, False
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - e.g. a mode Pillow cannot convert
        raise InputError(f"cannot convert {name} (mode {mode}) to RGB: {err}") from err
    icc = info.get("icc_profile")
    return _from_arrays(
        colour, alpha, gray_source=gray, source_format=source_format, source_mode=source_mode, icc_profile=icc,
        metadata=read_metadata(image, oriented.size, name),
    )  # fmt: skip


def _high_bit_gray(image: Image.Image, name: str) -> np.ndarray:
    """I;16 / I / F Pillow images -> uint16 or float array."""
    array = np.asarray(image)
    if image.mode == "F":
        return array.astype(np.float32)
    if array.dtype.kind in "iu" and array.dtype.itemsize > 2:
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise InputError(
                f"{name} is a 32-bit integer image with values in [{array.min()}, {array.max()}]; "
                "only 0..65535 (16-bit) is supported: convert it to 16 bits first"
            )
    return array.astype(np.uint16)


def _load_array(array: np.ndarray, *, max_pixels: int, min_side: int) -> InputImage:
    shape = array.shape
    if array.ndim == 3 and shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise InputError(
            f"an image array must be HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA); got shape {shape}"
        )
    if array.dtype not in (np.uint8, np.uint16) and array.dtype.kind != "f":
        raise InputError(
            f"an image array must be uint8, uint16 or float in [0, 1]; got dtype {array.dtype}"
        )
    _check_limits((array.shape[1], array.shape[0]), max_pixels, min_side, "image array")
    if array.ndim == 2:
        colour, alpha = array, None
    elif array.shape[2] == 3:
        colour, alpha = array, None
    else:
        colour, alpha = array[..., :3], array[..., 3]
    return _from_arrays(
        np.ascontiguousarray(colour),
        None if alpha is None else np.ascontiguousarray(alpha),
        gray_source=array.ndim == 2,
        source_format="ndarray",
        source_mode=f"{array.dtype}{'x'.join(map(str, shape))}",
        icc_profile=None,
    )


def _float_to_u16(array: np.ndarray, what: str) -> np.ndarray:
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise InputError(f"the {what} has NaN or infinite values")
    if array.size:
        low, high = float(array.min()), float(array.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise InputError(
                f"float {what} values span [{low:.4g}, {high:.4g}]; expected [0, 1] "
                "(divide 8-bit data by 255, tone-map HDR data first)"
            )
    return np.rint(np.clip(array, 0.0, 1.0) * 65535.0).astype(np.uint16)


def u16_to_u8(array: np.ndarray) -> np.ndarray:
    """round(x / 257), exactly, in integers."""
    return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _from_arrays(
    colour: np.ndarray,
    alpha: np.ndarray | None,
    *,
    gray_source: bool,
    source_format: str | None,
    source_mode: str | None,
    icc_profile: bytes | None,
    metadata: Metadata | None = None,
) -> InputImage:
    """colour: HxW or HxWx3 (uint8 / uint16 / float in [0, 1]); alpha: HxW or None."""
    if colour.dtype.kind == "f":
        colour = _float_to_u16(colour, "image")
    if alpha is not None and alpha.dtype.kind == "f":
        alpha = _float_to_u16(alpha, "alpha channel")
    high_bit = colour.dtype == np.uint16

    is_gray = gray_source or colour.ndim == 2
    if colour.ndim == 3 and not is_gray:
        red, green, blue = colour[..., 0], colour[..., 1], colour[..., 2]
        is_gray = bool(np.array_equal(red, green) and np.array_equal(green, blue))
    if colour.ndim == 2:
        colour = np.repeat(colour[..., None], 3, axis=2)

    colour8 = u16_to_u8(colour) if high_bit else colour.astype(np.uint8, copy=False)
    high_bit_alpha = None
    if alpha is not None:
        if alpha.dtype == np.uint16:
            high_bit_alpha = alpha
            alpha8 = u16_to_u8(alpha)
        else:
            alpha8 = alpha.astype(np.uint8, copy=False)
        alpha_image = Image.fromarray(np.ascontiguousarray(alpha8), "L")
    else:
        alpha_image = None

    if icc_profile is not None and icc_colour_space(icc_profile) not in ("RGB ", "GRAY"):
        icc_profile = None  # e.g. a CMYK profile: it no longer describes our RGB data
    return InputImage(
        rgb=Image.fromarray(np.ascontiguousarray(colour8), "RGB"),
        alpha=alpha_image,
        is_gray=is_gray,
        bit_depth=16 if high_bit else 8,
        high_bit_rgb=np.ascontiguousarray(colour) if high_bit else None,
        high_bit_alpha=None if high_bit_alpha is None else np.ascontiguousarray(high_bit_alpha),
        source_format=source_format,
        source_mode=source_mode,
        icc_profile=icc_profile,
        metadata=metadata,
    )


def icc_colour_space(profile: bytes) -> str | None:
    """The data colour space in an ICC header ("RGB ", "GRAY", "CMYK", ...)."""
    if not isinstance(profile, (bytes, bytearray)) or len(profile) < 20:
        return None
    return bytes(profile[16:20]).decode("latin-1")
