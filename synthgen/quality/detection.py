"""What alignment recorded about each crop: found or fallback, detector probability, landmarks and
the face's size in the source image. Read, never recomputed (align already paid for detection).

Sources, by input kind:
    aligned folder   its manifest.jsonl (align, or generate --align): status, fallback, prob, faces,
                     landmarks (source pixels), box, width/height of the source image
    shard folder     the shards' provenance columns det_prob, landmarks, align_fallback (no status,
                     box or source size: a crop with landmarks and no fallback counts as found)
A crop with no record (a folder without manifest) has unknown detection: empty columns.

    face_px   the side, in source pixels, of the square the ArcFace crop was cut from: 112 / the
              scale of the least-squares similarity from the landmarks onto the template (for a
              frontal face about 2.3 x the eye distance); the face's size in the source image
"""

from __future__ import annotations

import numpy as np

from synthgen.alignment.geometry import ARCFACE_112, similarity_transform
from synthgen.errors import DataError


def records_for(images) -> dict:
    """key -> detection record {status, fallback, prob, faces, landmarks, box, source_w, source_h}
    for the keys of an audit ImageSet (folder or shards)."""
    if images.kind == "shards":
        return _from_shards(images)
    from synthgen.shards.plan import manifest_records

    recs = manifest_records(images.path) or {}
    out = {}
    for k in images.keys:
        r = recs.get(k)
        if r is None:
            continue
        out[k] = {"status": r.get("status"), "fallback": r.get("fallback"), "prob": r.get("prob"),
                  "faces": r.get("faces"), "landmarks": r.get("landmarks"), "box": r.get("box"),
                  "source_w": r.get("width"), "source_h": r.get("height")}
    return out


def _from_shards(images) -> dict:
    from synthgen.shards.reader import open_shard

    shards = images.ds.shards
    out = {}
    g = 0
    for path, n in zip(shards.files, shards.counts):
        with open_shard(path, n, shards.index) as f:
            cols = {}
            try:
                for name in ("det_prob", "landmarks", "align_fallback"):
                    if name in f:
                        cols[name] = f[name][:]
            except (OSError, ValueError, TypeError) as e:
                raise DataError(f"{path}: provenance columns unreadable ({e}); rerun `synthgen shard`") from None
        for r in range(n):
            key = shards.key(g + r)
            prob = float(cols["det_prob"][r]) if "det_prob" in cols else float("nan")
            pts = np.asarray(cols["landmarks"][r], np.float64) if "landmarks" in cols else None
            fb = cols["align_fallback"][r] if "align_fallback" in cols else ""
            fb = fb.decode() if isinstance(fb, bytes) else str(fb)
            if not cols:
                continue
            has_pts = pts is not None and np.isfinite(pts).all()
            status = "ok" if has_pts and not fb else ("no_face" if fb and not has_pts else ("low_prob" if fb else None))
            out[key] = {"status": status, "fallback": fb or None, "prob": prob if np.isfinite(prob) else None,
                        "faces": None, "landmarks": pts.tolist() if has_pts else None, "box": None,
                        "source_w": None, "source_h": None}
        g += n
    return out


def landmark_array(recs: dict, keys: list) -> np.ndarray:
    """[N, 5, 2] landmarks in key order; NaN where none were recorded (or malformed)."""
    out = np.full((len(keys), 5, 2), np.nan)
    for i, k in enumerate(keys):
        pts = (recs.get(k) or {}).get("landmarks")
        if pts is None:
            continue
        try:
            a = np.asarray(pts, np.float64).reshape(5, 2)
        except (ValueError, TypeError):
            continue
        out[i] = a
    return out


def face_px(landmarks: np.ndarray) -> np.ndarray:
    """[N, 5, 2] -> [N] side in source pixels of the square the 112 crop covers (NaN without landmarks)."""
    out = np.full(len(landmarks), np.nan)
    for i, p in enumerate(landmarks):
        if np.isfinite(p).all():
            m = similarity_transform(p, ARCFACE_112)
            s = float(np.hypot(m[0, 0], m[1, 0]))
            if s > 0:
                out[i] = 112.0 / s
    return out
