"""report.html of `synthgen evaluate`: the table, ROC curves, the hardest misclassified pairs."""

from __future__ import annotations

import html

import numpy as np

from synthgen.audit.html import _png, _thumb

from . import protocol as P
from .bench import decode

HARDEST = 8  # misclassified pairs shown per benchmark


def _acc(v: dict | None) -> str:
    return "n/a" if v is None else f"{100 * v['accuracy']:.2f} ± {100 * v['std']:.2f}"


def _tar(t: dict) -> str:
    if t["tar"] is None:
        return "n/a"
    note = "" if t["supported"] else f" (only {t['imposter_pairs']:,} imposter pairs: FAR {t['far']:g} not measurable)"
    return f"{100 * t['tar']:.2f} [{100 * t['tar_ci95'][0]:.2f}, {100 * t['tar_ci95'][1]:.2f}]{note}"


def _roc_figure(pages) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for bench, unit, _ in pages:
        cos = 1 - P.distances(unit) / 2
        r = P.roc(cos, bench.issame)
        ax.plot(r["far"], r["tar"], label=bench.name)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _png(fig)


def hardest(bench, unit, res, k: int = HARDEST) -> list[dict]:
    """Misclassified pairs (each judged at its own fold's threshold, flip protocol when present),
    farthest from the threshold first."""
    v = res["flip"] or res["no_flip"]
    dist = P.distances(unit)
    thr = np.empty(len(dist))
    for f, part in enumerate(P.folds(len(dist), v["folds"])):
        thr[part] = v["fold_threshold"][f]
    wrong = np.flatnonzero((dist < thr) != bench.issame)
    order = wrong[np.argsort(-np.abs(dist[wrong] - thr[wrong]), kind="stable")][:k]
    return [{"pair": int(i), "same": bool(bench.issame[i]), "distance": float(dist[i]), "threshold": float(thr[i])}
            for i in order]


def render(report: dict, pages) -> str:
    m = report["matcher"]
    rows = []
    for r in report["benchmarks"]:
        f = r["flip"] or r["no_flip"]
        rows.append(f"<tr><td>{html.escape(r['name'])}</td><td>{r['pairs']:,}</td><td>{_acc(r['flip'])}</td>"
                    f"<td>{_acc(r['no_flip'])}</td>" + "".join(f"<td>{_tar(t)}</td>" for t in f["tar_at_far"]) + "</tr>")
    far_heads = "".join(f"<th>TAR @ FAR {t['far']:g} [95 % CI]</th>" for t in report["benchmarks"][0]["no_flip"]["tar_at_far"])
    sections = []
    for bench, unit, res in pages:
        cells = []
        for h in hardest(bench, unit, res):
            a = decode(bench.images[2 * h["pair"]], f"{bench.path} image {2 * h['pair']}")
            b = decode(bench.images[2 * h["pair"] + 1], f"{bench.path} image {2 * h['pair'] + 1}")
            cells.append(f"<figure><img src='{_thumb(a)}'><img src='{_thumb(b)}'><figcaption>pair {h['pair']}: "
                         f"{'same person, rejected' if h['same'] else 'different people, accepted'}; distance "
                         f"{h['distance']:.3f}, threshold {h['threshold']:.2f}</figcaption></figure>")
        sections.append(f"<h3>{html.escape(bench.name)}: hardest misclassified pairs</h3>"
                        + ("".join(cells) or "<p>none: every pair was classified correctly</p>"))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>synthgen evaluate</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} figure{{display:inline-block;margin:6px;width:210px}}
figcaption{{font-size:12px}}</style></head><body>
<h1>Verification accuracy</h1>
<p>Matcher <b>{html.escape(str(m['name']))}</b> ({html.escape(str(m['id']))}); weights sha256
{html.escape(str(m['weights_sha256']))}. {html.escape(report['protocol'])}.</p>
<table><tr><th>benchmark</th><th>pairs</th><th>accuracy % (flip)</th><th>accuracy % (no flip)</th>{far_heads}</tr>
{''.join(rows)}</table>
<h2>ROC</h2><img src="{_roc_figure(pages)}">
<h2>Errors</h2>{''.join(sections)}
<p>synthgen {html.escape(report['synthgen_version'])}, {html.escape(report['created'])}.</p></body></html>
"""
