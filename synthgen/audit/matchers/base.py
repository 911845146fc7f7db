"""The matcher protocol and what image matchers share.

A matcher turns aligned uint8 RGB crops into L2-normalised embeddings:

    name         registry name, e.g. "facenet-casia"
    id           name + weights sha256 prefix: the embedding cache key
    input_size   the crop side it wants (crops are resized to it)
    embed(images NHWC uint8, raw=False) -> float32 [N, D], unit rows (raw=True: the network's
                 output before normalisation, which `synthgen evaluate` sums with the mirror's)
    embed_path(path, flag, ..., images=None) -> (Embedded, ImageSet | None): one whole side of an
                 audit (`images`: the ImageSet of `path`, when the caller opened it already)

`ImageMatcher` implements `embed_path` for image folders and shard directories (cached); a
matcher that reads something else (precomputed embeddings) overrides it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthgen.errors import DataError
from synthgen.safeload import safe_torch_load

from ..embed import Embedded, ImageSet, embed_set


class Matcher(Protocol):
    name: str
    input_size: int

    @property
    def id(self) -> str: ...

    def embed(self, images: np.ndarray, raw: bool = False) -> np.ndarray: ...

    def embed_path(self, path, flag: str, *, cache_dir, max_per_class=None, batch_size=256, progress=True,
                   desc="embed", images: ImageSet | None = None) -> tuple[Embedded, ImageSet | None]: ...


class ImageMatcher:
    """Base for matchers that embed images: reads folder trees or shards, caches embeddings."""

    name = "image-matcher"
    input_size = 112

    def embed_path(self, path, flag, *, cache_dir, max_per_class=None, batch_size=256, progress=True, desc="embed",
                   images: ImageSet | None = None):
        """`images`: the set already opened from `path` (the audit lists each side once, before it
        creates anything)."""
        images = images if images is not None else ImageSet(path, max_per_class, flag)
        return embed_set(images, self, cache_dir, batch_size, progress, desc), images


def load_state(path, what):
    sd = safe_torch_load(path, f"{what} weights", "--weights")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise DataError(f"{path}: expected a state dict of {what} weights (names -> tensors), got "
                        f"{type(sd).__name__}{' with other contents' if isinstance(sd, dict) else ''}")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def strict_load(model: nn.Module, sd: dict, path, what):
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or wrong:
        raise DataError(
            f"{path}: not {what} weights: missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"shape mismatches {wrong[:5]}"
        )
    model.load_state_dict(sd, strict=True)


class TorchMatcher(ImageMatcher):
    """A torch.nn.Module matcher: subclasses give `name`, `input_size` and `preprocess`."""

    input_size = 112

    def __init__(self, model, device, weights_sha256):
        self.device = device
        # channels_last: oneDNN/cuDNN's fast layout (CPU here, model alone: iResNet-50 +18%)
        self.model = model.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
        self.weights_sha256 = weights_sha256

    @property
    def id(self) -> str:
        return f"{self.name}-{self.weights_sha256[:16]}"

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, images: np.ndarray, raw: bool = False) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            e = self.model(self.preprocess(x).contiguous(memory_format=torch.channels_last)).float()
        return (e if raw else F.normalize(e, dim=1)).cpu().numpy().astype(np.float32)


