"""Helpers for the hostile shard tests: a tiny image tree, real shards, tampering, snapshots."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from synthgen.fsutil import sha256_file
from synthgen.shards import ShardConfig, shard

SIZE = 8  # 8x8 RGB crops: shards are a few kB


def make_tree(root: Path, classes: int = 3, per_class: int = 4) -> Path:
    """<class>/<index>.png noise images, the layout `synthgen shard` packs."""
    rng = np.random.RandomState(0)
    for c in range(classes):
        d = root / f"{c:06d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.randint(0, 256, (SIZE, SIZE, 3), np.uint8)).save(d / f"{i:06d}.png")
    return root


def make_shards(inp: Path, out: Path, shard_size: int = 5, **kw) -> dict:
    return shard(ShardConfig(inp=str(inp), out=str(out), shard_size=shard_size, progress=False, **kw))


def resign(out: Path) -> None:
    """Re-sign index.json after tampering, so only the checks under test can fire (an attacker
    who hands over a folder controls index.json too)."""
    ip = out / "index.json"
    idx = json.loads(ip.read_text())
    for e in idx["shards"]:
        p = out / e["file"]
        if p.is_file() and not p.is_symlink() and p.parent == out:
            e.update(bytes=p.stat().st_size, sha256=sha256_file(p))
    ip.write_text(json.dumps(idx))


def replace_dataset(path: Path, name: str, **create_kw) -> None:
    import h5py

    with h5py.File(path, "a") as f:
        del f[name]
        f.create_dataset(name, **create_kw)


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """relative path -> sha256 (or link target) of everything under root except `skip` trees."""
    skip = tuple(p.resolve() for p in skip)
    out = {}
    for p in sorted(root.rglob("*")):
        rp = p.resolve() if not p.is_symlink() else p.absolute()
        if any(rp == s or s in rp.parents for s in skip):
            continue
        if p.is_symlink():
            out[str(p.relative_to(root))] = "-> " + str(p.readlink())
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p.relative_to(root))] = "dir"
    return out


def assert_one_line(msg: str, *must: str) -> None:
    assert "\n" not in msg and "\r" not in msg, f"message spans lines: {msg!r}"
    for m in must:
        assert m in msg, f"{m!r} not in {msg!r}"
