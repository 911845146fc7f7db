"""report.html: the audit report as one self-contained page (plots and thumbnails inlined).

Order: the verdict and its reasons, what to do next, what was audited (dataset and matcher
hashes), each matcher's validity with sample sizes and 95 % intervals, the flagged images,
identities and collision pairs with thumbnails, then the plots (every axis labelled).
"""

from __future__ import annotations

import base64
import html
import io
import math

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


def _pct(x) -> str:
    from .wording import _pct as p

    return p(x)


def _ci(ci) -> str:
    return "n/a" if ci is None else f"{_pct(ci[0])} – {_pct(ci[1])}"


def _num(x, fmt=".3f") -> str:
    if x is None:
        return "n/a"
    return format(x, fmt) if math.isfinite(x) else ("unreachable" if x > 0 else "-inf")


def _plots(plots) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = []
    bins = np.linspace(-1, 1, 81)
    for mname, dist, S, dec in plots:
        n = len(dist) + 1
        fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.3), squeeze=False)
        for ax, (name, (g, i)) in zip(axes[0], dist.items()):
            if len(i):
                ax.hist(i, bins=bins, density=True, alpha=0.6, label="imposter pairs", color="tab:blue")
            if len(g):
                ax.hist(g, bins=bins, density=True, alpha=0.6, label="genuine pairs", color="tab:orange")
            if math.isfinite(dec["operating_score"]):
                ax.axvline(dec["operating_score"], color="k", ls="--", lw=1, label="operating score")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("cosine similarity of a pair")
            ax.set_ylabel("density")
            ax.legend(fontsize=7)
        ax = axes[0][-1]
        ax.hist(S["null"], bins=bins, density=True, alpha=0.6, color="tab:gray",
                label="null: authentic best score, own cluster of labels left out")
        ax.hist(S["img_s"][:, 0], bins=bins, density=True, alpha=0.6, color="tab:red", label="synthetic best score")
        if math.isfinite(dec["operating_score"]):
            ax.axvline(dec["operating_score"], color="k", ls="--", lw=1, label="operating score")
        ax.set_title("best score against the authentic set", fontsize=9)
        ax.set_xlabel("best cosine similarity over the authentic gallery")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
        figs.append((f"Score distributions ({mname})", _png(fig)))
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
        for name, (g, i) in dist.items():
            if len(g) and len(i):
                _, fmr, fnmr = M.error_rates(g, i)
                keep = np.unique(len(fmr) - np.geomspace(1, len(fmr), 3000).astype(np.int64))  # dense at low FMR
                fmr, fnmr = fmr[keep], fnmr[keep]
                a1.plot(fmr, 1 - fnmr, label=name)
                a2.plot(np.maximum(fmr, 1e-6), np.maximum(fnmr, 1e-6), label=name)
        a1.set(xscale="log", xlim=(1e-5, 1), xlabel="false-match rate (FMR)", ylabel="true-match rate (1 - FNMR)",
               title="ROC")
        a2.set(xscale="log", yscale="log", xlim=(1e-5, 1), ylim=(1e-4, 1.05), xlabel="false-match rate (FMR)",
               ylabel="false non-match rate (FNMR)", title="DET")
        a1.legend(fontsize=7)
        figs.append((f"ROC / DET ({mname})", _png(fig)))
    return figs


def render_html(report, plots, flagged, syn_images, auth_images, sides=None, max_pairs_shown=24) -> str:
    e = html.escape
    v = report["verdict"]
    cls = {"pass": "good", "leak": "bad", "inconclusive": "warn"}[v["status"]]
    head = (f"<div class='verdict {cls}'><h2>Verdict: {e(v['status'].upper())}</h2><ul>"
            + "".join(f"<li>{e(r)}</li>" for r in v["reasons"]) + "</ul>")
    if v["next_steps"]:
        head += "<h3>What to do next</h3><ol>" + "".join(f"<li>{e(s)}</li>" for s in v["next_steps"]) + "</ol>"
    head += f"<p class='small'>Decided by the {e(v['decided_by'])}.</p></div>"
    warn = "".join(f"<p class='warn'>&#9888; {e(w)}</p>" for w in report.get("warnings", []))

    ds = report["dataset"]
    rows = []
    for side in ("synthetic", "authentic"):
        p = ds[side]
        parts = [f"<code>{e(p['path'])}</code>"]
        if "sha256" in p:
            parts.append(f"file sha256 <code>{e(p['sha256'])}</code>")
        if "generator_sha256" in p:
            parts.append(f"generator sha256 <code>{e(p['generator_sha256'])}</code>")
        for stage in ("generate", "align", "shard"):
            if stage in p:
                r = p[stage]
                what = "shard index.json" if stage == "shard" else f"{stage} record"
                parts.append(f"{what} sha256 <code>{e(r['sha256'][:16])}…</code>"
                             + (f", config hash <code>{e(r['config_hash'][:16])}…</code>" if r.get("config_hash") else "")
                             + (f", source config hash <code>{e(r['source_config_hash'][:16])}…</code>"
                                if r.get("source_config_hash") else ""))
        if len(parts) == 1:
            parts.append("no run record (run.json / align.json / index.json) found: not identified by a hash")
        rows.append((side, "<br>".join(parts)))
    for m in report["matchers"]:
        mm = m["matcher"]
        rows.append((f"matcher {mm['name']}", f"<code>{e(mm['id'])}</code>" + (
            f", weights sha256 <code>{e(mm['weights_sha256'])}</code>" if mm.get("weights_sha256") else
            " (no weights file)") + f", device {e(mm['device'])}"))
    audited = "<h2>What was audited</h2><table>" + "".join(f"<tr><th>{e(a)}</th><td>{b}</td></tr>" for a, b in rows) + "</table>"

    valid = ""
    for m in report["matchers"]:
        c, d, nr, cnt = m["calibration"], m["decision"], m["nearest"], m["counts"]
        fit = d["tail_fit"]
        fit_s = ("none (too few null scores)" if not fit else
                 f"{e(fit['model'])} over u = {fit['u']:.3f}, k = {fit['k']:,} exceedances of {fit['n']:,}; "
                 f"xi {fit['xi']:.3f} (unconstrained {fit.get('xi_unconstrained', fit['xi']):.3f}), "
                 f"sigma {fit['sigma']:.4f}; KS p {fit['ks_pvalue']:.2g}" if fit.get("ks_pvalue") is not None else
                 "degenerate (all top null scores equal)")
        ni, nd = nr["images"], nr["identities"]
        t = [
            ("sizes", f"{cnt['synthetic_images']:,} synthetic images in {cnt['synthetic_identities']:,} identities; "
                      f"{cnt['authentic_images']:,} authentic images in {cnt['authentic_identities']:,} identities"),
            ("decision rule", e(d["rule"]) + (f", alpha {d['alpha']:g} over {d['tests']:,} tests (images "
                                               f"{d.get('image_alpha', d['alpha']):g}, identities "
                                               f"{d.get('identity_alpha') or 0:g}, weighted Holm)" if d["alpha"] else "")),
            ("level that decides", e(d.get("deciding_level", "images"))),
            ("operating score (images / identities)", f"{_num(d['operating_score'])} / {_num(d['identity_operating_score'])}"),
            ("FNMR at the identity operating score (split-half templates)",
             f"{_pct(d.get('identity_fnmr_at_operating'))} (95 % CI {_ci(d.get('identity_fnmr_at_operating_ci95'))}; "
             f"{d.get('identity_genuine_pairs', 0):,} identities)" if d.get("identity_fnmr_at_operating") is not None
             else "not the deciding level"),
            ("FNMR at the operating score (authentic same-person pairs)",
             f"{_pct(d['fnmr_at_operating'])} (95 % CI {_ci(d['fnmr_at_operating_ci95'])}; {c['genuine_pairs']:,} pairs)"),
            ("FMR at the operating score (authentic imposter pairs)",
             f"{_pct(d['fmr_at_operating'])} (95 % CI {_ci(d['fmr_at_operating_ci95'])}; {c['imposter_pairs']:,} pairs)"),
            ("authentic EER", f"{_pct(c.get('eer'))} (bootstrap 95 % CI {_ci(c.get('eer_ci95'))})"),
            ("per-pair threshold", f"{c['threshold']:.4f} ({e(c['threshold_source'])}); measured FMR "
                                   f"{_pct(c['fmr_at_threshold'])} (95 % CI {_ci(c['fmr_at_threshold_ci95'])})"),
            ("distinct pairs (used / available)", f"imposter {c['imposter_pairs']:,} / {c['imposter_pairs_distinct']:,}; "
                                                  f"genuine {c['genuine_pairs']:,} / {c['genuine_pairs_distinct']:,}; "
                                                  "sampled without replacement"),
            ("null (leave-cluster-out best scores)", f"{d['null_queries']:,} authentic images; "
                                                     f"{d['identity_null_queries']:,} authentic identity templates"),
            ("authentic label issues", _labels(m.get("label_issues"))),
            ("suspects (not a decision)", f"{m.get('suspects', {}).get('images', 0):,} images, "
                                          f"{m.get('suspects', {}).get('identities', 0):,} identities (suspects.csv)"),
            ("tail model", fit_s),
            ("flagged synthetic images", f"{ni['flagged']:,} / {ni['count']:,} ({_pct(ni['flagged_fraction'])}, 95 % CI "
                                         f"{_ci(ni['flagged_ci95'])}); chance at this score {_pct(ni['chance_fraction'])}; "
                                         f"chance at the per-pair threshold {_pct(ni['chance_fraction_pairwise_threshold'])}"),
            ("flagged synthetic identities", f"{nd['flagged']:,} / {nd['count']:,} ({_pct(nd['flagged_fraction'])}, 95 % CI "
                                             f"{_ci(nd['flagged_ci95'])})"),
            ("excluded (NaN/inf)", e(", ".join(m["excluded_nonfinite"]["synthetic"] + m["excluded_nonfinite"]["authentic"]) or "none")),
            ("synthetic identity collisions", f"{m['collisions']['count']:,} pairs at the per-pair threshold"),
            ("intra-class consistency (mean)", _num(m["intra_class"].get("consistency_mean"), ".4f")),
        ]
        sl = m["same_label"]
        for name in ("synthetic_vs_authentic", "authentic_vs_authentic", "synthetic_vs_synthetic"):
            if name in sl and "eer" in sl[name]:
                s = sl[name]
                t.append((f"{name.replace('_', ' ')}: EER / AUC / d'", f"{_pct(s['eer'])} / {s['auc']:.4f} / {s['d_prime']:.3f}"))
        if "skipped" in sl:
            t.append(("same-label protocol", "skipped: " + e(sl["skipped"])))
        valid += (f"<h2>Matcher {e(m['matcher']['name'])}: validity and sample sizes</h2><table>"
                  + "".join(f"<tr><th>{e(a)}</th><td>{b}</td></tr>" for a, b in t) + "</table>")
    valid += ("<p class='small'>Intervals: rates exact Clopper-Pearson 95 %; EER percentile bootstrap 95 % "
              "(pairs treated as independent, so the true intervals are wider).</p>")

    pairs = ""
    ids = [r for r in flagged if r["kind"] == "identity"]
    if ids:
        pairs += ("<h2>Flagged synthetic identities</h2><table><tr><th>synthetic identity</th><th>nearest authentic "
                  "identity</th><th>score</th><th>p-value (Holm-adjusted)</th><th>matcher</th></tr>"
                  + "".join(f"<tr><td>{e(r['synthetic'])}</td><td>{e(r['authentic'])}</td><td>{r['score']:.3f}</td>"
                            f"<td>{r['p_value']:.2g} ({r['p_adjusted']:.2g})</td><td>{e(r['matcher'])}</td></tr>"
                            for r in ids) + "</table>")
    have_images = syn_images is not None and auth_images is not None
    imgs = [r for r in flagged if r["kind"] == "image"]
    if have_images:
        skey = {k: i for i, k in enumerate(syn_images.keys)}
        akey = {k: i for i, k in enumerate(auth_images.keys)}

        def fig(a_key, b_key, a_set, b_set, amap, bmap, cap):
            try:
                a, b = a_set.read(amap[a_key]), b_set.read(bmap[b_key])
            except Exception:
                return ""
            return f"<figure><img src='{_thumb(a)}'><img src='{_thumb(b)}'><figcaption>{cap}</figcaption></figure>"

        cells = [fig(r["synthetic"], r["authentic"], syn_images, auth_images, skey, akey,
                     f"{e(r['synthetic'])}<br>&harr; {e(r['authentic'])}<br>score {r['score']:.3f}, p {r['p_value']:.2g}")
                 for r in imgs[:max_pairs_shown]]
        if any(cells):
            pairs += ("<h2>Flagged images (synthetic | nearest authentic)</h2><div class='pairs'>" + "".join(cells)
                      + "</div>")
        closest = report["nearest"]["images"].get("closest", [])
        if not imgs and closest:
            cells = [fig(r["synthetic"], r["authentic"], syn_images, auth_images, skey, akey,
                         f"{e(r['synthetic'])}<br>&harr; {e(r['authentic'])}<br>score {r['score']:.3f}, p {r['p_value']:.2g}")
                     for r in closest]
            pairs += ("<h2>Closest pairs, none flagged (synthetic | nearest authentic)</h2><div class='pairs'>"
                      + "".join(cells) + "</div>")
        first_of = {}
        for i, ident in enumerate(syn_images.identities):
            first_of.setdefault(ident, syn_images.keys[i])
        col = report["collisions"]["pairs"][:max_pairs_shown]
        cells = [fig(first_of[c["a"]], first_of[c["b"]], syn_images, syn_images, skey, skey,
                     f"{e(c['a'])} &harr; {e(c['b'])}<br>template score {c['score']:.3f}")
                 for c in col if c["a"] in first_of and c["b"] in first_of]
        if any(cells):
            pairs += ("<h2>Synthetic identity collisions (one image of each)</h2><div class='pairs'>" + "".join(cells)
                      + "</div>")
    elif imgs:
        pairs += ("<h2>Flagged images</h2><table><tr><th>synthetic</th><th>nearest authentic</th><th>score</th>"
                  "<th>p-value</th></tr>" + "".join(f"<tr><td>{e(r['synthetic'])}</td><td>{e(r['authentic'])}</td>"
                                                   f"<td>{r['score']:.3f}</td><td>{r['p_value']:.2g}</td></tr>"
                                                   for r in imgs[:200])
                  + "</table><p>Thumbnails are not available with precomputed embeddings.</p>")
    figs = "".join(f"<h2>{e(t)}</h2><img class='plot' src='{src}'>" for t, src in _plots(plots))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>synthgen identity-leakage report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}th,td{{text-align:left;padding:4px 10px;border-bottom:1px solid #ddd;vertical-align:top}}
.verdict{{border:2px solid;padding:0 1em;margin-bottom:1em}}.bad{{color:#a40000}}.good{{color:#1a6b1a}}.warn{{color:#8a5a00}}
.small{{font-size:12px;color:#555}}.plot{{max-width:100%}}.pairs{{display:flex;flex-wrap:wrap;gap:12px}}
figure{{margin:0;font-size:11px;text-align:center}}figure img{{width:96px;height:96px;image-rendering:pixelated}}</style></head><body>
<h1>Identity-leakage report</h1>
{head}{warn}{audited}{valid}{pairs}{figs}
<p class='small'>synthgen {e(report['synthgen_version'])} &middot; {e(report['created'])} &middot; {report['seconds']} s.
Full numbers: <code>report.json</code>; quarantine list: <code>flagged.csv</code>.</p></body></html>"""


def _labels(ls) -> str:
    if not ls:
        return "not measured"
    e = html.escape
    thr = ls.get("same_person_threshold")
    return (f"{ls['same_person_pairs']:,} label pairs scoring like one person, {ls['same_photo_pairs']:,} photos under two "
            f"labels: {_pct(ls['fraction'])} of {ls['identities']:,} identities (95 % CI {_ci(ls['fraction_ci95'])}); "
            + (f"same-person template threshold {thr:.4f} (finds {_pct(ls['sensitivity'])} of split identities)"
               if thr is not None else e(f"no same-person threshold: {ls.get('why_no_threshold')}"))
            + "; listed in authentic_label_issues.csv, each cluster left out of the null as one person")
