"""Thresholds on the measures -> one decision per image, every decision recorded.

    thresholds   {name: value} with names from FILTERS (None or absent: not applied)
    apply_filters(rows, thresholds) -> (decisions, summary)

Each image is checked against every applied filter, in FILTERS order. An image is dropped when
it fails any; its decision names the first filter it failed (measure, value, threshold) and lists
the others in `also_failed`. A measure that could not be computed for an image (no landmarks, no
detector probability, a class of one image) fails the filter on it: nothing unmeasured is kept by
a filter that asks for that measure. The summary counts, per filter, the images it failed (alone
or with others) and the images it was the first reason for; the first-reason counts add up to the
number dropped.

`--min-distinctness` drops whole classes. Given `classes` from `identity_measures(...,
min_distinctness=D)`, one class of each too-close pair is kept (greedy, classes in name order: a
class goes when it is closer than the threshold to a class already kept; its value is then 1 - that
cosine); without them, every class whose nearest other class is too close goes, both of a pair.
"""

from __future__ import annotations

import math

# name -> (column in the table, "min" | "max" | "abs-max" | "flag", what it means)
FILTERS = {
    "no_fallback": ("fallback", "flag", "the crop was a fallback (no face detection)"),
    "min_det_prob": ("det_prob", "min", "detector probability"),
    "max_yaw": ("yaw", "abs-max", "|yaw| in degrees"),
    "max_pitch": ("pitch", "abs-max", "|pitch| in degrees"),
    "min_sharpness": ("sharpness", "min", "variance of the Laplacian"),
    "min_serfiq": ("serfiq", "min", "SER-FIQ score (stability of the embedding under dropout)"),
    "min_consistency": ("template_cos", "min", "cosine to the class template (leave-one-out)"),
    "min_distinctness": ("distinctness", "min", "1 - cosine of the class template to the nearest other class"),
}


def _number(v):
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def check(name: str, row: dict, threshold) -> tuple[bool, object]:
    """-> (passes, the measured value) for one filter on one table row."""
    column, kind, _ = FILTERS[name]
    if kind == "flag":
        v = row.get(column) or ""
        return (not v), v
    v = _number(row.get(column))
    if v is None:
        return False, None
    if kind == "min":
        return v >= threshold, v
    if kind == "max":
        return v <= threshold, v
    return abs(v) <= threshold, v


def active(thresholds: dict) -> dict:
    """The applied filters, in FILTERS order (a flag counts when true)."""
    out = {}
    for name in FILTERS:
        t = (thresholds or {}).get(name)
        if t is None or t is False:
            continue
        out[name] = t
    return out


def apply_filters(rows: list, thresholds: dict, classes: dict | None = None) -> tuple[list, dict]:
    """rows: the quality table (dicts with `key` and the FILTERS columns) -> (decisions, summary).
    classes: the per-class measures with `too_close_to` (greedy keep-one for min_distinctness).

    decisions: one dict per row, in order: key, identity, decision (kept | dropped), measure,
    value, threshold (of the first failed filter; empty when kept), also_failed."""
    applied = active(thresholds)
    failed = {n: 0 for n in applied}
    first = {n: 0 for n in applied}
    decisions = []
    for row in rows:
        fails = []
        for name, t in applied.items():
            ok, value = check(name, row, t)
            c = (classes or {}).get(row.get("identity", "")) or {}
            if name == "min_distinctness" and "too_close_to" in c:  # greedy keep-one (identity_measures)
                ok = value is not None and c["too_close_to"] is None
                if c["too_close_to"] is not None:
                    value = 1 - c["too_close_to"][1]
            if not ok:
                fails.append((name, value, t))
                failed[name] += 1
        d = {"key": row["key"], "identity": row.get("identity", ""), "decision": "dropped" if fails else "kept",
             "measure": "", "value": "", "threshold": "", "also_failed": ""}
        if fails:
            name, value, t = fails[0]
            first[name] += 1
            d.update(measure=name, value="" if value is None else value, threshold=t if not isinstance(t, bool) else "",
                     also_failed=";".join(f[0] for f in fails[1:]))
        decisions.append(d)
    kept = sum(d["decision"] == "kept" for d in decisions)
    classes_before = {r.get("identity", "") for r in rows}
    classes_after = {d["identity"] for d in decisions if d["decision"] == "kept"}
    summary = {"thresholds": applied, "images": len(rows), "kept": kept, "dropped": len(rows) - kept,
               "classes": len(classes_before), "classes_kept": len(classes_after),
               "per_filter": {n: {"measure": FILTERS[n][0], "meaning": FILTERS[n][2], "threshold": applied[n],
                                  "failed": failed[n], "first_reason": first[n]} for n in applied}}
    return decisions, summary
