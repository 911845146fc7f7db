"""A test double: a fixed random projection of the pixels. NOT a face matcher.

Deterministic (seeded), instant, and sensitive to exactly what tests need: identical crops
give identical embeddings, different images differ. Registered as `pixels` for tests, demos
and benchmarks of the audit machinery; its scores say nothing about identity.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .base import ImageMatcher


class PixelProjectionMatcher(ImageMatcher):
    name = "pixels"
    input_size = 32

    def __init__(self, dim: int = 64, seed: int = 0):
        rng = np.random.RandomState(seed)
        self.proj = rng.randn(self.input_size * self.input_size * 3, dim).astype(np.float32)
        self.weights_sha256 = hashlib.sha256(self.proj.tobytes()).hexdigest()

    @property
    def id(self) -> str:
        return f"{self.name}-{self.weights_sha256[:16]}"

    def embed(self, images: np.ndarray, raw: bool = False) -> np.ndarray:
        x = images.reshape(len(images), -1).astype(np.float32) / 127.5 - 1.0
        e = x @ self.proj
        if raw:
            return e.astype(np.float32)
        return (e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)).astype(np.float32)
