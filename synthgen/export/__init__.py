"""`synthgen export`: shards -> formats trainers read. One module per format, one registry line each.

    recordio      recordio.py      insightface train.rec / train.idx / property (arcface_torch)
    imagefolder   imagefolder.py   <class>/<file>.png|jpg
    webdataset    webdataset.py    shard-NNNNNN.tar + .idx (webdataset, DALI fn.readers.webdataset)
    parquet       parquet.py       data/train-NNNNN-of-NNNNN.parquet (Hugging Face datasets, Image + ClassLabel)

An exporter module has `check(opts)` (option errors, before any work) and
`write(shards, out, opts, progress) -> summary dict`; `shards` is a `synthgen.data._Shards`
(checked index, safe keys). To add a format: write `myformat.py` with those two functions and
add `"myformat": "myformat"` to EXPORTERS below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from synthgen.encodings import FILE_FORMATS
from synthgen.errors import DataError, UsageError
from synthgen.options import opt
from synthgen.runs import ensure_writable_dir
from synthgen.safepath import require_input, show, show_path

from .common import SAMPLES_PER_FILE

EXPORTERS = {  # --format name -> module
    "recordio": "recordio",
    "imagefolder": "imagefolder",
    "webdataset": "webdataset",
    "parquet": "parquet",
}


@dataclass
class ExportConfig:
    """The options of `synthgen export` (the shard folder is its argument)."""

    format: str = opt(help="Target format.", choices=lambda: tuple(EXPORTERS))
    out: str = opt(help="Output directory.", metavar="DIR", path="dir")
    shuffle: bool = opt(False, help="recordio, webdataset, parquet: write records in shuffled order.")
    seed: int = opt(0, metavar="INT", help="Shuffle seed.")
    jpeg_quality: int = opt(95, range=(1, 100), metavar="Q", help="JPEG quality (recordio, jpg).")
    image_format: str = opt("png", choices=tuple(FILE_FORMATS),
                            help="imagefolder, webdataset, parquet: image encoding.")
    samples_per_file: int = opt(SAMPLES_PER_FILE, range=(1, None), metavar="N", unit="images",
                                help="webdataset: samples per tar; parquet: rows per file.")
    overwrite: bool = opt(False, help="Write into a non-empty directory.")


def _module(name: str):
    return importlib.import_module(f"{__name__}.{EXPORTERS[name]}")


def check_format(format: str) -> None:
    """A format with its default options can be written here (its package is installed): the
    release checks every format it will write before any work."""
    if format not in EXPORTERS:
        raise UsageError(f"{show(format)} is not one of {', '.join(EXPORTERS)}", "--format")
    _module(format).check({"shuffle": False, "seed": 0, "jpeg_quality": 95, "image_format": "png",
                           "samples_per_file": SAMPLES_PER_FILE})


def export(root, out, format: str, shuffle: bool = False, seed: int = 0, jpeg_quality: int = 95,
           image_format: str = "png", samples_per_file: int = SAMPLES_PER_FILE, overwrite: bool = False,
           progress: bool = True) -> dict:
    """Python API of `synthgen export`."""
    from synthgen.data import _Shards

    if format not in EXPORTERS:
        raise UsageError(f"{show(format)} is not one of {', '.join(EXPORTERS)}", "--format")
    exporter = _module(format)
    opts = {"shuffle": shuffle, "seed": seed, "jpeg_quality": jpeg_quality, "image_format": image_format,
            "samples_per_file": samples_per_file}
    exporter.check(opts)
    require_input(root, "DIR", "a shard directory (synthgen shard --out)")
    shards = _Shards(root)  # checks index.json, every shard's presence and storage layout
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{show_path(out)} exists and is not a directory", "--out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{show_path(out)} is not empty; use a new directory or pass --overwrite", "--out")
    ensure_writable_dir(out)  # a read-only or unusable --out: one line, before any work
    try:
        return exporter.write(shards, out, opts, progress)
    except OSError as e:  # full disk, permissions changed under us, a key colliding with a folder
        where = show_path(e.filename) if e.filename else show_path(out)
        raise DataError(f"{where}: cannot write ({e.strerror or e}); free disk space or fix the folder, "
                        "then rerun the export (with --overwrite)") from None


