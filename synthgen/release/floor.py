"""The release's quality floor: what the released data must be, besides free of leaks, to be
certified (recorded in the card's `quality`).

    quality_floor(run, out, state, min_detection_rate, min_consistency_rate) -> dict
    detection_floor     the share of released images with a real face detection (not a fallback)
    consistency_floor   the share of synthetic same-class pairs each audit matcher verifies as one
                        person at its calibrated threshold (from the final audit report; verify
                        recomputes it from the bound report)
    class_sizes         released images per class against the planned size (reported only)
"""

from __future__ import annotations

from pathlib import Path

from synthgen.contract import identity_of

from .source import RunView, read_json


def quality_floor(run: RunView, out: Path, state: dict, min_detection_rate: float, min_consistency_rate: float) -> dict:
    """The quality floor, recorded in the card: real face detections (detection_floor) and identity
    consistency (consistency_floor) of the released images; `ok` only when both hold."""
    q = detection_floor(run, state, min_detection_rate)
    last = state["rounds"][-1]
    c = consistency_floor(read_json(out / last["report"], "rerun the release") if last["round"] else run.report,
                          min_consistency_rate)
    q["consistency"] = c
    q["class_sizes"] = class_sizes(run, state)
    if not c["ok"]:
        q["ok"] = False
        q["why"] = " ".join(w for w in (q.get("why"), c["why"]) if w)
    return q


def class_sizes(run: RunView, state: dict) -> dict:
    """Released images per class against the size the generate config planned (per_class, the
    number of --seeds, or views per instance): reported in the card, not part of the floor (a
    --policy drop release is short by design)."""
    c = run.gen_meta.get("config") or {}
    seeds = c.get("seeds")
    planned = None
    if c.get("count") is not None:
        planned = c.get("views")
    elif not seeds:
        planned = c.get("per_class")
    n: dict[str, int] = {}
    for k in state["items"]:
        n[identity_of(k)] = n.get(identity_of(k), 0) + 1
    sizes = list(n.values())
    planned = planned if isinstance(planned, int) and not isinstance(planned, bool) else None
    return {"planned": planned, "min": min(sizes) if sizes else 0, "max": max(sizes) if sizes else 0,
            "classes_short": sum(v < planned for v in sizes) if planned else None}


def consistency_floor(report: dict, floor: float) -> dict:
    """Share of synthetic same-class image pairs each audit matcher verifies as one person at its
    calibrated per-pair threshold (the final audit's same_label.synthetic_same_class_verified),
    against `floor`. A report without the measure (written before it existed) is not measured."""
    rows, no_pairs = [], False
    for m in report.get("matchers") or [report]:
        v = ((m.get("same_label") or {}) if isinstance(m, dict) else {}).get("synthetic_same_class_verified")
        no_pairs = no_pairs or (isinstance(v, dict) and v.get("pairs") == 0)
        if isinstance(v, dict) and isinstance(v.get("rate"), (int, float)) and not isinstance(v.get("rate"), bool):
            rows.append({"matcher": str(((m.get("matcher") or {}).get("name")) or "?"), "rate": float(v["rate"]),
                         "ci95": v.get("ci95"), "pairs": v.get("pairs"), "threshold": v.get("threshold")})
    bad = [r for r in rows if r["rate"] < floor]
    why = None
    if bad:
        r = bad[0]
        ci = r["ci95"] if isinstance(r["ci95"], list) and len(r["ci95"]) == 2 else None
        why = (f"Only {100 * r['rate']:.3g} %{f' (95 % CI {100 * ci[0]:.3g}-{100 * ci[1]:.3g} %)' if ci else ''} of "
               f"{r['pairs']:,} synthetic same-class image pairs verify as one person with {r['matcher']} at its "
               f"calibrated threshold {r['threshold']:.4g}; the identity-consistency floor is {100 * floor:.3g} % "
               "(release --min-consistency-rate): the classes are not consistent identities.")
    return {"measured": bool(rows), "ok": not bad, "floor": floor, "matchers": rows, "why": why,
            **({} if rows else {"note": "not measurable: no synthetic class has two images (no identity claim to "
                                        "check)" if no_pairs else "not measured: the final audit report has no "
                                        "synthetic same-class verification rate (written by an older synthgen)"})}


def detection_floor(run: RunView, state: dict, floor: float) -> dict:
    """The quality floor: the share of released images whose face was really detected (not a
    fallback crop written by --on-miss center-crop/keep). Measured only when the run aligned faces;
    a run of 100 % fallbacks (noise, not faces) is never certified."""
    if run.align_mode == "none":
        return {"measured": False, "ok": True, "floor": floor, "why": None,
                "note": "not measured: the run did not align faces (no detector ran)"}
    recs = [state["records"].get(k) or run.tree_records.get(k) or {} for k in state["items"]]
    detected = sum(1 for r in recs if r.get("status") == "ok" and not r.get("fallback"))
    rate = detected / len(recs) if recs else 0.0
    ok = rate >= floor
    why = None if ok else (f"Only {detected:,} of {len(recs):,} released images ({100 * rate:.3g} %) had a real face "
                           f"detection (the others are fallback crops); the quality floor is {100 * floor:.3g} %.")
    return {"measured": True, "ok": ok, "floor": floor, "detected": detected, "images": len(recs), "rate": rate,
            "why": why}
