"""`synthgen shard` / `synthgen verify`: HDF5 shards plus an index (schema version 1).

Contract (see README "Shard format"):
    shard-00000.h5 ...
        images      raw: uint8 [N, H, W, 3] RGB, chunked one image per chunk
                    png/jpeg: vlen uint8 [N], the encoded file bytes
        labels      int64 [N], contiguous 0..K-1 from the sorted identity folder names
        keys        str [N], relative path in the input tree (unique)
        provenance  optional columns from the input manifests, e.g. seed, psi, noise_mode,
                    noise_seed, det_prob, landmarks [N, 5, 2], template, source
        attrs       schema_version, synthgen_version, image_size [H, W], colour_order "RGB",
                    encoding, compression, shard_index, count, source_config_hash, plan_hash
    index.json      written last (marks completion): schema_version, config, classes, counts,
                    per-shard count / key range / label range / bytes / sha256

Order is deterministic (label, then key); each shard is written under a temporary name and
renamed when complete, so an interrupted run resumes at the first missing shard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthgen import __version__
from synthgen.errors import DataError, UsageError
from synthgen.fsutil import atomic_write_text, sha256_file
from synthgen.runs import config_hash, ensure_writable_dir
from synthgen.imageio import UnreadableImage, list_images, load_rgb

SCHEMA_VERSION = 1
INDEX = "index.json"
ENCODINGS = ("raw", "png", "jpeg")
COMPRESSIONS = ("none", "lzf", "gzip")
# Provenance columns: manifest field -> (dataset name, kind)
PROVENANCE = {
    "seed": ("seed", "int"),
    "noise_seed": ("noise_seed", "int"),
    "psi": ("psi", "float"),
    "noise_mode": ("noise_mode", "str"),
    "prob": ("det_prob", "float"),
    "landmarks": ("landmarks", "points"),
    "template": ("template", "str"),
    "source": ("source", "str"),
    "view": ("view", "int"),
    "fallback": ("align_fallback", "str"),
}


@dataclass
class ShardConfig:
    inp: str  # folder tree (+ manifest.jsonl from generate/align, if present)
    out: str  # shard directory
    shard_size: int = 10000  # items per shard
    encoding: str = "raw"  # raw | png | jpeg
    jpeg_quality: int = 95
    compression: str = "none"  # HDF5 filter for raw images: none | lzf | gzip
    overwrite: bool = False
    progress: bool = True

    RUNTIME_FIELDS = ("inp", "out", "overwrite", "progress")


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.h5"


def _manifest_records(root: Path) -> dict[str, dict] | None:
    m = root / "manifest.jsonl"
    if not m.is_file():
        return None
    recs = {}
    for n, line in enumerate(m.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError:
            raise DataError(f"{m}:{n}: not valid JSON") from None
        # generate: status ok|missing; align: a record with "path" has an output (ok or --on-miss fallback)
        if r.get("path") and r.get("status") != "missing":
            recs[r["path"]] = r
    return recs


def plan(root: Path):
    """-> (items [(key, label, record)], classes). Uses the manifest when there is one."""
    recs = _manifest_records(root)
    if recs is not None:
        keys = sorted(recs)
        missing = [k for k in keys if not (root / k).is_file()]
        if missing:
            raise DataError(f"{root / 'manifest.jsonl'}: lists {len(missing)} files that are missing, "
                            f"e.g. {root / missing[0]}; rerun the stage that wrote it, or remove the manifest")
    else:
        keys = list_images(root)
        recs = {}
    keys = [k for k in keys if "/" in k]
    if not keys:
        raise DataError(f"{root}: no images in identity folders (<identity>/<file>) to shard")
    classes = sorted({k.split("/", 1)[0] for k in keys})
    label_of = {c: i for i, c in enumerate(classes)}
    items = sorted(((k, label_of[k.split("/", 1)[0]], recs.get(k, {})) for k in keys), key=lambda t: (t[1], t[0]))
    return items, classes


def _source_config_hash(root: Path) -> str:
    for name in ("run.json", "align.json"):
        p = root / name
        if p.is_file():
            try:
                return json.loads(p.read_text()).get("config_hash", "")
            except ValueError:
                return ""
    return ""


def _identity(cfg: ShardConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ShardConfig.RUNTIME_FIELDS}


def plan_hash(config_hash: str, part) -> str:
    """Hash of the shard config and exactly which (key, label) pairs a shard holds."""
    h = hashlib.sha256(config_hash.encode())
    for key, label, _ in part:
        h.update(f"{key}\t{label}\n".encode())
    return h.hexdigest()


def _encode(img: np.ndarray, encoding: str, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if encoding == "png":
        Image.fromarray(img).save(buf, format="PNG")
    else:
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _write_shard(path: Path, root: Path, part, cfg: ShardConfig, size, index: int, meta: dict) -> None:
    import h5py

    n = len(part)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    comp = None if cfg.compression == "none" else cfg.compression
    try:
        with h5py.File(tmp, "w") as f:
            if cfg.encoding == "raw":
                ds = f.create_dataset("images", (n, size[0], size[1], 3), np.uint8, chunks=(1, size[0], size[1], 3),
                                      compression=comp)
            else:
                ds = f.create_dataset("images", (n,), h5py.vlen_dtype(np.uint8))
            for i, (key, _, _) in enumerate(part):
                try:
                    img = load_rgb(root / key)
                except UnreadableImage as e:
                    raise DataError(f"{e}; fix or remove the file and rerun") from None
                if img.shape[:2] != tuple(size):
                    raise DataError(f"{root / key}: image is {img.shape[1]}x{img.shape[0]}, but the set is "
                                    f"{size[1]}x{size[0]}; shards hold one size (align first to get equal crops)")
                ds[i] = img if cfg.encoding == "raw" else np.frombuffer(_encode(img, cfg.encoding, cfg.jpeg_quality), np.uint8)
            f.create_dataset("labels", data=np.array([l for _, l, _ in part], np.int64))
            f.create_dataset("keys", data=[k for k, _, _ in part], dtype=h5py.string_dtype())
            _write_provenance(f, part)
            f.attrs.update(meta)
            f.attrs.update(shard_index=index, count=n, plan_hash=plan_hash(meta["config_hash"], part))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_provenance(f, part) -> None:
    import h5py

    present = {k for _, _, r in part for k in r} & set(PROVENANCE)
    for field in sorted(present):
        name, kind = PROVENANCE[field]
        vals = [r.get(field) for _, _, r in part]
        if kind == "int":
            f.create_dataset(name, data=np.array([-1 if v is None else int(v) for v in vals], np.int64))
        elif kind == "float":
            f.create_dataset(name, data=np.array([np.nan if v is None else float(v) for v in vals], np.float64))
        elif kind == "str":
            f.create_dataset(name, data=["" if v is None else str(v) for v in vals], dtype=h5py.string_dtype())
        elif kind == "points":
            arr = np.full((len(vals), 5, 2), np.nan, np.float32)
            for i, v in enumerate(vals):
                if v is not None:
                    arr[i] = np.asarray(v, np.float32).reshape(5, 2)
            f.create_dataset(name, data=arr)


def shard(cfg: ShardConfig | None = None, **kwargs) -> dict:
    """Python API of `synthgen shard`; returns the index dict."""
    from tqdm import tqdm

    cfg = cfg or ShardConfig(**kwargs)
    root, out = Path(cfg.inp), Path(cfg.out)
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory (expected an identity-folder tree)", "--in")
    if cfg.encoding not in ENCODINGS:
        raise UsageError(f"'{cfg.encoding}' is not one of {', '.join(ENCODINGS)}", "--encoding")
    if cfg.compression not in COMPRESSIONS:
        raise UsageError(f"'{cfg.compression}' is not one of {', '.join(COMPRESSIONS)}", "--compression")
    if cfg.shard_size < 1:
        raise UsageError(f"must be >= 1, got {cfg.shard_size}", "--shard-size")
    items, classes = plan(root)
    ident = _identity(cfg)
    chash = config_hash(ident)
    _check_out(out, chash, cfg.overwrite)
    if (out / INDEX).is_file():
        return json.loads((out / INDEX).read_text())  # finished run with this config: nothing to do
    ensure_writable_dir(out)
    size = load_rgb(root / items[0][0]).shape[:2]
    meta = {"schema_version": SCHEMA_VERSION, "synthgen_version": __version__, "image_size": list(size),
            "colour_order": "RGB", "encoding": cfg.encoding, "compression": cfg.compression,
            "source_config_hash": _source_config_hash(root), "config_hash": chash}
    parts = [items[i : i + cfg.shard_size] for i in range(0, len(items), cfg.shard_size)]
    entries = []
    bar = tqdm(total=len(items), unit="img", desc="shard", disable=not cfg.progress, dynamic_ncols=True)
    for i, part in enumerate(parts):
        path = out / shard_name(i)
        if not _shard_done(path, meta, part):
            _write_shard(path, root, part, cfg, size, i, meta)
        bar.update(len(part))
        entries.append({"file": path.name, "count": len(part), "first_key": part[0][0], "last_key": part[-1][0],
                        "label_min": part[0][1], "label_max": part[-1][1], "bytes": path.stat().st_size,
                        "sha256": sha256_file(path)})
    bar.close()
    per_class = np.bincount([l for _, l, _ in items], minlength=len(classes)).tolist()
    index = {"schema_version": SCHEMA_VERSION, "synthgen_version": __version__, "config": ident, "config_hash": chash,
             "source": str(root), "source_config_hash": meta["source_config_hash"], "image_size": list(size),
             "colour_order": "RGB", "encoding": cfg.encoding, "num_classes": len(classes), "classes": classes,
             "items_per_class": per_class, "total": len(items), "shards": entries,
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_text(out / INDEX, json.dumps(index, indent=1))
    return index


def _shard_done(path: Path, meta: dict, part) -> bool:
    if not path.is_file():
        return False
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("plan_hash") == plan_hash(meta["config_hash"], part) and int(f.attrs.get("count", -1)) == len(part)
    except OSError:
        return False


def _check_out(out: Path, chash: str, overwrite: bool) -> None:
    if not out.exists() or not any(out.iterdir()):
        return
    prev_hash = None
    if (out / INDEX).is_file():
        prev_hash = json.loads((out / INDEX).read_text()).get("config_hash")
    else:
        import h5py

        for p in sorted(out.glob("shard-*.h5")):
            try:
                with h5py.File(p, "r") as f:
                    prev_hash = f.attrs.get("config_hash")
            except OSError:
                continue
            break
    if prev_hash == chash:
        return
    if not overwrite:
        what = "shards written with a different config" if prev_hash else "other files"
        raise UsageError(f"{out} is not empty and holds {what}; use a new directory or pass --overwrite", "--out")
    shutil.rmtree(out)


# ----------------------------------------------------------------------------------------------
# verify


def verify(root) -> list[str]:
    """Check every shard against index.json; returns a list of problems (empty = all good)."""
    import h5py

    root = Path(root)
    ip = root / INDEX
    if not ip.is_file():
        return [f"{ip}: missing (the shard run did not finish, or this is not a shard directory)"]
    try:
        index = json.loads(ip.read_text())
    except ValueError as e:
        return [f"{ip}: not valid JSON ({e})"]
    problems = []
    if index.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"{ip}: schema_version {index.get('schema_version')} (this synthgen reads {SCHEMA_VERSION})")
    k = index.get("num_classes", 0)
    seen_keys: set[str] = set()
    total = 0
    for e in index.get("shards", []):
        p = root / e["file"]
        if not p.is_file():
            problems.append(f"{e['file']}: missing")
            continue
        if p.stat().st_size != e["bytes"]:
            problems.append(f"{e['file']}: size {p.stat().st_size} bytes, index says {e['bytes']}")
        if sha256_file(p) != e["sha256"]:
            problems.append(f"{e['file']}: checksum mismatch (sha256 differs from index.json; file changed or corrupt)")
        try:
            with h5py.File(p, "r") as f:
                n = e["count"]
                for name in ("images", "labels", "keys"):
                    if name not in f:
                        problems.append(f"{e['file']}: dataset '{name}' missing")
                    elif len(f[name]) != n:
                        problems.append(f"{e['file']}: '{name}' has {len(f[name])} items, index says count {n}")
                labels = f["labels"][:] if "labels" in f else np.zeros(0, np.int64)
                if len(labels) and (labels.min() < 0 or labels.max() >= k):
                    problems.append(f"{e['file']}: label out of range [0, {k}) (found {labels.min()}..{labels.max()})")
                keys = [x.decode() if isinstance(x, bytes) else x for x in f["keys"][:]] if "keys" in f else []
                if len(set(keys)) != len(keys):
                    problems.append(f"{e['file']}: duplicate key within the shard")
                if seen_keys.intersection(keys):
                    problems.append(f"{e['file']}: duplicate key {sorted(seen_keys.intersection(keys))[0]} (also in an earlier shard)")
                seen_keys.update(keys)
                if "images" in f:
                    _check_images(f["images"], index, e["file"], problems)
                total += n
        except OSError as ex:
            problems.append(f"{e['file']}: unreadable HDF5 ({ex})")
    if total != index.get("total"):
        problems.append(f"{ip}: total {index.get('total')} but shards hold {total}")
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
            for i in range(len(ds)):
                im = Image.open(io.BytesIO(ds[i].tobytes()))
                im.load()
                if im.size != (w, h):
                    problems.append(f"{name}: image {i} is {im.size}, index says {(w, h)}")
                    break
    except (OSError, ValueError) as ex:
        problems.append(f"{name}: unreadable image data ({ex})")
