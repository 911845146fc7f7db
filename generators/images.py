"""The generator protocol's image convention, shared by every backend."""

from __future__ import annotations

import numpy as np


def to_uint8(img) -> np.ndarray:
    """NCHW float images in [-1, 1] (torch) -> NHWC uint8, exactly as NVIDIA's generate.py
    converts: x * 127.5 + 128, clamped, truncated."""
    import torch

    x = (img.permute(0, 2, 3, 1).to(torch.float32) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.cpu().numpy()
