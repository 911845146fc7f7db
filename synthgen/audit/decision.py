"""The release decision: p-values against a leave-cluster-out null, a fitted tail, weighted Holm.

Null. A clean synthetic image is, for the gate, a face of someone not in the authentic set. The
score it faces is its BEST score over the whole authentic gallery. The same quantity is observable
without any synthetic data: the best score of an authentic image against the authentic gallery
with its own identity left out (`metrics.leave_identity_out_best`). Scraped training sets hold one
person under two labels; those pairs would put same-person scores into the null, so the labels
are first merged into clusters (`labels.label_issues`: templates that score like one person, and
near-duplicate photos across labels) and the null leaves the whole cluster out. Identity
templates get the same null one level up (authentic templates against other clusters' templates).

Scale. Scores are cosines, bounded by 1, so every tail computation runs on t = -log(1 - s)
(`to_t` / `from_t`), which maps [-1, 1) onto [-log 2, inf): a fitted tail can never put a
critical score at or past 1.

p-value of a best score s, on t (`pvalues`):
    t <= u:  (1 + #{null >= t}) / (N + 1)                     (empirical, plus-one: never 0)
    t >  u:  (k + 1) / (N + 1) * exp(-(t - u) / sigma)
where u is the (k+1)-th largest null value, k = clip(N / 10, 50, 1000) exceedances, and sigma their
mean excess over u (the maximum-likelihood exponential). Why exponential on t: near 1 a cosine's
tail decays like a power of (1 - s) (the area of a spherical cap), which is exponential in t; a
score distribution with an end point below 1 is lighter still, so the exponential over-states it
(conservative). A generalized Pareto shape xi is fitted too, but only reported: on a null that mixes
look-alike pairs or hub identities into the top, the free shape came out at xi ~ 0.2-0.4 and
extrapolated operating scores of 0.96-0.997 (every look-alike run inconclusive in simulation), and on
the raw cosine scale the exponential had put operating scores past 1 for dlib. The fit is checked
by a Kolmogorov-Smirnov test (nominal: sigma comes from the same data). Fewer than TAIL_MIN null
values: no tail model.

Shift (`shift`): before the p-values, each family's null is moved up, on the t scale, by how much
the median synthetic best score exceeds the null's median (never down): a generator pulled toward
an average face scores higher against everybody, and an unmoved null would call that a leak.

Decision (`holm`, weighted): one family of every synthetic image and every synthetic identity
template. Half of alpha goes to the images (alpha / 2 / images each at Holm's first step), half to
the identities (alpha / 2 / identities), when the identity null can carry a tail (>= TAIL_MIN
authentic identities); otherwise all of it goes to the images. Weighted Holm keeps the family-wise
error <= alpha under any dependence. Why split: an SFace-size set has ~634K images and ~10.5K
identities; an even split puts the identity tests 30x less strict than one alpha over all 645K
tests and the image tests only 2x stricter, and identity templates separate same-person from
different-person far better than single images do (split-half template cosines near 0.96 against
single-image genuine scores near 0.6 on ArcFace-like embeddings), so that is where the power is.
"""

from __future__ import annotations

import math

import numpy as np

TAIL_MIN = 100  # null scores needed to fit a tail model
FNMR_BOUND = 0.5  # a matcher missing more than half of same-person pairs at the operating point is not valid
IDENTITY_SHARE = 0.5  # of alpha, to the identity tests (when the identity null carries a tail)
_EPS = 1e-12  # 1 - s never below this on the tail scale: an exact copy maps to t = 27.6


def to_t(s) -> np.ndarray:
    """Cosine -> the tail scale t = -log(1 - s); monotone, finite for every s <= 1."""
    s = np.asarray(s, np.float64)
    return -np.log(np.maximum(1.0 - s, _EPS))


def from_t(t: float) -> float:
    """The tail scale back to a cosine (< 1 for every finite t)."""
    return float(-np.expm1(-t)) if math.isfinite(t) else float(t)


def n_exceedances(n: int) -> int:
    return int(min(max(n // 10, 50), 1000, n - 1))


TAIL_GROUPS = 20  # the top k must come from at least this many authentic identity clusters


def tail_fit(null, groups=None) -> dict | None:
    """Exponential tail on the t scale over the top exceedances of the null; None when N < TAIL_MIN.
    `u` is on the t scale, `u_score` the same point as a cosine. Degenerate (no tail model used: the
    p-values stay empirical) when the exceedances have no spread, or, with `groups` (the authentic
    cluster of each null value), when they come from fewer than TAIL_GROUPS clusters: 12 people with
    100 near-identical photos each are 12 observations, not 1,200 (their tied top made sigma ~ 0
    and p = 0 for clean images)."""
    from scipy import stats

    t = to_t(null)
    order = np.argsort(t, kind="stable")
    x = t[order]
    n = len(x)
    if n < TAIL_MIN:
        return None
    k = n_exceedances(n)
    u = float(x[n - k - 1])
    y = np.maximum(x[n - k :] - u, 0.0)
    base = {"scale": "t = -log(1 - cosine)", "n": n, "k": k, "u": u, "u_score": from_t(u)}
    n_groups = int(len(np.unique(np.asarray(groups)[order[n - k :]]))) if groups is not None else None
    why = ("the top null scores have no spread" if float(y.mean()) < 1e-9 else
           f"the top {k} null scores come from only {n_groups} authentic identities (at least {TAIL_GROUPS} needed)"
           if n_groups is not None and n_groups < TAIL_GROUPS else None)
    if why:
        return {**base, "model": "none: " + why, "xi": 0.0, "sigma": 0.0, "degenerate": True, "why": why,
                "groups": n_groups, "ks_statistic": None, "ks_pvalue": None}
    xi_mle, _, _ = stats.genpareto.fit(y, floc=0)
    sigma = float(y.mean())
    ks = stats.kstest(y, "expon", args=(0, sigma))
    return {**base, "model": "exponential on the t scale (generalized Pareto with xi = 0)",
            "method": "maximum likelihood (the mean excess) on the k exceedances over u; the generalized Pareto "
                      "shape xi is fitted only as a check",
            "xi": 0.0, "sigma": sigma, "xi_unconstrained": float(xi_mle), "groups": n_groups,
            "degenerate": False, "ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue)}


def _gpd_sf(y, xi, sigma):
    y = np.maximum(np.asarray(y, np.float64), 0.0)
    if sigma <= 0:
        return np.where(y > 0, 0.0, 1.0)
    if abs(xi) < 1e-9:
        return np.exp(-y / sigma)
    z = 1 + xi * y / sigma
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(z > 0, np.power(np.maximum(z, 1e-300), -1 / xi), 0.0)


def pvalues(scores, null, fit: dict | None) -> np.ndarray:
    """One-sided p-value of each best score against the null (see module docstring)."""
    x = np.sort(to_t(null))
    t = to_t(scores)
    n = len(x)
    p = (1 + n - np.searchsorted(x, t, side="left")) / (n + 1)
    if fit is not None and not fit.get("degenerate"):
        above = t > fit["u"]
        scale = (fit["k"] + 1) / (n + 1)
        p[above] = scale * _gpd_sf(t[above] - fit["u"], fit["xi"], fit["sigma"])
    return p


def critical_score(q: float, null, fit: dict | None) -> float:
    """The smallest score whose p-value is <= q: a cosine below 1, or inf when no score can reach q."""
    x = np.sort(np.asarray(null, np.float64))
    n = len(x)
    if fit is not None and not fit.get("degenerate") and q < (fit["k"] + 1) / (n + 1):
        r = q / ((fit["k"] + 1) / (n + 1))
        xi, sigma = fit["xi"], fit["sigma"]
        if sigma <= 0:
            return float(np.nextafter(from_t(fit["u"]), np.inf))
        y = -sigma * math.log(r) if abs(xi) < 1e-9 else sigma / xi * (r ** (-xi) - 1)
        return from_t(fit["u"] + y)
    m = math.floor(q * (n + 1) + 1e-9) - 1  # null scores allowed at or above the critical score
    if m < 0:
        return float("inf")
    if m >= n:
        return float("-inf")
    return float(np.nextafter(x[n - 1 - m], np.inf))


def holm(p, alpha: float, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """(Weighted) Holm step-down: (rejected mask, adjusted p-values), family-wise error <= alpha.

    Weights w_i >= 0 (normalised to sum 1; None = equal): tests are taken in order of p_i / w_i, and
    the j-th is rejected, as long as all before it were, when p_j <= alpha * w_j / (sum of the weights
    not yet rejected). Equal weights give Holm's procedure; a zero weight is never rejected."""
    p = np.asarray(p, np.float64)
    m = len(p)
    if m == 0:
        return np.zeros(0, bool), np.zeros(0)
    w = np.ones(m) if weights is None else np.asarray(weights, np.float64)
    if not w.sum() > 0:
        return np.zeros(m, bool), np.ones(m)
    w = w / w.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(w > 0, p / w, np.inf)
    order = np.argsort(ratio, kind="stable")
    remaining = np.cumsum(w[order][::-1])[::-1]  # weight of the tests from this step on
    with np.errstate(invalid="ignore"):
        step = np.where(w[order] > 0, ratio[order] * remaining, np.inf)
    adj_sorted = np.minimum(np.maximum.accumulate(step), 1.0)
    adj = np.empty(m)
    adj[order] = adj_sorted
    return adj <= alpha, adj


def shift(scores, null) -> float:
    """How much higher, on the t scale, the median synthetic best score sits than the null's median
    (0 when it does not): a generator whose faces are pulled toward an average face scores higher
    against everybody, which the authentic null cannot know. Leaks move the median a little (0.04 on
    t at 45 % leaked, in review) and only raise the null: the gate gets stricter, never laxer."""
    if not len(scores) or not len(null):
        return 0.0
    return max(0.0, float(np.median(to_t(scores)) - np.median(to_t(null))))


def _down(scores, d: float) -> np.ndarray:
    return -np.expm1(-(to_t(scores) - d)) if d else np.asarray(scores, np.float64)


def gate(image_scores, null, alpha: float, identity_scores=(), identity_null=(), null_groups=None,
         identity_groups=None) -> dict:
    """The search rule on one matcher's best scores: p-values, weighted Holm across images + identities.

    Each family's null is first moved up by `shift` (scores are tested as if that much lower), so
    a set that scores higher against everybody is not flagged for it. Returns p-values,
    Holm-adjusted p-values and flags for images and identities, the tail fits, the alpha each family
    got, the shifts, and the operating scores (Holm's first, strictest step of each family)."""
    img = np.asarray(image_scores, np.float64)
    ids = np.asarray(identity_scores, np.float64)
    d_img, d_id = shift(img, null), shift(ids, identity_null)
    fit = tail_fit(null, null_groups)
    p_img = pvalues(_down(img, d_img), null, fit)
    id_fit = tail_fit(identity_null, identity_groups) if len(identity_null) else None
    p_id = (pvalues(_down(ids, d_id), identity_null, id_fit) if len(ids) and len(identity_null)
            else np.ones(len(ids)))
    id_tail = id_fit is not None and not id_fit["degenerate"]
    share = IDENTITY_SHARE if (len(ids) and id_tail and len(img)) else (1.0 if not len(img) else 0.0)
    a_img, a_id = alpha * (1 - share), alpha * share
    w = np.r_[np.full(len(img), (1 - share) / max(len(img), 1)), np.full(len(ids), share / max(len(ids), 1))]
    m = len(img) + len(ids)
    rej, adj = holm(np.r_[p_img, p_id], alpha, w if m else None)
    up = lambda c, d: from_t(float(to_t(c)) + d) if np.isfinite(c) else c
    return {"fit": fit, "identity_fit": id_fit, "tests": m, "image_alpha": a_img, "identity_alpha": a_id,
            "image_shift": d_img, "identity_shift": d_id,
            "image_p": p_img, "image_p_adjusted": adj[: len(img)], "image_flag": rej[: len(img)],
            "identity_p": p_id, "identity_p_adjusted": adj[len(img) :], "identity_flag": rej[len(img) :],
            "operating_score": (up(critical_score(a_img / max(len(img), 1), null, fit), d_img) if a_img > 0
                                else float("inf")),
            "identity_operating_score": (up(critical_score(a_id / max(len(ids), 1), identity_null, id_fit), d_id)
                                         if len(identity_null) and a_id > 0 else float("inf"))}
