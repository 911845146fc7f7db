"""The authentic set's own label issues, and the clusters the null leaves out.

Scraped training sets hold one person under two labels (CASIA-WebFace is usually estimated at
around 10 % noisy labels) and the same photo under two labels. Left in, they put same-person
scores into the leave-identity-out null, and the gate loses its power. This module finds them,
so that the null can leave out a whole cluster of labels instead of one label, and writes them
out (`authentic_label_issues.csv`): a finding curators want on its own.

same person under two labels
    Identity templates (the normalised mean of an identity's embeddings). The reference for "one
    person" is each identity's split-half template cosine: its images split at random into two
    halves, a template for each (`split_half`), which is exactly what a person split under two labels
    looks like. The reference for "different people" is each template's best score against the
    other templates. Two labels are the same person when their templates score at or above both the
    midpoint between the two medians (medians: robust to contamination of either side below half)
    and the 2nd percentile of the split-half scores: only what scores like one person merges. Two
    look-alike people merged at a lower level were left out of each other's null while a clean
    synthetic look-alike still faced the whole gallery, and was flagged (3 of 4 clean runs in review).
    Sensitivity (the share of split-half pairs at or above it) is reported with the threshold.

same photo under two labels
    An image whose best score against another cluster reaches the near-duplicate level (the
    matcher's copy level when it was measured, else the midpoint between 1 and the 0.999 quantile
    of different-person pairs). Checked on the null's queries (all authentic images up to
    `max_chance_queries`), so at scale it is a sample: the report says how many were checked.

Both kinds merge labels into clusters (union-find); the image null and the identity null leave
the query's whole cluster out.
"""

from __future__ import annotations

import numpy as np

from . import metrics as M

DUP_ROUNDS = 4  # near-duplicate merges re-search the affected queries at most this often
SAME_PERSON_QUANTILE = 0.02  # two labels merge only at a score 98 % of split-half (one-person) pairs reach


def split_half(emb: np.ndarray, lab: np.ndarray, rng) -> np.ndarray:
    """Per identity with >= 2 images: the cosine between the templates of a random half of its
    images and of the other half (the genuine template score, at half the images)."""
    n_id = int(lab.max()) + 1 if len(lab) else 0
    perm = rng.permutation(len(lab))
    order = perm[np.argsort(lab[perm], kind="stable")]  # grouped by identity, random within
    srt = lab[order]
    start = np.searchsorted(srt, srt, side="left")
    rank = np.arange(len(order)) - start
    count = np.bincount(lab, minlength=n_id)
    half = np.zeros(len(lab), np.int64)
    half[order] = (rank >= count[srt] // 2).astype(np.int64)
    sums = M.group_sums(emb, 2 * lab + half, 2 * n_id)
    a, b = sums[0::2], sums[1::2]
    ok = count >= 2
    na, nb = np.linalg.norm(a[ok], axis=1), np.linalg.norm(b[ok], axis=1)
    return (np.sum(a[ok] * b[ok], 1) / np.maximum(na * nb, 1e-12)).astype(np.float64)


class _Union:
    def __init__(self, n):
        self.p = np.arange(n)

    def find(self, a):
        while self.p[a] != a:
            self.p[a] = self.p[self.p[a]]
            a = self.p[a]
        return a

    def join(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.p[max(a, b)] = min(a, b)

    def labels(self):
        return np.array([self.find(i) for i in range(len(self.p))])


def find(auth_emb, a_lab, a_names, a_tmpl, keys, q, dup_threshold: float | None, rng, device="cpu",
         progress=False) -> dict:
    """Label issues, cluster labels and the null.

    Returns {"null", "null_index" (the gallery image each null score came from), "null_groups" (the
    cluster of each null query), "id_null", "id_groups",
    "id_cluster" (cluster per identity), "split_half", "same_person_threshold", "rows" (CSV rows),
    "summary"}."""
    n_id = len(a_names)
    g_t = split_half(auth_emb, a_lab, rng)
    uf = _Union(n_id)
    rows = []
    tau = None
    kt = int(min(10, n_id - 1))
    if kt >= 1:
        ts, ti = M.topk_search(a_tmpl, a_tmpl, kt, device=device, exclude_self=True)
        best_other = ts[:, 0].astype(np.float64)
        if len(g_t):
            lo, hi = float(np.median(best_other)), float(np.median(g_t))
            tau = max((lo + hi) / 2, float(np.quantile(g_t, SAME_PERSON_QUANTILE))) if hi > lo else None
        if tau is not None:
            seen = set()
            for a, c in zip(*np.nonzero(ts >= tau)):
                pair = (min(int(a), int(ti[a, c])), max(int(a), int(ti[a, c])))
                if pair not in seen:
                    seen.add(pair)
                    uf.join(*pair)
                    rows.append({"kind": "same person under two labels", "identity_a": a_names[pair[0]],
                                 "identity_b": a_names[pair[1]], "image_a": "", "image_b": "",
                                 "score": float(ts[a, c]), "threshold": tau})
    # the image null, leaving out clusters; near-duplicates across clusters merge and re-search
    cl = uf.labels()
    null, arg = M.leave_identity_out_best(auth_emb, cl[a_lab], q, device=device, progress=progress,
                                          desc="search authentic (null)")
    dup_keys = set()
    if dup_threshold is not None:
        for _ in range(DUP_ROUNDS):
            hit = np.flatnonzero(null >= dup_threshold)
            if not len(hit):
                break
            for h in hit:
                i, j = int(q[h]), int(arg[h])
                pair = (min(i, j), max(i, j))
                if pair not in dup_keys:
                    dup_keys.add(pair)
                    rows.append({"kind": "same photo under two labels", "identity_a": a_names[a_lab[pair[0]]],
                                 "identity_b": a_names[a_lab[pair[1]]], "image_a": keys[pair[0]], "image_b": keys[pair[1]],
                                 "score": float(null[h]), "threshold": dup_threshold})
                uf.join(int(a_lab[i]), int(a_lab[j]))
            cl = uf.labels()
            # merges only widen what each query leaves out: a best score outside its (grown) cluster
            # is still the best; the queries whose best is now inside their own cluster are redone
            redo = np.flatnonzero(cl[a_lab[q]] == cl[a_lab[arg]])
            s, i2 = M.leave_identity_out_best(auth_emb, cl[a_lab], q[redo], device=device)
            null[redo], arg[redo] = s, i2
    # the identity null: each template's best score against other clusters' templates
    id_null, id_groups = np.zeros(0, np.float64), np.zeros(0, np.int64)
    if n_id > 1:
        size = np.bincount(cl, minlength=n_id)
        k = int(min(n_id, size.max() + 1, 64))
        ts2, ti2 = M.topk_search(a_tmpl, a_tmpl, k, device=device, exclude_self=True)
        diff = cl[ti2] != cl[:, None]
        has = diff.any(1)
        id_null = ts2[np.arange(n_id), diff.argmax(1)].astype(np.float64)
        if not has.all():
            miss = np.flatnonzero(~has)
            ms, _ = M.topk_search(a_tmpl[miss], a_tmpl, 1, device=device, q_labels=cl[miss], g_labels=cl,
                                  exclude_same_label=True, backend="torch")
            id_null[miss] = ms[:, 0]
        fin = np.isfinite(id_null)  # a cluster holding every identity has no other
        id_null, id_groups = id_null[fin], cl[fin]
    keep = np.isfinite(null)  # a query whose cluster holds every identity has nothing to score against
    null, arg, groups = null[keep], arg[keep], cl[a_lab[q]][keep]
    merged = np.bincount(cl, minlength=n_id)[cl] > 1
    k_issue = int(merged.sum())
    rows.sort(key=lambda r: (r["kind"], -r["score"]))
    summary = {
        "identities": n_id, "identities_in_issues": k_issue,
        "fraction": k_issue / n_id if n_id else None, "fraction_ci95": M.clopper_pearson(k_issue, n_id),
        "same_person_pairs": sum(r["kind"].startswith("same person") for r in rows),
        "same_photo_pairs": sum(r["kind"].startswith("same photo") for r in rows),
        "clusters_merged": int(len(np.unique(cl[merged]))),
        "same_person_threshold": tau,
        "same_person_threshold_rule": "the larger of: the midpoint between the median of each authentic template's "
                                      "best score against other templates and the median split-half template "
                                      "cosine; the 2nd percentile of split-half template cosines",
        "near_duplicates_left": int(np.sum(null >= dup_threshold)) if dup_threshold is not None else 0,
        "sensitivity": float(np.mean(g_t >= tau)) if tau is not None and len(g_t) else None,
        "split_half_median": float(np.median(g_t)) if len(g_t) else None,
        "near_duplicate_threshold": dup_threshold,
        "near_duplicate_images_checked": int(len(q)),
        "why_no_threshold": None if tau is not None else (
            "no authentic identity has two images" if not len(g_t) else
            "split-half templates of one person score no higher than different people's templates" if kt >= 1
            else "only one authentic identity"),
    }
    return {"null": null, "null_index": arg, "null_groups": groups, "id_null": id_null, "id_groups": id_groups, "id_cluster": cl, "split_half": g_t,
            "same_person_threshold": tau, "rows": rows, "summary": summary}
