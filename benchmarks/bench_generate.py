"""End-to-end `generate` throughput (files written per second) vs a batch-1 fp32 loop that saves
PNGs one by one (the reference generate.py's best CPU path, run with our network code).

    python benchmarks/bench_generate.py [--images 96] [--device cpu]
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import machine, make_sface_like_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def baseline_loop(network, n, out, device):
    """generate.py style: one seed at a time, batch 1, PIL save per image."""
    import numpy as np
    import PIL.Image

    from synthgen.generators import load_generator
    from synthgen.generators.stylegan2ada import to_uint8

    G = load_generator(network, device=device)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    for seed in range(n):
        z = np.random.RandomState(seed).randn(1, G.z_dim)
        img = to_uint8(G.synthesize(G.map(z, [seed % G.c_dim] if G.c_dim else None)))[0]
        PIL.Image.fromarray(img).save(out / f"seed{seed:04d}.png")
    return n / (time.perf_counter() - t0)


def ours(network, n, out, device, batch, c_dim):
    from synthgen.generation import GenerateConfig, generate

    n_cls = min(c_dim, n // 4)
    per_class = n // n_cls
    classes = f"0-{n_cls - 1}"
    s = generate(GenerateConfig(network=network, out=str(out), classes=classes, per_class=per_class,
                                batch_size=batch, device=device, progress=False))
    return s["images_per_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    nets = {
        "fixture micro (16 px, 4 classes)": (str(ROOT / "tests/data/stylegan2ada_micro/network-scrubbed-p4.pkl"), 4),
        "SFace-like (128 px, 10,572 classes)": (str(make_sface_like_checkpoint(Path(__file__).parent / ".cache" / "sface_like_128.pt")), 10572),
    }
    print(f"machine: {machine()}\n")
    print("| network | device | batch-1 loop + PNG (img/s) | synthgen generate (img/s) | speed-up |\n|---|---|---|---|---|")
    for name, (net, c_dim) in nets.items():
        n = a.images if "128" in name else 4 * a.images
        n -= n % 4
        tmp = Path(tempfile.mkdtemp())
        try:
            base = baseline_loop(net, n, tmp / "base", a.device)
            mine = ours(net, n, tmp / "ours", a.device, 64, c_dim)
        finally:
            shutil.rmtree(tmp)
        print(f"| {name} | {a.device} | {base:.1f} | {mine:.1f} | {mine / base:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
