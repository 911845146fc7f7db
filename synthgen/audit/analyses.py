"""The audit's analyses, each a function of the two embedded sets (no files, no printing).

1. calibration      authentic genuine/imposter pairs -> threshold at the target FMR, EER, FNMR
2. same_label       SFace protocol: synthetic class i vs authentic class i (genuine) and vs j != i
                    (imposter), with authentic-authentic and synthetic-synthetic baselines
3. searches         every synthetic image and identity template -> top-k authentic neighbours,
                    and the null: authentic queries against other authentic identities (the
                    decision itself is in `decision`); nearest_summary / flag_rows report them
4. collisions       synthetic identity templates matching each other above the threshold
5. intra_class      per synthetic identity: mean pairwise score (consistency) and 1 - that (diversity)

Each returns a JSON-ready dict; the score arrays for plots go into `dist` (name -> (genuine,
imposter)) where a function takes one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthgen.errors import DataError, UsageError

from . import metrics as M
from .embed import Embedded


@dataclass
class Sides:
    """Both embedded sets with integer labels, as every analysis reads them."""

    syn: Embedded
    auth: Embedded

    def __post_init__(self):
        self.s_lab = np.unique(self.syn.identities, return_inverse=True)[1]
        self.a_names, self.a_lab = np.unique(self.auth.identities, return_inverse=True)


def drop_nonfinite(e: Embedded) -> tuple[Embedded, list]:
    """Rows with a NaN/inf component or a (near) zero norm removed -> (kept, excluded keys)."""
    ok = np.isfinite(e.emb).all(1)
    ok[ok] = np.linalg.norm(e.emb[ok], axis=1) > 0.5  # stored rows are unit vectors; 0 = a zero vector
    if ok.all():
        return e, []
    keep = np.flatnonzero(ok)
    bad = [e.keys[i] for i in np.flatnonzero(~ok)]
    return Embedded([e.keys[i] for i in keep], [e.identities[i] for i in keep], e.emb[keep], e.unreadable), bad


def rate(k: int, n: int) -> dict:
    """A measured rate with its exact (Clopper-Pearson) 95 % interval."""
    return {"count": int(k), "n": int(n), "rate": (k / n) if n else None, "ci95": M.clopper_pearson(int(k), int(n))}


def calibration(d: Sides, fmr: float, threshold, max_pairs: int, rng, dist: dict) -> dict:
    """Authentic genuine / imposter pairs, DISTINCT and sampled without replacement; the per-pair
    threshold at `fmr` (or the explicit one); measured FMR / FNMR with exact intervals; EER with a
    bootstrap interval. The rule of three: a rate of `fmr` needs >= 3 / fmr distinct imposter pairs."""
    gi, gj = M.genuine_pairs(d.a_lab, max_pairs, rng)
    ii, ij = M.imposter_pairs_distinct(d.a_lab, max_pairs, rng)
    if len(ii) == 0:
        raise DataError("--authentic: needs at least two identities to calibrate a threshold")
    g_total, i_total = M.pair_totals(d.a_lab)
    a_gen, a_imp = M.pair_scores(d.auth.emb, d.auth.emb, gi, gj), M.pair_scores(d.auth.emb, d.auth.emb, ii, ij)
    dist["authentic vs authentic"] = (a_gen, a_imp)
    thr = threshold if threshold is not None else M.threshold_at_fmr(a_imp, fmr)
    fm = rate(int((a_imp >= thr).sum()), len(a_imp))
    fn = rate(int((a_gen < thr).sum()), len(a_gen))
    out = {"threshold": thr,
           "threshold_source": "--threshold" if threshold is not None else f"FMR {fmr:g} on authentic imposter pairs",
           "target_fmr": fmr, "fmr_at_threshold": fm["rate"], "fmr_at_threshold_ci95": fm["ci95"],
           "fnmr_at_threshold": fn["rate"], "fnmr_at_threshold_ci95": fn["ci95"],
           "genuine_pairs_distinct": g_total, "imposter_pairs_distinct": i_total,
           "sampling": "distinct pairs, without replacement (all of them when there are at most max_pairs)",
           "imposter_pairs_needed": int(np.ceil(3 / fmr)),
           "interval_methods": "rates: exact Clopper-Pearson 95 %; EER: percentile bootstrap 95 % (200 resamples "
                               "of the pairs; pairs sharing images make the true intervals wider)",
           **M.summary(a_gen, a_imp)}
    if len(a_gen) and len(a_imp):
        out["eer_ci95"] = M.eer_bootstrap_ci(a_gen, a_imp, seed=int(rng.randint(1 << 30)))
    return out


def same_label(d: Sides, thr: float, label_map: str, max_pairs: int, rng, dist: dict) -> dict:
    """SFace's protocol; skipped (with the reason) when no synthetic label maps to an authentic one."""
    syn, auth = d.syn, d.auth
    mapping, how, reason = _label_map(syn.identities, auth.identities, label_map)
    out = {"label_map": how}
    if mapping:
        a_index = {n: k for k, n in enumerate(d.a_names)}
        s_mapped = np.array([a_index.get(mapping.get(n), -1) for n in syn.identities])
        sg_i, sg_j = _cross_genuine(s_mapped, d.a_lab, max_pairs, rng)
        keep = s_mapped >= 0
        si, sj = M.imposter_pairs(s_mapped[keep], d.a_lab, max_pairs, rng)
        si = np.flatnonzero(keep)[si]
        sa_gen, sa_imp = M.pair_scores(syn.emb, auth.emb, sg_i, sg_j), M.pair_scores(syn.emb, auth.emb, si, sj)
        dist["synthetic vs authentic (same label)"] = (sa_gen, sa_imp)
        out.update(mapped_identities=len(mapping), synthetic_vs_authentic=M.summary(sa_gen, sa_imp),
                   genuine_above_threshold=float(np.mean(sa_gen >= thr)) if len(sa_gen) else None)
    else:
        out.update(skipped=reason)
    sgi, sgj = M.genuine_pairs(d.s_lab, max_pairs, rng)
    sii, sij = M.imposter_pairs(d.s_lab, d.s_lab, max_pairs, rng, same_set=True)
    s_gen, s_imp = M.pair_scores(syn.emb, syn.emb, sgi, sgj), M.pair_scores(syn.emb, syn.emb, sii, sij)
    dist["synthetic vs synthetic"] = (s_gen, s_imp)
    a_gen, a_imp = dist["authentic vs authentic"]
    out["authentic_vs_authentic"] = M.summary(a_gen, a_imp)
    out["synthetic_vs_synthetic"] = M.summary(s_gen, s_imp)
    # identity consistency: same-class synthetic pairs this matcher accepts as one person at its
    # calibrated per-pair threshold (what the release's quality floor checks)
    out["synthetic_same_class_verified"] = {**rate(int((s_gen >= thr).sum()), len(s_gen)), "pairs": int(len(s_gen)),
                                            "threshold": float(thr)}
    return out


def searches(d: Sides, top_k: int, max_null_queries: int, rng, device, progress=False, dup_threshold=None) -> dict:
    """Every search the decision needs (none builds an N x M matrix):
    synthetic images / identity templates -> top-k authentic; the authentic set's label issues and
    the null: authentic images against the authentic gallery with their own cluster of labels left
    out (up to `max_null_queries` of them, drawn without replacement), and authentic templates
    against the other clusters' templates (`labels.find`)."""
    from . import labels as L

    syn, auth = d.syn, d.auth
    k = max(1, min(top_k, len(auth.keys)))
    img_s, img_i = M.topk_search(syn.emb, auth.emb, k, device=device, progress=progress, desc="search synthetic")
    s_names, s_tmpl = M.templates(syn.emb, syn.identities)
    a_tnames, a_tmpl = M.templates(auth.emb, auth.identities)
    kt = max(1, min(top_k, len(a_tnames)))
    id_s, id_i = M.topk_search(s_tmpl, a_tmpl, kt, device=device)
    q = np.sort(rng.permutation(len(auth.keys))[:max_null_queries])
    issues = L.find(auth.emb, d.a_lab, a_tnames, a_tmpl, auth.keys, q, dup_threshold, rng, device, progress)
    return {"k": k, "kt": kt, "img_s": img_s, "img_i": img_i, "s_names": s_names, "a_tnames": a_tnames,
            "id_s": id_s, "id_i": id_i, "null": issues["null"], "id_null": issues["id_null"], "labels": issues}


def nearest_summary(d: Sides, S: dict, thr: float, id_thr: float, flag_img, flag_id, pairwise_thr: float,
                    pairwise_fmr) -> dict:
    """Counts, fractions with exact intervals, and the chance rates (null scores >= threshold)."""
    img_best, id_best = S["img_s"][:, 0], S["id_s"][:, 0]
    null, id_null = S["null"], S["id_null"]
    ni, nd = int(np.sum(flag_img)), int(np.sum(flag_id))
    ch = int(np.sum(null >= thr))
    chp = int(np.sum(null >= pairwise_thr))
    chd = int(np.sum(id_null >= id_thr)) if len(id_null) else 0
    nn = max(len(null), 1)  # an empty null (every label one cluster) is inconclusive; its fractions are 0
    return {
        "images": {"count": len(img_best), "flagged": ni, "flagged_fraction": ni / len(img_best),
                   "flagged_ci95": M.clopper_pearson(ni, len(img_best)),
                   "chance_fraction": ch / nn, "chance_ci95": M.clopper_pearson(ch, len(null)),
                   "chance_queries": int(len(null)),
                   "chance_fraction_pairwise_threshold": chp / nn,
                   "chance_pairwise_ci95": M.clopper_pearson(chp, len(null)),
                   "best_score_mean": float(img_best.mean()), "best_score_max": float(img_best.max())},
        "identities": {"count": len(id_best), "flagged": nd, "flagged_fraction": nd / len(id_best),
                       "flagged_ci95": M.clopper_pearson(nd, len(id_best)),
                       "chance_fraction": (chd / len(id_null)) if len(id_null) else None,
                       "chance_ci95": M.clopper_pearson(chd, len(id_null)), "chance_queries": int(len(id_null)),
                       "best_score_mean": float(id_best.mean()), "best_score_max": float(id_best.max())},
        "pairwise_fmr_at_threshold": pairwise_fmr,
    }


def flag_rows(d: Sides, S: dict, flag_img, flag_id, p_img, padj_img, p_id, padj_id, matcher: str) -> list[dict]:
    """flagged.csv rows (images, then identities), best score first."""
    syn, auth = d.syn, d.auth
    img_s, img_i, id_s, id_i = S["img_s"], S["img_i"], S["id_s"], S["id_i"]
    rows = [
        {"kind": "image", "synthetic": syn.keys[r], "synthetic_identity": syn.identities[r], "score": float(img_s[r, 0]),
         "p_value": float(p_img[r]), "p_adjusted": float(padj_img[r]), "matcher": matcher,
         "authentic": auth.keys[img_i[r, 0]], "authentic_identity": auth.identities[img_i[r, 0]],
         "neighbours": [[auth.keys[img_i[r, c]], float(img_s[r, c])] for c in range(S["k"])]}
        for r in np.flatnonzero(flag_img)
    ] + [
        {"kind": "identity", "synthetic": S["s_names"][r], "synthetic_identity": S["s_names"][r],
         "score": float(id_s[r, 0]), "p_value": float(p_id[r]), "p_adjusted": float(padj_id[r]), "matcher": matcher,
         "authentic": S["a_tnames"][id_i[r, 0]], "authentic_identity": S["a_tnames"][id_i[r, 0]],
         "neighbours": [[S["a_tnames"][id_i[r, c]], float(id_s[r, c])] for c in range(S["kt"])]}
        for r in np.flatnonzero(flag_id)
    ]
    rows.sort(key=lambda r: (r["kind"] != "image", -r["score"]))
    return rows


def collisions(d: Sides, thr: float, top_k: int, device) -> list[dict]:
    """Pairs of synthetic identity templates scoring >= thr, each pair once, best first."""
    s_names, s_tmpl = M.templates(d.syn.emb, d.syn.identities)
    out = []
    if len(s_names) > 1:
        cs, ci = M.topk_search(s_tmpl, s_tmpl, min(top_k, len(s_names) - 1), device=device, exclude_self=True)
        seen = set()
        for a in range(len(s_names)):
            for c in range(cs.shape[1]):
                b = int(ci[a, c])
                if cs[a, c] >= thr and (min(a, b), max(a, b)) not in seen:
                    seen.add((min(a, b), max(a, b)))
                    out.append({"a": s_names[min(a, b)], "b": s_names[max(a, b)], "score": float(cs[a, c])})
    out.sort(key=lambda r: -r["score"])
    return out


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


def intra_class(emb, identities) -> dict:
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


def _hist(scores, bins):
    h, _ = np.histogram(scores, bins=bins, density=True)
    return h.round(5).tolist()


def histograms(dist) -> dict:
    bins = np.linspace(-1, 1, 81)
    return {"bins": bins.round(4).tolist(),
            **{name: {"genuine": _hist(g, bins) if len(g) else [], "imposter": _hist(i, bins) if len(i) else []}
               for name, (g, i) in dist.items()}}




COPY_PROBES = 64  # authentic images re-encoded to measure what a near copy scores
COPY_JPEG_QUALITY = 75  # the perturbation: a JPEG round trip (what re-publishing a photo does)
COPY_PROBE_QUANTILE = 0.05  # of the probes' scores: one odd probe image does not set the level
COPY_FLOOR_QUANTILE = 0.999  # of different-person authentic pairs: a copy must score above nearly all of them


def copy_level(matcher, images, dist: dict, seed: int) -> dict | None:
    """The score at and above which a synthetic image is a copy of the authentic image it matches,
    from the matcher's own score range (not the null), so it holds however few authentic images
    there are and whatever the null looks like:

      level = the COPY_PROBE_QUANTILE quantile of COPY_PROBES authentic images scored against their
              own JPEG round trip (quality COPY_JPEG_QUALITY);
      floor = the COPY_FLOOR_QUANTILE quantile of different-person authentic pairs (same-person
              pairs are left out: duplicate photos inside an identity are common in scraped sets).

    The threshold is the level, but never below the midpoint between the floor and 1: a copy must be
    clearly closer than different people are (when a JPEG round trip moves the matcher a lot, only
    exact and very near copies qualify). A matcher whose different-person scores crowd within 1e-3
    of 1 (a broken or mis-normalised one) has no copy level, and nothing is flagged as a copy. None
    for precomputed embeddings (no images to probe)."""
    import io

    from PIL import Image

    from .embed import _resize

    if images is None or not len(images) or not getattr(matcher, "input_size", 0):
        return None
    rng = np.random.RandomState(seed + 7919)  # apart from the audit's own sampling: its draws are unchanged
    idx = np.sort(rng.choice(len(images), min(COPY_PROBES, len(images)), replace=False))
    orig, copies = [], []
    for i in idx:
        try:
            img = _resize(images.read(int(i)), matcher.input_size)
        except Exception:  # an unreadable image is reported elsewhere; it simply is not a probe
            continue
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=COPY_JPEG_QUALITY)
        orig.append(img)
        copies.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    if not orig:
        return None
    a, b = matcher.embed(np.stack(orig)), matcher.embed(np.stack(copies))
    sims = np.sum(a.astype(np.float64) * b, axis=1)
    imp = np.asarray(dist.get("authentic vs authentic", (np.zeros(0), np.zeros(0)))[1], np.float64)
    level = float(np.quantile(sims, COPY_PROBE_QUANTILE))
    cut = max(level, DUPLICATE_AT)
    floor = _floor(imp, cut)
    kept = int(np.sum(imp < cut))  # different-label pairs the floor comes from (duplicate photos left out)
    measurable = floor is not None and 1 - floor >= 1e-3
    why = None if measurable else (
        "no different-person authentic pairs to set the floor" if floor is None else
        f"different people already score {floor:.5f} (the {COPY_FLOOR_QUANTILE:g} quantile): this matcher's scores "
        "crowd near 1, so a copy cannot be told apart")
    threshold = max(level, floor + (1 - floor) / 2) if measurable else None
    return {"threshold": threshold, "measurable": measurable, "why_not": why,
            "copy_level": level, "copy_median": float(np.median(sims)), "probes": len(orig),
            "floor": floor, "floor_pairs": kept, "duplicate_pairs_left_out": int(len(imp)) - kept,
            "what": f"the {COPY_PROBE_QUANTILE:g} quantile of {len(orig)} authentic images scored against their own "
                    f"JPEG (q {COPY_JPEG_QUALITY}) round trip, at least the midpoint between 1 and the floor (the "
                    f"{COPY_FLOOR_QUANTILE:g} quantile of {kept:,} different-person authentic pairs, those at copy level "
                    "left out as one photo under two labels)"}


USELESS_EER = 0.25  # a matcher whose authentic per-pair EER is at least this cannot tell people apart
LABEL_SENSITIVITY_MIN = 0.9  # below this, undetected label noise can still inflate the null
COPY_UNDETECTED = 0.99  # an image operating score at or above this cannot be trusted to catch copies


DUPLICATE_AT = 0.99  # different-label pairs at or above this (and the probes' copy level) are one photo


def _floor(imp, copy_at: float) -> float | None:
    """The COPY_FLOOR_QUANTILE quantile of different-label pairs scoring below `copy_at`: pairs at
    copy level are one photo under two labels (a scraper's placeholder image under many labels made
    0.1 % of pairs score 1.0 and switched the copy rule off), not two people. `copy_at` is never
    below DUPLICATE_AT: a matcher that JPEG moves far (probe level -0.15 for a hash-keyed test
    double) must not have its different-person pairs cut away."""
    imp = np.asarray(imp, np.float64)
    imp = imp[imp < copy_at]
    return float(np.quantile(imp, COPY_FLOOR_QUANTILE)) if len(imp) else None


def near_duplicate_level(copy: dict | None, dist: dict) -> float | None:
    """The score at which two authentic photos under different labels are the same photo: the copy
    level when it was measured, else the midpoint between 1 and the COPY_FLOOR_QUANTILE quantile of
    different-person pairs (None when that floor crowds within 1e-3 of 1)."""
    if copy and copy.get("measurable"):
        return float(copy["threshold"])
    imp = np.asarray(dist.get("authentic vs authentic", (np.zeros(0), np.zeros(0)))[1], np.float64)
    floor = _floor(imp, 1 - 1e-6)  # without probes, only exact duplicates are known copies
    return floor + (1 - floor) / 2 if floor is not None and 1 - floor >= 1e-3 else None


def smallest_leak(thr: float, id_thr: float, a_gen, g_t, id_level: bool) -> dict:
    """What the audit can detect, per level: the operating score (a similarity) and the share of
    authentic same-person pairs that reach it (single images; split-half templates)."""
    def level(score, genuine, what):
        ok = np.isfinite(score) and len(genuine)
        return {"score": float(score) if np.isfinite(score) else None,
                "same_person_share": float(np.mean(np.asarray(genuine) >= score)) if ok else None,
                "same_person_pairs": int(len(genuine)), "pairs": what}
    return {"image": level(thr, a_gen, "authentic same-person image pairs"),
            "identity": level(id_thr, g_t, "authentic split-half template pairs") if id_level else None}


def causes(name, cfg, rule, alpha, calib, dist, fn, fn_id, id_thr, thr, null_n, need, excluded, unreadable,
           labels, tests, shifted=(), fit=None, copy=None) -> list[dict]:
    """Why the audit cannot decide, one entry per cause: {"cause", "text", "fix"}.

    holes               non-finite embeddings or unreadable synthetic images
    too_few_authentic   a null too small for alpha, or no identity with two images
    useless_matcher     authentic per-pair EER >= USELESS_EER
    shifted             the median synthetic best score (images or identity templates) reaches the
                        median authentic same-person score: most of the set leaks (the median shift
                        of the null would otherwise hide it)
    too_many_tests      the deciding level misses more than fnmr_bound of same-person pairs at its
                        operating score (the smallest detectable leak is stated)
    copies_undetectable no copy level and an image operating score >= COPY_UNDETECTED (or none)
    contaminated_null   with too_many_tests: label issues were found and the same-person rule finds
                        fewer than LABEL_SENSITIVITY_MIN of split identities, so more may remain"""
    from .matchers import WHEN_USELESS
    from .wording import _ci, _g, _list, _n, _pct, _s

    out = []
    for side, bad in excluded.items():
        if bad:
            out.append({"cause": "holes", "fix": "Fix the matcher or inputs that produced NaN/inf embeddings, then "
                                                 "audit again.",
                        "text": f"{_n(len(bad), f'{side} embedding')} from {name} {'is' if len(bad) == 1 else 'are'} "
                                f"NaN/inf or zero and {'was' if len(bad) == 1 else 'were'} excluded: {_list(bad)}; an "
                                "audit with holes cannot pass."})
    if unreadable:
        out.append({"cause": "holes", "fix": "Fix or remove the unreadable synthetic images, then audit again.",
                    "text": f"{_n(len(unreadable), 'synthetic image')} could not be read and "
                            f"{'was' if len(unreadable) == 1 else 'were'} not audited: {_list(unreadable)}; an audit "
                            "with holes cannot pass."})
    few = "Audit against more authentic images (or raise --alpha / --fmr)."
    if rule == "search" and null_n < need:
        out.append({"cause": "too_few_authentic", "fix": few,
                    "text": f"Only {_n(null_n, 'authentic image')} to calibrate the search null ({name}); a family-wise "
                            f"rate of {_g(alpha)} needs at least {need:,} (rule of three, and 100 for the tail model)."})
    if rule == "search" and null_n >= need and fit is not None and fit.get("degenerate"):
        out.append({"cause": "too_few_authentic", "fix": "Audit against more authentic identities (not more photos "
                                                         "of the same people).",
                    "text": f"The search null has no usable tail ({name}): {fit['why']}, so no p-value can go below "
                            f"1 / {null_n + 1:,} and nothing can be tested at the level alpha needs."})
    a_gen, a_imp = dist["authentic vs authentic"]
    if rule == "pairwise" and cfg.threshold is None and len(a_imp) < need:
        out.append({"cause": "too_few_authentic", "fix": few,
                    "text": f"Only {len(a_imp):,} distinct authentic imposter pairs ({name}); a per-pair FMR of "
                            f"{_g(cfg.fmr)} needs at least {need:,} (rule of three)."})
    if not len(a_gen):
        out.append({"cause": "too_few_authentic", "fix": "Audit against authentic identities with several images each.",
                    "text": f"No authentic identity has two images: {name}'s miss rate (FNMR) cannot be measured, so "
                            "a clean result would mean nothing."})
        return out
    eer = calib.get("eer")
    if eer is not None and eer >= USELESS_EER:
        out.append({"cause": "useless_matcher", "fix": f"Matcher {name}: {WHEN_USELESS.get(name, 'use a trained face matcher')}.",
                    "text": f"{name} cannot tell authentic people apart: its equal error rate on authentic pairs is "
                            f"{_pct(eer)} (95 % CI {_ci(calib.get('eer_ci95'))}; a useful face matcher is far below "
                            f"{_pct(USELESS_EER)}), so an unflagged image says nothing."})
        return out
    if any(c["cause"] == "too_few_authentic" for c in out):
        return out
    for what, sc, gen in shifted:
        out.append({"cause": "shifted",
                    "fix": "Look at the suspects (suspects.csv): if most synthetic identities are authentic people, "
                           "the generator memorised its training set; regenerate before any release.",
                    "text": f"Most synthetic {what} score like the same person as an authentic one ({name}: median best "
                            f"score {_s(sc)}, at or above the median authentic same-person score {_s(gen)}): the null, "
                            "moved up by that median, cannot test them; either most of the set leaks or its faces "
                            "all look alike to this matcher."})
    if shifted:
        return out  # the operating scores were computed against the moved null: their power says nothing more
    # A copy of an authentic photo must be detectable: by the copy rule, or by the image test
    no_copy_rule = not (copy and copy.get("measurable"))
    if rule == "search" and no_copy_rule and not (np.isfinite(thr) and thr < COPY_UNDETECTED):
        why = (copy or {}).get("why_not") or "precomputed embeddings carry no images to probe"
        out.append({"cause": "copies_undetectable",
                    "fix": "Find out why the authentic set's different-person pairs score like copies (duplicate photos "
                           "under many labels?), fix it, and audit again; give images (not embeddings) so the copy "
                           "level can be measured.",
                    "text": f"{name} could not detect an exact copy of an authentic photo: no copy level ({why}), and "
                            f"the image test's operating score is {_s(thr)}."})
    # An identity leak is found through its template or through its images: the level with the
    # lower miss rate decides, and the audit cannot decide when both miss more than the bound.
    img = ("images", fn["rate"], fn["ci95"], thr, "image")
    lv = [img] if fn_id is None else sorted([("identity templates", fn_id["rate"], fn_id["ci95"], id_thr,
                                              "split-half template"), img], key=lambda x: x[1])
    level, miss, ci, score, pairs = lv[0]
    if miss > cfg.fnmr_bound:
        reach = "no score can reach the p-value it needs" if not np.isfinite(score) else (
            f"only {_pct(1 - miss)} of authentic same-person {pairs} pairs reach it")
        other = "" if len(lv) == 1 else (f"; single images do no better (FNMR {_pct(lv[1][1])} at {_s(lv[1][3])})"
                                         if lv[1][0] == "images" else
                                         f"; identity templates do no better (FNMR {_pct(lv[1][1])} at {_s(lv[1][3])})")
        out.append({"cause": "too_many_tests",
                    "fix": f"Use a matcher that separates these identities better than {name}, or accept a larger "
                           "--alpha; auditing a sample would not certify the rest.",
                    "text": f"{_n(tests, 'test')} are too many for {name}'s separation: at its best level ({level}) "
                            f"the smallest leak it can detect scores {_s(score) if np.isfinite(score) else 'nothing'}, and {reach} (FNMR {_pct(miss)}, "
                            f"95 % CI {_ci(ci)}; bound {_pct(cfg.fnmr_bound)}){other}, so an unflagged identity says "
                            "little."})
        sens = labels.get("sensitivity")
        if labels.get("identities_in_issues") and (sens is None or sens < LABEL_SENSITIVITY_MIN):
            out.append({"cause": "contaminated_null",
                        "fix": "Fix or remove the authentic identities listed in authentic_label_issues.csv, then "
                               "audit again.",
                        "text": f"The authentic set's own label noise may still inflate the null: "
                                f"{_pct(labels['fraction'])} of its identities are in label issues found by {name}, and "
                                f"its same-person rule finds only {_pct(sens or 0)} of split identities, so more "
                                "same-person scores can remain among the null's different-label scores."})
    return out


def suspects(d: Sides, S: dict, g: dict, alpha: float, pair_thr: float, flag_img, flag_id,
             limit: int = 1000) -> tuple[list[dict], dict]:
    """Suspects, not a decision: synthetic images (identities) whose own p-value against the null,
    before any multiple-testing correction, is <= alpha; where the null cannot give a p-value that
    small (too few authentic images, no usable tail), those at or above the calibrated per-pair
    threshold (identities: the authentic same-person template threshold). Returns (the `limit` best
    rows by p-value then score, counts before the cut). At scale nearly every clean image is over a
    per-pair threshold (9,999 of 10,000 at 10k), so that rule applies only where p-values cannot speak."""
    def pick(p, scores, fit, null_n, fallback):
        can = fit is not None and not fit.get("degenerate") or 1 / (null_n + 1) <= alpha
        return (np.asarray(p) <= alpha) if can else (np.asarray(scores) >= fallback), can

    tau = S["labels"]["same_person_threshold"]
    img_best, id_best = S["img_s"][:, 0], S["id_s"][:, 0]
    mi, img_by_p = pick(g["image_p"], img_best, g["fit"], len(S["null"]), pair_thr)
    md, id_by_p = pick(g["identity_p"], id_best, g["identity_fit"], len(S["id_null"]),
                       tau if tau is not None else pair_thr)
    rows = []
    for kind, mask, p, best, flags, by_p, thr in (
            ("image", mi, g["image_p"], img_best, flag_img, img_by_p, pair_thr),
            ("identity", md, g["identity_p"], id_best, flag_id, id_by_p, tau if tau is not None else pair_thr)):
        idx = np.flatnonzero(mask)
        if len(idx) > limit:  # the best `limit` by (p, -score), without sorting everything
            key = np.lexsort((-best[idx], p[idx]))
            idx = idx[key[:limit]]
        for r in idx:
            syn = d.syn.keys[r] if kind == "image" else S["s_names"][r]
            auth = d.auth.keys[S["img_i"][r, 0]] if kind == "image" else S["a_tnames"][S["id_i"][r, 0]]
            rows.append({"kind": kind, "synthetic": syn, "authentic": auth, "score": float(best[r]),
                         "threshold": float(alpha) if by_p else float(thr), "p_value": float(p[r]),
                         "flagged": bool(flags[r]), "by": "p-value <= alpha" if by_p else "score >= threshold"})
    rows.sort(key=lambda r: (r["p_value"], -r["score"], r["kind"], r["synthetic"]))
    counts = {"images": int(mi.sum()), "identities": int(md.sum()),
              "images_by": "p-value" if img_by_p else "per-pair threshold",
              "identities_by": "p-value" if id_by_p else "same-person template threshold"}
    return rows[:limit], counts
