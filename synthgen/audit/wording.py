"""How the report says numbers: counts with their nouns, percentages, intervals, lists."""

from __future__ import annotations

import math


def _n(n: int, noun: str) -> str:
    """'1 synthetic identity', '3 synthetic identities', '2 images'."""
    if n == 1:
        return f"1 {noun}"
    plural = noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else noun + "s"
    return f"{n:,} {plural}"


def _pct(x) -> str:
    """A percentage with two significant digits, never in scientific notation: 77 %, 1.2 %, 0.013 %."""
    if x is None:
        return "n/a"
    v = 100 * float(x)
    if v == 0 or v >= 10:
        return f"{v:.0f} %"
    digits = max(1, 1 - math.floor(math.log10(abs(v))))
    return f"{v:.{digits}f} %"


def _ci(ci) -> str:
    return "n/a" if ci is None else f"{_pct(ci[0])} to {_pct(ci[1])}"


def _g(x) -> str:
    return f"{x:g}"


def _s(x) -> str:
    return f"{x:.3f}" if math.isfinite(x) else ("+inf (no score can reach the required p-value)" if x > 0 else "-inf")


def _list(items, k: int = 10) -> str:
    items = list(items)
    return ", ".join(items[:k]) + (f" and {len(items) - k:,} more (see flagged.csv)" if len(items) > k else "")
