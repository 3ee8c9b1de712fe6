"""Reading input images and writing results: every real-world file goes through here.

``load_image`` turns whatever the user has (a path, bytes, a PIL image, a numpy array) into a
:class:`LoadedImage`: the 8-bit RGB picture the model sees, plus what the model does not see
but the output should keep (alpha, "this was grayscale", 16-bit precision, the ICC profile).
``recombine`` puts those back on the model's RGB output, ``save_image`` writes PNG / JPEG / WebP
atomically, and ``denoise`` is the optional OpenCV pre-stage for very noisy inputs.

Decisions (see the docstrings for details):

- Limits: ``max_pixels`` (default 4096 x 4096 = 16.8 MP of *input*) and ``min_side`` (default
  4 px) are checked from the file header, before any pixel is decoded. Pillow's own
  decompression-bomb error is reported as the same :class:`~seesr.errors.InputError`; its
  warning is silenced because ``max_pixels`` is the limit that counts.
- Alpha is always an 8-bit ``"L"`` image in :attr:`LoadedImage.alpha`; a 16-bit source alpha is
  kept, exactly, in :attr:`LoadedImage.high_bit_alpha` (uint16 HxW) for 16-bit PNG output.
- 16-bit sources (PNG / TIFF, read with OpenCV because Pillow reduces 16-bit RGB(A) to 8 bits)
  and float sources keep their data as uint16 in :attr:`LoadedImage.high_bit_rgb`; the model
  sees it rounded to 8 bits. A 16-bit output is ``257 * output8`` plus the source's sub-8-bit
  detail (bicubic-upscaled), so an unprocessed 16-bit image is written back bit-exactly.
- ``is_gray``: the source has one colour channel (L, LA, I;16, 1, HxW arrays) *or* all three
  colour channels are exactly equal (gray palettes, gray stored as RGB). Gray in -> "L" out.
- JPEG cannot store alpha: the image is composited on white (``background``) with a warning.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import struct
import warnings
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Union

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from seesr.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 4096 * 4096
"""Largest input accepted by default (16.8 MP). At x4 that is already a 268 MP output."""

DEFAULT_MIN_SIDE = 4
"""Smallest input side accepted by default. The pipeline itself needs >= 8 px after scaling and
enlarges tiny inputs (``process_size`` rule); below 4 px there is no picture to restore."""

MAX_DENOISE_STRENGTH = 30.0

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

_OUTPUT_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_HIGH_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


@dataclass(frozen=True)
class LoadedImage:
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
    (CMYK profiles are dropped with the CMYK data).
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

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after EXIF orientation."""
        return self.rgb.size

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None


# --------------------------------------------------------------------------------------------
# loading


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
) -> LoadedImage:
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
        return _load_encoded(_read_file(path), str(path), max_pixels, min_side)
    raise InputError(
        f"cannot read an image from a {type(source).__name__}; "
        "pass a path, bytes, a PIL image or a numpy array"
    )


def _read_file(path: Path) -> bytes:
    if not path.exists():
        raise InputError(f"{path} does not exist; check the input path")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not an image file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from err
    if not data:
        raise InputError(f"{path} is empty (0 bytes); it is not an image")
    return data


def _load_encoded(data: bytes, name: str, max_pixels: int, min_side: int) -> LoadedImage:
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


def _load_high_bit_with_cv2(image: Image.Image, data: bytes, name: str) -> LoadedImage:
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


def _from_pil(image: Image.Image, *, name: str, data: bytes | None, source_format: str | None) -> LoadedImage:
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
        colour, alpha, gray_source=gray, source_format=source_format, source_mode=source_mode, icc_profile=icc
    )


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


def _load_array(array: np.ndarray, *, max_pixels: int, min_side: int) -> LoadedImage:
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


def _u16_to_u8(array: np.ndarray) -> np.ndarray:
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
) -> LoadedImage:
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

    colour8 = _u16_to_u8(colour) if high_bit else colour.astype(np.uint8, copy=False)
    high_bit_alpha = None
    if alpha is not None:
        if alpha.dtype == np.uint16:
            high_bit_alpha = alpha
            alpha8 = _u16_to_u8(alpha)
        else:
            alpha8 = alpha.astype(np.uint8, copy=False)
        alpha_image = Image.fromarray(np.ascontiguousarray(alpha8), "L")
    else:
        alpha_image = None

    if icc_profile is not None and _icc_colour_space(icc_profile) not in ("RGB ", "GRAY"):
        icc_profile = None  # e.g. a CMYK profile: it no longer describes our RGB data
    return LoadedImage(
        rgb=Image.fromarray(np.ascontiguousarray(colour8), "RGB"),
        alpha=alpha_image,
        is_gray=is_gray,
        bit_depth=16 if high_bit else 8,
        high_bit_rgb=np.ascontiguousarray(colour) if high_bit else None,
        high_bit_alpha=None if high_bit_alpha is None else np.ascontiguousarray(high_bit_alpha),
        source_format=source_format,
        source_mode=source_mode,
        icc_profile=icc_profile,
    )


def _icc_colour_space(profile: bytes) -> str | None:
    """The data colour space in an ICC header ("RGB ", "GRAY", "CMYK", ...)."""
    if not isinstance(profile, (bytes, bytearray)) or len(profile) < 20:
        return None
    return bytes(profile[16:20]).decode("latin-1")


# --------------------------------------------------------------------------------------------
# recombination


def recombine(output_rgb: Image.Image, loaded: LoadedImage) -> Image.Image:
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


def to_high_bit(image: Image.Image, loaded: LoadedImage | None) -> np.ndarray:
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


# --------------------------------------------------------------------------------------------
# saving


def save_image(
    image: Image.Image | np.ndarray,
    path: str | os.PathLike,
    *,
    format: str | None = None,  # noqa: A002 - mirrors PIL's Image.save
    quality: int = 95,
    sixteen_bit: bool = False,
    high_bit_source: LoadedImage | None = None,
    overwrite: bool = False,
    background: tuple[int, int, int] = (255, 255, 255),
    icc_profile: bytes | None = None,
) -> Path:
    """Write ``image`` to ``path`` atomically (temp file in the same folder, then rename).

    Format: ``format`` ("png", "jpg"/"jpeg", "webp") or the path's suffix; anything else is a
    :class:`ConfigError`. ``quality`` (1-100) is used by JPEG (4:4:4 chroma at >= 90) and WebP.
    JPEG has no alpha: "RGBA" / "LA" images are composited on ``background`` (white) and a
    warning is logged. ``sixteen_bit=True`` writes a 16-bit PNG (a ConfigError for JPEG/WebP):
    from ``high_bit_source`` via :func:`to_high_bit` when given, else ``257 * value``; a uint16
    numpy array (HxW, HxWx3 RGB, HxWx4 RGBA) is written as is. 16-bit gray + alpha is written as
    16-bit RGBA (OpenCV cannot write gray + alpha). EXIF is not written (orientation was
    applied on load); the ICC profile (``icc_profile``, else ``image.info``, else the source's)
    is written when it matches the output's colour space.
    With ``overwrite=False`` an existing file is never replaced (:class:`InputError`), even if
    it appears while we write. Returns the path written.
    """
    path = Path(path)
    fmt = _output_format(path, format)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ConfigError(f"quality must be an integer in 1..100, got {quality!r}")
    if sixteen_bit and fmt != "PNG":
        raise ConfigError(f"16-bit output needs PNG; {fmt} stores 8 bits per channel: use a .png path")
    if isinstance(image, np.ndarray) and not (sixteen_bit or image.dtype == np.uint8):
        raise ConfigError(f"a {image.dtype} array is written as 16-bit PNG: pass sixteen_bit=True")
    if path.is_dir():
        raise InputError(f"{path} is a directory; give an output file name")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; pass overwrite=True (--overwrite) to replace it, or choose another name")
    if not path.parent.is_dir():
        raise InputError(f"the output folder {path.parent} does not exist; create it first")

    if icc_profile is None and isinstance(image, Image.Image):
        icc_profile = image.info.get("icc_profile")
    if icc_profile is None and high_bit_source is not None:
        icc_profile = high_bit_source.icc_profile

    if sixteen_bit:
        data = _encode_png16(image, high_bit_source, icc_profile)
    else:
        if isinstance(image, np.ndarray):
            image = _array_to_pil(image)
        data = _encode_8bit(image, fmt, quality, background, icc_profile, path)
    _atomic_write(path, data, overwrite=overwrite)
    return path


def _output_format(path: Path, format: str | None) -> str:  # noqa: A002
    key = (format or path.suffix.lstrip(".")).lower().lstrip(".")
    if key not in _OUTPUT_FORMATS:
        given = f"format {format!r}" if format else f"suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise ConfigError(f"cannot write {path}: {given} is not an output format; use png, jpg or webp")
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
    space = _icc_colour_space(profile)
    wanted = "GRAY" if mode in ("L", "LA", "I;16") else "RGB "
    return profile if space == wanted else None


def _encode_8bit(
    image: Image.Image, fmt: str, quality: int, background: tuple[int, int, int], icc: bytes | None, path: Path
) -> bytes:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        image = Image.fromarray(_u16_to_u8(np.clip(np.asarray(image), 0, 65535).astype(np.uint16)), "L")
    elif image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA" if image.mode in ("PA", "RGBa", "La") or "transparency" in image.info else "RGB")
    options: dict = {}
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
    icc = _icc_matches(icc, image.mode)
    if icc is not None:
        options["icc_profile"] = icc
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


def _encode_png16(image: Image.Image | np.ndarray, source: LoadedImage | None, icc: bytes | None) -> bytes:
    import cv2

    if isinstance(image, np.ndarray):
        array = image
        if array.dtype == np.uint8:
            array = array.astype(np.uint16) * np.uint16(257)
        elif array.dtype != np.uint16:
            raise ConfigError(f"a 16-bit PNG is written from uint8 or uint16 data, got {array.dtype}")
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (2, 3, 4))):
            raise ConfigError(f"cannot write an array of shape {array.shape} as an image")
        gray = array.ndim == 2 or array.shape[2] == 2
    else:
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            array = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
        else:
            array = to_high_bit(image, source)
        gray = array.ndim == 2 or array.shape[2] == 2
    if array.ndim == 3 and array.shape[2] == 2:  # gray + alpha: OpenCV writes 1, 3 or 4 channels
        array = array[..., [0, 0, 0, 1]]
    if array.ndim == 3:
        array = array[..., [2, 1, 0, 3]] if array.shape[2] == 4 else array[..., ::-1]
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise InputError("OpenCV could not encode the 16-bit PNG")
    png = encoded.tobytes()
    icc = _icc_matches(icc, "L" if array.ndim == 2 else "RGB")
    if icc is not None and not (gray and array.ndim == 3):
        png = _png_with_icc(png, icc)
    return png


def _png_with_icc(png: bytes, profile: bytes) -> bytes:
    """Insert an iCCP chunk right after IHDR (before any IDAT, as the PNG spec requires)."""
    body = b"ICC Profile\x00\x00" + zlib.compress(profile)
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(b"iCCP" + body) & 0xFFFFFFFF)
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    return png[:ihdr_end] + chunk + png[ihdr_end:]


_TEMP_FILE = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp$")
"""``.<name>.<pid>-<random>.tmp``: the hidden temporary file :func:`_atomic_write` renames into place."""


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove the temporary files that writers killed mid-write (or mid-rename) left in ``folder``:
    ours by name, and only those whose process is gone (a live writer's file is kept)."""
    removed = []
    try:
        candidates = [entry for entry in os.scandir(folder) if entry.name.startswith(".") and entry.is_file()]
    except OSError:
        return removed
    for entry in candidates:
        match = _TEMP_FILE.match(entry.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        try:
            os.unlink(entry.path)
        except OSError as err:
            logger.warning("cannot remove the leftover temporary file %s: %s", entry.path, err.strerror or err)
            continue
        removed.append(Path(entry.path))
        logger.info("removed %s, left by an interrupted run", entry.path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but another user's
        return True
    return True


def _atomic_write(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write to a hidden temp file in the target folder, fsync, then rename (or link) into place.

    ``overwrite=False`` uses ``os.link``, which fails if the target appeared meanwhile, so an
    existing file is never replaced; file systems without hard links fall back to a check and
    ``os.replace``. The temp file is removed on every error.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    except OSError as err:
        raise InputError(f"cannot write to {path.parent}: {err.strerror or err}") from err
    try:
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise InputError(f"cannot write {path}: {err.strerror or err}") from err
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError as err:
            raise InputError(f"{path} exists; pass overwrite=True (--overwrite) to replace it") from err
        except OSError:  # no hard links here (FAT, some network shares)
            if path.exists():
                raise InputError(f"{path} exists; pass overwrite=True (--overwrite) to replace it") from None
            os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------------------------
# denoise pre-stage


def denoise(image: Image.Image, strength: float) -> Image.Image:
    """Optional pre-stage: OpenCV non-local means (``fastNlMeansDenoisingColored``, h = hColor =
    ``strength``, template 7, search 21) for inputs too noisy for the model.

    ``strength`` in 0..30 (0 returns an unchanged copy; 3-10 is typical). "L" images use the
    gray variant; alpha of "RGBA" / "LA" images is kept untouched. Cost is roughly linear in
    pixels (about a second per megapixel on one core).
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise ConfigError(f"denoise strength must be a number in 0..{MAX_DENOISE_STRENGTH:g}, got {strength!r}")
    if not 0 <= strength <= MAX_DENOISE_STRENGTH:
        raise ConfigError(
            f"denoise strength must be in 0..{MAX_DENOISE_STRENGTH:g} (0 = off, 3-10 typical), got {strength}"
        )
    if image.mode not in ("RGB", "L", "RGBA", "LA"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    if strength == 0:
        return image.copy()
    import cv2

    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
    h = float(strength)
    if image.mode in ("L", "LA"):
        gray = np.ascontiguousarray(np.asarray(image.getchannel("L")))
        out = Image.fromarray(cv2.fastNlMeansDenoising(gray, None, h, 7, 21), "L")
    else:
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])
        result = cv2.fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21)
        out = Image.fromarray(np.ascontiguousarray(result[..., ::-1]), "RGB")
    if alpha is not None:
        out.putalpha(alpha)
    out.info.update({k: v for k, v in image.info.items() if k == "icc_profile"})
    return out
