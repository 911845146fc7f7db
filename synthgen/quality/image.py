"""Image measures of an aligned crop: sharpness and exposure, on the face region only.

The region is the part of an ArcFace crop the face fills (x 20-80 %, y 25-90 % of the side): the
black borders a warp leaves where the source ended, and the background, are left out, so a crop
near the image edge is not "sharp" because of its border.

    sharpness   variance of the 4-neighbour Laplacian of the grey image (ITU-R 601 luma, 0-255)
                inside the region: high for crisp edges, near 0 for blur or flat noise-free areas
    brightness  mean luma in the region (0-255)
    contrast    standard deviation of luma in the region
    clipped     fraction of region pixels whose luma is <= 2 or >= 253 (under- or over-exposed)
"""

from __future__ import annotations

import numpy as np

REGION = (0.20, 0.80, 0.25, 0.90)  # x0, x1, y0, y1 as fractions of the crop side
COLUMNS = ("sharpness", "brightness", "contrast", "clipped")


def luma(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, np.float32)
    if img.ndim == 2:
        return img
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def region(shape) -> tuple[slice, slice]:
    h, w = shape[:2]
    x0, x1, y0, y1 = REGION
    return slice(round(y0 * h), round(y1 * h)), slice(round(x0 * w), round(x1 * w))


def image_measures(img: np.ndarray) -> dict:
    """One HxWx3 uint8 crop -> {sharpness, brightness, contrast, clipped}."""
    g = luma(img)
    ys, xs = region(g.shape)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    inner = lap[max(ys.start - 1, 0): ys.stop - 1, max(xs.start - 1, 0): xs.stop - 1]
    face = g[ys, xs]
    return {"sharpness": float(inner.var()) if inner.size else float("nan"),
            "brightness": float(face.mean()), "contrast": float(face.std()),
            "clipped": float(((face <= 2) | (face >= 253)).mean())}
