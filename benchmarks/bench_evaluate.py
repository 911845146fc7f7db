"""`synthgen evaluate` speed: a 6,000-pair (12,000-image) LFW-sized .bin of 112x112 JPEGs.

    python benchmarks/bench_evaluate.py [--network-images 2000]

Rows:
  * --matcher embeddings: reading and parsing the .bin with synthgen's pickle reader, the
    protocol (flip and no-flip), TAR@FAR, report.json / embeddings.npz / report.html, whole
    `evaluate()` call (target: under 2 s);
  * --matcher iresnet r18 (random weights) on the first N images: evaluate's time against the
    audit's embedding of the same images (`embed_set` on an aligned folder of them). evaluate embeds
    each image AND its mirror (the field's protocol), so it runs twice the forward passes; the
    ratio per forward pass is the comparable figure (target: <= 1.2x).
"""

import argparse
import io
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_bin(path: Path, n_pairs: int, seed: int = 0) -> list:
    """Smooth 112x112 JPEGs (about 5 KB each, like the public files' face crops), written as Python 2's
    cPickle wrote lfw.bin: protocol 2, images as BINSTRING `str`."""
    import struct

    rng = np.random.RandomState(seed)
    images = []
    for i in range(2 * n_pairs):
        small = rng.randint(0, 256, (14, 14, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((112, 112), Image.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=95)
        images.append(buf.getvalue())
    issame = [bool((k // 300) % 2 == 0) for k in range(n_pairs)]  # LFW's order: 300 same, 300 different
    out = bytearray(b"\x80\x02(]q\x00(")
    for im in images:
        out += b"T" + struct.pack("<i", len(im)) + im
    out += b"e]q\x01(" + b"".join(b"\x88" if s else b"\x89" for s in issame) + b"et."
    path.write_bytes(bytes(out))
    assert pickle.loads(bytes(out), encoding="bytes") == (images, issame)
    return images


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=6000)
    ap.add_argument("--network-images", type=int, default=2000)
    args = ap.parse_args()
    import torch

    from synthgen.audit.embed import ImageSet, embed_set
    from synthgen.audit.matchers import IRESNET_LAYERS, IResNet, make_matcher
    from synthgen.evaluate import EvaluateConfig, evaluate

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        images = make_bin(d / "lfw-like.bin", args.pairs)
        size_mb = (d / "lfw-like.bin").stat().st_size / 1e6
        np.savez(d / "emb.npz", embeddings=np.random.RandomState(1).randn(2 * args.pairs, 512).astype(np.float32))
        cfg = EvaluateConfig(benches=[str(d / "lfw-like.bin")], out=str(d / "e1"), matcher="embeddings",
                             embeddings=[str(d / "emb.npz")], progress=False)
        evaluate(cfg)  # warm-up: the first call imports scipy and matplotlib (about 1.5 s)
        t = time.perf_counter()
        evaluate(cfg)
        t_emb = time.perf_counter() - t
        print(f"| --matcher embeddings, {args.pairs:,} pairs ({2 * args.pairs:,} images, {size_mb:.0f} MB .bin) | "
              f"{t_emb:.2f} s |")

        n = args.network_images
        torch.manual_seed(0)
        torch.save(IResNet(IRESNET_LAYERS["r18"]).eval().state_dict(), d / "r18.pth")
        sub = d / "sub.bin"
        sub.write_bytes(pickle.dumps((images[:n], [True] * (n // 2)), protocol=2))
        t = time.perf_counter()
        evaluate(EvaluateConfig(benches=[str(sub)], out=str(d / "e2"), matcher="iresnet", arch="r18",
                                weights=str(d / "r18.pth"), device="cpu", batch_size=256, folds=10, progress=False))
        t_eval = time.perf_counter() - t
        folder = d / "folder" / "x"
        folder.mkdir(parents=True)
        for i, b in enumerate(images[:n]):
            (folder / f"{i:05d}.jpg").write_bytes(b)
        m = make_matcher("iresnet", str(d / "r18.pth"), "r18", "cpu")
        t = time.perf_counter()
        embed_set(ImageSet(d / "folder"), m, d / "cache", batch_size=256, progress=False)
        t_audit = time.perf_counter() - t
        print(f"| --matcher iresnet r18, {n:,} images (+ {n:,} mirrors) | evaluate {t_eval:.1f} s; audit's embedding "
              f"of the same {n:,} images {t_audit:.1f} s; per forward pass {t_eval / 2 / t_audit:.2f}x |")


if __name__ == "__main__":
    main()
