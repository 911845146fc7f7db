"""ImageFolder: <class>/<file>.png|jpg, one folder per class (keys keep their names)."""

from __future__ import annotations

from pathlib import Path

from synthgen.encodings import FILE_FORMATS, ENCODINGS
from synthgen.errors import UsageError
from synthgen.fsutil import atomic_path
from synthgen.safepath import safe_relpath, show

from .common import fresh, refuse_samples_per_file


def check(opts: dict) -> None:
    if opts["shuffle"]:
        raise UsageError("applies to recordio, webdataset and parquet only, not imagefolder", "--shuffle")
    refuse_samples_per_file(opts, "imagefolder")
    if opts["image_format"] not in FILE_FORMATS:
        raise UsageError(f"{show(opts['image_format'])} is not one of {', '.join(FILE_FORMATS)}", "--image-format")


def write(shards, out: Path, opts: dict, progress: bool) -> dict:
    from tqdm import tqdm

    image_format, quality = opts["image_format"], opts["jpeg_quality"]
    enc = ENCODINGS[FILE_FORMATS[image_format]]

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
            fresh(tmp).write_bytes(enc.encode(shards.image(i), quality))
    return {"format": "imagefolder", "images": n, "classes": len(shards.index["classes"]), "out": str(out)}
