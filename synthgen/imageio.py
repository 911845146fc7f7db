"""Image input normalised once, at the boundary: anything -> RGB uint8 HWC numpy.

EXIF orientation is applied; RGBA (composited on black), LA, grayscale, palette, CMYK and
16-bit images become 8-bit RGB. Never BGR.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class UnreadableImage(Exception):
    pass


class NotAStillImage(UnreadableImage):
    """An animated image (APNG, animated WebP/GIF): which frame is the face is not ours to guess."""


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


MAX_PIXELS = 64_000_000  # a 64-megapixel photo (8000 x 8000); checked from the header, before decoding


def load_rgb(path, still_only: bool = False, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """RGB uint8 HWC pixels of an image file; `still_only` refuses animated images. The size is read
    from the header first: an image over MAX_PIXELS is refused before any pixel is decoded (a 0.5 MB
    PNG can declare 13000 x 13000 pixels, half a gigabyte once decoded)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: our own budget (below its limit) refuses them
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            if w * h > max_pixels:
                raise UnreadableImage(f"{path}: a {w}x{h} image ({w * h:,} pixels), over the {max_pixels:,}-pixel "
                                      "budget; downscale it or leave it out")
            if still_only and getattr(im, "is_animated", False):
                raise NotAStillImage(f"{path}: an animated image ({im.n_frames} frames), expected a still image; "
                                     "extract one frame to align it")
            im.load()
            return to_rgb_array(im)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise UnreadableImage(f"{path}: {type(e).__name__}: {e}") from None


def image_size(path) -> tuple[int, int]:
    """(height, width) as load_rgb would return it (EXIF rotation applied), from the header only:
    no pixels are decoded. UnreadableImage when the file is not an image Pillow reads."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():  # sizes over Pillow's bomb limit are refused by the caller's budget
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientations that swap the sides
                w, h = h, w
            return h, w
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise UnreadableImage(f"{path}: {type(e).__name__}: {e}") from None


# Stage bookkeeping at the top of a tree (generate, align, shard outputs): not input files.
METADATA_FILES = ("manifest.jsonl", "run.json", "align.json", "index.json")


def list_inputs(root) -> tuple[list[str], list[tuple[str, str]]]:
    """-> (image paths, [(path, reason)] of the other files), relative to `root`, sorted.

    Hidden files/folders and the stage metadata at the top are not inputs. Files of other types
    (GIF, TIFF, text...) are listed with the reason they are skipped; special files (FIFOs,
    sockets, devices) are never opened. Animated PNG/WebP: see `load_rgb(still_only=True)`.
    """
    root = Path(root)
    images, skipped = [], []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if "/" not in rel and name in METADATA_FILES:
                continue
            try:
                st = p.stat()
            except OSError as e:  # dangling symlink, permission
                skipped.append((rel, f"cannot stat ({e.strerror or e})"))
                continue
            if not stat.S_ISREG(st.st_mode):
                skipped.append((rel, "not a regular file (FIFO, socket or device); expected an image file"))
                continue
            ext = p.suffix.lower()
            if ext not in IMAGE_EXTS:
                n = _frames(p) if ext == ".gif" else 1
                what = f"an animated GIF ({n} frames)" if n > 1 else f"a '{ext or 'no extension'}' file"
                skipped.append((rel, f"{what}, expected a still image of type {', '.join(IMAGE_EXTS)}; "
                                     "convert it to align it"))
                continue
            images.append(rel)
    return sorted(images), sorted(skipped)


def _frames(path) -> int:
    """Frame count of an image file (1 when it cannot tell; unreadable files fail later, as data)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(getattr(im, "n_frames", 1) or 1)
    except Exception:
        return 1


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
