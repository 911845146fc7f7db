"""report.html: the audit report as one self-contained page (plots and thumbnails inlined)."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from . import metrics as M



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
