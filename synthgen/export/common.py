"""What every exporter shares."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from synthgen.errors import DataError, UsageError
from synthgen.safepath import show_path

SAMPLES_PER_FILE = 10000  # --samples-per-file's default: ~300 MB of 112 px PNGs per tar or parquet file


def fresh(tmp: Path) -> Path:
    """Remove whatever sits at a temp name first: in a reused --out it could be a planted symlink
    (the name is predictable), and opening it for writing would follow the link out of --out."""
    tmp.unlink(missing_ok=True)
    return tmp


def refuse_samples_per_file(opts: dict, fmt: str) -> None:
    """For formats that write one file (or one per image): a non-default --samples-per-file would
    be silently ignored, so it is an error instead."""
    if opts.get("samples_per_file", SAMPLES_PER_FILE) != SAMPLES_PER_FILE:
        raise UsageError(f"applies to webdataset and parquet only, not {fmt}", "--samples-per-file")


def check_samples_per_file(opts: dict) -> None:
    from synthgen.runs import check_range

    n = opts["samples_per_file"]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise UsageError(f"got {n!r}, expected an integer >= 1", "--samples-per-file")
    check_range(n, "--samples-per-file", 1, None)


def order(n: int, shuffle: bool, seed: int) -> np.ndarray:
    """Shard items in the order an exporter writes them: shard order (label, key), or a seeded
    permutation (the same one recordio uses)."""
    return np.random.RandomState(seed).permutation(n) if shuffle else np.arange(n)


def real_dir(path: Path) -> Path:
    """`path` as a real folder inside --out: one a reused --out holds as a symlink (or a file)
    would send every write elsewhere, so it is refused, not followed."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise DataError(f"{show_path(path)} is a symlink or not a folder; remove it or export into a new, "
                        "empty --out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_stale(folder: Path, pattern: str, written: set[str]) -> list[str]:
    """Delete files named like this exporter's outputs (`pattern`, a regex over the whole name)
    that this run did not write: left by an earlier, larger export into the same --out, they
    would be read as part of the dataset (readers glob shard-*.tar, data/*.parquet)."""
    rx, gone = re.compile(pattern), []
    for p in sorted(folder.iterdir()):
        if rx.fullmatch(p.name) and p.name not in written and (p.is_symlink() or p.is_file()):
            p.unlink()  # a symlink: the link goes, not its target
            gone.append(p.name)
    return gone
