"""Identity measures from unit embeddings: how well each image fits its class, how consistent each
class is, and how close it comes to another class.

    template_cos    an image's cosine to its class template, the mean of the class's OTHER unit
                    embeddings (leave-one-out, so an image never votes for itself); NaN for a class
                    of one image
    consistency     per class: the mean and the worst (minimum) template_cos of its images
    nearest class   per class: the other class whose template (mean unit embedding, normalised)
                    has the highest cosine with its own; distinctness = 1 - that cosine (higher is
                    more distinct)

The class-by-class search runs in blocks, never holding the K x K matrix.
"""

from __future__ import annotations

import numpy as np

BLOCK = 2048  # classes per block of the template search


def template_cosines(emb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[N, D] unit embeddings, [N] integer labels -> [N] leave-one-out template cosines."""
    emb = np.asarray(emb, np.float64)
    labels = np.asarray(labels)
    k = int(labels.max()) + 1 if len(labels) else 0
    sums = np.zeros((k, emb.shape[1]))
    np.add.at(sums, labels, emb)
    counts = np.bincount(labels, minlength=k)
    rest = sums[labels] - emb
    norm = np.linalg.norm(rest, axis=1)
    out = np.full(len(emb), np.nan)
    ok = (counts[labels] > 1) & (norm > 1e-12)
    out[ok] = (emb[ok] * rest[ok]).sum(1) / norm[ok]
    return out


def class_templates(emb: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """[K, D] unit class templates (normalised mean of unit embeddings); zero rows for empty classes."""
    sums = np.zeros((k, emb.shape[1]))
    np.add.at(sums, labels, np.asarray(emb, np.float64))
    n = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.where(n > 1e-12, sums / np.maximum(n, 1e-12), 0.0)


def nearest_classes(templates: np.ndarray, present: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> (index of each class's nearest other class, its cosine); -1 / NaN when there is none."""
    t = np.asarray(templates, np.float64)
    k = len(t)
    present = np.ones(k, bool) if present is None else np.asarray(present, bool)
    idx, cos = np.full(k, -1), np.full(k, np.nan)
    if present.sum() < 2:
        return idx, cos
    for s in range(0, k, BLOCK):
        block = t[s : s + BLOCK] @ t.T
        rows = np.arange(s, min(s + BLOCK, k))
        block[np.arange(len(rows)), rows] = -np.inf
        block[:, ~present] = -np.inf
        j = block.argmax(1)
        idx[rows], cos[rows] = j, block[np.arange(len(rows)), j]
    idx[~present], cos[~present] = -1, np.nan
    return idx, cos


def close_pairs(templates: np.ndarray, min_cos: float, present: np.ndarray | None = None) -> list:
    """Every pair of classes (i < j) whose templates' cosine is >= min_cos, as (i, j, cos), in blocks."""
    t = np.asarray(templates, np.float64)
    k = len(t)
    present = np.ones(k, bool) if present is None else np.asarray(present, bool)
    out = []
    for s in range(0, k, BLOCK):
        block = t[s : s + BLOCK] @ t.T
        rows, cols = np.nonzero(block >= min_cos)
        for r, c in zip(rows, cols):
            i = s + int(r)
            if i < c and present[i] and present[c]:
                out.append((i, int(c), float(block[r, c])))
    return out


def keep_distinct(names: list, pairs: list) -> dict:
    """Greedy keep-one over too-close pairs: classes in `names` order, a class is dropped when it is
    too close to a class already kept. -> {dropped name: (the kept class it is too close to, cosine)}."""
    near: dict[int, list] = {}
    for i, j, c in pairs:
        near.setdefault(j, []).append((i, c))  # i < j: i comes first
    dropped: dict[int, tuple] = {}
    for j in range(len(names)):
        hits = [(c, i) for i, c in near.get(j, []) if i not in dropped]
        if hits:
            c, i = max(hits)
            dropped[j] = (names[i], c)
    return {names[j]: v for j, v in dropped.items()}


def identity_measures(emb: np.ndarray, identities: list, min_distinctness: float | None = None) -> tuple[np.ndarray, dict]:
    """Unit embeddings [N, D] with their class names -> (per-image template_cos [N], per-class
    dict name -> {images, consistency_mean, consistency_min, nearest_class, nearest_cos, distinctness}).
    With `min_distinctness`, each class also gets `too_close_to` [kept class, cosine] when the greedy
    keep-one pass (`keep_distinct`, classes in name order) drops it, else None."""
    names = sorted(set(identities))
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index[n] for n in identities], np.int64)
    tc = template_cosines(emb, labels) if len(emb) else np.zeros(0)
    counts = np.bincount(labels, minlength=len(names)) if len(labels) else np.zeros(len(names), int)
    near, cos = nearest_classes(class_templates(emb, labels, len(names)), counts > 0) if len(emb) else ([], [])
    drop = {}
    if min_distinctness is not None and len(emb):
        drop = keep_distinct(names, close_pairs(class_templates(emb, labels, len(names)), 1 - min_distinctness,
                                                counts > 0))
    classes = {}
    for c, name in enumerate(names):
        v = tc[labels == c]
        v = v[np.isfinite(v)]
        classes[name] = {
            "images": int(counts[c]),
            "consistency_mean": float(v.mean()) if len(v) else None,
            "consistency_min": float(v.min()) if len(v) else None,
            "nearest_class": names[near[c]] if near[c] >= 0 else None,
            "nearest_cos": float(cos[c]) if np.isfinite(cos[c]) else None,
            "distinctness": float(1 - cos[c]) if np.isfinite(cos[c]) else None,
        }
        if min_distinctness is not None:
            classes[name]["too_close_to"] = list(drop[name]) if name in drop else None
    return tc, classes
