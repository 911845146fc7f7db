"""Reading shards safely (used by synthgen.data, export, audit and verify): index.json checked,
only plain HDF5 data inside the file (no links, external raw storage or virtual datasets)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from synthgen.errors import DataError
from synthgen.safeload import h5_storage_problems
from synthgen.safepath import safe_relpath, show, show_path

from .format import ENCODINGS, INDEX, REBUILD, SCHEMA_VERSION, SHARD_RE


def storage_problems(group) -> list[str]:
    """Links and datasets whose data could come from outside the file (see synthgen.safeload), and
    datasets that declare more than the file stores (declared_size_problems)."""
    out = [p.replace("only data inside the file is read", "shards keep all data inside the file")
           for p in h5_storage_problems(group)]
    return out or declared_size_problems(group)


def declared_size_problems(group) -> list[str]:
    """A dataset reads back at its declared shape whether or not its data was ever written: an 8 KB
    file can declare gigabytes of never-written chunks. Every dataset synthgen writes has all its
    storage written: contiguous ones their full size, chunked ones every chunk. Checked from the
    file's metadata before anything is read (and so before anything is allocated)."""
    import math

    import h5py

    out = []
    for name, ds in group.items():
        if not isinstance(ds, h5py.Dataset) or ds.size == 0:
            continue
        stored = ds.id.get_storage_size()
        if ds.chunks is None:
            declared = ds.size * ds.dtype.itemsize
            if stored < declared:
                out.append(f"dataset '{name}' declares {declared:,} bytes but stores {stored:,}: its data was never "
                           "written (truncated or forged)")
            continue
        expected = math.prod(math.ceil(n / c) for n, c in zip(ds.shape, ds.chunks))
        written = ds.id.get_num_chunks()
        if written < expected:
            out.append(f"dataset '{name}' declares {expected:,} chunks but {written:,} were written (truncated or "
                       "forged)")
    return out


def open_shard(path: Path, count: int | None = None, index: dict | None = None):
    """Open a shard read-only after checking it is a plain synthgen shard; DataError otherwise.

    count: the number of items index.json gives it; index: the checked index.json, whose
    encoding and image_size the `images` dataset must match."""
    import h5py

    if not path.is_file():
        raise DataError(f"{show_path(path)}: missing (index.json lists it); {REBUILD}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{show_path(path)}: not a readable HDF5 file ({str(e).splitlines()[0] if str(e) else e}); {REBUILD}") from None
    try:
        problems = storage_problems(f)
        for name in ("images", "labels", "keys"):
            if name not in f:
                problems.append(f"dataset '{name}' missing")
            elif count is not None and f[name].shape[:1] != (count,):
                problems.append(f"dataset '{name}' has shape {f[name].shape}, index.json says {count} items")
        if index is not None and "images" in f and not problems:
            ds = f["images"]
            h, w = index["image_size"]
            if index["encoding"] == "raw" and (ds.dtype != np.uint8 or ds.shape[1:] != (h, w, 3)):
                problems.append(f"images are {ds.dtype} {ds.shape[1:]}, index.json says uint8 {(h, w, 3)}")
            elif index["encoding"] != "raw" and h5py.check_vlen_dtype(ds.dtype) != np.uint8:
                problems.append(f"images are {ds.dtype}, index.json says encoded bytes (vlen uint8)")
    except Exception:
        f.close()
        raise
    if problems:
        f.close()
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DataError(f"{show_path(path)}: {problems[0]}{more}; not a shard synthgen wrote: {REBUILD}")
    return f


def index_problems(index, root: Path) -> list[str]:
    """Structural problems of an index.json (each one line, without the file name)."""
    if not isinstance(index, dict):
        return [f"found a JSON {type(index).__name__}, expected an object"]
    out = []
    if index.get("schema_version") != SCHEMA_VERSION:
        out.append(f"schema_version {show(index.get('schema_version'))} (this synthgen reads {SCHEMA_VERSION})")
    if index.get("encoding") not in ENCODINGS:
        out.append(f"encoding {show(index.get('encoding'))}, expected one of {', '.join(ENCODINGS)}")
    size = index.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(type(x) is int and 0 < x <= 65535 for x in size)):
        out.append(f"image_size {show(size)}, expected [height, width]")
    classes = index.get("classes")
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        out.append("classes is not a list of folder names")
    elif index.get("num_classes") != len(classes):
        out.append(f"num_classes {show(index.get('num_classes'))} but {len(classes)} classes")
    shards = index.get("shards")
    if not isinstance(shards, list):
        return out + ["shards is not a list"]
    for i, e in enumerate(shards):
        if not isinstance(e, dict):
            out.append(f"shards[{i}] is not an object")
            continue
        try:
            safe_relpath(e.get("file"), root, root / INDEX, f"shards[{i}] 'file'")
            if not SHARD_RE.fullmatch(e["file"]):
                out.append(f"shards[{i}] 'file' is {show(e['file'])}; expected a plain shard-NNNNN.h5 name in this folder")
        except DataError as ex:
            out.append(str(ex).split(": ", 1)[1])
        for k in ("count", "bytes"):
            if type(e.get(k)) is not int or e[k] < 0:
                out.append(f"shards[{i}] '{k}' is {show(e.get(k))}, expected a count >= 0")
        if not (isinstance(e.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", e["sha256"])):
            out.append(f"shards[{i}] 'sha256' is {show(e.get('sha256'))}, expected 64 hex digits")
    return out


def load_index(root: Path) -> dict:
    """index.json of a finished shard directory, checked; DataError (one line) otherwise."""
    ip = Path(root) / INDEX
    if not ip.is_file():
        raise DataError(f"{show_path(ip)}: missing; not a finished synthgen shard directory (run `synthgen shard`, "
                        "or rerun it with the same --in and --out to finish)")
    try:
        index = json.loads(ip.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{show_path(ip)}: not valid JSON ({str(e).splitlines()[0]}); {REBUILD}") from None
    problems = index_problems(index, Path(root))
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DataError(f"{show_path(ip)}: {problems[0]}{more}; {REBUILD}")
    return index


