"""Face detectors behind one protocol, a registry, and a library-side test double.

A detector has `name`, `batched` (whether one call may hold several images, whose results
may then depend on each other) and `detect(images) -> [(boxes [K,4], probs [K], points [K,5,2])
or None]` for equal-size RGB uint8 images. `DETECTORS` maps a name to a factory
`(device, min_face_size, thresholds, batched) -> detector`; `--detector` choices come from it.
Tests and users inject their own with `DETECTORS[name] = factory`.

`detect_and_align` is what both `synthgen align` and `generate --align` run: detect (any image
sizes), select one face per image, fit the similarity to the template, warp.
"""

from __future__ import annotations

import numpy as np

from typing import Protocol

from synthgen.contract import AlignRecord, Status, identity_of

from .geometry import ARCFACE_112, fallback_matrix, similarity_transform, warp


class Detector(Protocol):
    name: str
    batched: bool  # one call may hold several images (results may then depend on each other)

    def detect(self, images: list) -> list: ...


class MTCNNDetector:
    """facenet-pytorch MTCNN, used only for boxes, probabilities and 5 landmarks.

    facenet-pytorch 2.5.3 with numpy 2 returns object arrays and cannot select faces in a
    batch where one image has none, so we call `detect()` and select faces ourselves.
    """

    name = "mtcnn"

    def __init__(self, device="cpu", min_face_size=20, thresholds=(0.6, 0.7, 0.7), batched=False):
        from facenet_pytorch import MTCNN

        self.device = device
        # MTCNN's later stages batch the candidate boxes of all images together, so batched
        # float results depend on which images share a batch: per-image detection is the
        # deterministic default; batched detection is faster (CPU: ~1.6x, GPU: much more) and
        # reproducible for a given --batch-size only.
        self.batched = batched
        self.min_face_size = min_face_size
        self.mtcnn = MTCNN(keep_all=True, device=device, min_face_size=min_face_size,
                           thresholds=list(thresholds), post_process=False, select_largest=False)
        # Feed MTCNN's three nets channels_last activations: on CPU torch's max-pooling is ~8x
        # faster in that layout (2.6 ms -> 0.3 ms for RNet's [29, 28, 22, 22] pool), which makes
        # detection ~1.9x faster overall (19.2 -> 10.2 ms per 128 px image, one thread). Same maths; floats may differ in the last bits.
        for net in (self.mtcnn.pnet, self.mtcnn.rnet, self.mtcnn.onet):
            net.register_forward_pre_hook(_channels_last_input)

    def detect(self, images: list[np.ndarray]):
        """Equal-size RGB uint8 images -> per image (boxes [K,4], probs [K], points [K,5,2]) or None."""
        import torch

        if min(images[0].shape[:2]) < self.min_face_size:  # smaller than any face MTCNN looks for
            return [None] * len(images)
        if self.batched:
            boxes, probs, points = self.mtcnn.detect(torch.tensor(np.stack(images)), landmarks=True)
        else:  # one image per call: results independent of batch composition
            res = [self.mtcnn.detect(torch.tensor(im[None]), landmarks=True) for im in images]
            boxes, probs, points = ([r[k][0] for r in res] for k in range(3))
        out = []
        for b, p, l in zip(boxes, probs, points):
            if b is None:
                out.append(None)
                continue
            out.append((np.asarray(b, np.float64).reshape(-1, 4), np.asarray(p, np.float64).reshape(-1),
                        np.asarray(l, np.float64).reshape(-1, 5, 2)))
        return out


def _channels_last_input(module, args):
    import torch

    return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])


def select_face(det, policy: str, shape) -> int:
    boxes, probs, _ = det
    if policy == "prob":
        return int(np.argmax(probs))
    if policy == "center":
        h, w = shape[:2]
        c = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
        return int(np.argmin(((c - [w / 2, h / 2]) ** 2).sum(1)))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return int(np.argmax(area))


class ParityDetector:
    """Test double: "finds" one face, exactly on the template, in every image whose pixel sum
    is even, and none in the others. Deterministic, instant, batch-free; not a face detector."""

    name = "parity"

    def __init__(self, device="cpu", min_face_size=20, thresholds=(0.6, 0.7, 0.7), batched=False):
        self.batched = batched

    def detect(self, images):
        out = []
        for im in images:
            if int(im.astype(np.int64).sum()) % 2:
                out.append(None)
            else:
                h, w = im.shape[:2]
                pts = ARCFACE_112 * (min(h, w) / 112)
                out.append((np.array([[0, 0, w, h]], float), np.array([0.99]), pts[None]))
        return out


# name -> factory(device, min_face_size, thresholds, batched)
DETECTORS = {"mtcnn": MTCNNDetector, "parity": ParityDetector}


def make_detector(name: str, device="cpu", min_face_size=20, thresholds=(0.6, 0.7, 0.7), batched=False):
    from synthgen.errors import UsageError

    if name not in DETECTORS:
        raise UsageError(f"'{name}' is not a known detector (known: {', '.join(DETECTORS)})", "--detector")
    return DETECTORS[name](device=device, min_face_size=min_face_size, thresholds=thresholds, batched=batched)


def detect_any_size(detector, images, detect_size: int = 0):
    """Detections in source pixels for images of any sizes.

    Images are brought to a common canvas for the detector: each is resized so its longer side
    is `detect_size` (0 = kept as is) and padded with black at the right/bottom to the largest
    canvas in the call; boxes and landmarks are scaled back to source pixels. Batched detectors
    get one call; per-image detectors one call per image (no padding needed then).
    """
    from PIL import Image

    scaled, scales = [], []
    for im in images:
        h, w = im.shape[:2]
        f = detect_size / max(h, w) if detect_size else 1.0
        if f != 1.0:
            im = np.asarray(Image.fromarray(im).resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR))
        scaled.append(im)
        scales.append(f)
    if detector.batched and len({im.shape for im in scaled}) > 1:
        hh = max(im.shape[0] for im in scaled)
        ww = max(im.shape[1] for im in scaled)
        canvases = []
        for im in scaled:
            c = np.zeros((hh, ww, 3), np.uint8)
            c[: im.shape[0], : im.shape[1]] = im
            canvases.append(c)
        dets = detector.detect(canvases)
    elif detector.batched:
        dets = detector.detect(scaled)
    else:
        dets = [detector.detect([im])[0] for im in scaled]
    out = []
    for det, f in zip(dets, scales):
        if det is not None and f != 1.0:
            det = (det[0] / f, det[1], det[2] / f)
        out.append(det)
    return out


def detect_and_align(rels, images, detector, template_pts, template_name, size, *, select="largest", min_prob=0.0,
                     on_miss="skip", detect_size=0, device="cpu"):
    """Detect + align images of any sizes -> (records, crops by index).

    A record: source, identity, template, width, height, status (ok | no_face | low_prob),
    and when a face was found prob, box, landmarks, faces; transform and fallback when a crop
    was made (on_miss: skip | center-crop | keep)."""
    shapes = [im.shape for im in images]
    dets = detect_any_size(detector, images, detect_size)
    records, mats, keep_idx = [], [], []
    for i, (rel, det) in enumerate(zip(rels, dets)):
        r: AlignRecord = {"source": rel, "identity": identity_of(rel), "template": template_name,
             "width": int(shapes[i][1]), "height": int(shapes[i][0])}
        status, m = Status.NO_FACE.value, None
        if det is not None:
            j = select_face(det, select, shapes[i])
            boxes, probs, pts = det
            r.update(prob=round(float(probs[j]), 6), box=np.round(boxes[j], 3).tolist(),
                     landmarks=np.round(pts[j], 3).tolist(), faces=int(len(probs)))
            if probs[j] < min_prob:
                status = Status.LOW_PROB.value
            else:
                status, m = Status.OK.value, similarity_transform(pts[j], template_pts)
        if m is None and on_miss != "skip":
            m = fallback_matrix(shapes[i], size, on_miss)
            r["fallback"] = on_miss
        r["status"] = status
        if m is not None:
            r["transform"] = np.round(m, 8).tolist()
            mats.append(m)
            keep_idx.append(i)
        records.append(r)
    crops = {}
    by_shape: dict[tuple, list[int]] = {}
    for k, i in enumerate(keep_idx):
        by_shape.setdefault(shapes[i], []).append(k)
    for ks in by_shape.values():  # the warp batches images of one size
        warped = warp([images[keep_idx[k]] for k in ks], [mats[k] for k in ks], size, device)
        crops.update({keep_idx[k]: w for k, w in zip(ks, warped)})
    return records, crops


