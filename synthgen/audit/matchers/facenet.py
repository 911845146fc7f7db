"""facenet-pytorch InceptionResnetV1 (VGGFace2 or CASIA-WebFace release weights).

Weights: the release file given with --weights (logits head included, as facenet-pytorch
publishes it), or the package's own download-and-cache when online. Input: the crop resized
to 160x160, standardised (x - 127.5) / 128.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from synthgen.errors import DataError
from synthgen.fsutil import sha256_file

from .base import TorchMatcher, load_state, strict_load

FACENET_CLASSES = {"facenet-vggface2": 8631, "facenet-casia": 10575}  # the release files' logits heads
FACENET_RELEASES = {
    "facenet-vggface2": ("vggface2", "20180402-114759-vggface2.pt"),
    "facenet-casia": ("casia-webface", "20180408-102900-casia-webface.pt"),
}


class FacenetMatcher(TorchMatcher):
    def __init__(self, name="facenet-vggface2", weights=None, device="cpu"):
        from facenet_pytorch import InceptionResnetV1

        self.name = name
        pretrained, filename = FACENET_RELEASES[name]
        if weights is None:
            try:
                model = InceptionResnetV1(pretrained=pretrained)
            except Exception as e:
                raise DataError(
                    f"--matcher {name}: could not download its weights ({type(e).__name__}). Offline, fetch "
                    f"'{filename}' from facenet-pytorch's GitHub release (v2.2.9) on a connected machine and "
                    f"pass it with --weights FILE, or put it in $TORCH_HOME/checkpoints/"
                ) from None
            sha = hashlib_state(model.state_dict())
        else:
            sd = load_state(weights, "InceptionResnetV1")
            model = InceptionResnetV1(pretrained=None, classify=False)
            head = sd.get("logits.weight")
            if isinstance(head, torch.Tensor) and head.ndim == 2:
                # The release files hold the classifier head: facenet-pytorch creates `logits`
                # (8631 or 10575 classes) before loading them. We load it too and never use it.
                n_cls = head.shape[0]
                other = {v: k for k, v in FACENET_CLASSES.items()}.get(n_cls)
                if other is not None and other != name:
                    raise DataError(f"{weights}: has a {n_cls}-class head, the {other} release; use "
                                    f"--matcher {other} (this file was given for --matcher {name})")
                model.logits = nn.Linear(512, n_cls)
            strict_load(model, sd, weights, "facenet-pytorch InceptionResnetV1")
            sha = sha256_file(weights)
        super().__init__(model, device, sha)

    def preprocess(self, x):
        if x.shape[-1] != 160:
            x = F.interpolate(x, size=(160, 160), mode="bilinear", align_corners=False)
        return (x - 127.5) / 128.0


def hashlib_state(sd) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().cpu().numpy().tobytes())
    return h.hexdigest()


