"""Writing results: the model's RGB output given back what the input had, then written atomically.

``recombine`` puts the input's alpha, grayness and ICC profile back on the model's RGB output,
``to_high_bit`` rebuilds 16-bit data for a 16-bit source, and ``save_image`` writes PNG / JPEG /
WebP atomically, never over an existing file unless asked.

- A 16-bit output is ``257 * output8`` plus the source's sub-8-bit detail (bicubic-upscaled), so
  an unprocessed 16-bit image is written back bit-exactly.
- JPEG cannot store alpha: the image is composited on white (``background``) with a warning.
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
from seesr.io.read import InputImage, icc_colour_space, u16_to_u8

logger = logging.getLogger(__name__)

_OUTPUT_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}


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
    write_atomically(path, data, overwrite=overwrite)
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
    space = icc_colour_space(profile)
    wanted = "GRAY" if mode in ("L", "LA", "I;16") else "RGB "
    return profile if space == wanted else None


def _encode_8bit(
    image: Image.Image, fmt: str, quality: int, background: tuple[int, int, int], icc: bytes | None, path: Path
) -> bytes:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        image = Image.fromarray(u16_to_u8(np.clip(np.asarray(image), 0, 65535).astype(np.uint16)), "L")
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


def _encode_png16(image: Image.Image | np.ndarray, source: InputImage | None, icc: bytes | None) -> bytes:
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
