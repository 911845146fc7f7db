"""Verification metrics on score sets, pair sampling, and chunked nearest-neighbour search.

Convention: a pair "matches" at threshold t when score >= t.
    FMR(t)  = fraction of imposter scores >= t
    FNMR(t) = fraction of genuine scores < t
"""

from __future__ import annotations

import math

import numpy as np
import torch


def error_rates(genuine, imposter):
    """Thresholds (every distinct score, ascending) with FMR and FNMR at each."""
    g = np.sort(np.asarray(genuine, np.float64))
    i = np.sort(np.asarray(imposter, np.float64))
    t = np.unique(np.concatenate([g, i]))
    fnmr = np.searchsorted(g, t, side="left") / len(g)
    fmr = 1.0 - np.searchsorted(i, t, side="left") / len(i)
    return t, fmr, fnmr


def eer(genuine, imposter) -> tuple[float, float]:
    """Equal error rate and its threshold, linearly interpolated where FMR and FNMR cross."""
    return _eer_from_rates(*error_rates(genuine, imposter))


def _eer_from_rates(t, fmr, fnmr) -> tuple[float, float]:
    d = fmr - fnmr  # decreasing in t
    k = int(np.argmax(d <= 0)) if (d <= 0).any() else len(d) - 1
    if k == 0 or d[k] == 0:
        return float((fmr[k] + fnmr[k]) / 2), float(t[k])
    a = d[k - 1] / (d[k - 1] - d[k])  # crossing between k-1 and k
    rate = fmr[k - 1] + a * (fmr[k] - fmr[k - 1])
    rate2 = fnmr[k - 1] + a * (fnmr[k] - fnmr[k - 1])
    return float((rate + rate2) / 2), float(t[k - 1] + a * (t[k] - t[k - 1]))


def eer_bootstrap_ci(genuine, imposter, reps: int = 200, conf: float = 0.95, seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of the EER: genuine and imposter scores resampled with
    replacement, independently (pairs treated as independent: pairs sharing an image or an identity
    make the true interval wider). Each replicate reweights the sorted scores (no re-sort)."""
    g = np.sort(np.asarray(genuine, np.float64))
    i = np.sort(np.asarray(imposter, np.float64))
    t = np.unique(np.concatenate([g, i]))
    gpos, ipos = np.searchsorted(g, t, side="left"), np.searchsorted(i, t, side="left")
    rng = np.random.RandomState(seed)
    out = np.empty(reps)
    for b in range(reps):
        cg = np.r_[0, np.cumsum(np.bincount(rng.randint(0, len(g), len(g)), minlength=len(g)))]
        ci = np.r_[0, np.cumsum(np.bincount(rng.randint(0, len(i), len(i)), minlength=len(i)))]
        out[b] = _eer_from_rates(t, 1.0 - ci[ipos] / len(i), cg[gpos] / len(g))[0]
    lo, hi = np.quantile(out, [(1 - conf) / 2, (1 + conf) / 2])
    return [float(lo), float(hi)]


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> list[float] | None:
    """Exact (Clopper-Pearson) two-sided interval of a binomial rate k/n; None when n == 0."""
    from scipy.stats import beta

    if n <= 0:
        return None
    a = 1 - conf
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return [lo, hi]


def threshold_at_fmr(imposter, target: float) -> float:
    """Smallest threshold whose FMR (imposter >= t) is at most `target`."""
    s = np.sort(np.asarray(imposter, np.float64))[::-1]
    k = int(math.floor(target * len(s) + 1e-9))  # imposter pairs allowed to match
    if k >= len(s):
        return float(s[-1])
    return float(np.nextafter(s[k], np.inf))


def fnmr_at(genuine, t: float) -> float:
    return float(np.mean(np.asarray(genuine) < t))


def fmr_at(imposter, t: float) -> float:
    return float(np.mean(np.asarray(imposter) >= t))


def auc(genuine, imposter) -> float:
    """P(genuine > imposter) + 0.5 P(equal): area under the ROC curve (Mann-Whitney)."""
    g = np.asarray(genuine, np.float64)
    i = np.sort(np.asarray(imposter, np.float64))
    less = np.searchsorted(i, g, side="left")
    equal = np.searchsorted(i, g, side="right") - less
    return float((less + 0.5 * equal).sum() / (len(g) * len(i)))


def d_prime(genuine, imposter) -> float:
    g, i = np.asarray(genuine, np.float64), np.asarray(imposter, np.float64)
    denom = math.sqrt((g.var() + i.var()) / 2)
    return float(abs(g.mean() - i.mean()) / denom) if denom > 0 else float("inf")


def summary(genuine, imposter, fmrs=(1e-2, 1e-3)) -> dict:
    """EER, AUC, d-prime, score statistics and FNMR at the FMR100/FMR1000 thresholds."""
    if len(genuine) == 0 or len(imposter) == 0:
        return {"genuine_pairs": len(genuine), "imposter_pairs": len(imposter), "note": "not enough pairs"}
    e, et = eer(genuine, imposter)
    out = {"genuine_pairs": len(genuine), "imposter_pairs": len(imposter), "eer": e, "eer_threshold": et,
           "auc": auc(genuine, imposter), "d_prime": d_prime(genuine, imposter),
           "genuine_mean": float(np.mean(genuine)), "genuine_std": float(np.std(genuine)),
           "imposter_mean": float(np.mean(imposter)), "imposter_std": float(np.std(imposter))}
    for f in fmrs:
        t = threshold_at_fmr(imposter, f)
        name = f"fmr{int(round(1 / f))}"
        out[f"{name}_threshold"] = t
        out[f"{name}_fnmr"] = fnmr_at(genuine, t)
    return out


# ----------------------------------------------------------------------------------------------
# Pair sampling (deterministic)


def pair_totals(labels) -> tuple[int, int]:
    """(distinct same-label pairs, distinct different-label pairs) among len(labels) items."""
    sizes = np.unique(np.asarray(labels), return_counts=True)[1].astype(np.int64)
    n = int(sizes.sum())
    same = int((sizes * (sizes - 1) // 2).sum())
    return same, n * (n - 1) // 2 - same


def _distinct_ids(total: int, want: int, rng) -> np.ndarray:
    """`want` distinct integers drawn uniformly without replacement from [0, total), sorted;
    never materialises range(total) when total is large."""
    if total <= 4 * want or total <= 1_000_000:
        return np.sort(rng.choice(total, want, replace=False))
    got = np.zeros(0, np.int64)
    while len(got) < want:
        got = np.union1d(got, rng.randint(0, total, 2 * (want - len(got)) + 16, dtype=np.int64))
    return np.sort(rng.choice(got, want, replace=False))  # a uniform subset of a uniform distinct set


def _triu_pair(r: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-major index r of the strict upper triangle of an n x n matrix -> (a, b), a < b."""
    r, n = r.astype(np.float64), n.astype(np.float64)
    a = n - 2 - np.floor(np.sqrt(-8 * r + 4 * n * (n - 1) - 7) / 2 - 0.5)
    b = r + a + 1 - n * (n - 1) / 2 + (n - a) * (n - a - 1) / 2
    return a.astype(np.int64), b.astype(np.int64)


def genuine_pairs(labels, max_pairs: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs with the same label: all (i < j) when there are at most `max_pairs`,
    else `max_pairs` distinct pairs drawn uniformly WITHOUT replacement from all same-label pairs."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    sl = labels[order]
    bounds = np.flatnonzero(np.r_[True, sl[1:] != sl[:-1], True])
    starts, sizes = bounds[:-1], np.diff(bounds)
    counts = sizes.astype(np.int64) * (sizes - 1) // 2
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, int), np.zeros(0, int)
    if total <= max_pairs:
        ii, jj = [], []
        for st, n in zip(starts, sizes):
            a, b = np.triu_indices(n, 1)
            ii.append(order[st + a])
            jj.append(order[st + b])
        return np.concatenate(ii), np.concatenate(jj)
    ids = _distinct_ids(total, max_pairs, rng)
    cum = np.r_[0, np.cumsum(counts)]
    cls = np.searchsorted(cum, ids, side="right") - 1
    a, b = _triu_pair(ids - cum[cls], sizes[cls])
    return order[starts[cls] + a], order[starts[cls] + b]


def imposter_pairs_distinct(labels, max_pairs: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Distinct unordered pairs (i < j) of one set with different labels: all of them when there
    are at most `max_pairs`, else `max_pairs` drawn uniformly WITHOUT replacement."""
    labels = np.asarray(labels)
    n = len(labels)
    _, total = pair_totals(labels)
    if total == 0:
        return np.zeros(0, int), np.zeros(0, int)
    if n * (n - 1) // 2 <= 4_000_000:  # enumerate the upper triangle, keep different labels
        ids = np.arange(n * (n - 1) // 2, dtype=np.int64)
        i, j = _triu_pair(ids, np.full(len(ids), n))
        ok = labels[i] != labels[j]
        i, j = i[ok], j[ok]
        if len(i) > max_pairs:
            pick = np.sort(rng.choice(len(i), max_pairs, replace=False))
            i, j = i[pick], j[pick]
        return i, j
    want = min(max_pairs, total)
    got = np.zeros(0, np.int64)
    for _ in range(200):  # rejection: uniform unordered pairs, different labels, deduplicated
        m = 2 * (want - len(got)) + 64
        x, y = rng.randint(0, n, m), rng.randint(0, n, m)
        ok = labels[x] != labels[y]
        lo, hi = np.minimum(x, y)[ok], np.maximum(x, y)[ok]
        got = np.union1d(got, lo.astype(np.int64) * n + hi)
        if len(got) >= want:
            break
    got = np.sort(rng.choice(got, min(want, len(got)), replace=False))
    return got // n, got % n


def imposter_pairs(labels_a, labels_b, n: int, rng, same_set: bool = False):
    """n random (i, j) with different labels; i from set a, j from set b."""
    la, lb = np.asarray(labels_a), np.asarray(labels_b)
    ii, jj = [], []
    need = n
    for _ in range(100):
        i = rng.randint(0, len(la), 2 * need)
        j = rng.randint(0, len(lb), 2 * need)
        ok = la[i] != lb[j]
        if same_set:
            ok &= i != j
        ii.append(i[ok][:need])
        jj.append(j[ok][:need])
        need -= len(ii[-1])
        if need <= 0:
            break
    return np.concatenate(ii), np.concatenate(jj)


def pair_scores(ea, eb, i, j, chunk=65536) -> np.ndarray:
    out = np.empty(len(i), np.float32)
    for s in range(0, len(i), chunk):
        out[s : s + chunk] = np.einsum("nd,nd->n", ea[i[s : s + chunk]], eb[j[s : s + chunk]])
    return out


# ----------------------------------------------------------------------------------------------
# Chunked top-k search (never materialises the N x M score matrix)


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def topk_search(queries, gallery, k: int = 5, chunk_q: int = 1024, chunk_g: int = 32768, device="cpu",
                q_labels=None, g_labels=None, exclude_same_label=False, exclude_self=False, backend="auto",
                progress=False, desc="search"):
    """For each query row, the k best cosine scores in `gallery` and their indices.

    torch backend: (chunk_q x chunk_g) blocks with a running top-k, on `device`; optionally masks
    pairs with the same label (chance-rate baselines) or the same index (query set == gallery).
    faiss backend (exact IndexFlatIP; ~3x faster on CPU here): used by "auto" on CPU when faiss
    is installed and nothing is masked. `progress`: a tqdm bar over the queries.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(queries), unit="query", desc=desc, disable=not progress or len(queries) == 0,
               dynamic_ncols=True)
    faiss = _faiss() if backend in ("auto", "faiss") else None
    if backend == "faiss" and faiss is None:
        raise ImportError("backend='faiss' needs faiss (pip install faiss-cpu)")
    masked = exclude_same_label or exclude_self
    if faiss is not None and not masked and torch.device(device).type == "cpu":
        g = np.ascontiguousarray(gallery, dtype=np.float32)
        index = faiss.IndexFlatIP(g.shape[1])
        index.add(g)
        qn = np.ascontiguousarray(queries, dtype=np.float32)
        kk = min(k, len(g))
        scores, idx = np.empty((len(qn), kk), np.float32), np.empty((len(qn), kk), np.int64)
        for qs in range(0, len(qn), 8 * chunk_q):
            scores[qs : qs + 8 * chunk_q], idx[qs : qs + 8 * chunk_q] = index.search(qn[qs : qs + 8 * chunk_q], kk)
            bar.update(len(qn[qs : qs + 8 * chunk_q]))
        bar.close()
        return scores, idx
    q = torch.as_tensor(queries, dtype=torch.float32)
    g = torch.as_tensor(gallery, dtype=torch.float32)
    k = min(k, len(g))
    qa = torch.as_tensor(np.asarray(q_labels)) if exclude_same_label else None
    ga = torch.as_tensor(np.asarray(g_labels)) if exclude_same_label else None
    scores = np.empty((len(q), k), np.float32)
    index = np.empty((len(q), k), np.int64)
    for qs in range(0, len(q), chunk_q):
        qc = q[qs : qs + chunk_q].to(device)
        best_s = torch.full((len(qc), k), -float("inf"), device=device)
        best_i = torch.full((len(qc), k), -1, dtype=torch.long, device=device)
        for gs in range(0, len(g), chunk_g):
            gc = g[gs : gs + chunk_g].to(device)
            s = qc @ gc.T
            if exclude_same_label:
                s.masked_fill_(qa[qs : qs + chunk_q, None].to(device) == ga[None, gs : gs + chunk_g].to(device), -float("inf"))
            if exclude_self:
                qi = torch.arange(qs, qs + len(qc), device=device)[:, None]
                gi = torch.arange(gs, gs + len(gc), device=device)[None, :]
                s.masked_fill_(qi == gi, -float("inf"))
            idx = torch.arange(gs, gs + len(gc), device=device).expand(len(qc), -1)
            cat_s = torch.cat([best_s, s], 1)
            cat_i = torch.cat([best_i, idx], 1)
            best_s, pos = cat_s.topk(k, dim=1)
            best_i = cat_i.gather(1, pos)
        scores[qs : qs + len(qc)] = best_s.cpu().numpy()
        index[qs : qs + len(qc)] = best_i.cpu().numpy()
        bar.update(len(qc))
    bar.close()
    return scores, index


def leave_identity_out_best(emb, labels, q, device="cpu", progress=False, desc="null search"):
    """For each query index in `q`: the best score of emb[q] against all rows of `emb` with a
    different label (its own identity left out) and that row's index.

    On CPU with faiss: an unmasked exact top-k (k = largest identity + 1, at most 64) and the first
    neighbour of another identity; the rare query whose k neighbours are all its own identity is
    redone by the masked torch search. Elsewhere: the masked torch search directly."""
    labels = np.asarray(labels)
    q = np.asarray(q)
    ql = labels[q]
    if _faiss() is not None and torch.device(device).type == "cpu":
        k = int(min(len(emb), np.bincount(np.unique(labels, return_inverse=True)[1]).max() + 1, 64))
        s, i = topk_search(emb[q], emb, k, device=device, progress=progress, desc=desc)
        diff = labels[i] != ql[:, None]
        has = diff.any(1)
        first = diff.argmax(1)
        rows = np.arange(len(q))
        best, arg = s[rows, first].copy(), i[rows, first].copy()
        if not has.all():
            miss = np.flatnonzero(~has)
            ms, mi = topk_search(emb[q[miss]], emb, 1, device=device, q_labels=ql[miss], g_labels=labels,
                                 exclude_same_label=True, backend="torch")
            best[miss], arg[miss] = ms[:, 0], mi[:, 0]
        return best, arg
    s, i = topk_search(emb[q], emb, 1, device=device, q_labels=ql, g_labels=labels, exclude_same_label=True,
                       progress=progress, desc=desc)
    return s[:, 0], i[:, 0]


def group_sums(emb: np.ndarray, inv: np.ndarray, n: int, cols: int = 64) -> np.ndarray:
    """Row sums of `emb` per group (float64, [n, D]) by one sort and np.add.reduceat, `cols` columns
    at a time (a float64 copy of an SFace-size set would be 2 GB)."""
    order = np.argsort(inv, kind="stable")
    out = np.zeros((n, emb.shape[1]), np.float64)
    if not len(order):
        return out
    srt = inv[order]
    starts = np.flatnonzero(np.r_[True, srt[1:] != srt[:-1]])
    for c in range(0, emb.shape[1], cols):
        out[srt[starts], c : c + cols] = np.add.reduceat(emb[order, c : c + cols].astype(np.float64), starts, axis=0)
    return out


def templates(emb: np.ndarray, identities) -> tuple[list, np.ndarray]:
    """Per-identity mean embedding, L2-normalised. Returns (names sorted, [K, D])."""
    ids = np.asarray(identities)
    names, inv = np.unique(ids, return_inverse=True)
    t = group_sums(emb, inv.ravel(), len(names))
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    return names.tolist(), t.astype(np.float32)
