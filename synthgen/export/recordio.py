"""insightface RecordIO: train.rec + train.idx + property, as arcface_torch's `MXFaceDataset`
reads them, written without mxnet.

RecordIO framing: each record is uint32 magic 0xced7230a, uint32 (cflag << 29 | length),
payload, zero padding to a multiple of 4. Payload = IRHeader struct '<IfQQ' (flag, label, id,
id2), then for flag > 0 `flag` float32 labels, then the data. Record 0 is a header with flag 2
and labels [N + 1, N + 1 + K]: images are records 1..N; records N+1..N+K (unshuffled export
only) hold each class's image id range [start, end). Image records have flag 0, the float
label and JPEG bytes. train.idx lines: "<id>\t<byte offset>". property: "<num_classes>,<height>,<width>".
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from synthgen.encodings import encode
from synthgen.fsutil import atomic_path, atomic_write_text

from .common import fresh, refuse_samples_per_file

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


def check(opts: dict) -> None:
    refuse_samples_per_file(opts, "recordio")  # shuffle, seed and jpeg_quality apply


def write(shards, out: Path, opts: dict, progress: bool) -> dict:
    shuffle, seed, quality = opts["shuffle"], opts["seed"], opts["jpeg_quality"]
    from tqdm import tqdm

    n, k = len(shards.labels), len(shards.index["classes"])
    order = np.random.RandomState(seed).permutation(n) if shuffle else np.arange(n)
    h, w = shards.index["image_size"]
    idx_lines = []
    with atomic_path(out / "train.rec") as tmp, open(fresh(tmp), "wb") as f:
        def put(rid, payload):
            idx_lines.append(f"{rid}\t{f.tell()}\n")
            f.write(_record(payload))

        hi = n + 1 + (0 if shuffle else k)
        put(0, pack_header(2, [n + 1, hi], 0))
        for rid, gi in enumerate(tqdm(order, unit="img", desc="recordio", disable=not progress), start=1):
            put(rid, pack_header(0, float(shards.labels[gi]), rid) + encode(shards.image(int(gi)), "jpeg", quality))
        if not shuffle:
            bounds = np.searchsorted(shards.labels, np.arange(k + 1))
            for c in range(k):
                put(n + 1 + c, pack_header(2, [bounds[c] + 1, bounds[c + 1] + 1], n + 1 + c))
    atomic_write_text(out / "train.idx", "".join(idx_lines))
    atomic_write_text(out / "property", f"{k},{h},{w}\n")
    return {"format": "recordio", "images": n, "classes": k, "shuffled": shuffle, "out": str(out)}


