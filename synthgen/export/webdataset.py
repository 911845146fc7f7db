"""WebDataset: shard-000000.tar, shard-000001.tar, ... plus one DALI index per tar.

Each tar (POSIX ustar) holds --samples-per-file samples; sample n of the export is three members

    <n:09d>.cls    the label as ASCII digits (no newline)
    <n:09d>.json   {"key": shard key, "label": int, "class": class name}
    <n:09d>.png    the image (.jpg with --image-format jpg)

The basename is the sample's position in the export: unique, no dots (webdataset and DALI split
a member name at its first dot), no spaces (the DALI index is space-separated). Members are
byte-deterministic: mtime 0, uid/gid 0, empty uname/gname, mode 0644, samples in shard order
(label, key) or a seeded shuffle. The same shards and options give byte-identical files.

shard-000000.idx is the index `fn.readers.webdataset(index_paths=...)` reads, version v1.2
(what DALI's tools/wds2idx.py writes; dali/operators/reader/loader/webdataset_loader.cc parses
it): a first line "v1.2 <samples>", then one line per sample listing each member as
"<ext> <data offset> <size> <member name>", the offset being that of the member's data (a
multiple of 512) in the tar.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from synthgen.encodings import ENCODINGS, FILE_FORMATS
from synthgen.errors import UsageError
from synthgen.fsutil import atomic_path
from synthgen.safepath import show

from .common import check_samples_per_file, fresh, order, remove_stale

INDEX_VERSION = "v1.2"
BLOCK = 512
STALE = r"shard-\d{6,}\.(tar|idx)"  # what an earlier export into the same --out may have left


def check(opts: dict) -> None:
    if opts["image_format"] not in FILE_FORMATS:
        raise UsageError(f"{show(opts['image_format'])} is not one of {', '.join(FILE_FORMATS)}", "--image-format")
    check_samples_per_file(opts)


def _member(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.type = size, 0, 0o644, tarfile.REGTYPE
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def _write_tar(f, samples) -> list[str]:
    """samples: [(basename, [(ext, bytes), ...])] -> the index lines (without the header)."""
    lines = []
    with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for base, members in samples:
            parts = []
            for ext, data in members:
                name = f"{base}.{ext}"
                header_at = tar.offset
                tar.addfile(_member(name, len(data)), io.BytesIO(data))
                parts.append(f"{ext} {header_at + BLOCK} {len(data)} {name}")  # ustar: one 512-byte header
            lines.append(" ".join(parts) + "\n")
    return lines


def write(shards, out: Path, opts: dict, progress: bool) -> dict:
    from tqdm import tqdm

    ext, quality, per = opts["image_format"], opts["jpeg_quality"], opts["samples_per_file"]
    enc = ENCODINGS[FILE_FORMATS[ext]]
    classes = shards.index["classes"]
    items = order(len(shards.labels), opts["shuffle"], opts["seed"])
    n = len(items)
    written = []
    bar = tqdm(total=n, unit="img", desc="webdataset", disable=not progress)
    for t, start in enumerate(range(0, n, per)):
        def samples(start=start):
            for pos in range(start, min(start + per, n)):
                gi = int(items[pos])
                label = int(shards.labels[gi])
                meta = {"key": shards.key(gi), "label": label, "class": classes[label]}
                yield f"{pos:09d}", [("cls", str(label).encode("ascii")),
                                     ("json", json.dumps(meta, separators=(",", ":")).encode("ascii")),
                                     (ext, enc.encode(shards.image(gi), quality))]
                bar.update(1)

        name = f"shard-{t:06d}"
        # An earlier export's index would describe another tar: it goes first, and the new one is
        # written after its tar, so a crash leaves a tar without an index, never a wrong index.
        (out / f"{name}.idx").unlink(missing_ok=True)
        with atomic_path(out / f"{name}.tar") as tmp, open(fresh(tmp), "wb") as f:
            lines = _write_tar(f, samples())
        with atomic_path(out / f"{name}.idx") as tmp:
            fresh(tmp).write_text(f"{INDEX_VERSION} {len(lines)}\n" + "".join(lines), encoding="ascii")
        written += [f"{name}.tar", f"{name}.idx"]
    bar.close()
    stale = remove_stale(out, STALE, set(written))
    return {"format": "webdataset", "images": n, "classes": len(classes), "tars": len(written) // 2,
            "shuffled": bool(opts["shuffle"]), "removed_stale": stale, "out": str(out)}
