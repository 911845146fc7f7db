"""Export write speed per format: recordio, imagefolder, webdataset, parquet.

    python benchmarks/bench_formats.py [--images 2000] [--size 112]

Shards: raw encoding, built from bench_shards' smooth, face-like 112 px PNG folder. Each export
is timed end to end (reading the shards, encoding, writing, fsync-free); MiB/s counts the bytes
the export wrote. recordio writes JPEG (quality 95), the others PNG (their default).
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import machine

FORMATS = ("recordio", "imagefolder", "webdataset", "parquet")


def warm_up() -> None:
    """Import what an export imports (synthgen.data and torch, tqdm, PIL's encoders, pyarrow)
    outside the timed runs: ~2 s once per process, which would otherwise land on the first format."""
    import numpy as np
    import tqdm  # noqa: F401

    import synthgen.data  # noqa: F401
    from synthgen.encodings import encode
    from synthgen.export import EXPORTERS, _module

    for fmt in EXPORTERS:
        _module(fmt)
    for enc in ("png", "jpeg"):
        encode(np.zeros((8, 8, 3), np.uint8), enc)
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        pass


def export_speed(shards: Path, out: Path, fmt: str, n: int) -> tuple[float, float, float]:
    """(images/s, MiB/s written, MiB written) of one export of `n` images."""
    from synthgen.export import export

    warm_up()
    t0 = time.perf_counter()
    export(shards, out, fmt, progress=False)
    dt = time.perf_counter() - t0
    mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    return n / dt, mb / dt, mb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=112)
    a = ap.parse_args()
    import torch

    from bench_shards import make_folder
    from synthgen.shards import ShardConfig, shard

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    try:
        make_folder(tmp / "png", a.images, a.size)
        shard(ShardConfig(inp=str(tmp / "png"), out=str(tmp / "s"), shard_size=2048, progress=False))
        print(f"machine: {machine()}\n{a.images} images {a.size}x{a.size}, raw shards\n")
        print("| format | images | write (img/s) | write (MiB/s of output) | output (MiB) |\n|---|---|---|---|---|")
        for fmt in FORMATS:
            try:
                ips, mbs, mb = export_speed(tmp / "s", tmp / fmt, fmt, a.images)
            except Exception as e:  # parquet without pyarrow: say so, measure the rest
                print(f"| {fmt} | {a.images} | not measured: {e} | | |", flush=True)
                continue
            print(f"| {fmt} | {a.images} | {ips:.0f} | {mbs:.1f} | {mb:.1f} |", flush=True)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())
