"""`synthgen audit`: can a synthetic identity or image be linked to a real one?

Analyses (all in report.json; plotted in report.html):
1. calibration      authentic genuine/imposter pairs -> threshold at the target FMR, EER, FNMR
2. same_label       SFace protocol: synthetic class i vs authentic class i (genuine) and vs j != i
                    (imposter), with authentic-authentic and synthetic-synthetic baselines
3. nearest          every synthetic image and identity template -> top-k authentic neighbours;
                    flagged when the best score >= threshold; compared with the chance rate (the
                    same search for authentic queries against other authentic identities)
4. collisions       synthetic identity templates matching each other above the threshold
5. intra_class      per synthetic identity: mean pairwise score (consistency) and 1 - that (diversity)
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthgen import __version__
from synthgen.errors import DataError, UsageError
from synthgen.fsutil import atomic_path, atomic_write_text
from synthgen.runs import ensure_writable_dir

from . import metrics as M
from .embed import Embedded, ImageSet, embed_set, load_embeddings_file


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


def _embed_side(path, matcher, cfg: AuditConfig, flag: str, desc: str) -> tuple[Embedded, ImageSet | None]:
    if cfg.matcher == "embeddings":
        return load_embeddings_file(path, flag), None
    images = ImageSet(path, cfg.max_per_class, flag)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out) / "embeddings"
    return embed_set(images, matcher, cache, cfg.batch_size, cfg.progress, desc), images


def _label_map(syn_ids, auth_ids, mode: str):
    """-> (dict synthetic identity -> authentic identity, how, reason-if-empty)."""
    s_names, a_names = sorted(set(syn_ids)), sorted(set(auth_ids))
    a_set = set(a_names)
    by_name = {n: n for n in s_names if n in a_set}
    by_index = {}
    if all(n.isdigit() for n in s_names):
        by_index = {n: a_names[int(n)] for n in s_names if int(n) < len(a_names)}
    if mode == "name" or (mode == "auto" and by_name):
        how, m = "name", by_name
    elif mode == "index" or mode == "auto":
        how, m = "index", by_index
    else:
        raise UsageError(f"'{mode}' is not one of auto, name, index", "--label-map")
    reason = None if m else ("no synthetic identity name matches an authentic one, and synthetic names are not "
                             "class indices within the authentic class count")
    return m, how, reason


def _hist(scores, bins):
    h, _ = np.histogram(scores, bins=bins, density=True)
    return h.round(5).tolist()


def run_audit(cfg: AuditConfig | None = None, **kwargs) -> dict:
    """Python API of `synthgen audit`; returns the report dict (also written to OUT/report.json)."""
    from synthgen.generators.stylegan2ada import resolve_device

    from .matchers import make_matcher

    cfg = cfg or AuditConfig(**kwargs)
    if not (0 < cfg.fmr < 1):
        raise UsageError(f"must be in (0, 1), got {cfg.fmr}", "--fmr")
    if cfg.threshold is not None and not (-1 <= cfg.threshold <= 1):
        raise UsageError(f"a cosine threshold must be in [-1, 1], got {cfg.threshold}", "--threshold")
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    ensure_writable_dir(out)
    matcher = None if cfg.matcher == "embeddings" else make_matcher(cfg.matcher, cfg.weights, cfg.arch, device)
    t0 = time.time()
    syn, syn_images = _embed_side(cfg.synthetic, matcher, cfg, "--synthetic", "embed synthetic")
    auth, auth_images = _embed_side(cfg.authentic, matcher, cfg, "--authentic", "embed authentic")
    for side, e, flag in (("synthetic", syn, "--synthetic"), ("authentic", auth, "--authentic")):
        if len(e.keys) == 0:
            raise DataError(f"{flag} {getattr(cfg, side)}: no readable images to embed")
    if syn.emb.shape[1] != auth.emb.shape[1]:
        raise DataError(f"embedding dimensions differ: synthetic {syn.emb.shape[1]}, authentic {auth.emb.shape[1]}")
    rng = np.random.RandomState(cfg.seed)
    s_lab = np.unique(syn.identities, return_inverse=True)[1]
    a_names, a_lab = np.unique(auth.identities, return_inverse=True)
    dist = {}  # score arrays for plots

    # 1. calibration on authentic pairs
    gi, gj = M.genuine_pairs(a_lab, cfg.max_pairs, rng)
    ii, ij = M.imposter_pairs(a_lab, a_lab, cfg.max_pairs, rng, same_set=True)
    if len(ii) == 0:
        raise DataError(f"--authentic {cfg.authentic}: needs at least two identities to calibrate a threshold")
    a_gen, a_imp = M.pair_scores(auth.emb, auth.emb, gi, gj), M.pair_scores(auth.emb, auth.emb, ii, ij)
    dist["authentic vs authentic"] = (a_gen, a_imp)
    thr = cfg.threshold if cfg.threshold is not None else M.threshold_at_fmr(a_imp, cfg.fmr)
    calib = {"threshold": thr, "threshold_source": "--threshold" if cfg.threshold is not None else f"FMR {cfg.fmr:g} on authentic imposter pairs",
             "target_fmr": cfg.fmr, "fmr_at_threshold": M.fmr_at(a_imp, thr),
             "fnmr_at_threshold": M.fnmr_at(a_gen, thr) if len(a_gen) else None, **M.summary(a_gen, a_imp)}

    # 2. SFace same-label protocol
    mapping, how, reason = _label_map(syn.identities, auth.identities, cfg.label_map)
    same_label = {"label_map": how}
    if mapping:
        a_index = {n: k for k, n in enumerate(a_names)}
        s_mapped = np.array([a_index.get(mapping.get(n), -1) for n in syn.identities])
        sg_i, sg_j = _cross_genuine(s_mapped, a_lab, cfg.max_pairs, rng)
        keep = s_mapped >= 0
        si, sj = M.imposter_pairs(s_mapped[keep], a_lab, cfg.max_pairs, rng)
        si = np.flatnonzero(keep)[si]
        sa_gen, sa_imp = M.pair_scores(syn.emb, auth.emb, sg_i, sg_j), M.pair_scores(syn.emb, auth.emb, si, sj)
        dist["synthetic vs authentic (same label)"] = (sa_gen, sa_imp)
        same_label.update(mapped_identities=len(mapping), synthetic_vs_authentic=M.summary(sa_gen, sa_imp),
                          genuine_above_threshold=float(np.mean(sa_gen >= thr)) if len(sa_gen) else None)
    else:
        same_label.update(skipped=reason)
    sgi, sgj = M.genuine_pairs(s_lab, cfg.max_pairs, rng)
    sii, sij = M.imposter_pairs(s_lab, s_lab, cfg.max_pairs, rng, same_set=True)
    s_gen, s_imp = M.pair_scores(syn.emb, syn.emb, sgi, sgj), M.pair_scores(syn.emb, syn.emb, sii, sij)
    dist["synthetic vs synthetic"] = (s_gen, s_imp)
    same_label["authentic_vs_authentic"] = M.summary(a_gen, a_imp)
    same_label["synthetic_vs_synthetic"] = M.summary(s_gen, s_imp)

    # 3. nearest authentic neighbours
    k = max(1, min(cfg.top_k, len(auth.keys)))
    img_s, img_i = M.topk_search(syn.emb, auth.emb, k, device=device)
    s_names, s_tmpl = M.templates(syn.emb, syn.identities)
    a_tnames, a_tmpl = M.templates(auth.emb, auth.identities)
    kt = max(1, min(cfg.top_k, len(a_tnames)))
    id_s, id_i = M.topk_search(s_tmpl, a_tmpl, kt, device=device)
    q = rng.permutation(len(auth.keys))[: cfg.max_chance_queries]
    ch_s, _ = M.topk_search(auth.emb[q], auth.emb, 1, device=device, q_labels=a_lab[q], g_labels=a_lab, exclude_same_label=True)
    cht_s, _ = M.topk_search(a_tmpl, a_tmpl, 1, device=device, exclude_self=True) if len(a_tnames) > 1 else (np.full((1, 1), -np.inf), None)
    flagged_img = np.flatnonzero(img_s[:, 0] >= thr)
    flagged_id = np.flatnonzero(id_s[:, 0] >= thr)
    nearest = {
        "images": {"count": len(syn.keys), "flagged": int(len(flagged_img)), "flagged_fraction": float(len(flagged_img) / len(syn.keys)),
                   "chance_fraction": float(np.mean(ch_s[:, 0] >= thr)), "chance_queries": int(len(q)),
                   "best_score_mean": float(img_s[:, 0].mean()), "best_score_max": float(img_s[:, 0].max())},
        "identities": {"count": len(s_names), "flagged": int(len(flagged_id)), "flagged_fraction": float(len(flagged_id) / len(s_names)),
                       "chance_fraction": float(np.mean(cht_s[:, 0] >= thr)),
                       "best_score_mean": float(id_s[:, 0].mean()), "best_score_max": float(id_s[:, 0].max())},
        "pairwise_fmr_at_threshold": calib["fmr_at_threshold"],
    }
    flagged_rows = [
        {"kind": "image", "synthetic": syn.keys[r], "synthetic_identity": syn.identities[r], "score": float(img_s[r, 0]),
         "authentic": auth.keys[img_i[r, 0]], "authentic_identity": auth.identities[img_i[r, 0]],
         "neighbours": [[auth.keys[img_i[r, c]], float(img_s[r, c])] for c in range(k)]}
        for r in flagged_img
    ] + [
        {"kind": "identity", "synthetic": s_names[r], "synthetic_identity": s_names[r], "score": float(id_s[r, 0]),
         "authentic": a_tnames[id_i[r, 0]], "authentic_identity": a_tnames[id_i[r, 0]],
         "neighbours": [[a_tnames[id_i[r, c]], float(id_s[r, c])] for c in range(kt)]}
        for r in flagged_id
    ]
    flagged_rows.sort(key=lambda r: -r["score"])

    # 4. synthetic identity collisions
    collisions = []
    if len(s_names) > 1:
        cs, ci = M.topk_search(s_tmpl, s_tmpl, min(cfg.top_k, len(s_names) - 1), device=device, exclude_self=True)
        seen = set()
        for a in range(len(s_names)):
            for c in range(cs.shape[1]):
                b = int(ci[a, c])
                if cs[a, c] >= thr and (min(a, b), max(a, b)) not in seen:
                    seen.add((min(a, b), max(a, b)))
                    collisions.append({"a": s_names[min(a, b)], "b": s_names[max(a, b)], "score": float(cs[a, c])})
    collisions.sort(key=lambda r: -r["score"])

    # 5. intra-class consistency / diversity
    intra = _intra_class(syn.emb, syn.identities)

    leak = bool(flagged_rows)
    report = {
        "synthgen_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": dataclasses.asdict(cfg),
        "matcher": {"name": cfg.matcher, "id": matcher.id if matcher else "precomputed", "device": str(device)},
        "counts": {"synthetic_images": len(syn.keys), "synthetic_identities": len(s_names),
                   "authentic_images": len(auth.keys), "authentic_identities": len(a_names),
                   "unreadable_synthetic": syn.unreadable, "unreadable_authentic": auth.unreadable},
        "calibration": calib, "same_label": same_label, "nearest": nearest,
        "collisions": {"count": len(collisions), "pairs": collisions[:1000]},
        "intra_class": intra,
        "verdict": {"leak": leak, "flagged_images": nearest["images"]["flagged"],
                    "flagged_identities": nearest["identities"]["flagged"], "threshold": thr},
        "histograms": _histograms(dist),
        "seconds": round(time.time() - t0, 2),
    }
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "flagged.csv", flagged_rows, cfg.top_k)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    atomic_write_text(out / "report.html", render_html(report, dist, flagged_rows, syn_images, auth_images))
    return report


def _cross_genuine(s_mapped, a_lab, max_pairs, rng):
    """(synthetic i, authentic j) pairs whose mapped class is the same; all, or sampled."""
    a_order = np.argsort(a_lab, kind="stable")
    a_bounds = np.searchsorted(a_lab[a_order], np.arange(a_lab.max() + 2))
    a_count = np.diff(a_bounds)
    valid = np.flatnonzero(s_mapped >= 0)
    per = a_count[s_mapped[valid]]
    total = int(per.sum())
    if total == 0:
        return np.zeros(0, int), np.zeros(0, int)
    if total <= max_pairs:
        i = np.repeat(valid, per)
        offs = np.concatenate([np.arange(n) for n in per])
        return i, a_order[a_bounds[s_mapped[i]] + offs]
    pick = rng.choice(len(valid), max_pairs, p=per / total)
    i = valid[pick]
    offs = rng.randint(0, a_count[s_mapped[i]])
    return i, a_order[a_bounds[s_mapped[i]] + offs]


def _intra_class(emb, identities) -> dict:
    ids = np.asarray(identities)
    names, inv = np.unique(ids, return_inverse=True)
    sums = np.zeros((len(names), emb.shape[1]), np.float64)
    np.add.at(sums, inv, emb)
    n = np.bincount(inv).astype(np.float64)
    ok = n > 1
    # mean pairwise cosine within a class of unit vectors: (|sum|^2 - n) / (n (n - 1))
    cons = ((sums**2).sum(1)[ok] - n[ok]) / (n[ok] * (n[ok] - 1))
    if not ok.any():
        return {"note": "every synthetic identity has one image"}
    worst = np.argsort(cons)[:10]
    names_ok = names[ok]
    return {"identities": int(ok.sum()), "consistency_mean": float(cons.mean()), "consistency_min": float(cons.min()),
            "consistency_max": float(cons.max()), "diversity_mean": float(1 - cons.mean()),
            "least_consistent": [[str(names_ok[w]), float(cons[w])] for w in worst]}


def _histograms(dist) -> dict:
    bins = np.linspace(-1, 1, 81)
    return {"bins": bins.round(4).tolist(),
            **{name: {"genuine": _hist(g, bins) if len(g) else [], "imposter": _hist(i, bins) if len(i) else []}
               for name, (g, i) in dist.items()}}


def _write_csv(path: Path, rows, k) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "synthetic", "synthetic_identity", "score", "authentic", "authentic_identity"]
                   + [c for r in range(2, k + 1) for c in (f"neighbour{r}", f"score{r}")])
        for r in rows:
            extra = [v for nb in r["neighbours"][1:] for v in (nb[0], f"{nb[1]:.6f}")]
            w.writerow([r["kind"], r["synthetic"], r["synthetic_identity"], f"{r['score']:.6f}", r["authentic"],
                        r["authentic_identity"]] + extra)


# ----------------------------------------------------------------------------------------------
# HTML


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb(img: np.ndarray, size=96) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).resize((size, size), Image.BILINEAR).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def render_html(report, dist, flagged, syn_images, auth_images, max_pairs_shown=24) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thr = report["verdict"]["threshold"]
    figs = []
    n = len(dist)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False)
    for ax, (name, (g, i)) in zip(axes[0], dist.items()):
        bins = np.linspace(-1, 1, 81)
        if len(i):
            ax.hist(i, bins=bins, density=True, alpha=0.6, label="imposter", color="tab:blue")
        if len(g):
            ax.hist(g, bins=bins, density=True, alpha=0.6, label="genuine", color="tab:orange")
        ax.axvline(thr, color="k", ls="--", lw=1, label="threshold")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=7)
    figs.append(("Score distributions", _png(fig)))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, (g, i) in dist.items():
        if len(g) and len(i):
            _, fmr, fnmr = M.error_rates(g, i)
            a1.plot(fmr, 1 - fnmr, label=name)
            a2.plot(np.maximum(fmr, 1e-6), np.maximum(fnmr, 1e-6), label=name)
    a1.set(xscale="log", xlim=(1e-5, 1), xlabel="FMR", ylabel="1 - FNMR", title="ROC")
    a2.set(xscale="log", yscale="log", xlim=(1e-5, 1), ylim=(1e-4, 1.05), xlabel="FMR", ylabel="FNMR", title="DET")
    a1.legend(fontsize=7)
    figs.append(("ROC / DET", _png(fig)))

    e = html.escape
    v = report["verdict"]
    nr = report["nearest"]
    verdict = (f"<p class='bad'><b>{v['flagged_images']} synthetic images and {v['flagged_identities']} synthetic identities "
               f"match an authentic one</b> at threshold {thr:.4f}.</p>") if v["leak"] else \
              f"<p class='good'><b>Nothing flagged</b> at threshold {thr:.4f}.</p>"
    rows = [
        ("threshold", f"{thr:.4f} ({e(report['calibration']['threshold_source'])})"),
        ("authentic EER", _fmt(report["calibration"].get("eer"))),
        ("FNMR at threshold (authentic)", _fmt(report["calibration"].get("fnmr_at_threshold"))),
        ("flagged synthetic images", f"{nr['images']['flagged']} / {nr['images']['count']} ({nr['images']['flagged_fraction']:.4%}); chance {nr['images']['chance_fraction']:.4%}"),
        ("flagged synthetic identities", f"{nr['identities']['flagged']} / {nr['identities']['count']} ({nr['identities']['flagged_fraction']:.4%}); chance {nr['identities']['chance_fraction']:.4%}"),
        ("synthetic identity collisions", str(report["collisions"]["count"])),
        ("intra-class consistency (mean)", _fmt(report["intra_class"].get("consistency_mean"))),
    ]
    sl = report["same_label"]
    for name in ("synthetic_vs_authentic", "authentic_vs_authentic", "synthetic_vs_synthetic"):
        if name in sl and "eer" in sl[name]:
            s = sl[name]
            rows.append((f"{name.replace('_', ' ')}: EER / AUC / d'", f"{s['eer']:.4f} / {s['auc']:.4f} / {s['d_prime']:.3f}"))
    if "skipped" in sl:
        rows.append(("same-label protocol", "skipped: " + e(sl["skipped"])))
    table = "".join(f"<tr><th>{e(a)}</th><td>{b}</td></tr>" for a, b in rows)
    pairs = ""
    if syn_images is not None and auth_images is not None:
        skey = {k: i for i, k in enumerate(syn_images.keys)}
        akey = {k: i for i, k in enumerate(auth_images.keys)}
        cells = []
        for r in [r for r in flagged if r["kind"] == "image"][:max_pairs_shown]:
            try:
                a, b = syn_images.read(skey[r["synthetic"]]), auth_images.read(akey[r["authentic"]])
            except Exception:
                continue
            cells.append(f"<figure><img src='{_thumb(a)}'><img src='{_thumb(b)}'><figcaption>{e(r['synthetic'])}<br>"
                         f"&harr; {e(r['authentic'])}<br>score {r['score']:.3f}</figcaption></figure>")
        if cells:
            pairs = "<h2>Top flagged pairs (synthetic | nearest authentic)</h2><div class='pairs'>" + "".join(cells) + "</div>"
    elif flagged:
        pairs = "<p>Thumbnails are not available with precomputed embeddings.</p>"
    imgs = "".join(f"<h2>{e(t)}</h2><img class='plot' src='{src}'>" for t, src in figs)
    c = report["counts"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>synthgen identity-leakage report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}th,td{{text-align:left;padding:4px 10px;border-bottom:1px solid #ddd}}
.bad{{color:#a40000}}.good{{color:#1a6b1a}}.plot{{max-width:100%}}.pairs{{display:flex;flex-wrap:wrap;gap:12px}}
figure{{margin:0;font-size:11px;text-align:center}}figure img{{width:96px;height:96px;image-rendering:pixelated}}</style></head><body>
<h1>Identity-leakage report</h1>
<p>Synthetic: <code>{e(str(report['config']['synthetic']))}</code> ({c['synthetic_images']} images, {c['synthetic_identities']} identities)<br>
Authentic: <code>{e(str(report['config']['authentic']))}</code> ({c['authentic_images']} images, {c['authentic_identities']} identities)<br>
Matcher: <code>{e(report['matcher']['id'])}</code> &middot; synthgen {e(report['synthgen_version'])} &middot; {e(report['created'])}</p>
{verdict}<table>{table}</table>{pairs}{imgs}
<p>Full numbers: <code>report.json</code>; quarantine list: <code>flagged.csv</code>.</p></body></html>"""


def _fmt(x):
    return "n/a" if x is None else f"{x:.4f}"
