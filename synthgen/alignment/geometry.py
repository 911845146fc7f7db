"""Alignment geometry: templates, the least-squares similarity fit, the batched warp.

Conventions (the insightface / OpenCV ones, so crops match ArcFace training data): pixel
(x, y) has its centre at integer coordinates; the transform M (2x3) maps source pixels to
output pixels; output pixel (u, v) takes the bilinear sample at M^-1 (u, v); samples outside
the source are black (zero padding, like cv2.warpAffine's default border). The warp runs as
one batched `grid_sample` on CPU or GPU.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from synthgen.errors import UsageError

# ArcFace 112x112 template (insightface): left eye, right eye, nose, left/right mouth corner.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
TEMPLATES = {"arcface": (ARCFACE_112, 112), "arcface-shift8": (ARCFACE_112 - [8.0, 0.0], 112)}


def load_template(spec: str, size: int) -> tuple[str, np.ndarray]:
    """Template name/file -> (name, 5x2 points scaled to an output of `size` x `size`)."""
    if spec in TEMPLATES:
        pts, base = TEMPLATES[spec]
        return spec, pts * (size / base)
    p = Path(spec)
    if not p.is_file():
        raise UsageError(f"'{spec}' is neither a known template ({', '.join(TEMPLATES)}) nor a JSON file", "--template")
    try:
        d = json.loads(p.read_text())
        pts = np.asarray(d["points"], dtype=np.float64)
        base = float(d.get("size", size))
    except RecursionError:
        raise UsageError(f"{p}: nested too deeply, expected JSON {{\"size\": 112, \"points\": [[x, y] x 5]}}",
                         "--template") from None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise UsageError(f"{p}: expected JSON {{\"size\": 112, \"points\": [[x, y] x 5]}} ({e})", "--template") from None
    if pts.shape != (5, 2):
        raise UsageError(f"{p}: 'points' must be 5 [x, y] pairs, got shape {list(pts.shape)}", "--template")
    if not (np.isfinite(base) and base > 0 and np.isfinite(pts).all()):
        raise UsageError(f"{p}: expected a positive 'size' and finite points, got size {base}", "--template")
    return p.name, pts * (size / base)


def similarity_transform(src, dst) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst (Umeyama).

    src, dst: [N, 2] points. Returns the 2x3 matrix M with dst ~= M @ [x, y, 1].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def apply_transform(m, pts) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def warp(images, matrices, size: int, device="cpu"):
    """Batched similarity warp. images: list of equal-size HWC uint8 arrays (or NHWC uint8
    tensor); matrices: [N, 2, 3] source->output. Returns NHWC uint8 numpy [N, size, size, 3]."""
    import torch

    if not torch.is_tensor(images) and images[0].shape[0] * images[0].shape[1] > 4 * size * size:
        # Large photos: warp only the source region that lands in the crop (same result up to
        # float rounding, far less work than converting a whole megapixel image), one at a time.
        return np.concatenate([_warp_batch(*_crop_for(img, m, size), size, device) for img, m in zip(images, matrices)])
    return _warp_batch(images, matrices, size, device)


def _warp_batch(images, matrices, size, device):
    import torch
    import torch.nn.functional as F

    x = images if torch.is_tensor(images) else torch.from_numpy(np.stack(images))
    x = x.to(device).permute(0, 3, 1, 2).float()
    n, _, h, w = x.shape
    m = np.asarray(matrices, dtype=np.float64).reshape(n, 2, 3)
    full = np.concatenate([m, np.tile([[[0.0, 0.0, 1.0]]], (n, 1, 1))], axis=1)
    inv = np.linalg.inv(full)[:, :2]  # output pixel -> source pixel
    # Fold pixel -> normalised coordinates (align_corners=False: x_n = (2x + 1) / W - 1) into theta.
    to_pix = np.array([[size / 2, 0, size / 2 - 0.5], [0, size / 2, size / 2 - 0.5], [0, 0, 1]])
    to_norm = np.array([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1]])
    theta = np.einsum("ij,njk,kl->nil", to_norm, np.concatenate([inv, np.tile([[[0, 0, 1.0]]], (n, 1, 1))], 1), to_pix)
    theta = torch.from_numpy(theta).float().to(device)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _crop_for(img, m, size, margin=2):
    """-> ([source crop], [matrix adjusted to the crop]) covering the output square's preimage."""
    m = np.asarray(m, np.float64)
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    corners = np.array([[-1, -1], [size, -1], [-1, size], [size, size]], np.float64)
    src = corners @ inv[:, :2].T + inv[:, 2]
    h, w = img.shape[:2]
    x0 = int(np.clip(np.floor(src[:, 0].min()) - margin, 0, w - 1))
    x1 = int(np.clip(np.ceil(src[:, 0].max()) + margin + 1, x0 + 1, w))
    y0 = int(np.clip(np.floor(src[:, 1].min()) - margin, 0, h - 1))
    y1 = int(np.clip(np.ceil(src[:, 1].max()) + margin + 1, y0 + 1, h))
    m2 = m.copy()
    m2[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    return [np.ascontiguousarray(img[y0:y1, x0:x1])], [m2]


def fallback_matrix(shape, size, mode) -> np.ndarray:
    """Transform for --on-miss: central square ('center-crop') or whole image ('keep')."""
    h, w = shape[:2]
    if mode == "center-crop":
        side = min(h, w)
        sx = sy = size / side
        tx, ty = -(w - side) / 2 * sx, -(h - side) / 2 * sy
    else:
        sx, sy, tx, ty = size / w, size / h, 0.0, 0.0
    # Pixel-centre convention: u + 0.5 = s (x + 0.5)
    return np.array([[sx, 0, tx + 0.5 * sx - 0.5], [0, sy, ty + 0.5 * sy - 0.5]])


def residual(m, src, dst) -> float:
    """RMS distance (output pixels) between transformed src points and dst."""
    return float(math.sqrt(((apply_transform(m, src) - np.asarray(dst)) ** 2).sum(1).mean()))
