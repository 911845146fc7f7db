"""Seed policy: every image gets its own seeds, derived from the run's base seed and its place.

    derive_seed(base, *parts) = first 4 bytes (little-endian) of
                                sha256("synthgen-seed-v1:" + ":".join(str(x) for x in (base, *parts)))

An image's latent is `numpy.random.RandomState(seed).randn(1, z_dim)` (NVIDIA's convention, so
`--seeds` reproduces images made with NVIDIA's generate.py), and its random noise comes from
`torch.Generator().manual_seed(noise_seed)`. Because nothing depends on batch composition,
process count or run order, an image is the same however the run was split or resumed.

    latent seed     derive_seed(base, class, index)            conditional nets
                    derive_seed(base, "instance", i)            unconditional (USynthFace) nets
    noise seed      derive_seed(base, class, index, "noise")   (view v: ..., "noise", v)
    mix seed        derive_seed(base, "instance", i, "mix", v)  view v >= 1 of an instance
    seed pool       pool[derive_seed(base, class, index, "pool") % len(pool)]  (SFace recipe)
"""

from __future__ import annotations

import hashlib

import numpy as np

SEED_POLICY = "synthgen-seed-v1"


def derive_seed(base: int, *parts) -> int:
    key = ":".join(str(x) for x in (SEED_POLICY, base, *parts)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


def latent(seed: int, z_dim: int) -> np.ndarray:
    """NVIDIA's latent for a seed: float64 standard normal of shape [z_dim]."""
    return np.random.RandomState(seed).randn(1, z_dim)[0]


def parse_int_list(text: str, flag: str, lo: int | None = None, hi: int | None = None) -> list[int]:
    """'0-3,7,10-12' -> [0, 1, 2, 3, 7, 10, 11, 12] (ranges inclusive), order kept, no duplicates."""
    from synthgen.errors import UsageError

    out: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                a, b = (int(v) for v in part.split("-", 1))
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise UsageError(f"cannot parse '{part}' in '{text}'; expected integers and ranges like 0-9,12", flag) from None
    if not out:
        raise UsageError(f"'{text}' names no values", flag)
    if len(set(out)) != len(out):
        raise UsageError(f"'{text}' lists a value twice", flag)
    bad = [v for v in out if (lo is not None and v < lo) or (hi is not None and v > hi)]
    if bad:
        raise UsageError(f"{bad[0]} is out of range ({lo}-{hi})", flag)
    return out
