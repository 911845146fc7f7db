"""Shard write speed per encoding and training read throughput vs a PNG ImageFolder.

    python benchmarks/bench_shards.py [--images 4096] [--size 112]

Read: DataLoader, random order, batch 256, 0 and 2 workers, images decoded to uint8 tensors;
the PNG folder is read with PIL (torchvision ImageFolder's loader) into the same tensors.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine


def make_folder(root: Path, n: int, size: int):
    from PIL import Image

    rng = np.random.RandomState(0)
    base = rng.randint(0, 255, (n // 16 + 1, size // 8, size // 8, 3)).astype(np.uint8)
    for i in range(n):
        d = root / f"{i // 16:06d}"
        d.mkdir(parents=True, exist_ok=True)
        img = np.kron(base[i // 16], np.ones((8, 8, 1), np.uint8))  # smooth, face-like compressibility
        img = np.clip(img.astype(int) + rng.randint(-6, 6, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"{i:06d}.png")


def read_speed(ds, workers, limit):
    import torch

    g = torch.Generator().manual_seed(0)
    dl = torch.utils.data.DataLoader(ds, batch_size=256, shuffle=True, num_workers=workers, generator=g)
    n, t0 = 0, time.perf_counter()
    for x, _ in dl:
        n += len(x)
        if n >= limit:
            break
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--size", type=int, default=112)
    a = ap.parse_args()
    import torch
    import torchvision

    from synthgen.data import ShardDataset
    from synthgen.shards import ShardConfig, shard

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    try:
        make_folder(tmp / "png", a.images, a.size)
        src_mb = sum(p.stat().st_size for p in (tmp / "png").rglob("*.png")) / 2**20
        print(f"machine: {machine()}\n{a.images} images {a.size}x{a.size}, PNG folder {src_mb:.1f} MiB\n")
        print("| encoding | write (img/s) | write (MiB/s of shard) | shard size (MiB) |\n|---|---|---|---|")
        for enc, comp in (("raw", "none"), ("raw", "lzf"), ("png", "none"), ("jpeg", "none")):
            t0 = time.perf_counter()
            idx = shard(ShardConfig(inp=str(tmp / "png"), out=str(tmp / f"s-{enc}-{comp}"), encoding=enc,
                                    compression=comp, shard_size=2048, progress=False))
            dt = time.perf_counter() - t0
            mb = sum(e["bytes"] for e in idx["shards"]) / 2**20
            print(f"| {enc}{'+' + comp if comp != 'none' else ''} | {a.images / dt:.0f} | {mb / dt:.1f} | {mb:.1f} |", flush=True)
        to_tensor = torchvision.transforms.PILToTensor()
        folder = torchvision.datasets.ImageFolder(str(tmp / "png"), transform=to_tensor)
        print("\n| source | workers | read (img/s, random order, batch 256) |\n|---|---|---|")
        for w in (0, 2):
            base = read_speed(folder, w, a.images)
            print(f"| PNG ImageFolder (PIL) | {w} | {base:.0f} |", flush=True)
            for enc in ("raw-none", "raw-lzf", "png-none"):
                sp = read_speed(ShardDataset(tmp / f"s-{enc}", output="tensor"), w, a.images)
                print(f"| shards {enc} | {w} | {sp:.0f} ({sp / base:.1f}x) |", flush=True)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
