"""dlib's 128-d face-recognition ResNet (optional extra `synthgen[dlib]`: dlib-bin, face-recognition-models).

dlib's network was trained on 150x150 chips cut by `get_face_chip(img, shape, size=150,
padding=0.25)` from its 5-point landmarks (eye corners, nose bottom). Our inputs are 112x112
ArcFace-aligned crops, so each crop is re-warped into dlib's chip frame by ONE FIXED similarity
(no landmarks are detected again). The similarity is derived from dlib's own chip geometry:

  `get_face_chip_details` maps a normalised face frame into the chip by
  chip = (padding + p) / (1 + 2 padding) * size, with the 5-point references taken from dlib's
  68-point mean face shape (points 36, 39, 42, 45, 33: its 5-point constants are those points).
  In that same mean shape, the points ArcFace's template stands for are: the eye centres (means
  of eye contours 36-41 and 42-47), the nose tip (30) and the mouth corners (48, 54). Mapped into
  the 150 px chip they give DLIB_CHIP_ARCFACE_POINTS; the least-squares similarity from the ArcFace
  template onto them is CROP_TO_CHIP (scale 1.4495, 0.32 degrees; 2.2 px RMS residual, the
  difference between the two point definitions).

Checked (tests/test_real_matchers.py): on the astronaut photo, MTCNN-aligned to 112 and re-warped,
vs dlib's own detector + 5-point predictor + get_face_chip: descriptor distance 0.224 (dlib's
same-person threshold is 0.6), cosine 0.988 (the crop merely resized to 150: 0.75); dlib's 5
landmarks found on our chip lie within 3.1 px of its references. Over 93 upscaled LFW faces (scikit-image's lfw_subset), the per-face MTCNN->dlib
relation's median differs from CROP_TO_CHIP by at most 2.1 px in the chip.

The 112 crop does not cover the chip's bottom ~17 rows (chin/neck): they stay black, which
measured closer to dlib's own chip than edge replication. Embeddings are L2-normalised for the
protocol; dlib's raw descriptors are compared by Euclidean distance (< 0.6 same person) and
their cosines are compressed (different people are still ~0.8): calibrate, never reuse a
threshold of another matcher. Runs on dlib's own CPU build; --device is not used.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from synthgen.alignment import ARCFACE_112, similarity_transform, warp
from synthgen.errors import DataError, UsageError
from synthgen.fsutil import sha256_file

from .base import ImageMatcher

CHIP_SIZE, CHIP_PADDING = 150, 0.25
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"

# dlib's 68-point mean face shape (dlib/image_transforms/interpolation.h, get_face_chip_details),
# in its normalised face frame; only the points used here. Image-left eye = iBUG 36-41.
_MEAN_SHAPE = {
    30: (0.490127, 0.515625),
    36: (0.121737, 0.216423), 37: (0.187122, 0.178758), 38: (0.265825, 0.179852),
    39: (0.334606, 0.231733), 40: (0.260918, 0.245099), 41: (0.182743, 0.244077),
    42: (0.645647, 0.231733), 43: (0.714428, 0.179852), 44: (0.793132, 0.178758),
    45: (0.858516, 0.216423), 46: (0.79751, 0.244077), 47: (0.719335, 0.245099),
    48: (0.254149, 0.780233), 54: (0.726104, 0.780233),
}
# dlib's 5-point model's references in the same frame (get_face_chip_details, 5-point case):
# image-right eye outer/inner corner, image-left eye outer/inner corner, bottom of the nose.
DLIB_5POINT_REFS = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                             [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                             [0.4901123135679, 0.6277975316475]])


def to_chip(p, size=CHIP_SIZE, padding=CHIP_PADDING) -> np.ndarray:
    """dlib's normalised face frame -> chip pixels (get_face_chip_details' mapping)."""
    return (padding + np.asarray(p, np.float64)) / (1 + 2 * padding) * size


def _arcface_points_in_mean_shape() -> np.ndarray:
    m = {k: np.array(v) for k, v in _MEAN_SHAPE.items()}
    return np.array([np.mean([m[i] for i in range(36, 42)], 0), np.mean([m[i] for i in range(42, 48)], 0),
                     m[30], m[48], m[54]])


DLIB_CHIP_ARCFACE_POINTS = to_chip(_arcface_points_in_mean_shape())
DLIB_CHIP_5POINT_REFS = to_chip(DLIB_5POINT_REFS)
CROP_TO_CHIP = similarity_transform(ARCFACE_112, DLIB_CHIP_ARCFACE_POINTS)  # 2x3, 112 crop px -> 150 chip px


def models_dir() -> Path | None:
    """face_recognition_models' model folder, found without importing the package (its __init__
    needs pkg_resources, which recent setuptools no longer ship)."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for d in spec.submodule_search_locations:
        if (Path(d) / "models").is_dir():
            return Path(d) / "models"
    return None


def to_dlib_chips(images: np.ndarray) -> np.ndarray:
    """[N, 112, 112, 3] uint8 ArcFace crops -> [N, 150, 150, 3] uint8 chips in dlib's frame."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (112, 112, 3):
        raise DataError(f"dlib matcher: expected [N, 112, 112, 3] aligned crops, got {list(images.shape)}")
    if not len(images):
        return np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
    return np.ascontiguousarray(warp(images, np.repeat(CROP_TO_CHIP[None], len(images), 0), CHIP_SIZE))


class DlibMatcher(ImageMatcher):
    name = "dlib"
    input_size = 112

    def __init__(self, weights=None, device="cpu"):
        try:
            import dlib
        except ImportError:
            raise UsageError("--matcher dlib needs dlib: pip install 'synthgen[dlib]' (dlib-bin and "
                             "face-recognition-models)", "--matcher") from None
        if weights is None:
            d = models_dir()
            if d is None or not (d / MODEL_FILE).is_file():
                raise UsageError(f"--matcher dlib needs {MODEL_FILE}: pip install face-recognition-models "
                                 "(or pip install 'synthgen[dlib]'), or pass the file with --weights", "--matcher")
            weights = d / MODEL_FILE
        weights = Path(weights)
        if not weights.is_file():
            raise UsageError(f"{weights}: no such file; expected dlib's {MODEL_FILE}", "--weights")
        try:
            self.net = dlib.face_recognition_model_v1(str(weights))
        except RuntimeError as e:
            raise DataError(f"{weights}: not a dlib face-recognition model ({str(e).splitlines()[0][:120]}); "
                            f"expected {MODEL_FILE} from face-recognition-models") from None
        self.weights = weights
        self.weights_sha256 = sha256_file(weights)

    @property
    def id(self) -> str:
        return f"{self.name}-{self.weights_sha256[:16]}"

    def raw_descriptors(self, images: np.ndarray) -> np.ndarray:
        """dlib's own 128-d descriptors (not normalised: compare these by Euclidean distance)."""
        chips = to_dlib_chips(images)
        if not len(chips):
            return np.zeros((0, 128), np.float32)
        return np.asarray(self.net.compute_face_descriptor(list(chips), 0), dtype=np.float32).reshape(len(chips), 128)

    def embed(self, images: np.ndarray, raw: bool = False) -> np.ndarray:
        e = self.raw_descriptors(images)
        if raw:
            return e.astype(np.float32)
        return (e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)).astype(np.float32)
