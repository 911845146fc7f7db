"""Image input normalised once, at the boundary: anything -> RGB uint8 HWC numpy.

EXIF orientation is applied; RGBA (composited on black), LA, grayscale, palette, CMYK and
16-bit images become 8-bit RGB. Never BGR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class UnreadableImage(Exception):
    pass


def to_rgb_array(img) -> np.ndarray:
    """PIL image, ndarray (HW, HWC with 1/3/4 channels) or CHW/HWC tensor -> RGB uint8 HWC."""
    from PIL import Image, ImageOps

    if isinstance(img, Image.Image):
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            img = Image.alpha_composite(bg, rgba)
        if img.mode == "I;16" or img.mode == "I":
            arr = np.asarray(img, dtype=np.float64)
            arr = np.clip(arr / (256.0 if arr.max() > 255 else 1.0), 0, 255).astype(np.uint8)
            return np.repeat(arr[..., None], 3, axis=2)
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    if hasattr(img, "detach"):  # torch tensor
        t = img.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 3, 4):
            t = t.permute(1, 2, 0)
        img = t.numpy()
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        a = arr[..., 3:4].astype(np.float32) / 255.0
        arr = np.rint(arr[..., :3].astype(np.float32) * a).astype(np.uint8)
    return np.ascontiguousarray(arr)


def load_rgb(path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb_array(im)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise UnreadableImage(f"{path}: {type(e).__name__}: {e}") from None


def list_images(root) -> list[str]:
    """Relative paths of image files under `root`, sorted; hidden files and folders skipped."""
    root = Path(root)
    out = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
            out.append(rel.as_posix())
    return sorted(out)
