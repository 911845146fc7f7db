"""An insightface-style ONNX recogniser through onnxruntime (optional extra `synthgen[onnx]`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from synthgen.errors import DataError, UsageError
from synthgen.fsutil import sha256_file

from .base import ImageMatcher


class OnnxMatcher(ImageMatcher):
    """insightface-style ONNX recogniser: NCHW float input, 112x112 in [-1, 1] by default."""

    name = "onnx"
    input_size = 112

    def __init__(self, weights, device="cpu"):
        if weights is None:
            raise UsageError("--matcher onnx needs --weights FILE.onnx", "--weights")
        try:
            import onnxruntime as ort
        except ImportError:
            raise UsageError("--matcher onnx needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu)", "--matcher") from None
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if str(device).startswith("cuda") else ["CPUExecutionProvider"]
        try:
            self.sess = ort.InferenceSession(str(weights), providers=providers)
        except Exception as e:
            raise DataError(f"{weights}: not a loadable ONNX model ({type(e).__name__}: {e})") from None
        inp = self.sess.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        self.input_size = shape[2] if isinstance(shape[2], int) else 112
        self.weights_sha256 = sha256_file(weights)

    @property
    def id(self):
        return f"onnx-{self.weights_sha256[:16]}"

    def embed(self, images: np.ndarray, raw: bool = False) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = ((x / 255.0 - 0.5) / 0.5).numpy()
        e = self.sess.run(None, {self.input_name: x})[0].astype(np.float32)
        if raw:
            return e
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


