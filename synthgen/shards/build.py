"""`synthgen shard`: plan, write the shards that are missing or wrong, then index.json.

Resume and repair: see the package docstring (`synthgen.shards`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthgen import __version__
from synthgen.errors import DataError, UsageError
from synthgen.fsutil import atomic_write_text, sha256_file
from synthgen.imageio import UnreadableImage, load_rgb
from synthgen.options import check_choices, check_ranges, opt
from synthgen.runs import config_hash, ensure_writable_dir
from synthgen.safepath import show_path
from synthgen.stage import StageSummary

from . import writer
from .format import COMPRESSIONS, ENCODINGS, INDEX, JOURNAL, SCHEMA_VERSION, SHARD_RE, TEMP_GLOB, plan_hash, shard_name
from synthgen.runs import source_config_hash

from .plan import plan


@dataclass
class ShardConfig:
    inp: str = opt(flag="--in", path="any", metavar="DIR",
                   help="Identity-folder tree (+ manifest.jsonl from generate/align).")
    out: str = opt(path="dir", metavar="DIR", help="Shard directory.")
    shard_size: int = opt(10000, range=(1, None), unit="images", metavar="N", help="Items per shard.")
    encoding: str = opt("raw", choices=ENCODINGS, help="How images are stored.")
    jpeg_quality: int = opt(95, range=(1, 100), metavar="Q", help="With --encoding jpeg.")
    compression: str = opt("none", choices=COMPRESSIONS, help="HDF5 filter for raw images.")
    overwrite: bool = opt(False, help="Replace an output directory that holds a different run.")
    progress: bool = True

    RUNTIME_FIELDS = ("inp", "out", "overwrite", "progress")


def _identity(cfg: ShardConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ShardConfig.RUNTIME_FIELDS}


def validate(cfg: ShardConfig, host: bool = True) -> None:
    """Side-effect-free checks of a ShardConfig: field types, choices, ranges (also run by
    `synthgen run` for every stage before anything is created)."""
    from synthgen.runs import check_types

    check_types(cfg)
    check_ranges(cfg, ("jpeg_quality",))
    check_choices(cfg, ("encoding", "compression"), message="'{value}' is not one of {choices}")
    if cfg.shard_size < 1:
        raise UsageError(f"must be >= 1, got {cfg.shard_size}", "--shard-size")


def shard(cfg: ShardConfig | None = None, **kwargs) -> dict:
    """Python API of `synthgen shard`; returns the index dict. Resumes and repairs (module docstring)."""
    from tqdm import tqdm

    cfg = cfg or ShardConfig(**kwargs)
    root, out = Path(cfg.inp), Path(cfg.out)
    validate(cfg)
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory (expected an identity-folder tree)", "--in")
    items, classes = plan(root)
    ident = _identity(cfg)
    chash = config_hash(ident)
    _check_out(out, chash, cfg.overwrite)
    if not out.is_dir() or not any(out.glob("shard-*.h5")):
        _check_inputs(root, items)  # a fresh run: refuse unreadable or odd-sized inputs before --out exists
    ensure_writable_dir(out)
    try:
        index = _shard_into(root, out, cfg, items, classes, ident, chash, tqdm)
        return StageSummary("shard", index, status="complete", config_hash=chash,
                            brief={"total": index["total"], "classes": index["num_classes"], "shards": len(index["shards"])})
    except OSError as e:  # journal, index, temp cleanup: a full disk or a permission problem
        raise writer.write_error(Path(e.filename) if e.filename else out, e) from None


def _check_inputs(root: Path, items) -> None:
    """Every input's header (no pixels decoded): one that Pillow cannot open, or whose size differs
    from the first's, is refused naming the file. A file damaged past its header is still caught
    while its shard is written (finished shards are kept; the rerun resumes)."""
    from synthgen.imageio import image_size

    first = None
    for key, _label, _rec in items:
        try:
            size = image_size(root / key)
        except UnreadableImage as e:
            raise DataError(f"{e}; fix or remove the file and rerun") from None
        if first is None:
            first = (key, size)
        elif size != first[1]:
            raise DataError(f"{show_path(root / key)}: image is {size[1]}x{size[0]}, but the set is "
                            f"{first[1][1]}x{first[1][0]} (as {first[0]}); shards hold one size (align first to get equal crops)")


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
            "source_config_hash": source_config_hash(root), "config_hash": chash}
    parts = [items[i : i + cfg.shard_size] for i in range(0, len(items), cfg.shard_size)]
    entries = []
    bar = tqdm(total=len(items), unit="img", desc="shard", disable=not cfg.progress, dynamic_ncols=True)
    for i, part in enumerate(parts):
        path = out / shard_name(i)
        ph = plan_hash(chash, part)
        rec = _verified(path, trusted.get(path.name, []), ph, len(part), meta["source_config_hash"])
        if rec is None:
            writer.write_shard(path, root, part, cfg, size, i, meta)
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


def _verified(path: Path, candidates: list[dict], ph: str, count: int, source: str) -> dict | None:
    """The shard's {"bytes", "sha256"} if it matches a trusted checksum, the plan and the source's
    config hash (a source re-made by another config holds other pixels under the same keys), else None."""
    if not candidates or path.is_symlink() or not path.is_file():
        return None  # a symlink is replaced by a real shard (readers refuse links leaving the folder)
    size = path.stat().st_size
    sized = [c for c in candidates if c["bytes"] == size]
    if not sized:
        return None
    sha = sha256_file(path)
    if not any(c["sha256"] == sha for c in sized) or not _shard_done(path, ph, count, source):
        return None
    return {"bytes": size, "sha256": sha}


def _shard_done(path: Path, ph: str, count: int, source: str) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("plan_hash") == ph and int(f.attrs.get("count", -1)) == count and \
                str(f.attrs.get("source_config_hash", "")) == source
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


