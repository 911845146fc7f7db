"""`synthgen audit`: can a synthetic identity or image be linked to a real one?

This module runs the stage: embed both sides with the chosen matcher (`matchers`, cached by
`embed`), run the analyses (`analyses`), and write report.json, flagged.csv and report.html
(`html`). See `analyses` for what each part of the report means.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthgen import __version__
from synthgen.contract import MARKERS
from synthgen.errors import DataError, UsageError
from synthgen.fsutil import atomic_path, atomic_write_text
from synthgen.runs import ensure_writable_dir
from synthgen.stage import StageSummary

from . import analyses as A
from .html import render_html


@dataclass
class AuditConfig:
    synthetic: str  # aligned folder tree, shard dir, or (--matcher embeddings) an .npz/.h5 file
    authentic: str
    out: str
    matcher: str = "facenet-vggface2"  # facenet-vggface2 | facenet-casia | iresnet | onnx | embeddings
    weights: str | None = None  # matcher weights file (offline use)
    arch: str = "r100"  # iresnet depth: r18 | r34 | r50 | r100
    fmr: float = 1e-3  # target false-match rate fixing the threshold
    threshold: float | None = None  # explicit threshold (overrides --fmr)
    batch_size: int = 256
    device: str = "auto"
    max_per_class: int | None = None  # use at most N images per identity on both sides
    top_k: int = 5  # neighbours listed per flagged item
    max_pairs: int = 200_000  # cap on sampled pairs per score distribution
    max_chance_queries: int = 10_000  # authentic queries for the nearest-neighbour chance rate
    label_map: str = "auto"  # auto | name | index: how synthetic class i finds authentic class i
    cache_dir: str | None = None  # embeddings cache; None = OUT/embeddings
    seed: int = 0  # pair sampling
    fail_on_leak: bool = False
    progress: bool = True


def validate(cfg: AuditConfig) -> None:
    """Option checks that need no file (also run by `synthgen run` before any stage starts)."""
    from .matchers import MATCHERS

    if cfg.matcher not in MATCHERS:
        raise UsageError(f"'{cfg.matcher}' is not one of {', '.join(MATCHERS)}", "--matcher")
    if not (0 < cfg.fmr < 1):
        raise UsageError(f"must be in (0, 1), got {cfg.fmr}", "--fmr")
    if cfg.threshold is not None and not (-1 <= cfg.threshold <= 1):
        raise UsageError(f"a cosine threshold must be in [-1, 1], got {cfg.threshold}", "--threshold")


def run_audit(cfg: AuditConfig | None = None, **kwargs) -> dict:
    """Python API of `synthgen audit`; returns the report dict (also written to OUT/report.json)."""
    from synthgen.device import resolve_device

    from .matchers import make_matcher

    cfg = cfg or AuditConfig(**kwargs)
    validate(cfg)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    ensure_writable_dir(out)
    matcher = make_matcher(cfg.matcher, cfg.weights, cfg.arch, device)
    t0 = time.time()
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out / "embeddings"
    sides = {}
    for side, flag in (("synthetic", "--synthetic"), ("authentic", "--authentic")):
        sides[side] = matcher.embed_path(getattr(cfg, side), flag, cache_dir=cache, max_per_class=cfg.max_per_class,
                                         batch_size=cfg.batch_size, progress=cfg.progress, desc=f"embed {side}")
        if len(sides[side][0].keys) == 0:
            raise DataError(f"{flag} {getattr(cfg, side)}: no readable images to embed")
    (syn, syn_images), (auth, auth_images) = sides["synthetic"], sides["authentic"]
    if syn.emb.shape[1] != auth.emb.shape[1]:
        raise DataError(f"embedding dimensions differ: synthetic {syn.emb.shape[1]}, authentic {auth.emb.shape[1]}")
    rng = np.random.RandomState(cfg.seed)
    d = A.Sides(syn, auth)
    dist = {}  # score arrays for plots
    calib = A.calibration(d, cfg.fmr, cfg.threshold, cfg.max_pairs, rng, dist)
    thr = calib["threshold"]
    same_label = A.same_label(d, thr, cfg.label_map, cfg.max_pairs, rng, dist)
    nearest, flagged_rows = A.nearest(d, thr, cfg.top_k, cfg.max_chance_queries, rng, device, calib["fmr_at_threshold"])
    collisions = A.collisions(d, thr, cfg.top_k, device)
    intra = A.intra_class(syn.emb, syn.identities)

    leak = bool(flagged_rows)
    report = {
        "synthgen_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": dataclasses.asdict(cfg),
        "matcher": {"name": cfg.matcher, "id": matcher.id, "device": str(device)},
        "counts": {"synthetic_images": len(syn.keys), "synthetic_identities": nearest["identities"]["count"],
                   "authentic_images": len(auth.keys), "authentic_identities": len(d.a_names),
                   "unreadable_synthetic": syn.unreadable, "unreadable_authentic": auth.unreadable},
        "calibration": calib, "same_label": same_label, "nearest": nearest,
        "collisions": {"count": len(collisions), "pairs": collisions[:1000]},
        "intra_class": intra,
        "verdict": {"leak": leak, "flagged_images": nearest["images"]["flagged"],
                    "flagged_identities": nearest["identities"]["flagged"], "threshold": thr},
        "histograms": A.histograms(dist),
        "seconds": round(time.time() - t0, 2),
    }
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "flagged.csv", flagged_rows, cfg.top_k)
    atomic_write_text(out / MARKERS["audit"], json.dumps(report, indent=1))
    atomic_write_text(out / "report.html", render_html(report, dist, flagged_rows, syn_images, auth_images))
    return StageSummary("audit", report, status="leak" if leak else "pass", config_hash=None,
                        brief={"verdict": report["verdict"], "flagged_fraction": nearest["images"]["flagged_fraction"],
                               "chance_fraction": nearest["images"]["chance_fraction"]})


def _write_csv(path: Path, rows, k) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "synthetic", "synthetic_identity", "score", "authentic", "authentic_identity"]
                   + [c for r in range(2, k + 1) for c in (f"neighbour{r}", f"score{r}")])
        for r in rows:
            extra = [v for nb in r["neighbours"][1:] for v in (nb[0], f"{nb[1]:.6f}")]
            w.writerow([r["kind"], r["synthetic"], r["synthetic_identity"], f"{r['score']:.6f}", r["authentic"],
                        r["authentic_identity"]] + extra)
