"""Parquet as the Hugging Face Hub lays datasets out: data/train-00000-of-0000N.parquet.

Rows are images in shard order (label, key), or a seeded shuffle; --samples-per-file rows per
file, in row groups of ROW_GROUP rows (a reader such as the Hub's viewer fetches one group at a
time, not a whole file). Columns:

    image   struct<bytes: binary, path: string>   the PNG (or JPEG) bytes and the shard key:
                                                  how `datasets` stores its Image() feature
    label   int64                                 the class index
    key     string                                the shard key

The schema metadata's b"huggingface" entry holds the features the way `datasets` writes them
(`Features.arrow_schema`: {"info": {"features": Features.to_dict()}}), so
`datasets.load_dataset("parquet", data_dir=out)` decodes `image` to PIL images and types
`label` as ClassLabel with the class names. Snappy compression (pyarrow's and `datasets`'
default, readable everywhere; PNG bytes do not compress further); nothing time-dependent is
written, so the same shards and options give byte-identical files (pyarrow records its own
version in `created_by`).
"""

from __future__ import annotations

import json
from pathlib import Path

from synthgen.encodings import ENCODINGS, FILE_FORMATS
from synthgen.errors import UsageError
from synthgen.fsutil import atomic_path
from synthgen.safepath import show

from .common import check_samples_per_file, fresh, order, real_dir, remove_stale

ROW_GROUP = 100  # rows per row group (what `datasets` used for image datasets before 4.x)
STALE = r"train-\d{5,}-of-\d{5,}\.parquet"  # what an earlier export into the same --out may have left
NEEDS = "--format parquet needs pyarrow: pip install 'synthgen[parquet]'"


def check(opts: dict) -> None:
    if opts["image_format"] not in FILE_FORMATS:
        raise UsageError(f"{show(opts['image_format'])} is not one of {', '.join(FILE_FORMATS)}", "--image-format")
    check_samples_per_file(opts)
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UsageError(NEEDS, "--format") from None


def hf_features(classes) -> dict:
    """`datasets.Features.to_dict()` of this layout."""
    return {"image": {"_type": "Image"},
            "label": {"names": list(classes), "_type": "ClassLabel"},
            "key": {"dtype": "string", "_type": "Value"}}


def schema(classes):
    import pyarrow as pa

    return pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                      ("label", pa.int64()), ("key", pa.string())],
                     metadata={b"huggingface": json.dumps({"info": {"features": hf_features(classes)}}).encode()})


def write(shards, out: Path, opts: dict, progress: bool) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    quality, per = opts["jpeg_quality"], opts["samples_per_file"]
    enc = ENCODINGS[FILE_FORMATS[opts["image_format"]]]
    classes = shards.index["classes"]
    sch = schema(classes)
    items = order(len(shards.labels), opts["shuffle"], opts["seed"])
    n = len(items)
    files = -(-n // per)
    data = real_dir(out / "data")
    written = []
    bar = tqdm(total=n, unit="img", desc="parquet", disable=not progress)
    for fi in range(files):
        name = f"train-{fi:05d}-of-{files:05d}.parquet"
        with atomic_path(data / name) as tmp, open(fresh(tmp), "wb") as f:
            with pq.ParquetWriter(f, sch, compression="snappy") as w:
                for start in range(fi * per, min((fi + 1) * per, n), ROW_GROUP):
                    rows = [int(g) for g in items[start:min(start + ROW_GROUP, (fi + 1) * per, n)]]
                    keys = [shards.key(g) for g in rows]
                    images = [{"bytes": enc.encode(shards.image(g), quality), "path": k} for g, k in zip(rows, keys)]
                    w.write_table(pa.table({"image": images, "label": [int(shards.labels[g]) for g in rows],
                                            "key": keys}, schema=sch), row_group_size=ROW_GROUP)
                    bar.update(len(rows))
        written.append(name)
    bar.close()
    stale = remove_stale(data, STALE, set(written))
    return {"format": "parquet", "images": n, "classes": len(classes), "files": len(written),
            "shuffled": bool(opts["shuffle"]), "removed_stale": stale, "out": str(out)}
