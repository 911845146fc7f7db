"""Image encodings, defined once: what shards store, what exporters write, what readers decode.

    raw    uint8 HWC RGB array as is (shards only)
    png    lossless PNG
    jpeg   JPEG at a given quality (4:2:0, PIL's default)

Each entry: `encode(img, quality) -> bytes` and `decode(bytes, size=None) -> uint8 HWC RGB`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np


def _save(img: np.ndarray, fmt: str, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _decode(data, size=None) -> np.ndarray:
    """Encoded bytes -> uint8 HWC RGB. `size` (w, h): checked before decoding, since a 1 kB PNG
    can declare a 30000x30000 image. Raises ValueError/OSError on anything unreadable."""
    from PIL import Image

    with Image.open(io.BytesIO(bytes(data))) as im:
        if size is not None and im.size != tuple(size):
            raise ValueError(f"it is {im.size[0]}x{im.size[1]}, expected {size[0]}x{size[1]}")
        return np.asarray(im.convert("RGB"))


@dataclass(frozen=True)
class Encoding:
    name: str
    suffix: str  # file suffix when written as a file ("" for raw)
    encode: Callable[[np.ndarray, int], bytes] | None  # None: stored as the array itself
    decode: Callable[..., np.ndarray] | None


ENCODINGS: dict[str, Encoding] = {
    "raw": Encoding("raw", "", None, None),
    "png": Encoding("png", ".png", lambda img, quality=95: _save(img, "PNG"), _decode),
    "jpeg": Encoding("jpeg", ".jpg", lambda img, quality=95: _save(img, "JPEG", quality=quality), _decode),
}
FILE_FORMATS = {"png": "png", "jpg": "jpeg"}  # --image-format / --format spellings -> encoding


def encode(img: np.ndarray, name: str, quality: int = 95) -> bytes:
    return ENCODINGS[name].encode(img, quality)
