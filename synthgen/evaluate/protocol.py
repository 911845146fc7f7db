"""The verification protocol the field reports (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW), computed
as insightface's `eval/verification.py` computes it, plus TAR at fixed FAR with exact intervals.

Accuracy (`kfold_accuracy`), from insightface's code:
  * pair k is images 2k and 2k+1; each image's embedding is the SUM of the raw embeddings of the
    image and of its horizontal mirror, then L2-normalised (`flip=False`: the image alone);
  * distance = squared Euclidean distance of the two unit vectors (0..4; = 2 - 2 cos);
  * thresholds 0, 0.01, ..., 3.99; a pair is called "same" when distance < threshold;
  * 10 folds of consecutive pairs in file order, no shuffling (the first n % 10 folds one pair
    longer, as sklearn's KFold splits); on each fold, the threshold with the best accuracy on the
    other nine (the first one on ties) is applied to it;
  * reported: mean and (population) standard deviation of the ten fold accuracies.

TAR@FAR (`tar_at_far`): not insightface's interpolated VAL; over all pairs, the threshold is the
cosine that at most floor(FAR * imposters) imposter pairs reach (strictly above the next
imposter score), TAR is the share of genuine pairs at or above it, with a Clopper-Pearson 95 %
interval, and the report says how many imposter pairs support the FAR (fewer than 1 / FAR: the
FAR cannot be measured; LFW's 3,000 imposter pairs support 1e-3 with 3 false accepts).
"""

from __future__ import annotations

import math

import numpy as np

THRESHOLDS = np.arange(0, 4, 0.01)  # insightface: np.arange(0, 4, 0.01)


def pair_embeddings(emb: np.ndarray, emb_flip: np.ndarray | None = None) -> np.ndarray:
    """Raw embeddings [2N, D] (and their mirrors' [2N, D]) -> unit rows, as insightface forms them."""
    e = np.asarray(emb, np.float64)
    if emb_flip is not None:
        e = e + np.asarray(emb_flip, np.float64)
    # exactly as sklearn.preprocessing.normalize (insightface's call): norms from einsum, zero norms
    # left as 1, one division; np.linalg.norm differs in the last bit, which moves distances that sit
    # exactly on a threshold
    norms = np.sqrt(np.einsum("ij,ij->i", e, e))
    norms[norms < 10 * np.finfo(norms.dtype).eps] = 1.0
    return e / norms[:, None]


def distances(unit: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance of pair k = rows 2k and 2k+1."""
    d = unit[0::2] - unit[1::2]
    return np.sum(d * d, axis=1)


def folds(n: int, k: int = 10) -> list[np.ndarray]:
    """Consecutive folds in file order, the first n % k one longer (sklearn KFold, shuffle=False)."""
    if n < k:
        raise ValueError(f"{n} pairs cannot make {k} folds")
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    ends = np.cumsum(sizes)
    return [np.arange(e - s, e) for s, e in zip(sizes, ends)]


def _correct_per_threshold(dist: np.ndarray, same: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Number of correctly called pairs for each threshold (called same when dist < threshold)."""
    predict = dist[None, :] < thresholds[:, None]
    return (predict == same[None, :]).sum(axis=1)


def kfold_accuracy(dist: np.ndarray, same: np.ndarray, n_folds: int = 10, thresholds=THRESHOLDS) -> dict:
    dist, same = np.asarray(dist, np.float64), np.asarray(same, bool)
    thresholds = np.asarray(thresholds, np.float64)
    parts = folds(len(dist), n_folds)
    correct = np.stack([_correct_per_threshold(dist[p], same[p], thresholds) for p in parts])  # [folds, thr]
    total = correct.sum(axis=0)
    acc, best = [], []
    for i, p in enumerate(parts):
        train_acc = (total - correct[i]) / (len(dist) - len(p))
        b = int(np.argmax(train_acc))  # first maximum, as np.argmax in insightface
        best.append(float(thresholds[b]))
        acc.append(float(correct[i, b]) / len(p))
    acc = np.asarray(acc)
    return {"accuracy": float(acc.mean()), "std": float(acc.std()), "fold_accuracy": acc.tolist(),
            "fold_threshold": best, "folds": n_folds, "pairs": int(len(dist))}


def clopper_pearson(k: int, n: int, level: float = 0.95) -> list:
    from scipy.stats import beta

    if n == 0:
        return [None, None]
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return [lo, hi]


def tar_at_far(cos: np.ndarray, same: np.ndarray, far: float) -> dict:
    """TAR at a target FAR over all pairs (cosine similarity: higher = more alike)."""
    cos, same = np.asarray(cos, np.float64), np.asarray(same, bool)
    gen, imp = cos[same], np.sort(cos[~same])[::-1]
    n_imp, n_gen = len(imp), len(gen)
    allowed = int(math.floor(far * n_imp + 1e-9))  # imposter pairs allowed at or above the threshold
    supported = n_imp * far >= 1
    if n_imp == 0 or n_gen == 0:
        return {"far": far, "supported": False, "imposter_pairs": n_imp, "genuine_pairs": n_gen, "threshold": None,
                "tar": None, "tar_ci95": [None, None], "false_accepts": None}
    thr = float(np.nextafter(imp[allowed], np.inf)) if allowed < n_imp else float(-np.inf)
    accepted = int((gen >= thr).sum())
    return {"far": far, "supported": bool(supported), "imposter_pairs": n_imp, "genuine_pairs": n_gen,
            "threshold": thr, "false_accepts": int((imp >= thr).sum()), "true_accepts": accepted,
            "tar": accepted / n_gen, "tar_ci95": clopper_pearson(accepted, n_gen)}


def roc(cos: np.ndarray, same: np.ndarray, points: int = 200) -> dict:
    """(FAR, TAR) pairs on a log-spaced FAR grid, for the report's plot."""
    cos, same = np.asarray(cos, np.float64), np.asarray(same, bool)
    imp = np.sort(cos[~same])[::-1]
    gen = np.sort(cos[same])
    if not len(imp) or not len(gen):
        return {"far": [], "tar": []}
    fars = np.unique(np.r_[np.logspace(math.log10(1 / len(imp)), 0, points), 1.0])
    tars = []
    for f in fars:
        k = int(math.floor(f * len(imp) + 1e-9))
        thr = np.nextafter(imp[k], np.inf) if k < len(imp) else -np.inf
        tars.append(float(len(gen) - np.searchsorted(gen, thr, side="left")) / len(gen))
    return {"far": fars.tolist(), "tar": tars}


def verification(unit: np.ndarray, same, n_folds: int = 10, fars=(1e-3, 1e-4)) -> dict:
    """Everything the report gives for one benchmark, from unit embeddings [2N, D]."""
    same = np.asarray(same, bool)
    dist = distances(unit)
    cos = 1 - dist / 2
    out = kfold_accuracy(dist, same, n_folds)
    out["tar_at_far"] = [tar_at_far(cos, same, f) for f in fars]
    out["genuine_pairs"], out["imposter_pairs"] = int(same.sum()), int((~same).sum())
    return out
