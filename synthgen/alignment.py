"""`synthgen align`: MTCNN 5-point landmarks -> similarity transform -> aligned crop.

Geometry conventions (the insightface / OpenCV ones, so crops match ArcFace training data):
pixel (x, y) has its centre at integer coordinates; the transform M (2x3) maps source pixels
to output pixels; output pixel (u, v) takes the bilinear sample at M^-1 (u, v); samples
outside the source are black (zero padding, like cv2.warpAffine's default border).
The warp runs as one batched `grid_sample` on CPU or GPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthgen import __version__
from synthgen.errors import DataError, UsageError
from synthgen.fsutil import atomic_write_text
from synthgen.imageio import IMAGE_EXTS, NotAStillImage, UnreadableImage, list_inputs, load_rgb
from synthgen.runs import (check_choice, check_device, check_output_dir, check_range, check_types, config_hash,
                           ensure_writable_dir, remove_stale_temps)
from synthgen.safepath import safe_relpath

# ArcFace 112x112 template (insightface): left eye, right eye, nose, left/right mouth corner.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
TEMPLATES = {"arcface": (ARCFACE_112, 112), "arcface-shift8": (ARCFACE_112 - [8.0, 0.0], 112)}
STATUSES = ("ok", "no_face", "low_prob", "unreadable", "error", "skipped")
MANIFEST = "manifest.jsonl"
ALIGN_JSON = "align.json"
JOURNAL = ".align-journal.jsonl"


def load_template(spec: str, size: int) -> tuple[str, np.ndarray]:
    """Template name/file -> (name, 5x2 points scaled to an output of `size` x `size`)."""
    if spec in TEMPLATES:
        pts, base = TEMPLATES[spec]
        return spec, pts * (size / base)
    p = Path(spec)
    if not p.is_file():
        raise UsageError(f"'{spec}' is neither a known template ({', '.join(TEMPLATES)}) nor a JSON file", "--template")
    try:
        d = json.loads(p.read_text())
        pts = np.asarray(d["points"], dtype=np.float64)
        base = float(d.get("size", size))
    except RecursionError:
        raise UsageError(f"{p}: nested too deeply, expected JSON {{\"size\": 112, \"points\": [[x, y] x 5]}}",
                         "--template") from None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise UsageError(f"{p}: expected JSON {{\"size\": 112, \"points\": [[x, y] x 5]}} ({e})", "--template") from None
    if pts.shape != (5, 2):
        raise UsageError(f"{p}: 'points' must be 5 [x, y] pairs, got shape {list(pts.shape)}", "--template")
    if not (np.isfinite(base) and base > 0 and np.isfinite(pts).all()):
        raise UsageError(f"{p}: expected a positive 'size' and finite points, got size {base}", "--template")
    return p.name, pts * (size / base)


def similarity_transform(src, dst) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst (Umeyama).

    src, dst: [N, 2] points. Returns the 2x3 matrix M with dst ~= M @ [x, y, 1].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def apply_transform(m, pts) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def warp(images, matrices, size: int, device="cpu"):
    """Batched similarity warp. images: list of equal-size HWC uint8 arrays (or NHWC uint8
    tensor); matrices: [N, 2, 3] source->output. Returns NHWC uint8 numpy [N, size, size, 3]."""
    import torch

    if not torch.is_tensor(images) and images[0].shape[0] * images[0].shape[1] > 4 * size * size:
        # Large photos: warp only the source region that lands in the crop (same result up to
        # float rounding, far less work than converting a whole megapixel image), one at a time.
        return np.concatenate([_warp_batch(*_crop_for(img, m, size), size, device) for img, m in zip(images, matrices)])
    return _warp_batch(images, matrices, size, device)


def _warp_batch(images, matrices, size, device):
    import torch
    import torch.nn.functional as F

    x = images if torch.is_tensor(images) else torch.from_numpy(np.stack(images))
    x = x.to(device).permute(0, 3, 1, 2).float()
    n, _, h, w = x.shape
    m = np.asarray(matrices, dtype=np.float64).reshape(n, 2, 3)
    full = np.concatenate([m, np.tile([[[0.0, 0.0, 1.0]]], (n, 1, 1))], axis=1)
    inv = np.linalg.inv(full)[:, :2]  # output pixel -> source pixel
    # Fold pixel -> normalised coordinates (align_corners=False: x_n = (2x + 1) / W - 1) into theta.
    to_pix = np.array([[size / 2, 0, size / 2 - 0.5], [0, size / 2, size / 2 - 0.5], [0, 0, 1]])
    to_norm = np.array([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1]])
    theta = np.einsum("ij,njk,kl->nil", to_norm, np.concatenate([inv, np.tile([[[0, 0, 1.0]]], (n, 1, 1))], 1), to_pix)
    theta = torch.from_numpy(theta).float().to(device)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _crop_for(img, m, size, margin=2):
    """-> ([source crop], [matrix adjusted to the crop]) covering the output square's preimage."""
    m = np.asarray(m, np.float64)
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    corners = np.array([[-1, -1], [size, -1], [-1, size], [size, size]], np.float64)
    src = corners @ inv[:, :2].T + inv[:, 2]
    h, w = img.shape[:2]
    x0 = int(np.clip(np.floor(src[:, 0].min()) - margin, 0, w - 1))
    x1 = int(np.clip(np.ceil(src[:, 0].max()) + margin + 1, x0 + 1, w))
    y0 = int(np.clip(np.floor(src[:, 1].min()) - margin, 0, h - 1))
    y1 = int(np.clip(np.ceil(src[:, 1].max()) + margin + 1, y0 + 1, h))
    m2 = m.copy()
    m2[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
    return [np.ascontiguousarray(img[y0:y1, x0:x1])], [m2]


# ----------------------------------------------------------------------------------------------
# Detection


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


# ----------------------------------------------------------------------------------------------
# The stage


@dataclass
class AlignConfig:
    inp: str  # input identity-folder tree (or a generate output)
    out: str  # output tree of aligned crops
    size: int = 112  # output side in pixels (template scaled from 112)
    template: str = "arcface"  # arcface | arcface-shift8 | FILE.json
    detector: str = "mtcnn"
    min_face_size: int = 20  # MTCNN minimum face size, pixels
    thresholds: tuple = (0.6, 0.7, 0.7)  # MTCNN stage thresholds
    min_prob: float = 0.0  # faces below this probability are 'low_prob' (treated as a miss)
    select: str = "largest"  # largest | center | prob
    on_miss: str = "skip"  # skip | center-crop | keep
    batch_size: int = 32  # images per step (and per detector call with batched detection)
    batched_detection: bool | None = None  # None = on for CUDA, off for CPU (see MTCNNDetector)
    detect_size: int = 0  # detect on images resized to this longer side (0 = native size)
    device: str = "auto"
    workers: int = 1  # CPU worker processes
    overwrite: bool = False
    progress: bool = True

    RUNTIME_FIELDS = ("inp", "out", "batch_size", "device", "workers", "overwrite", "progress")


def validate_config(cfg: AlignConfig, host: bool = True) -> None:
    """Every check that writes nothing and needs no input: types, choices, ranges; with `host`,
    also this machine's side (template file, device). align() calls it before touching --out;
    `synthgen run` calls it for [align] before any stage runs."""
    check_types(cfg)
    check_choice(cfg.detector, "--detector", ("mtcnn",))
    check_choice(cfg.select, "--select", ("largest", "center", "prob"))
    check_choice(cfg.on_miss, "--on-miss", ("skip", "center-crop", "keep"))
    for flag, value, lo, hi in (("--size", cfg.size, 16, None), ("--min-face-size", cfg.min_face_size, 1, None),
                                ("--min-prob", cfg.min_prob, 0, 1), ("--batch-size", cfg.batch_size, 1, None),
                                ("--detect-size", cfg.detect_size, 0, None), ("--workers", cfg.workers, 1, None)):
        check_range(value, flag, lo, hi)
    t = cfg.thresholds
    if len(t) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1 for v in t):
        raise UsageError(f"expected three numbers in (0, 1) like 0.6,0.7,0.7, got {t}", "--thresholds")
    if cfg.inp and cfg.out:
        inp, out = Path(cfg.inp).resolve(), Path(cfg.out).resolve()
        if out == inp or inp in out.parents:
            raise UsageError(f"{cfg.out} must not be inside the input tree {cfg.inp}", "--out")
    check_device(cfg.device, "--device", host)
    if host:
        load_template(cfg.template, cfg.size)


def _identity(cfg: AlignConfig, template_pts, device) -> dict:
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in AlignConfig.RUNTIME_FIELDS}
    d["device_type"] = device.type
    d["batched_detection"] = _batched(cfg, device)
    if d["batched_detection"]:  # float results then depend on which images share a batch
        d["batch_size"] = cfg.batch_size
    d["thresholds"] = list(d["thresholds"])
    d["template_points"] = np.round(template_pts, 6).tolist()
    return d


def _fallback_matrix(shape, size, mode) -> np.ndarray:
    """Transform for --on-miss: central square ('center-crop') or whole image ('keep')."""
    h, w = shape[:2]
    if mode == "center-crop":
        side = min(h, w)
        sx = sy = size / side
        tx, ty = -(w - side) / 2 * sx, -(h - side) / 2 * sy
    else:
        sx, sy, tx, ty = size / w, size / h, 0.0, 0.0
    # Pixel-centre convention: u + 0.5 = s (x + 0.5)
    return np.array([[sx, 0, tx + 0.5 * sx - 0.5], [0, sy, ty + 0.5 * sy - 0.5]])


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


def process_batch(rels, images, detector, cfg: AlignConfig, template_pts, template_name, device="cpu"):
    """Detect + align images of any sizes -> (records, crops by index)."""
    shapes = [im.shape for im in images]
    dets = detect_any_size(detector, images, cfg.detect_size)
    records, mats, keep_idx = [], [], []
    for i, (rel, det) in enumerate(zip(rels, dets)):
        r = {"source": rel, "identity": rel.split("/", 1)[0] if "/" in rel else "", "template": template_name,
             "width": int(shapes[i][1]), "height": int(shapes[i][0])}
        status, m = "no_face", None
        if det is not None:
            j = select_face(det, cfg.select, shapes[i])
            boxes, probs, pts = det
            r.update(prob=round(float(probs[j]), 6), box=np.round(boxes[j], 3).tolist(),
                     landmarks=np.round(pts[j], 3).tolist(), faces=int(len(probs)))
            if probs[j] < cfg.min_prob:
                status = "low_prob"
            else:
                status, m = "ok", similarity_transform(pts[j], template_pts)
        if m is None and cfg.on_miss != "skip":
            m = _fallback_matrix(shapes[i], cfg.size, cfg.on_miss)
            r["fallback"] = cfg.on_miss
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
        warped = warp([images[keep_idx[k]] for k in ks], [mats[k] for k in ks], cfg.size, device)
        crops.update({keep_idx[k]: w for k, w in zip(ks, warped)})
    return records, crops


def _out_name(rel: str) -> str:
    return str(Path(rel).with_suffix(".png").as_posix())


def _save_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        Image.fromarray(img).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _work(rels, cfg: AlignConfig, template_pts, template_name, device, detector=None, only=None):
    """Load, group by size, detect, align, write. Returns the records (in input order) of `only`
    (default: all); the others are still detected, so batched detection sees the same batch."""
    if only is not None and not detector_batched(detector, cfg, device):
        rels = [r for r in rels if r in only]
    detector = detector or _make_detector(cfg, device)
    inp, out = Path(cfg.inp), Path(cfg.out)
    loaded, records = {}, {}
    for rel in rels:
        try:
            loaded[rel] = load_rgb(inp / rel, still_only=True)
        except UnreadableImage as e:
            records[rel] = {"source": rel, "identity": rel.split("/", 1)[0] if "/" in rel else "",
                            "status": "skipped" if isinstance(e, NotAStillImage) else "unreadable",
                            "error": str(e).split(": ", 1)[-1], "template": template_name}
    part = [r for r in rels if r in loaded]
    if part:
        try:
            recs, crops = process_batch(part, [loaded[r] for r in part], detector, cfg, template_pts, template_name, device)
        except Exception as e:  # a failure is data, never a crash of the run
            recs, crops = [{"source": r, "identity": r.split("/", 1)[0] if "/" in r else "", "status": "error",
                            "error": f"{type(e).__name__}: {e}", "template": template_name} for r in part], {}
        for i, rec in enumerate(recs):
            if only is not None and rec["source"] not in only:
                continue
            if i in crops:
                rec["path"] = _out_name(rec["source"])
                _save_png(out / rec["path"], crops[i])
            records[rec["source"]] = rec
    return [records[r] for r in rels if only is None or r in only]


def detector_batched(detector, cfg, device) -> bool:
    return detector.batched if detector is not None else _batched(cfg, device)


def _make_detector(cfg: AlignConfig, device):
    if cfg.detector != "mtcnn":
        raise UsageError(f"'{cfg.detector}' is not a known detector (known: mtcnn)", "--detector")
    return MTCNNDetector(device=device, min_face_size=cfg.min_face_size, thresholds=cfg.thresholds,
                         batched=_batched(cfg, device))


def _batched(cfg: AlignConfig, device) -> bool:
    import torch

    if cfg.batched_detection is not None:
        return bool(cfg.batched_detection)
    return torch.device(device).type == "cuda"


_WORKER = {}


def _worker_init(cfg, template_pts, template_name):
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no worker tracebacks

    torch.set_num_threads(1)
    _WORKER.update(cfg=cfg, pts=template_pts, name=template_name, det=_make_detector(cfg, "cpu"))


def _worker_run(job):
    rels, only = job
    w = _WORKER
    return _work(rels, w["cfg"], w["pts"], w["name"], "cpu", w["det"], only)


def _read_journal(path: Path) -> dict:
    done = {}
    if path.is_file():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            try:
                r = json.loads(line)
            except (ValueError, RecursionError):  # torn last line from a crash
                continue
            if not (isinstance(r, dict) and isinstance(r.get("source"), str) and isinstance(r.get("status"), str)):
                continue  # not a record of ours: the image is redone
            if "path" in r:  # joined to --out and copied into the manifest: must stay inside --out
                safe_relpath(r["path"], path.parent, path, f"line {n} 'path'", f"delete {path.name} and rerun")
            done[r["source"]] = r
    return done


def align(cfg: AlignConfig | None = None, **kwargs) -> dict:
    """Python API of `synthgen align`; returns the summary written to align.json."""
    from synthgen.generators.stylegan2ada import resolve_device

    cfg = cfg or AlignConfig(**kwargs)
    validate_config(cfg)  # the whole config, before anything is created
    inp, out = Path(cfg.inp), Path(cfg.out)
    if not inp.is_dir():
        raise UsageError(f"{inp} is not a directory (expected an identity-folder tree of images)", "--in")
    template_name, template_pts = load_template(cfg.template, cfg.size)
    device = resolve_device(cfg.device)
    rels, skipped = list_inputs(inp)
    if not rels:
        more = f" ({len(skipped)} other files, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"{inp}: no images found{more}; expected {', '.join(IMAGE_EXTS)} files in identity folders")
    ident = _identity(cfg, template_pts, device)
    check_output_dir(out, ALIGN_JSON, ident, cfg.overwrite)
    ensure_writable_dir(out)
    remove_stale_temps(out)  # crops, manifest or align.json of a killed run: never complete files
    try:
        meta, records, todo, elapsed = _align_into(cfg, inp, out, rels, skipped, template_name, template_pts, device, ident)
    except OSError as e:  # full disk, quota, I/O error: finished crops and the journal are kept
        from synthgen.errors import describe_os_error

        raise DataError(f"writing to {out} failed: {describe_os_error(e, str(out))} (finished images are kept; "
                        "the same command resumes)") from None
    return meta


def _align_into(cfg, inp, out, rels, skipped, template_name, template_pts, device, ident):
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    meta = {"status": "running", "config": dataclasses.asdict(cfg), "identity": ident, "config_hash": config_hash(ident),
            "template_name": template_name, "synthgen": __version__, "started": started,
            "total": len(rels) + len(skipped)}
    if not (out / ALIGN_JSON).exists():
        atomic_write_text(out / ALIGN_JSON, json.dumps(meta, indent=2))
    journal_path = out / JOURNAL
    done = _read_journal(journal_path)
    done = {k: r for k, r in done.items() if "path" not in r or (out / r["path"]).is_file()}
    todo = [r for r in rels if r not in done]
    t0 = time.time()
    _run(rels, cfg, template_pts, template_name, device, journal_path, done)
    elapsed = time.time() - t0
    for rel, reason in skipped:  # every input file gets a record; these are not images we align
        done[rel] = {"source": rel, "identity": rel.split("/", 1)[0] if "/" in rel else "", "status": "skipped",
                     "error": reason, "template": template_name}
    records = [done[r] for r in sorted(rels + [r for r, _ in skipped])]
    atomic_write_text(out / MANIFEST, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    counts = {s: 0 for s in STATUSES}
    per_identity: dict[str, dict] = {}
    for r in records:
        counts[r["status"]] += 1
        pi = per_identity.setdefault(r["identity"], {s: 0 for s in STATUSES})
        pi[r["status"]] += 1
    meta = json.loads((out / ALIGN_JSON).read_text())
    meta.update(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), counts=counts,
                written=sum(1 for r in records if "path" in r), per_identity=per_identity,
                seconds_this_run=round(elapsed, 3), processed_this_run=len(todo),
                images_per_s=round(len(todo) / elapsed, 2) if elapsed > 0 and todo else None)
    atomic_write_text(out / ALIGN_JSON, json.dumps(meta, indent=2))
    journal_path.unlink(missing_ok=True)
    return meta, records, todo, elapsed


def _run(rels, cfg, template_pts, template_name, device, journal_path, done):
    """Steps are fixed slices of the full sorted list (not of what is left), so a resumed run
    puts the same images together as an uninterrupted one; finished images are not redone."""
    from tqdm import tqdm

    bar = tqdm(total=len(rels), initial=len(done), unit="img", desc="align", disable=not cfg.progress, dynamic_ncols=True)
    chunk = max(cfg.batch_size, 1)
    chunks = []
    for i in range(0, len(rels), chunk):
        part = rels[i : i + chunk]
        left = {r for r in part if r not in done}
        if left:
            chunks.append((part, left if len(left) < len(part) else None))
    with open(journal_path, "a", encoding="utf-8") as journal:
        def record(recs):
            for r in recs:
                done[r["source"]] = r
                journal.write(json.dumps(r, sort_keys=True) + "\n")
            journal.flush()
            bar.update(len(recs))

        if cfg.workers > 1 and device.type == "cpu" and len(chunks) > 1:
            ctx = mp.get_context("spawn")
            with ctx.Pool(cfg.workers, initializer=_worker_init, initargs=(cfg, template_pts, template_name)) as pool:
                for recs in pool.imap(_worker_run, chunks):
                    record(recs)
        else:
            det = _make_detector(cfg, device) if chunks else None
            for part, only in chunks:
                record(_work(part, cfg, template_pts, template_name, device, det, only))
    bar.close()


def residual(m, src, dst) -> float:
    """RMS distance (output pixels) between transformed src points and dst."""
    return float(math.sqrt(((apply_transform(m, src) - np.asarray(dst)) ** 2).sum(1).mean()))
