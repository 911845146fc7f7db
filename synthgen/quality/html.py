"""report.html of `synthgen quality`: one self-contained page (plots and thumbnails inlined).

Order: the dataset summary (detection, pose, image quality, identity), the filters and what each
removed, the histograms (pose, sharpness and exposure, consistency and distinctness), then the
worst images and the worst classes as thumbnails.
"""

from __future__ import annotations

import html
import math

import numpy as np

from synthgen.audit.html import _png, _thumb

e = html.escape


def _fmt(v, spec=".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, spec) if isinstance(v, float) else str(v)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _dist(d: dict, spec=".3g") -> str:
    if not d or not d.get("count"):
        return "not measured"
    return (f"median {_fmt(d['p50'], spec)} (5-95 %: {_fmt(d['p05'], spec)} to {_fmt(d['p95'], spec)}; "
            f"min {_fmt(d['min'], spec)}, max {_fmt(d['max'], spec)}; {d['count']:,} measured)")


def _summary(report: dict) -> str:
    s = report["summary"]
    d = s["detection"]
    rows = [
        ("images / classes", f"{s['images']:,} / {s['classes']:,}"),
        ("detection rate", f"{_pct(d['detection_rate'])} ({d['detected']:,} of {d['with_record']:,} crops with an "
                           "align record came from a detected face)"),
        ("fallback rate", f"{_pct(d['fallback_rate'])} ({d['fallback']:,} crops written without a face detection)"),
        ("by status", ", ".join(f"{e(k)} {v:,}" for k, v in sorted(d["by_status"].items()))),
        ("detector probability", _dist(d["det_prob"], ".4f")),
        ("face size in the source (px)", _dist(d["face_px"], ".0f")),
        ("yaw (degrees)", _dist(s["pose"]["yaw"], ".1f")),
        ("pitch (degrees)", _dist(s["pose"]["pitch"], ".1f")),
        ("roll (degrees)", _dist(s["pose"]["roll"], ".1f")),
        ("sharpness (variance of the Laplacian)", _dist(s["image"]["sharpness"], ".0f")),
        ("brightness (mean luma 0-255)", _dist(s["image"]["brightness"], ".0f")),
        ("clipped pixels (fraction)", _dist(s["image"]["clipped"], ".3f")),
        ("SER-FIQ (learned quality, 0-1)", _dist(s["image"]["serfiq"], ".3f")),
    ]
    ident = s.get("identity")
    if ident:
        rows += [
            ("image to class template (cosine)", _dist(ident["template_cos"], ".3f")),
            ("class consistency, mean", _dist(ident["consistency_mean"], ".3f")),
            ("class consistency, worst image", _dist(ident["consistency_min"], ".3f")),
            ("distinctness (1 - nearest other class)", _dist(ident["distinctness"], ".3f")),
            ("classes of one image (not measured)", f"{ident['singleton_classes']:,}"),
        ]
    else:
        rows.append(("identity", "not measured (--matcher none)"))
    m = report["matcher"]
    rows.append(("matcher", "none" if m is None else f"{e(m['name'])} (<code>{e(m['id'])}</code>)"))
    rows.append(("head pose method", e(s["pose"]["method"])))
    rows.append(("learned quality score", e(report["learned_quality"])))
    return "<h2>Summary</h2><table>" + "".join(f"<tr><th>{a}</th><td>{b}</td></tr>" for a, b in rows) + "</table>"


def _filters(report: dict) -> str:
    f = report.get("filters")
    if not f:
        return "<p class='small'>No filters applied (quality options --min-det-prob, --max-yaw, ... write decisions.csv).</p>"
    rows = "".join(f"<tr><td>{e(n)}</td><td>{e(str(v['threshold']))}</td><td>{e(v['meaning'])}</td>"
                   f"<td>{v['failed']:,}</td><td>{v['first_reason']:,}</td></tr>" for n, v in f["per_filter"].items())
    return (f"<h2>Filters</h2><p>Kept <b>{f['kept']:,}</b> of {f['images']:,} images (dropped {f['dropped']:,}); "
            f"{f['classes_kept']:,} of {f['classes']:,} classes keep at least one image. Every decision is in "
            "<code>decisions.csv</code>.</p><table><tr><th>filter</th><th>threshold</th><th>measure</th>"
            f"<th>images failing it</th><th>dropped by it first</th></tr>{rows}</table>")


def _histograms(rows: list, classes: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def col(name):
        return np.array([r[name] for r in rows if r[name] is not None], np.float64)

    panels = [("yaw", "yaw (degrees)"), ("pitch", "pitch (degrees)"), ("roll", "roll (degrees)"),
              ("sharpness", "sharpness (log10 of the variance of the Laplacian)"), ("brightness", "brightness (mean luma)"),
              ("det_prob", "detector probability")]
    if any(r["serfiq"] is not None for r in rows):
        panels += [("serfiq", "SER-FIQ quality score")]
    if classes:
        panels += [("template_cos", "image to class template (cosine)")]
    cl = list(classes.values())
    extra = [("consistency_mean", "class consistency (mean cosine)"), ("distinctness", "class distinctness")] if cl else []
    n = len(panels) + len(extra)
    ncol = 3
    fig, axes = plt.subplots((n + ncol - 1) // ncol, ncol, figsize=(12, 3.0 * ((n + ncol - 1) // ncol)), squeeze=False)
    flat = list(axes.ravel())
    for ax, (name, label) in zip(flat, panels):
        v = col(name)
        if name == "sharpness":
            v = np.log10(np.maximum(v, 1e-3))
        if len(v):
            ax.hist(v, bins=40, color="tab:blue")
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
        ax.set_xlabel(label)
        ax.set_ylabel("images")
    for ax, (name, label) in zip(flat[len(panels):], extra):
        v = np.array([c[name] for c in cl if c[name] is not None], np.float64)
        if len(v):
            ax.hist(v, bins=40, color="tab:orange")
        ax.set_xlabel(label)
        ax.set_ylabel("classes")
    for ax in flat[n:]:
        ax.axis("off")
    fig.tight_layout()
    return f"<h2>Distributions</h2><img class='plot' src='{_png(fig)}'>"


def _worst(rows, images, k) -> str:
    index = {key: i for i, key in enumerate(images.keys)}

    def fig(r, caption):
        try:
            src = _thumb(images.read(index[r["key"]]))
        except Exception:
            return f"<figure><figcaption>{caption} (unreadable)</figcaption></figure>"
        return f"<figure><img src='{src}'><figcaption>{caption}</figcaption></figure>"

    def section(title, pick, caption):
        chosen = pick()[:k]
        if not chosen:
            return ""
        return f"<h3>{e(title)}</h3><div class='pairs'>" + "".join(fig(r, caption(r)) for r in chosen) + "</div>"

    def sort(name, key=lambda v: v):
        return lambda: sorted((r for r in rows if r[name] is not None), key=lambda r: key(r[name]))

    out = "<h2>Worst images</h2>"
    out += section("Fallback crops (no face detected)", lambda: [r for r in rows if r["fallback"]],
                   lambda r: f"{e(r['key'])}<br>{e(r['status'] or '')}")
    out += section("Lowest detector probability", sort("det_prob"), lambda r: f"{e(r['key'])}<br>p {r['det_prob']:.3f}")
    out += section("Largest |yaw|", sort("yaw", lambda v: -abs(v)), lambda r: f"{e(r['key'])}<br>yaw {r['yaw']:.0f}°")
    out += section("Largest |pitch|", sort("pitch", lambda v: -abs(v)),
                   lambda r: f"{e(r['key'])}<br>pitch {r['pitch']:.0f}°")
    out += section("Least sharp", sort("sharpness"), lambda r: f"{e(r['key'])}<br>sharpness {r['sharpness']:.0f}")
    out += section("Lowest SER-FIQ score", sort("serfiq"), lambda r: f"{e(r['key'])}<br>SER-FIQ {r['serfiq']:.3f}")
    out += section("Farthest from their class", sort("template_cos"),
                   lambda r: f"{e(r['key'])}<br>cosine {r['template_cos']:.3f}")
    return out


def _worst_classes(classes, images, k) -> str:
    if not classes:
        return ""
    first: dict[str, list] = {}
    for i, ident in enumerate(images.identities):
        if len(first.setdefault(ident, [])) < 4:
            first[ident].append(i)

    def strip(name):
        cells = []
        for i in first.get(name, []):
            try:
                cells.append(f"<img src='{_thumb(images.read(i), 64)}'>")
            except Exception:
                pass
        return "".join(cells)

    def table(title, items, cap):
        if not items:
            return ""
        return (f"<h3>{e(title)}</h3><table>" + "".join(f"<tr><th>{e(n)}</th><td>{cap(c)}</td><td class='strip'>"
                                                         f"{strip(n)}</td></tr>" for n, c in items) + "</table>")

    measured = [(n, c) for n, c in classes.items() if c["consistency_mean"] is not None]
    least = sorted(measured, key=lambda t: t[1]["consistency_mean"])[:k]
    near = sorted(((n, c) for n, c in classes.items() if c["distinctness"] is not None),
                  key=lambda t: t[1]["distinctness"])[:k]
    return ("<h2>Worst classes</h2>"
            + table("Least consistent (mean cosine of an image to the rest of its class)", least,
                    lambda c: f"mean {c['consistency_mean']:.3f}, worst {c['consistency_min']:.3f}, {c['images']} images")
            + table("Least distinct (closest to another class)", near,
                    lambda c: f"nearest {e(str(c['nearest_class']))}: cosine {c['nearest_cos']:.3f}"))


def render(report: dict, rows: list, classes: dict, images, worst: int = 12, decisions=None) -> str:
    inp = report["input"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>synthgen quality report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}th,td{{text-align:left;padding:4px 10px;border-bottom:1px solid #ddd;vertical-align:top}}
.small{{font-size:12px;color:#555}}.plot{{max-width:100%}}.pairs{{display:flex;flex-wrap:wrap;gap:12px}}
figure{{margin:0;font-size:11px;text-align:center;width:110px;overflow-wrap:anywhere}}
figure img{{width:96px;height:96px}}.strip img{{width:64px;height:64px;margin-right:4px}}</style></head><body>
<h1>Dataset quality report</h1>
<p>Input <code>{e(inp['path'])}</code> ({e(inp['kind'])}); config hash <code>{e(report['config_hash'][:16])}</code>.</p>
{"".join(f"<p><b>Warning:</b> {e(w)}</p>" for w in report.get("warnings", []))}{_summary(report)}{_filters(report)}{_histograms(rows, classes)}{_worst(rows, images, worst)}{_worst_classes(classes, images, worst)}
<p class='small'>synthgen {e(report['synthgen_version'])} &middot; {e(report['created'])} &middot; {report['seconds']} s.
Per image: <code>quality.csv</code>; per class: <code>classes.csv</code>; numbers: <code>report.json</code>.</p></body></html>"""
