"""`synthgen verify`: every shard against index.json, every key, layout and image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from synthgen.encodings import ENCODINGS
from synthgen.fsutil import sha256_file
from synthgen.safepath import path_problem, require_input, show, show_path

from .format import INDEX, REBUILD, SHARD_RE, TEMP_GLOB
from .reader import index_problems, storage_problems


def verify(root) -> list[str]:
    """Check every shard against index.json; returns a list of one-line problems (empty = all good)."""
    import h5py

    root = Path(root)
    require_input(root, "DIR", "a shard directory or a release")
    ip = root / INDEX
    problems = []
    if root.is_dir():
        for p in sorted(root.glob(TEMP_GLOB)):
            problems.append(f"{show(p.name)}: stray temp file of an interrupted writer; rerun `synthgen shard` "
                            "with the same --in and --out (it removes it) or delete it")
    if not ip.is_file():
        return problems + [f"{show_path(ip)}: missing (the shard run did not finish, or this is not a shard directory)"]
    try:
        index = json.loads(ip.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return problems + [f"{show_path(ip)}: not valid JSON ({str(e).splitlines()[0]})"]
    bad = index_problems(index, root)
    problems += [f"{show_path(ip)}: {x}" for x in bad]
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list) or any(
            "image_size" in x or "encoding" in x or "classes" in x for x in bad):
        return problems
    k = index.get("num_classes", 0)
    listed = {e.get("file") for e in index["shards"] if isinstance(e, dict)}
    for p in sorted(root.glob("shard-*.h5")):
        if p.name not in listed:
            problems.append(f"{show(p.name)}: not listed in index.json (left from another run?); {REBUILD}")
    seen_keys: set[str] = set()
    total = 0
    for e in index["shards"]:
        if not isinstance(e, dict) or not isinstance(e.get("file"), str) or not SHARD_RE.fullmatch(e["file"]) \
                or type(e.get("count")) is not int:
            continue  # reported by index_problems
        p = root / e["file"]
        if not p.is_file():
            problems.append(f"{e['file']}: missing; {REBUILD}")
            continue
        if p.stat().st_size != e["bytes"]:
            problems.append(f"{e['file']}: size {p.stat().st_size} bytes, index says {e['bytes']}")
        if sha256_file(p) != e["sha256"]:
            problems.append(f"{e['file']}: checksum mismatch (sha256 differs from index.json; file changed or corrupt)")
        try:
            with h5py.File(p, "r") as f:
                layout = storage_problems(f)
                problems += [f"{e['file']}: {x}" for x in layout]
                if layout:
                    continue  # never read data that lives outside the shard
                n = e["count"]
                for name in ("images", "labels", "keys"):
                    if name not in f:
                        problems.append(f"{e['file']}: dataset '{name}' missing")
                    elif len(f[name]) != n:
                        problems.append(f"{e['file']}: '{name}' has {len(f[name])} items, index says count {n}")
                labels = f["labels"][:] if "labels" in f else np.zeros(0, np.int64)
                if len(labels) and (labels.min() < 0 or labels.max() >= k):
                    problems.append(f"{e['file']}: label out of range [0, {k}) (found {labels.min()}..{labels.max()})")
                keys = [x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else x for x in f["keys"][:]] if "keys" in f else []
                for r, key in enumerate(keys):
                    why = path_problem(key)
                    if why:
                        problems.append(f"{e['file']}: keys[{r}] is {show(key)}: {why}; expected a relative path "
                                        f"like 'identity/file.png'; {REBUILD}")
                        break
                if len(set(keys)) != len(keys):
                    problems.append(f"{e['file']}: duplicate key within the shard")
                if seen_keys.intersection(keys):
                    problems.append(f"{e['file']}: duplicate key {show(sorted(seen_keys.intersection(keys))[0])} (also in an earlier shard)")
                seen_keys.update(keys)
                if "images" in f:
                    _check_images(f["images"], index, e["file"], problems)
                total += n
        except (OSError, ValueError, TypeError, KeyError) as ex:
            problems.append(f"{e['file']}: unreadable HDF5 ({show(str(ex))})")
    if total != index.get("total"):
        problems.append(f"{show_path(ip)}: total {show(index.get('total'))} but shards hold {total}")
    return problems


def _check_images(ds, index, name, problems) -> None:
    from PIL import Image

    h, w = index["image_size"]
    try:
        if index["encoding"] == "raw":
            if ds.shape[1:] != (h, w, 3):
                problems.append(f"{name}: images are {ds.shape[1:]}, index says {(h, w, 3)}")
            for s in range(0, len(ds), 1024):
                ds[s : s + 1024]  # reads every chunk (checks HDF5 filters/checksums)
        else:
            decode = ENCODINGS[index["encoding"]].decode
            for i in range(len(ds)):
                try:
                    decode(ds[i], (w, h))  # the size is checked before decoding: a tiny file can declare a huge image
                except (OSError, ValueError, Image.DecompressionBombError) as ex:
                    problems.append(f"{name}: image {i} is not a readable {index['encoding']} of {w}x{h} ({show(str(ex))})")
                    break
    except (OSError, ValueError, Image.DecompressionBombError) as ex:
        problems.append(f"{name}: unreadable image data ({show(str(ex))})")
