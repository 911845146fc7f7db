"""The audit's analyses, each a function of the two embedded sets (no files, no printing).

1. calibration      authentic genuine/imposter pairs -> threshold at the target FMR, EER, FNMR
2. same_label       SFace protocol: synthetic class i vs authentic class i (genuine) and vs j != i
                    (imposter), with authentic-authentic and synthetic-synthetic baselines
3. nearest          every synthetic image and identity template -> top-k authentic neighbours;
                    flagged when the best score >= threshold; compared with the chance rate (the
                    same search for authentic queries against other authentic identities)
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


def calibration(d: Sides, fmr: float, threshold, max_pairs: int, rng, dist: dict) -> dict:
    gi, gj = M.genuine_pairs(d.a_lab, max_pairs, rng)
    ii, ij = M.imposter_pairs(d.a_lab, d.a_lab, max_pairs, rng, same_set=True)
    if len(ii) == 0:
        raise DataError("--authentic: needs at least two identities to calibrate a threshold")
    a_gen, a_imp = M.pair_scores(d.auth.emb, d.auth.emb, gi, gj), M.pair_scores(d.auth.emb, d.auth.emb, ii, ij)
    dist["authentic vs authentic"] = (a_gen, a_imp)
    thr = threshold if threshold is not None else M.threshold_at_fmr(a_imp, fmr)
    return {"threshold": thr,
            "threshold_source": "--threshold" if threshold is not None else f"FMR {fmr:g} on authentic imposter pairs",
            "target_fmr": fmr, "fmr_at_threshold": M.fmr_at(a_imp, thr),
            "fnmr_at_threshold": M.fnmr_at(a_gen, thr) if len(a_gen) else None, **M.summary(a_gen, a_imp)}


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
    return out


def nearest(d: Sides, thr: float, top_k: int, max_chance_queries: int, rng, device, pairwise_fmr) -> tuple[dict, list]:
    """-> (summary, flagged rows sorted by score): images and identity templates vs authentic."""
    syn, auth = d.syn, d.auth
    k = max(1, min(top_k, len(auth.keys)))
    img_s, img_i = M.topk_search(syn.emb, auth.emb, k, device=device)
    s_names, s_tmpl = M.templates(syn.emb, syn.identities)
    a_tnames, a_tmpl = M.templates(auth.emb, auth.identities)
    kt = max(1, min(top_k, len(a_tnames)))
    id_s, id_i = M.topk_search(s_tmpl, a_tmpl, kt, device=device)
    q = rng.permutation(len(auth.keys))[:max_chance_queries]
    ch_s, _ = M.topk_search(auth.emb[q], auth.emb, 1, device=device, q_labels=d.a_lab[q], g_labels=d.a_lab,
                            exclude_same_label=True)
    cht_s, _ = (M.topk_search(a_tmpl, a_tmpl, 1, device=device, exclude_self=True) if len(a_tnames) > 1
                else (np.full((1, 1), -np.inf), None))
    flagged_img = np.flatnonzero(img_s[:, 0] >= thr)
    flagged_id = np.flatnonzero(id_s[:, 0] >= thr)
    summary = {
        "images": {"count": len(syn.keys), "flagged": int(len(flagged_img)),
                   "flagged_fraction": float(len(flagged_img) / len(syn.keys)),
                   "chance_fraction": float(np.mean(ch_s[:, 0] >= thr)), "chance_queries": int(len(q)),
                   "best_score_mean": float(img_s[:, 0].mean()), "best_score_max": float(img_s[:, 0].max())},
        "identities": {"count": len(s_names), "flagged": int(len(flagged_id)),
                       "flagged_fraction": float(len(flagged_id) / len(s_names)),
                       "chance_fraction": float(np.mean(cht_s[:, 0] >= thr)),
                       "best_score_mean": float(id_s[:, 0].mean()), "best_score_max": float(id_s[:, 0].max())},
        "pairwise_fmr_at_threshold": pairwise_fmr,
    }
    rows = [
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
    rows.sort(key=lambda r: -r["score"])
    return summary, rows


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


