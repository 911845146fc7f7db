"""`synthgen export`: shards -> formats trainers read.

recordio    train.rec + train.idx + property, as insightface's arcface_torch `MXFaceDataset`
            reads them, written without mxnet. RecordIO framing: each record is
            uint32 magic 0xced7230a, uint32 (cflag << 29 | length), payload, zero padding to a
            multiple of 4. Payload = IRHeader struct '<IfQQ' (flag, label, id, id2), then for
            flag > 0 `flag` float32 labels, then the data. Record 0 is a header with flag 2 and
            labels [N + 1, N + 1 + K]: images are records 1..N; records N+1..N+K (unshuffled
            export only) hold each class's image id range [start, end). Image records have
            flag 0, the float label and JPEG bytes. train.idx lines: "<id>\t<byte offset>".
            property: "<num_classes>,<height>,<width>".
imagefolder <class>/<file>.png|jpg, one folder per class.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np

from synthgen.errors import DataError, UsageError
from synthgen.fsutil import atomic_path, atomic_write_text
from synthgen.runs import ensure_writable_dir
from synthgen.safepath import safe_relpath, show, show_path

RECORDIO_MAGIC = 0xCED7230A
IRHEADER = struct.Struct("<IfQQ")


def _record(payload: bytes) -> bytes:
    n = len(payload)
    if n >= 1 << 29:
        raise ValueError("record too large for RecordIO (>= 512 MiB)")
    pad = (4 - n % 4) % 4
    return struct.pack("<II", RECORDIO_MAGIC, n) + payload + b"\x00" * pad


def pack_header(flag: int, label, rid: int, rid2: int = 0) -> bytes:
    if flag > 0:
        return IRHEADER.pack(flag, 0.0, rid, rid2) + np.asarray(label, np.float32).tobytes()
    return IRHEADER.pack(0, float(label), rid, rid2)


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _fresh(tmp: Path) -> Path:
    """Remove whatever sits at a temp name first: in a reused --out it could be a planted symlink
    (the name is predictable), and opening it for writing would follow the link out of --out."""
    tmp.unlink(missing_ok=True)
    return tmp


def export(root, out, format: str, shuffle: bool = False, seed: int = 0, jpeg_quality: int = 95,
           image_format: str = "png", overwrite: bool = False, progress: bool = True) -> dict:
    """Python API of `synthgen export`."""
    from synthgen.data import _Shards

    if format not in ("recordio", "imagefolder"):
        raise UsageError(f"{show(format)} is not one of recordio, imagefolder", "--format")
    if format == "imagefolder" and shuffle:
        raise UsageError("--shuffle applies to recordio only", "--shuffle")
    if format == "imagefolder" and image_format not in ("png", "jpg"):
        raise UsageError(f"{show(image_format)} is not one of png, jpg", "--image-format")
    shards = _Shards(root)  # checks index.json, every shard's presence and storage layout
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{show_path(out)} exists and is not a directory", "--out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{show_path(out)} is not empty; use a new directory or pass --overwrite", "--out")
    ensure_writable_dir(out)  # a read-only or unusable --out: one line, before any work
    try:
        if format == "recordio":
            return _export_recordio(shards, out, shuffle, seed, jpeg_quality, progress)
        return _export_imagefolder(shards, out, image_format, jpeg_quality, progress)
    except OSError as e:  # full disk, permissions changed under us, a key colliding with a folder
        where = show_path(e.filename) if e.filename else show_path(out)
        raise DataError(f"{where}: cannot write ({e.strerror or e}); free disk space or fix the folder, "
                        "then rerun the export (with --overwrite)") from None


def _export_recordio(shards, out: Path, shuffle, seed, quality, progress) -> dict:
    from tqdm import tqdm

    n, k = len(shards.labels), len(shards.index["classes"])
    order = np.random.RandomState(seed).permutation(n) if shuffle else np.arange(n)
    h, w = shards.index["image_size"]
    idx_lines = []
    with atomic_path(out / "train.rec") as tmp, open(_fresh(tmp), "wb") as f:
        def put(rid, payload):
            idx_lines.append(f"{rid}\t{f.tell()}\n")
            f.write(_record(payload))

        hi = n + 1 + (0 if shuffle else k)
        put(0, pack_header(2, [n + 1, hi], 0))
        for rid, gi in enumerate(tqdm(order, unit="img", desc="recordio", disable=not progress), start=1):
            put(rid, pack_header(0, float(shards.labels[gi]), rid) + _jpeg(shards.image(int(gi)), quality))
        if not shuffle:
            bounds = np.searchsorted(shards.labels, np.arange(k + 1))
            for c in range(k):
                put(n + 1 + c, pack_header(2, [bounds[c] + 1, bounds[c + 1] + 1], n + 1 + c))
    atomic_write_text(out / "train.idx", "".join(idx_lines))
    atomic_write_text(out / "property", f"{k},{h},{w}\n")
    return {"format": "recordio", "images": n, "classes": k, "shuffled": shuffle, "out": str(out)}


def _export_imagefolder(shards, out: Path, image_format, quality, progress) -> dict:
    from PIL import Image
    from tqdm import tqdm

    n = len(shards.labels)
    for i in tqdm(range(n), unit="img", desc="imagefolder", disable=not progress):
        key = shards.key(i)  # a safe relative path (checked when keys are read) ...
        s, r = shards.locate(i)
        # ... and, symlinks already in --out followed, it must still land inside --out
        safe_relpath(key, out, shards.files[s], f"keys[{r}]", "rebuild the shards with `synthgen shard`, "
                     "or export into a new, empty --out")
        dst = (out / key).with_suffix("." + image_format)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst) as tmp:
            _fresh(tmp)
            im = Image.fromarray(shards.image(i))
            if image_format == "jpg":
                im.save(tmp, format="JPEG", quality=quality)
            else:
                im.save(tmp, format="PNG")
    return {"format": "imagefolder", "images": n, "classes": len(shards.index["classes"]), "out": str(out)}
