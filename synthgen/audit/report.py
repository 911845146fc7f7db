"""`synthgen audit`: can a synthetic identity or image be linked to a real one?

This module runs the stage: embed both sides with each chosen matcher (`matchers`, cached by
`embed`), run the analyses (`analyses`) and the decision (`decision`), and write report.json,
flagged.csv and report.html (`html`).

Verdict (`report.json` verdict.status):
    inconclusive  a precondition failed (reasons say which): non-finite embeddings, too few
                  authentic images / distinct pairs for the requested rate (rule of three), or a
                  matcher that misses > FNMR_BOUND of same-person pairs at its operating score.
                  Flags found anyway are still listed. Checked first: it wins over leak.
    leak          something was flagged by the deciding rule (search: Holm over all images and
                  identities at alpha; pairwise: best score >= the per-pair threshold).
    pass          nothing flagged and every precondition holds.
Several matchers: each its own calibration and null; combine "any" tests each at alpha / m
(Bonferroni across matchers: the union keeps family-wise error <= alpha), "all" each at alpha.
"""

from __future__ import annotations

import csv
import math
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from synthgen import __version__
from synthgen.contract import MARKERS
from synthgen.errors import DataError, UsageError
from synthgen.fsutil import atomic_path, atomic_write_text
from synthgen.runs import ensure_writable_dir
from synthgen.stage import StageSummary

from . import analyses as A
from . import decision as D
from .config import AuditConfig
from .html import render_html
from .provenance import _alignment_warnings, provenance
from .wording import _ci, _g, _list, _n, _pct, _s


def _names(cfg: AuditConfig) -> list[str]:
    names = [cfg.matcher] if isinstance(cfg.matcher, str) else list(cfg.matcher)
    if not names:
        raise UsageError("give at least one matcher", "--matcher")
    return names


def _weights(cfg: AuditConfig, n: int) -> list:
    w = cfg.weights
    if w is None or (not isinstance(w, str) and len(w) == 0):
        return [None] * n
    ws = [w] if isinstance(w, str) else list(w)
    if any(isinstance(x, str) and not x.strip() for x in ws):
        raise UsageError("an empty path; give the weights file, or leave the setting out (in `synthgen run`: "
                         "--set audit.weights= removes it)", "--weights")
    if len(ws) == n:
        return ws
    raise UsageError(f"{len(ws)} weights files for {n} matchers: give one --weights per --matcher, in order, or none",
                     "--weights")


def _rule(cfg: AuditConfig) -> str:
    return cfg.rule or ("pairwise" if cfg.threshold is not None else "search")


def validate(cfg: AuditConfig) -> None:
    """Option checks that need no file (also run by `synthgen run` before any stage starts)."""
    from .matchers import REGISTRY  # the live registry: a matcher registered at run time is valid

    names = _names(cfg)
    for name in names:
        if name not in REGISTRY:
            raise UsageError(f"'{name}' is not one of {', '.join(REGISTRY)}", "--matcher")
    if len(set(names)) != len(names):
        raise UsageError(f"a matcher is named twice: {', '.join(names)}", "--matcher")
    _weights(cfg, len(names))
    if not (0 < cfg.fmr < 1):
        raise UsageError(f"must be in (0, 1), got {cfg.fmr}", "--fmr")
    if cfg.threshold is not None and not (-1 <= cfg.threshold <= 1):
        raise UsageError(f"a cosine threshold must be in [-1, 1], got {cfg.threshold}", "--threshold")
    if cfg.rule not in (None, "search", "pairwise"):
        raise UsageError(f"'{cfg.rule}' is not one of search, pairwise", "--rule")
    if cfg.rule == "search" and cfg.threshold is not None:
        raise UsageError("--threshold sets a per-pair threshold: it goes with --rule pairwise", "--threshold")
    if not (0 < cfg.alpha < 1):
        raise UsageError(f"must be in (0, 1), got {cfg.alpha}", "--alpha")
    if cfg.combine not in ("any", "all"):
        raise UsageError(f"'{cfg.combine}' is not one of any, all", "--combine")
    if not (0 < cfg.fnmr_bound <= 1):
        raise UsageError(f"must be in (0, 1], got {cfg.fnmr_bound}", "--fnmr-bound")
    if cfg.max_chance_queries < 1:
        raise UsageError(f"must be >= 1, got {cfg.max_chance_queries}", "max_chance_queries")


SIDES = (("synthetic", "--synthetic"), ("authentic", "--authentic"))


def build_matchers(cfg: AuditConfig, device="cpu") -> list:
    """Every matcher of the config, built (weights read, packages imported): what can refuse a
    matcher refuses here. `synthgen run` calls it before generating anything."""
    from .matchers import make_matcher

    return [make_matcher(name, w, cfg.arch, device) for name, w in zip(_names(cfg), _weights(cfg, len(_names(cfg))))]


def open_inputs(cfg: AuditConfig, matchers) -> dict:
    """Both sides read once, before anything is embedded or created: a missing or empty set, or a
    bad embeddings file, is refused now. Returns side -> ImageSet (image matchers) or side ->
    Embedded (--matcher embeddings), handed to each matcher's embed_path."""
    from .embed import ImageSet, load_embeddings_file
    from .matchers.base import ImageMatcher

    kinds = {isinstance(m, ImageMatcher) for m in matchers}
    if len(kinds) > 1:
        raise UsageError("--matcher embeddings reads embedding files, the other matchers read images: audit them "
                         "separately", "--matcher")
    if kinds == {True}:
        return {side: ImageSet(getattr(cfg, side), cfg.max_per_class, flag) for side, flag in SIDES}
    return {side: load_embeddings_file(getattr(cfg, side), flag) for side, flag in SIDES}


def _digest(cfg: AuditConfig, sets: dict) -> dict:
    from .embed import ImageSet, pixels_digest

    if not cfg.pixel_digest or not isinstance(sets.get("synthetic"), ImageSet):
        return {}
    return {"pixels_sha256": pixels_digest(sets["synthetic"], cfg.progress)}


def run_audit(cfg: AuditConfig | None = None, **kwargs) -> dict:
    """Python API of `synthgen audit`; returns the report dict (also written to OUT/report.json)."""
    from synthgen.device import resolve_device

    cfg = cfg or AuditConfig(**kwargs)
    validate(cfg)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    names = _names(cfg)
    # Everything that can refuse runs before OUT exists and before anything is embedded: each
    # matcher is built (weights, packages), each side is listed (missing, empty).
    matchers = build_matchers(cfg, device)
    sets = open_inputs(cfg, matchers)
    ensure_writable_dir(out)
    rule = _rule(cfg)
    alpha_m = cfg.alpha / len(names) if cfg.combine == "any" else cfg.alpha
    t0 = time.time()
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out / "embeddings"
    warnings = _alignment_warnings(cfg)
    per = []
    images = (None, None)
    for name, matcher in zip(names, matchers):
        sides = {}
        for side, flag in SIDES:
            sides[side] = matcher.embed_path(getattr(cfg, side), flag, cache_dir=cache, max_per_class=cfg.max_per_class,
                                             batch_size=cfg.batch_size, progress=cfg.progress,
                                             desc=f"embed {side} ({name})", images=sets.get(side))
            if len(sides[side][0].keys) == 0:
                raise DataError(f"{flag} {getattr(cfg, side)}: no readable images to embed")
        (syn, syn_images), (auth, auth_images) = sides["synthetic"], sides["authentic"]
        if images == (None, None):
            images = (syn_images, auth_images)
        if syn.emb.shape[1] != auth.emb.shape[1]:
            raise DataError(f"embedding dimensions differ: synthetic {syn.emb.shape[1]}, authentic {auth.emb.shape[1]}")
        per.append(_analyse(cfg, name, matcher, syn, auth, device, rule, alpha_m, auth_images))

    for m in per:
        bad = m["report"]["counts"].get("unreadable_authentic") or []
        if bad:
            warnings.append(f"--authentic: {_n(len(bad), 'image')} could not be read and {'was' if len(bad) == 1 else 'were'} "
                            f"left out ({m['report']['matcher']['name']}): {_list(bad)}; fix or remove "
                            f"{'it' if len(bad) == 1 else 'them'}")
            break
    verdict, rows = _verdict(cfg, rule, alpha_m, per)
    first = per[0]
    report = {
        "synthgen_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "verdict": verdict,
        "config": dataclasses.asdict(cfg),
        "dataset": {"synthetic": dict(provenance(cfg.synthetic), **_digest(cfg, sets)),
                    "authentic": provenance(cfg.authentic)},
        "warnings": warnings,
        "matcher": first["report"]["matcher"],
        "matchers": [m["report"] for m in per],
        "counts": first["report"]["counts"],
        # the first matcher's analyses, under the keys earlier versions used
        **{k: first["report"][k] for k in ("calibration", "null", "same_label", "nearest", "collisions", "intra_class")},
        "histograms": A.histograms(first["dist"]),
        "seconds": round(time.time() - t0, 2),
    }
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "flagged.csv", rows, cfg.top_k)
    _write_rows(out / "suspects.csv", ["matcher", "kind", "synthetic", "authentic", "score", "p_value", "by",
                                       "threshold", "flagged"],
                [dict(r, matcher=m["report"]["matcher"]["name"]) for m in per for r in m["suspects"]])
    _write_rows(out / "authentic_label_issues.csv", ["matcher", "kind", "identity_a", "identity_b", "image_a", "image_b",
                                                      "score", "threshold"],
                [dict(r, matcher=m["report"]["matcher"]["name"]) for m in per for r in m["label_rows"]])
    atomic_write_text(out / MARKERS["audit"], json.dumps(report, indent=1))
    plots = [(m["report"]["matcher"]["name"], m["dist"], m["S"], m["decision"]) for m in per]
    atomic_write_text(out / "report.html", render_html(report, plots, rows, images[0], images[1],
                                                       first["sides"]))
    v = report["verdict"]
    return StageSummary("audit", report, status=v["status"], config_hash=None,
                        brief={"verdict": v, "warnings": report["warnings"], "flagged_images": v.get("flagged_images"),
                               "flagged_identities": v.get("flagged_identities")})


def decide_embedded(syn, auth, cfg: AuditConfig | None = None, device="cpu", **kwargs) -> tuple[dict, dict]:
    """The audit's analyses and verdict on two `embed.Embedded` sets (one matcher's embeddings,
    nothing read or written): (verdict, that matcher's analysis). The simulation harness
    (benchmarks/sim_gate.py) calls this: exactly what `run_audit` decides with --matcher embeddings."""
    cfg = cfg or AuditConfig(synthetic="-", authentic="-", out="-", matcher="embeddings", progress=False, **kwargs)
    rule = _rule(cfg)
    m = _analyse(cfg, "embeddings", None, syn, auth, device, rule, cfg.alpha)
    return _verdict(cfg, rule, cfg.alpha, [m])[0], m


def _analyse(cfg, name, matcher, syn, auth, device, rule, alpha, auth_images=None) -> dict:
    """One matcher: exclusions, calibration, searches, decision, summaries."""
    syn, bad_syn = A.drop_nonfinite(syn)
    auth, bad_auth = A.drop_nonfinite(auth)
    if not len(syn.keys) or not len(auth.keys):
        side = "--synthetic" if not len(syn.keys) else "--authentic"
        raise DataError(f"{side}: every embedding is NaN/inf or zero ({name}); nothing can be audited")
    rng = np.random.RandomState(cfg.seed)
    d = A.Sides(syn, auth)
    dist = {}
    calib = A.calibration(d, cfg.fmr, cfg.threshold, cfg.max_pairs, rng, dist)
    pair_thr = calib["threshold"]
    same_label = A.same_label(d, pair_thr, cfg.label_map, cfg.max_pairs, rng, dist)
    # Copies: an image at copy level against an authentic one is flagged whatever the null says
    copy = A.copy_level(matcher, auth_images, dist, cfg.seed)
    S = A.searches(d, cfg.top_k, cfg.max_chance_queries, rng, device, progress=cfg.progress,
                   dup_threshold=A.near_duplicate_level(copy, dist))
    g = D.gate(S["img_s"][:, 0], S["null"], alpha, S["id_s"][:, 0], S["id_null"], S["labels"]["null_groups"],
               S["labels"]["id_groups"])
    if rule == "search":
        thr, id_thr = g["operating_score"], g["identity_operating_score"]
        flag_img, flag_id = g["image_flag"], g["identity_flag"]
    else:
        thr = id_thr = pair_thr
        flag_img, flag_id = S["img_s"][:, 0] >= thr, S["id_s"][:, 0] >= thr
    copies = (S["img_s"][:, 0] >= copy["threshold"] if copy and copy["measurable"]
              else np.zeros(len(syn.keys), bool))
    flag_img = flag_img | copies
    a_gen, a_imp = dist["authentic vs authentic"]
    fn = A.rate(int((a_gen < thr).sum()), len(a_gen))
    fm = A.rate(int((a_imp >= thr).sum()), len(a_imp))
    lab = S["labels"]
    g_t = lab["split_half"]
    # Whether an identity leak would be found: through its template (when the identity tests carry
    # alpha: a tailed identity null) or through its images; the level that misses less decides.
    id_level = rule == "search" and g["identity_alpha"] > 0
    fn_id = A.rate(int((g_t < id_thr).sum()), len(g_t)) if id_level and len(g_t) else None
    null_n = len(S["null"])
    need = max(math.ceil(3 / alpha), D.TAIL_MIN) if rule == "search" else math.ceil(3 / cfg.fmr)
    # most of the set at the same-person level: the median shift would hide it, so the audit says so
    shifted = [(what, float(np.median(sc)), float(np.median(gen))) for what, sc, gen in
               (("images", S["img_s"][:, 0], a_gen), ("identity templates", S["id_s"][:, 0], g_t))
               if rule == "search" and len(sc) and len(gen) and np.median(sc) >= np.median(gen)]
    causes = A.causes(name, cfg, rule, alpha, calib, dist, fn, fn_id, id_thr, thr, null_n, need,
                      {"synthetic": bad_syn, "authentic": bad_auth}, syn.unreadable, lab["summary"], g["tests"],
                      shifted, g["fit"] if rule == "search" else None, copy)
    problems = [c["text"] for c in causes]
    excluded = {"synthetic": bad_syn, "authentic": bad_auth}
    fit = g["fit"]
    notes = []
    if rule == "search" and not id_level:
        notes.append(f"Only {_n(len(S['id_null']), 'authentic identity')} (clusters of labels) for the identity-level "
                     f"null ({name}; a tail needs {D.TAIL_MIN}): synthetic identities are judged through their images, "
                     "and all of alpha goes to the image tests.")
    if fit and fit.get("ks_pvalue") is not None and fit["ks_pvalue"] < 0.01:
        notes.append(f"The tail model of {name}'s null fits poorly (Kolmogorov-Smirnov p {fit['ks_pvalue']:.2g}); "
                     "p-values beyond the sampled null are approximate.")
    ls = lab["summary"]
    if ls["identities_in_issues"]:
        notes.append(f"The authentic set has label issues ({name}): {_n(ls['same_person_pairs'], 'pair')} of labels "
                     f"that score like one person and {_n(ls['same_photo_pairs'], 'photo')} under two labels, "
                     f"{_pct(ls['fraction'])} of identities (95 % CI {_ci(ls['fraction_ci95'])}); each cluster was left "
                     "out of the null as one person. The list is in authentic_label_issues.csv.")
    fit_note = " ".join(notes) or None
    detect = A.smallest_leak(thr, id_thr, a_gen, g_t, id_level)
    decision = {"rule": rule, "alpha": alpha if rule == "search" else None, "tests": g["tests"],
                "image_alpha": g["image_alpha"] if rule == "search" else None,
                "image_shift": g["image_shift"], "identity_shift": g["identity_shift"],
                "identity_alpha": g["identity_alpha"] if rule == "search" else None,
                "deciding_level": ("identity templates" if fn_id and fn_id["rate"] is not None and
                                   (fn["rate"] is None or fn_id["rate"] <= fn["rate"]) else "images"),
                "operating_score": thr, "identity_operating_score": id_thr,
                "fnmr_at_operating": fn["rate"], "fnmr_at_operating_ci95": fn["ci95"],
                "identity_fnmr_at_operating": fn_id["rate"] if fn_id else None,
                "identity_fnmr_at_operating_ci95": fn_id["ci95"] if fn_id else None,
                "identity_genuine_pairs": int(len(g_t)),
                "fmr_at_operating": fm["rate"], "fmr_at_operating_ci95": fm["ci95"],
                "smallest_detectable_leak": detect,
                "null_queries": null_n, "null_queries_needed": need if rule == "search" else None,
                "identity_null_queries": int(len(S["id_null"])),
                "tail_fit": fit, "identity_tail_fit": g["identity_fit"], "fit_note": fit_note,
                "problems": problems, "causes": causes, "copy": copy, "copies": int(copies.sum())}
    nearest = A.nearest_summary(d, S, thr, id_thr, flag_img, flag_id, pair_thr, calib["fmr_at_threshold"])
    order = np.argsort(-S["img_s"][:, 0])[:10]
    nearest["images"]["closest"] = [
        {"synthetic": syn.keys[r], "authentic": auth.keys[S["img_i"][r, 0]], "score": float(S["img_s"][r, 0]),
         "p_value": float(g["image_p"][r]), "p_adjusted": float(g["image_p_adjusted"][r]), "flagged": bool(flag_img[r])}
        for r in order]
    rows = A.flag_rows(d, S, flag_img, flag_id, g["image_p"], g["image_p_adjusted"], g["identity_p"],
                       g["identity_p_adjusted"], name)
    collisions = A.collisions(d, pair_thr, cfg.top_k, device)
    suspects, sus_n = A.suspects(d, S, g, alpha if rule == "search" else cfg.alpha, pair_thr, flag_img, flag_id)
    rep = {
        "matcher": {"name": name, "id": getattr(matcher, "id", name), "weights_sha256": getattr(matcher, "weights_sha256", None),
                    "device": str(device)},
        "excluded_nonfinite": excluded,
        "counts": {"synthetic_images": len(syn.keys), "synthetic_identities": nearest["identities"]["count"],
                   "authentic_images": len(auth.keys), "authentic_identities": len(d.a_names),
                   "unreadable_synthetic": syn.unreadable, "unreadable_authentic": auth.unreadable},
        "decision": decision, "calibration": calib,
        "null": {"what": "best score of an authentic image against the authentic gallery with its own cluster of labels left out",
                 "queries": null_n, "mean": float(S["null"].mean()) if null_n else None,
                 "max": min(float(S["null"].max()), 1.0) if null_n else None,
                 "identity_queries": int(len(S["id_null"])), "fit": fit},
        "same_label": same_label, "nearest": nearest,
        "collisions": {"count": len(collisions), "threshold": pair_thr,
                       "threshold_source": "the per-pair threshold: two synthetic identity templates scoring like "
                                           "one person", "pairs": collisions[:1000]},
        "intra_class": A.intra_class(syn.emb, syn.identities),
        "label_issues": lab["summary"],
        "suspects": {**sus_n,
                     "what": "synthetic images and identities whose own p-value against the null (no multiple-testing "
                             "correction) is <= alpha; where the null cannot give one that small, those at or above "
                             "the calibrated per-pair (images) or same-person template (identities) threshold. The "
                             "1,000 best by p-value are in suspects.csv: candidates for a look, not a decision",
                     "top": suspects[:20]},
    }
    return {"report": rep, "rows": rows, "suspects": suspects, "label_rows": lab["rows"], "dist": dist, "S": S, "decision": decision, "sides": d,
            "copy_images": {syn.keys[r] for r in np.flatnonzero(copies)},
            "flag_images": {syn.keys[r] for r in np.flatnonzero(flag_img)},
            "flag_ids": {S["s_names"][r] for r in np.flatnonzero(flag_id)}}


def _verdict(cfg, rule, alpha_m, per) -> tuple[dict, list]:
    names = [m["report"]["matcher"]["name"] for m in per]
    pick = set.union if cfg.combine == "any" else set.intersection
    imgs = pick(*[m["flag_images"] for m in per])
    ids = pick(*[m["flag_ids"] for m in per])
    rows = [r for m in per for r in m["rows"]
            if (r["kind"] == "image" and r["synthetic"] in imgs) or (r["kind"] == "identity" and r["synthetic"] in ids)]
    rows.sort(key=lambda r: (r["kind"] != "image", -r["score"]))
    problems = [p for m in per for p in m["decision"]["problems"]]
    notes = [m["decision"]["fit_note"] for m in per if m["decision"]["fit_note"]]
    copies = pick(*[m["copy_images"] for m in per])
    # a copy of an authentic image is a leak whatever the null looks like: it wins over inconclusive
    status = "leak" if copies else "inconclusive" if problems else ("leak" if imgs or ids else "pass")
    first = per[0]["decision"]
    if rule == "search":
        how = (f"search rule: each synthetic image's and identity's best score against the whole authentic set, "
               f"as a p-value against the leave-cluster-out null, weighted Holm (half to images, half to identities) "
               f"across all {_n(first['tests'], 'test')} at "
               f"alpha {_g(alpha_m)}")
        if len(per) > 1:
            how += f" per matcher ({'Bonferroni across' if cfg.combine == 'any' else 'all of'} {len(per)} matchers, "
            how += f"family-wise {_g(cfg.alpha)})"
    else:
        how = (f"pairwise rule: best score >= the per-pair threshold {_s(first['operating_score'])} "
               f"({per[0]['report']['calibration']['threshold_source']}); its false-alarm rate grows with the "
               "authentic set's size")
    reasons = []
    found = None
    by_rule = (imgs - copies) | ids  # flagged by the search or pairwise rule, not (only) as copies
    if by_rule:
        first_rows = [r for r in rows if r["synthetic"] in by_rule][:3]
        ex = "; ".join(f"{r['synthetic']} ~ {r['authentic']} (score {_s(r['score'])}, p {r['p_value']:.2g})"
                       for r in first_rows)
        parts = [_n(len(x), w) for x, w in ((imgs - copies, "synthetic image"), (ids, "synthetic identity")) if x]
        found = (f"{' and '.join(parts)} {'matches' if len(by_rule) == 1 else 'match'} an authentic one "
                 f"({how}): {ex}.")
    if copies:
        lv = "; ".join(f"{m['report']['matcher']['name']} {_s(m['decision']['copy']['threshold'])}" for m in per
                       if (m["decision"]["copy"] or {}).get("measurable"))
        reasons.append(f"{_n(len(copies), 'synthetic image')} {'is a copy' if len(copies) == 1 else 'are copies'} of an "
                       f"authentic image: best score at or above copy level ({lv}: what an authentic photo scores "
                       f"against its own re-encoded copy, well above what different people score), which is a "
                       f"leak whatever the null says: {_list(sorted(copies))}.")
        if problems:
            reasons.append("The rest of the audit could not decide (listed below); the copies alone make it a leak.")
            reasons += problems
    if status == "inconclusive":
        reasons += problems
        if found:
            reasons.append("Flagged anyway (listed in flagged.csv): " + found)
        else:
            reasons.append("Nothing was flagged, but under these conditions that is no evidence of no leak.")
        sus = [r for m in per for r in m["suspects"]]
        if sus:
            top = sorted(sus, key=lambda r: (r["p_value"], -r["score"]))[:3]
            ex = "; ".join(f"{r['synthetic']} ~ {r['authentic']} ({r['kind']}, score {_s(r['score'])}, "
                           f"p {r['p_value']:.2g})" for r in top)
            c = per[0]["report"]["suspects"]
            reasons.append(f"Suspects, not a decision ({_n(c['images'], 'image')} by {c['images_by']} and "
                           f"{_n(c['identities'], 'identity')} by {c['identities_by']}, for {names[0]}; the best "
                           f"1,000 in suspects.csv): {ex}.")
    elif status == "leak" and found:
        reasons.append(found)
        if rule == "pairwise":
            ch = per[0]["report"]["nearest"]["images"]
            reasons.append(f"At this threshold {_pct(ch['chance_fraction'])} of authentic images already match "
                           f"another real person (expect about {ch['chance_fraction'] * ch['count']:.3g} chance "
                           "flags): use the default search rule for a stated false-alarm rate.")
    elif status == "pass":
        reasons.append(f"Nothing flagged ({how}): on a clean set this rule flags anything with probability <= "
                       f"{_pct(cfg.alpha)}." if rule == "search" else f"Nothing flagged ({how}).")
    for m in per:
        dd = m["decision"]
        img = (f"single images: operating score {_s(dd['operating_score'])}, it misses "
               f"{_pct(dd['fnmr_at_operating'])} of authentic same-person image pairs (FNMR, 95 % CI "
               f"{_ci(dd['fnmr_at_operating_ci95'])})")
        if dd.get("identity_fnmr_at_operating") is not None:
            tmpl = (f"identity templates: operating score {_s(dd['identity_operating_score'])}, it misses "
                   f"{_pct(dd['identity_fnmr_at_operating'])} of split-half same-person templates (95 % CI "
                   f"{_ci(dd['identity_fnmr_at_operating_ci95'])})")
            first_, second = (tmpl, img) if dd["deciding_level"] == "identity templates" else (img, tmpl)
            lv = (f"the level that decides is {dd['deciding_level']}: {first_}; at the other level, {second} (a "
                  "single new photo of an authentic person is found only above the image operating score)")
        else:
            lv = img
        reasons.append(f"Matcher {m['report']['matcher']['name']}: {lv}; null from "
                       f"{_n(dd['null_queries'], 'authentic image')}.")
    reasons += notes
    steps = []
    img_list = sorted(imgs)
    if img_list:
        steps.append(f"Remove or regenerate {'this image' if len(img_list) == 1 else f'these {len(img_list)} images'}: "
                     f"{_list(img_list)}.")
    if ids:
        steps.append(f"Drop synthetic {'identity' if len(ids) == 1 else 'identities'} {_list(sorted(ids))} "
                     "(the identity template matches a real person).")
    if status == "inconclusive":
        steps += [c["fix"] for m in per for c in m["decision"]["causes"]]
        steps = list(dict.fromkeys(steps))
    elif status == "pass":
        steps.append("Release: keep report.json (it names the audited dataset and matcher) with the dataset.")
    legacy = {"leak": status != "pass",  # legacy gate key: true unless the gate passes (leak or inconclusive)
              "flagged_images": len(imgs), "flagged_identities": len(ids), "threshold": first["operating_score"]}
    return {"status": status, "reasons": reasons, "next_steps": steps, "rule": rule, "decided_by": how,
            "alpha": cfg.alpha if rule == "search" else None, "combine": cfg.combine, "matchers": names,
            "flagged_image_keys": img_list[:1000], "flagged_identity_names": sorted(ids)[:1000], **legacy}, rows


# ----------------------------------------------------------------------------------------------
# Provenance and input checks


def _write_csv(path: Path, rows, k) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "synthetic", "synthetic_identity", "score", "p_value", "p_adjusted", "matcher", "authentic",
                    "authentic_identity"] + [c for r in range(2, k + 1) for c in (f"neighbour{r}", f"score{r}")])
        for r in rows:
            extra = [v for nb in r["neighbours"][1:] for v in (nb[0], f"{nb[1]:.6f}")]
            w.writerow([r["kind"], r["synthetic"], r["synthetic_identity"], f"{r['score']:.6f}", f"{r['p_value']:.6g}",
                        f"{r['p_adjusted']:.6g}", r["matcher"], r["authentic"], r["authentic_identity"]] + extra)


def _write_rows(path: Path, cols, rows) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([f"{r[c]:.6f}" if isinstance(r[c], float) else r[c] for c in cols])
