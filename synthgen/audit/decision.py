"""The release decision: p-values against a leave-identity-out null, a fitted tail, Holm.

Null. A clean synthetic image is, for the gate, a face of someone not in the authentic set. The
score it faces is its BEST score over the whole authentic gallery. The same quantity is observable
without any synthetic data: the best score of an authentic image against the authentic gallery
with its own identity left out (`metrics.leave_identity_out_best`). Those N "null" scores are the
reference distribution; unlike a per-pair FMR threshold, it already contains the search over M
gallery images, so its false-alarm rate does not grow with M.

p-value of a best score s (`pvalues`):
    s <= u:  (1 + #{null >= s}) / (N + 1)                     (empirical, plus-one: never 0)
    s >  u:  (k + 1) / (N + 1) * (1 + xi (s - u) / sigma) ** (-1 / xi)
where u is the (k+1)-th largest null score, k = clip(N / 10, 50, 1000) exceedances, and
(xi, sigma) a generalized Pareto distribution fitted to the k exceedances s - u by maximum
likelihood (scipy.stats.genpareto.fit, location fixed at 0) CONSTRAINED to xi >= 0: when the
unconstrained fit says xi < 0 (a bounded tail), the exponential (xi = 0, sigma = mean excess) is
used instead. Best scores are maxima of many bounded scores (Gumbel domain, xi = 0 in the limit,
lighter than exponential at finite sizes); an unconstrained xi < 0 puts the tail's end just above
the largest null score, so clean images there got p = 0 (family-wise error 20 % in simulation
instead of 1 %). The exponential over-states the tail there: conservative, and a copy (a score
many mean-excesses beyond u) still gets a p-value of 1e-10 or less. The fit is tested by a
Kolmogorov-Smirnov test of the exceedances against the GPD used (nominal p-value: the parameters
come from the same data, so it is lenient). Fewer than TAIL_MIN null scores: no tail model.

Decision (`holm`): Holm's step-down procedure over every test in the family (all synthetic images
and all synthetic identity templates): family-wise error <= alpha under any dependence between the
tests (images of one identity are dependent; Benjamini-Hochberg would need positive dependence and
controls only the false-discovery proportion; on a clean set, where any flag is false, family-wise
control is exactly the property a release gate needs).
"""

from __future__ import annotations

import math

import numpy as np

TAIL_MIN = 100  # null scores needed to fit a tail model
FNMR_BOUND = 0.5  # a matcher missing more than half of same-person pairs at the operating point is not valid


def n_exceedances(n: int) -> int:
    return int(min(max(n // 10, 50), 1000, n - 1))


def tail_fit(null) -> dict | None:
    """GPD fitted by maximum likelihood to the top exceedances of the null; None when N < TAIL_MIN."""
    from scipy import stats

    x = np.sort(np.asarray(null, np.float64))
    n = len(x)
    if n < TAIL_MIN:
        return None
    k = n_exceedances(n)
    u = float(x[n - k - 1])
    y = x[n - k :] - u
    y = np.maximum(y, 0.0)
    if not (y > 0).any():
        return {"model": "generalized Pareto", "n": n, "k": k, "u": u, "xi": 0.0, "sigma": 0.0, "degenerate": True,
                "ks_statistic": None, "ks_pvalue": None}
    xi_mle, _, sigma_mle = stats.genpareto.fit(y, floc=0)
    xi, sigma = (float(xi_mle), float(sigma_mle)) if xi_mle >= 0 else (0.0, float(y.mean()))
    ks = stats.kstest(y, "genpareto", args=(xi, 0, sigma))
    return {"model": "generalized Pareto" if xi > 0 else "exponential (generalized Pareto with xi = 0)",
            "method": "maximum likelihood on the k exceedances over u, constrained to xi >= 0",
            "n": n, "k": k, "u": u, "xi": xi, "sigma": sigma, "xi_unconstrained": float(xi_mle),
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
    x = np.sort(np.asarray(null, np.float64))
    s = np.asarray(scores, np.float64)
    n = len(x)
    p = (1 + n - np.searchsorted(x, s, side="left")) / (n + 1)
    if fit is not None:
        above = s > fit["u"]
        scale = (fit["k"] + 1) / (n + 1)
        p[above] = scale * _gpd_sf(s[above] - fit["u"], fit["xi"], fit["sigma"])
    return p


def critical_score(q: float, null, fit: dict | None) -> float:
    """The smallest score whose p-value is <= q (inf when no score can reach q)."""
    x = np.sort(np.asarray(null, np.float64))
    n = len(x)
    if fit is not None and q < (fit["k"] + 1) / (n + 1):
        r = q / ((fit["k"] + 1) / (n + 1))
        xi, sigma = fit["xi"], fit["sigma"]
        if sigma <= 0:
            return float(np.nextafter(fit["u"], np.inf))
        y = -sigma * math.log(r) if abs(xi) < 1e-9 else sigma / xi * (r ** (-xi) - 1)
        return float(fit["u"] + y)
    m = math.floor(q * (n + 1) + 1e-9) - 1  # null scores allowed at or above the critical score
    if m < 0:
        return float("inf")
    if m >= n:
        return float("-inf")
    return float(np.nextafter(x[n - 1 - m], np.inf))


def holm(p, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Holm step-down: (rejected mask, adjusted p-values), family-wise error <= alpha."""
    p = np.asarray(p, np.float64)
    m = len(p)
    if m == 0:
        return np.zeros(0, bool), np.zeros(0)
    order = np.argsort(p, kind="stable")
    adj_sorted = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p[order]), 1.0)
    adj = np.empty(m)
    adj[order] = adj_sorted
    return adj <= alpha, adj


def gate(image_scores, null, alpha: float, identity_scores=(), identity_null=()) -> dict:
    """The search rule on one matcher's best scores: p-values, Holm across images + identities.

    Returns p-values, Holm-adjusted p-values and flags for images and identities, the tail fits,
    and the operating score (Holm's first, strictest step: p <= alpha / tests)."""
    img = np.asarray(image_scores, np.float64)
    ids = np.asarray(identity_scores, np.float64)
    fit = tail_fit(null)
    p_img = pvalues(img, null, fit)
    id_fit = tail_fit(identity_null) if len(identity_null) else None
    p_id = pvalues(ids, identity_null, id_fit) if len(ids) and len(identity_null) else np.ones(len(ids))
    m = len(img) + len(ids)
    rej, adj = holm(np.r_[p_img, p_id], alpha)
    return {"fit": fit, "identity_fit": id_fit, "tests": m,
            "image_p": p_img, "image_p_adjusted": adj[: len(img)], "image_flag": rej[: len(img)],
            "identity_p": p_id, "identity_p_adjusted": adj[len(img) :], "identity_flag": rej[len(img) :],
            "operating_score": critical_score(alpha / max(m, 1), null, fit),
            "identity_operating_score": (critical_score(alpha / max(m, 1), identity_null, id_fit)
                                         if len(identity_null) else float("inf"))}
