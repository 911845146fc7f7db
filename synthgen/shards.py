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
    .shard-journal.jsonl   only while a run is unfinished: one line per completed shard
                    {"file", "bytes", "sha256", "plan_hash"}, appended after its rename;
                    removed once index.json is written

Order is deterministic (label, then key); each shard is written under a temporary name
(`.shard-NNNNN.h5.tmp-PID`) and renamed when complete.

Resume and repair. `shard` over an existing output of the same config first deletes temp
files a killed writer left (`.*.tmp-*`), then keeps a shard only if its checksum matches one
recorded when it was completed: its entry in index.json, or else its journal line (sizes are
compared first, then the sha256 of the whole file is recomputed, so a rerun reads every shard
once: that is the price of noticing a flipped byte; a run with nothing to repair writes
nothing), and its `plan_hash` attribute says it holds exactly the planned items. Every other
shard is rewritten, shard files beyond the plan are removed, and index.json is rewritten
unless it is already exactly right. With neither index.json nor a journal line a shard has no
trusted checksum and is rewritten.

Paths read from files stay home (`synthgen.safepath`): manifest `path` / `source`, shard
`keys` and index.json `file` entries must be normalised relative paths (index files: plain
`shard-NNNNN.h5` names inside the folder). HDF5 external links, external raw storage and
virtual datasets are refused wherever shards are read (`open_shard`) and by `verify`.

A full disk (or any other write error) never reaches HDF5: the shard is written through a
file object that records the first OSError and swallows the rest, so HDF5 closes its file
cleanly (HDF5 left with a failed flush crashes later with SIGSEGV/SIGBUS at close), the temp
file is removed and a one-line DataError names it; a rerun resumes.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import io
import json
import os
import re
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
from synthgen.safepath import path_problem, safe_relpath, show, show_path

SCHEMA_VERSION = 1
INDEX = "index.json"
JOURNAL = ".shard-journal.jsonl"
SHARD_RE = re.compile(r"shard-[0-9]{5,}\.h5")
TEMP_GLOB = ".*.tmp-*"  # temp files of our atomic writers (shards, index, journal-free probes)
REBUILD = "rerun `synthgen shard` with the same --in and --out to rebuild it"
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
    fix = "rerun the stage that wrote it, or remove the manifest to shard the folder tree as it is"
    try:
        text = m.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{show_path(m)}: unreadable ({e}); {fix}") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError:
            raise DataError(f"{show_path(m)}:{n}: not valid JSON; {fix}") from None
        if not isinstance(r, dict):
            raise DataError(f"{show_path(m)}:{n}: found a JSON {type(r).__name__}, expected an object per line; {fix}")
        # generate: status ok|missing; align: a record with "path" has an output (ok or --on-miss fallback)
        if r.get("path") and r.get("status") != "missing":
            key = safe_relpath(r["path"], root, m, f"line {n} 'path'", fix)
            if r.get("source") is not None:  # align: relative to align's input tree (provenance only)
                safe_relpath(r["source"], None, m, f"line {n} 'source'", fix)
            recs[key] = r
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
        for k in keys:  # keys become shard keys: no control characters or backslashes in them
            safe_relpath(k, None, root, "an image file name", "rename the file")
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
                d = json.loads(p.read_text())
            except (OSError, ValueError):
                return ""
            h = d.get("config_hash", "") if isinstance(d, dict) else ""
            return h if isinstance(h, str) and re.fullmatch(r"[0-9a-f]{0,64}", h) else ""
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


class _GuardedFile:
    """Unbuffered file object for h5py's `fileobj` driver that never lets a write error reach HDF5.

    HDF5 cannot recover from a failed write: its metadata flush fails again at close and the
    library then crashes (SIGSEGV/SIGBUS) at interpreter exit. So the first OSError (ENOSPC,
    EDQUOT, EFBIG, EIO) is recorded, later writes are dropped, HDF5 closes cleanly, and the
    caller raises `error` as a DataError and deletes the file.
    """

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        self.pos, self.error = 0, None

    def seek(self, offset, whence=0):
        self.pos = os.lseek(self.fd, offset, whence)
        return self.pos

    def tell(self):
        return self.pos

    def readinto(self, buf):
        data = os.pread(self.fd, len(buf), self.pos)
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def read(self, n=-1):
        data = os.pread(self.fd, n if n >= 0 else os.fstat(self.fd).st_size, self.pos)
        self.pos += len(data)
        return data

    def write(self, buf):
        view = memoryview(buf).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += os.pwrite(self.fd, view[done:], self.pos + done)
            except OSError as e:
                self.error = e
        self.pos += len(view)
        return len(view)

    def truncate(self, size=None):
        if self.error is None:
            try:
                os.ftruncate(self.fd, self.pos if size is None else size)
            except OSError as e:
                self.error = e
        return size

    def flush(self):
        pass

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _write_error(path: Path, e: BaseException, need: int | None = None) -> DataError:
    what = getattr(e, "strerror", None) or show(str(e)) or type(e).__name__
    room = f" (this shard needs about {need / 1e6:.0f} MB)" if need else ""
    return DataError(f"{show_path(path)}: cannot write ({what}); free disk space or fix permissions{room}, then "
                     "rerun the same command: finished shards are kept")


def _write_shard(path: Path, root: Path, part, cfg: ShardConfig, size, index: int, meta: dict) -> None:
    import h5py

    n = len(part)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    comp = None if cfg.compression == "none" else cfg.compression
    need = n * size[0] * size[1] * 3
    guard = None
    try:
        guard = _GuardedFile(tmp)
        try:
            with h5py.File(guard, "w") as f:
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
                    if guard.error is not None:
                        break  # the disk is full: stop; HDF5 still closes cleanly below
                if guard.error is None:
                    f.create_dataset("labels", data=np.array([l for _, l, _ in part], np.int64))
                    f.create_dataset("keys", data=[k for k, _, _ in part], dtype=h5py.string_dtype())
                    _write_provenance(f, part)
                    f.attrs.update(meta)
                    f.attrs.update(shard_index=index, count=n, plan_hash=plan_hash(meta["config_hash"], part))
        except (OSError, RuntimeError, ValueError) as e:
            if guard.error is None:
                raise
            raise _write_error(tmp, guard.error, need) from None
        finally:
            guard.close()
        if guard.error is not None:
            raise _write_error(tmp, guard.error, need)
        os.replace(tmp, path)
    except OSError as e:  # creating the temp file, renaming it
        raise _write_error(Path(e.filename) if e.filename else tmp, e, need) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


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
    """Python API of `synthgen shard`; returns the index dict. Resumes and repairs (module docstring)."""
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
    ensure_writable_dir(out)
    try:
        return _shard_into(root, out, cfg, items, classes, ident, chash, tqdm)
    except OSError as e:  # journal, index, temp cleanup: a full disk or a permission problem
        raise _write_error(Path(e.filename) if e.filename else out, e) from None


def _shard_into(root, out, cfg, items, classes, ident, chash, tqdm) -> dict:
    for p in sorted(out.glob(TEMP_GLOB)):  # left by a killed writer (one writer per folder)
        p.unlink(missing_ok=True)
    old_index = _read_index_quiet(out)
    trusted = _trusted_checksums(out, old_index)
    try:
        size = load_rgb(root / items[0][0]).shape[:2]
    except UnreadableImage as e:
        raise DataError(f"{e}; fix or remove the file and rerun") from None
    meta = {"schema_version": SCHEMA_VERSION, "synthgen_version": __version__, "image_size": list(size),
            "colour_order": "RGB", "encoding": cfg.encoding, "compression": cfg.compression,
            "source_config_hash": _source_config_hash(root), "config_hash": chash}
    parts = [items[i : i + cfg.shard_size] for i in range(0, len(items), cfg.shard_size)]
    entries = []
    bar = tqdm(total=len(items), unit="img", desc="shard", disable=not cfg.progress, dynamic_ncols=True)
    for i, part in enumerate(parts):
        path = out / shard_name(i)
        ph = plan_hash(chash, part)
        rec = _verified(path, trusted.get(path.name, []), ph, len(part))
        if rec is None:
            _write_shard(path, root, part, cfg, size, i, meta)
            rec = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
            with open(out / JOURNAL, "a", encoding="utf-8") as j:
                j.write(json.dumps({"file": path.name, **rec, "plan_hash": ph}) + "\n")
        bar.update(len(part))
        entries.append({"file": path.name, "count": len(part), "first_key": part[0][0], "last_key": part[-1][0],
                        "label_min": part[0][1], "label_max": part[-1][1], **rec})
    bar.close()
    for p in out.glob("shard-*.h5"):  # shards beyond the plan (the input shrank): not ours any more
        if SHARD_RE.fullmatch(p.name) and int(p.name[6:-3]) >= len(parts):
            p.unlink()
    per_class = np.bincount([l for _, l, _ in items], minlength=len(classes)).tolist()
    index = {"schema_version": SCHEMA_VERSION, "synthgen_version": __version__, "config": ident, "config_hash": chash,
             "source": str(root), "source_config_hash": meta["source_config_hash"], "image_size": list(size),
             "colour_order": "RGB", "encoding": cfg.encoding, "num_classes": len(classes), "classes": classes,
             "items_per_class": per_class, "total": len(items), "shards": entries,
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if old_index is not None and {**old_index, "created": None} == {**index, "created": None}:
        index = old_index  # nothing was wrong: leave index.json (and its mtime) alone
    else:
        atomic_write_text(out / INDEX, json.dumps(index, indent=1))
    (out / JOURNAL).unlink(missing_ok=True)  # index.json now holds every checksum
    return index


def _read_index_quiet(out: Path) -> dict | None:
    try:
        d = json.loads((out / INDEX).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def _trusted_checksums(out: Path, old_index: dict | None) -> dict[str, list[dict]]:
    """file name -> [{"bytes", "sha256"}] recorded when that shard was completed (index, journal)."""
    found: dict[str, list[dict]] = {}

    def add(e):
        if (isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("bytes"), int)
                and isinstance(e.get("sha256"), str)):
            found.setdefault(e["file"], []).append({"bytes": e["bytes"], "sha256": e["sha256"]})

    if old_index is not None and isinstance(old_index.get("shards"), list):
        for e in old_index["shards"]:
            add(e)
    try:
        lines = (out / JOURNAL).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    for line in lines:
        try:
            add(json.loads(line))
        except ValueError:  # torn last line of a killed run
            continue
    return found


def _verified(path: Path, candidates: list[dict], ph: str, count: int) -> dict | None:
    """The shard's {"bytes", "sha256"} if it matches a trusted checksum and the plan, else None."""
    if not candidates or path.is_symlink() or not path.is_file():
        return None  # a symlink is replaced by a real shard (readers refuse links leaving the folder)
    size = path.stat().st_size
    sized = [c for c in candidates if c["bytes"] == size]
    if not sized:
        return None
    sha = sha256_file(path)
    if not any(c["sha256"] == sha for c in sized) or not _shard_done(path, ph, count):
        return None
    return {"bytes": size, "sha256": sha}


def _shard_done(path: Path, ph: str, count: int) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("plan_hash") == ph and int(f.attrs.get("count", -1)) == count
    except (OSError, ValueError, TypeError):
        return False


def _ours(name: str) -> bool:
    """Bookkeeping files a killed run leaves that do not make a folder "not empty"."""
    return name == JOURNAL or fnmatch.fnmatch(name, TEMP_GLOB) or name.startswith(".write-test-")


def _check_out(out: Path, chash: str, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{show_path(out)} exists and is not a directory", "--out")
    if not out.exists() or all(_ours(p.name) for p in out.iterdir()):
        return
    prev_hash = None
    index = _read_index_quiet(out)
    if index is not None:
        prev_hash = index.get("config_hash")
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
        raise UsageError(f"{show_path(out)} is not empty and holds {what}; use a new directory or pass --overwrite", "--out")
    shutil.rmtree(out)


# ----------------------------------------------------------------------------------------------
# reading shards safely (used by synthgen.data, export, audit and verify)


def storage_problems(group, prefix: str = "") -> list[str]:
    """Links and datasets whose data could come from outside the file: external links, soft
    links, external raw storage, virtual datasets. Shards hold plain contiguous/chunked data."""
    import h5py

    problems = []
    for name in group:
        where = f"{prefix}{name}"
        link = group.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            target = getattr(link, "filename", None) or getattr(link, "path", "")
            problems.append(f"'{show(where)[1:-1]}' is a {type(link).__name__} to {show(target)}; shards hold no links")
            continue
        obj = group[name]
        if isinstance(obj, h5py.Group):
            problems.extend(storage_problems(obj, where + "/"))
        elif isinstance(obj, h5py.Dataset):
            if obj.external:
                files = [show(os.fsdecode(x[0]) if isinstance(x[0], bytes) else x[0]) for x in obj.external]
                problems.append(f"dataset '{show(where)[1:-1]}' stores its data in external file(s) {', '.join(files)} "
                                "(external raw storage); shards keep all data inside the file")
            elif obj.is_virtual:
                problems.append(f"dataset '{show(where)[1:-1]}' is a virtual dataset (data mapped from other files); "
                                "shards keep all data inside the file")
    return problems


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


# ----------------------------------------------------------------------------------------------
# verify


def verify(root) -> list[str]:
    """Check every shard against index.json; returns a list of one-line problems (empty = all good)."""
    import h5py

    root = Path(root)
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
            for i in range(len(ds)):
                im = Image.open(io.BytesIO(ds[i].tobytes()))
                if im.size != (w, h):  # checked before decoding: a tiny file can declare a huge image
                    problems.append(f"{name}: image {i} is {im.size}, index says {(w, h)}")
                    break
                im.load()
    except (OSError, ValueError, Image.DecompressionBombError) as ex:
        problems.append(f"{name}: unreadable image data ({show(str(ex))})")
