"""`synthgen quality IN --out Q`: what the data is, per image and per class, measured offline.

    measure(images, matcher, ...) -> (rows, classes)   the table (one row per image) and the classes
    summarize(rows, classes)      -> dict               the dataset summary (report.json's core)
    quality(cfg)                  -> StageSummary       the stage: validate, open Q, measure, filter,
                                                         write quality.csv, classes.csv, report.json,
                                                         report.html (+ decisions.csv), marker last

Detection comes from align's records (`detection`), pose from the recorded landmarks (`pose`),
sharpness and exposure from the crops (`image`), identity from a matcher's cached embeddings
(`identity`, the cache audit uses), filters from `filters`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from pathlib import Path

import numpy as np

from synthgen import __version__
from synthgen.errors import DataError, UsageError
from synthgen.fsutil import atomic_write_text
from synthgen.imageio import UnreadableImage
from synthgen.options import check_choices, check_ranges
from synthgen.runs import check_device, check_types, config_hash
from synthgen.stage import StageSummary, now, open_output, write_marker

from . import detection as DET
from .config import QualityConfig
from .filters import FILTERS, active, apply_filters
from .identity import identity_measures
from .image import image_measures
from .pose import METHOD, head_pose

MARKER = "quality.json"
SERFIQ_MATCHERS = ("facenet-casia", "facenet-vggface2")
COLUMNS = ("key", "identity", "status", "detected", "fallback", "det_prob", "faces", "face_px", "box_w", "box_h",
           "yaw", "pitch", "roll", "sharpness", "brightness", "contrast", "clipped", "serfiq", "template_cos",
           "class_consistency_mean", "class_consistency_min", "nearest_class", "nearest_cos", "distinctness", "error")
CLASS_COLUMNS = ("identity", "images", "consistency_mean", "consistency_min", "nearest_class", "nearest_cos",
                 "distinctness", "too_close_to")
DECISION_COLUMNS = ("key", "identity", "decision", "measure", "value", "threshold", "also_failed")


def thresholds_of(cfg: QualityConfig) -> dict:
    return {name: getattr(cfg, name) for name in QualityConfig.FILTER_FIELDS}


def validate(cfg: QualityConfig, host: bool = True) -> None:
    """Every check that writes nothing and needs no input: types, choices, ranges, filters that
    need a matcher; with `host`, the device and the matcher (weights, packages: `synthgen run`
    refuses a missing dlib before generate starts). IN is checked by `check_input`."""
    check_types(cfg)
    check_choices(cfg, ("matcher", "arch", "policy"))
    check_ranges(cfg, ("batch_size", "min_det_prob", "max_yaw", "max_pitch", "min_sharpness", "min_serfiq",
                       "min_consistency", "min_distinctness", "worst"))
    if cfg.min_serfiq is not None and not cfg.serfiq:
        raise UsageError("filters on the SER-FIQ score: add --serfiq to compute it", "--min-serfiq")
    if cfg.serfiq and cfg.matcher not in SERFIQ_MATCHERS:
        raise UsageError(f"SER-FIQ needs a recognizer with dropout: --matcher {' or '.join(SERFIQ_MATCHERS)} "
                         f"(got {cfg.matcher})", "--serfiq")
    if cfg.matcher == "none":
        for name in ("min_consistency", "min_distinctness"):
            if getattr(cfg, name) is not None:
                flag = "--" + name.replace("_", "-")
                raise UsageError("this filter needs identity measures; choose a matcher (e.g. --matcher dlib) or "
                                 "drop the filter", flag)
    if isinstance(cfg.weights, str) and not cfg.weights.strip():
        raise UsageError("an empty path; give the weights file or leave the setting out", "--weights")
    if cfg.matcher in ("iresnet", "onnx") and not cfg.weights:
        raise UsageError(f"--matcher {cfg.matcher} needs --weights FILE", "--weights")
    check_device(cfg.device, "--device", host)
    if cfg.inp and cfg.out:
        inp, out = Path(cfg.inp).resolve(), Path(cfg.out).resolve()
        if out == inp or inp in out.parents:
            raise UsageError(f"{cfg.out} must not be inside the input folder {cfg.inp} (its files would be read as "
                             "images); choose another folder", "--out")
    if host:
        build_matcher(cfg)


def build_matcher(cfg: QualityConfig, device="cpu"):
    """The matcher of the config (None for `none`), built: what can refuse it refuses here."""
    if cfg.matcher == "none":
        return None
    from synthgen.audit.matchers import make_matcher

    return make_matcher(cfg.matcher, cfg.weights, cfg.arch, device)


def check_input(cfg: QualityConfig) -> None:
    """IN exists and is a folder (a missing path is a usage error, exit 2)."""
    from synthgen.safepath import require_input

    require_input(cfg.inp, "IN", "an aligned folder (synthgen align --out) or a shard folder")
    if not Path(cfg.inp).is_dir():
        raise UsageError(f"{cfg.inp} is a file, expected an aligned folder (synthgen align --out) or a shard folder",
                         "IN")


def _identity(cfg: QualityConfig, matcher_id: str | None) -> dict:
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in QualityConfig.RUNTIME_FIELDS}
    d["matcher_id"] = matcher_id
    return d


def _f(v):
    """A float for the table (None when not finite)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def measure(images, matcher=None, cache_dir=None, batch_size: int = 256, progress: bool = False,
            serfiq: bool = False, min_distinctness: float | None = None) -> tuple[list, dict]:
    """The quality table of an audit ImageSet (aligned folder or shards) -> (rows, classes).

    rows: one dict per image (COLUMNS), in the set's key order; classes: name -> identity
    measures (empty without a matcher). Embeddings go through the matcher's cache in `cache_dir`
    (audit's cache: the same set, matcher and folder reuse each other's embeddings)."""
    from tqdm import tqdm

    keys = images.keys
    recs = DET.records_for(images)
    pts = DET.landmark_array(recs, keys)
    pose = head_pose(pts)
    size = DET.face_px(pts)
    rows = []
    bar = tqdm(total=len(keys), unit="img", desc="quality: images", disable=not progress, dynamic_ncols=True)
    for i, key in enumerate(keys):
        r = recs.get(key)
        row = dict.fromkeys(COLUMNS)
        row.update(key=key, identity=images.identities[i])
        if r is not None:
            status = r.get("status")
            row.update(status=status, fallback=r.get("fallback") or "", det_prob=_f(r.get("prob")), faces=r.get("faces"),
                       detected=None if status is None else int(status == "ok" and not r.get("fallback")))
            box = r.get("box")
            if isinstance(box, list) and len(box) == 4:
                row.update(box_w=_f(box[2] - box[0]), box_h=_f(box[3] - box[1]))
        else:
            row["fallback"] = ""
        row.update(face_px=_f(size[i]), yaw=_f(pose[i, 0]), pitch=_f(pose[i, 1]), roll=_f(pose[i, 2]))
        try:
            row.update(image_measures(images.read(i)))
        except (UnreadableImage, DataError, OSError, ValueError) as e:  # an unreadable crop: measures stay empty
            row["error"] = f"unreadable crop: {str(e).split(': ', 1)[-1][:120]}"
        rows.append(row)
        bar.update(1)
    bar.close()
    if serfiq:
        from .serfiq import serfiq_set

        scores = serfiq_set(images, matcher, min(batch_size, 64), progress=progress)
        for row in rows:
            row["serfiq"] = _f(scores.get(row["key"]))
    classes = {}
    if matcher is not None:
        emb, _ = matcher.embed_path(images.path, "IN", cache_dir=cache_dir, batch_size=batch_size, progress=progress,
                                    desc=f"quality: embed ({matcher.name})", images=images)
        finite = np.isfinite(emb.emb).all(1) & (np.abs(emb.emb).sum(1) > 0)
        keep = np.flatnonzero(finite)
        tc, classes = identity_measures(emb.emb[keep], [emb.identities[j] for j in keep], min_distinctness)
        by_key = {emb.keys[j]: tc[n] for n, j in enumerate(keep)}
        for row in rows:
            row["template_cos"] = _f(by_key.get(row["key"]))
            c = classes.get(row["identity"])
            if c:
                row.update(class_consistency_mean=c["consistency_mean"], class_consistency_min=c["consistency_min"],
                           nearest_class=c["nearest_class"], nearest_cos=c["nearest_cos"], distinctness=c["distinctness"])
    return rows, classes


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def distribution(values) -> dict:
    """count, mean, min, 5/25/50/75/95 % quantiles, max of the finite values (None when empty)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], np.float64)
    if not len(v):
        return {"count": 0}
    q = np.quantile(v, QUANTILES)
    return {"count": int(len(v)), "mean": float(v.mean()), "min": float(v.min()),
            **{f"p{round(100 * p):02d}": float(x) for p, x in zip(QUANTILES, q)}, "max": float(v.max())}


def summarize(rows: list, classes: dict) -> dict:
    """The dataset summary: detection, pose, image quality, identity."""
    n = len(rows)
    known = [r for r in rows if r["detected"] is not None]
    detected = sum(r["detected"] == 1 for r in known)
    fallback = sum(bool(r["fallback"]) for r in rows)
    by_status: dict[str, int] = {}
    for r in rows:
        s = r["status"] or "no record"
        by_status[s] = by_status.get(s, 0) + 1
    col = {c: [r[c] for r in rows] for c in ("det_prob", "face_px", "yaw", "pitch", "roll", "sharpness", "brightness",
                                              "contrast", "clipped", "serfiq", "template_cos")}
    out = {
        "images": n, "classes": len({r["identity"] for r in rows}), "unreadable": sum(bool(r["error"]) for r in rows),
        "detection": {"with_record": len(known), "detected": detected, "fallback": fallback,
                      "detection_rate": detected / len(known) if known else None,
                      "fallback_rate": fallback / n if n else None, "by_status": by_status,
                      "det_prob": distribution(col["det_prob"]), "face_px": distribution(col["face_px"])},
        "pose": {"method": METHOD, **{a: distribution(col[a]) for a in ("yaw", "pitch", "roll")},
                 "abs_yaw": distribution([abs(v) for v in col["yaw"] if v is not None]),
                 "abs_pitch": distribution([abs(v) for v in col["pitch"] if v is not None])},
        "image": {c: distribution(col[c]) for c in ("sharpness", "brightness", "contrast", "clipped", "serfiq")},
    }
    if classes:
        cl = list(classes.values())
        out["identity"] = {
            "template_cos": distribution(col["template_cos"]),
            "classes_measured": sum(c["consistency_mean"] is not None for c in cl),
            "singleton_classes": sum(c["images"] == 1 for c in cl),
            "consistency_mean": distribution([c["consistency_mean"] for c in cl]),
            "consistency_min": distribution([c["consistency_min"] for c in cl]),
            "distinctness": distribution([c["distinctness"] for c in cl]),
            "nearest_cos": distribution([c["nearest_cos"] for c in cl]),
        }
    return out


def _csv(rows, columns) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in columns})
    return buf.getvalue()


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _open_set(cfg: QualityConfig):
    from synthgen.audit.embed import ImageSet

    return ImageSet(cfg.inp, None, "IN")


def quality(cfg: QualityConfig | None = None, **kwargs) -> StageSummary:
    """Python API of `synthgen quality`; returns the summary (report.json's content)."""
    from synthgen.device import resolve_device

    cfg = cfg or QualityConfig(**kwargs)
    validate(cfg, host=False)
    check_device(cfg.device, "--device", True)
    check_input(cfg)
    device = resolve_device(cfg.device)
    images = _open_set(cfg)  # a missing or empty set is refused before OUT exists
    matcher = build_matcher(cfg, device)  # weights, packages: refused before OUT exists
    out = Path(cfg.out)
    ident = _identity(cfg, getattr(matcher, "id", None))
    chash = config_hash(ident)
    open_output(out, MARKER, ident, cfg.overwrite)
    meta = {"status": "running", "config": dataclasses.asdict(cfg), "identity": ident, "config_hash": chash,
            "synthgen": __version__, "started": now()}
    write_marker(out, MARKER, meta)
    t0 = time.time()
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out / "embeddings"
    rows, classes = measure(images, matcher, cache, cfg.batch_size, cfg.progress, cfg.serfiq, cfg.min_distinctness)
    summary = summarize(rows, classes)
    warnings = []
    if summary["detection"]["with_record"] == 0:
        warnings.append(f"IN {cfg.inp}: no alignment records (no manifest.jsonl with align's records, or shards "
                        "without provenance): detection, face size and pose are not measured; run synthgen align "
                        "and measure its output")
    elif summary["detection"]["with_record"] < summary["images"]:
        n = summary["images"] - summary["detection"]["with_record"]
        warnings.append(f"IN {cfg.inp}: {n} of {summary['images']} crops have no alignment record: their detection "
                        "and pose are not measured")
    thresholds = active(thresholds_of(cfg))
    decisions, filt = (apply_filters(rows, thresholds, classes) if thresholds else (None, None))
    from synthgen.audit.provenance import provenance

    report = {"synthgen_version": __version__, "created": now(),
              "input": {"path": str(cfg.inp), "kind": images.kind, **_safe_provenance(provenance, cfg.inp)},
              "matcher": None if matcher is None else {"name": matcher.name, "id": matcher.id,
                                                       "weights_sha256": getattr(matcher, "weights_sha256", None)},
              "config_hash": chash, "warnings": warnings, "summary": summary, "filters": filt,
              "learned_quality": ("SER-FIQ (Terhörst et al. 2020): 2 sigmoid(-mean pairwise distance of 100 "
                                  f"dropout-masked {cfg.matcher} embeddings), column serfiq" if cfg.serfiq else
                                  "not computed (--serfiq with --matcher facenet-casia or facenet-vggface2)"),
              "files": ["quality.csv", "classes.csv", "report.json", "report.html"]
              + (["decisions.csv"] if decisions is not None else []),
              "seconds": round(time.time() - t0, 2)}
    atomic_write_text(out / "quality.csv", _csv(rows, COLUMNS))
    atomic_write_text(out / "classes.csv", _csv([dict(v, identity=k, too_close_to=(v.get("too_close_to") or [None])[0])
                                                 for k, v in sorted(classes.items())], CLASS_COLUMNS))
    if decisions is not None:
        atomic_write_text(out / "decisions.csv", _csv(decisions, DECISION_COLUMNS))
    from .html import render

    atomic_write_text(out / "report.html", render(report, rows, classes, images, cfg.worst, decisions))
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    meta = write_marker(out, MARKER, meta, status="complete", finished=now(), seconds=report["seconds"],
                        images=summary["images"])
    d = summary["detection"]
    brief = {"images": summary["images"], "classes": summary["classes"],
             "detection_rate": None if d["detection_rate"] is None else round(d["detection_rate"], 4),
             "fallback_rate": None if d["fallback_rate"] is None else round(d["fallback_rate"], 4)}
    if filt is not None:
        brief.update(kept=filt["kept"], dropped=filt["dropped"])
    return StageSummary("quality", report, status="complete", config_hash=chash, brief=brief)


def read_decisions(out: Path) -> list:
    """The decisions.csv a quality run with filters wrote in `out`, as dicts (DECISION_COLUMNS)."""
    from synthgen.fsutil import read_csv_rows

    path = Path(out) / "decisions.csv"
    rows = read_csv_rows(path, "rerun the quality stage with its filters")
    for n, r in enumerate(rows, 2):
        if set(DECISION_COLUMNS) - set(r) or r["decision"] not in ("kept", "dropped") or \
                (r["decision"] == "dropped" and r["measure"] not in FILTERS):
            raise DataError(f"{path}:{n}: not a decisions.csv row ({', '.join(DECISION_COLUMNS)}); rerun the "
                            "quality stage")
    return rows


def _safe_provenance(fn, path) -> dict:
    try:
        p = fn(path)
    except Exception:  # provenance is a courtesy here: never fail the measures for it
        return {}
    return {k: v for k, v in p.items() if k != "path"}


__all__ = ["COLUMNS", "FILTERS", "QualityConfig", "distribution", "measure", "quality", "summarize", "validate"]
