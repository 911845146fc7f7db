"""Alignment throughput: synthgen align vs a per-image loop like SFace's script.

    python benchmarks/bench_align.py [--n128 64] [--nphoto 16] [--workers 2]

Inputs: 128x128 images (the astronaut face resized to the generator's size, so MTCNN finds a
face every time) and ~1 MP photos (the astronaut at 1024x1024). The baseline loads each image,
calls MTCNN on it alone, fits the similarity transform and warps it with PIL, one at a time.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine

ROOT = Path(__file__).resolve().parents[1]


def make_inputs(root: Path, n: int, size: int):
    from PIL import Image

    face = Image.open(ROOT / "tests/data/astronaut.png").convert("RGB")
    crop = face.crop((100, 0, 356, 256)) if size <= 256 else face
    for i in range(n):
        d = root / f"{i // 8:06d}"
        d.mkdir(parents=True, exist_ok=True)
        crop.rotate((i % 7) - 3).resize((size, size), Image.BILINEAR).save(d / f"{i:04d}.png")


def baseline(root: Path, out: Path):
    """SFace-style: per image, MTCNN.detect, similarity transform, PIL affine warp, save."""
    from facenet_pytorch import MTCNN
    from PIL import Image

    from synthgen.alignment import ARCFACE_112, similarity_transform

    mtcnn = MTCNN(keep_all=True, device="cpu")
    files = sorted(root.rglob("*.png"))
    t0 = time.perf_counter()
    for p in files:
        img = Image.open(p).convert("RGB")
        boxes, probs, pts = mtcnn.detect(img, landmarks=True)
        if boxes is None:
            continue
        m = similarity_transform(np.asarray(pts[0], np.float64), ARCFACE_112)
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        warped = img.transform((112, 112), Image.AFFINE, inv.flatten().tolist(), Image.BILINEAR)
        dst = out / p.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        warped.save(dst)
    return len(files) / (time.perf_counter() - t0)


def ours(root: Path, out: Path, workers: int, batched=False):
    from synthgen.alignment import AlignConfig, align

    t0 = time.perf_counter()
    s = align(AlignConfig(inp=str(root), out=str(out), workers=workers, device="cpu", batched_detection=batched,
                          progress=False))
    assert s["counts"]["ok"] == s["total"], s["counts"]
    return s["total"] / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n128", type=int, default=64)
    ap.add_argument("--nphoto", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1 if a.workers > 1 else 2)
    print(f"machine: {machine()}\n")
    print("| input | images | per-image loop (img/s) | synthgen align, 1 process | synthgen align, "
          f"{a.workers} workers | {a.workers} workers + --batched-detection | speed-up (default / batched) |"
          "\n|---|---|---|---|---|---|---|")
    for label, n, size in (("128x128 generator-size", a.n128, 128), ("1024x1024 photo", a.nphoto, 1024)):
        tmp = Path(tempfile.mkdtemp())
        try:
            make_inputs(tmp / "in", n, size)
            torch.set_num_threads(2)
            base = baseline(tmp / "in", tmp / "base")
            one = ours(tmp / "in", tmp / "one", 1)
            torch.set_num_threads(1)
            many = ours(tmp / "in", tmp / "many", a.workers)
            batched = ours(tmp / "in", tmp / "batched", a.workers, batched=True)
        finally:
            shutil.rmtree(tmp)
        print(f"| {label} | {n} | {base:.1f} | {one:.1f} | {many:.1f} | {batched:.1f} | "
              f"{max(one, many) / base:.2f}x / {batched / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
