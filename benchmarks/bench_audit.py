"""Audit costs: matcher embedding speed, and nearest-neighbour search time / peak memory.

    python benchmarks/bench_audit.py [--sizes 10000,100000] [--embed-images 64]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from common import machine


def embed_speed(name, n, device="cpu"):
    import torch

    from synthgen.audit.matchers import IRESNET_LAYERS, FacenetMatcher, IResNet, IResNetMatcher

    d = tempfile.mkdtemp()
    if name.startswith("iresnet"):
        arch = name.split("-")[1]
        p = os.path.join(d, "w.pth")
        torch.save(IResNet(IRESNET_LAYERS[arch]).eval().state_dict(), p)
        m = IResNetMatcher(p, arch, device=device)
    else:
        from facenet_pytorch import InceptionResnetV1

        p = os.path.join(d, "w.pt")
        torch.save(InceptionResnetV1(pretrained=None, num_classes=10).state_dict(), p)
        m = FacenetMatcher("facenet-vggface2", p, device=device)
    x = np.random.RandomState(0).randint(0, 255, (32 if device == "cpu" else 256, 112, 112, 3), dtype=np.uint8)
    m.embed(x[:4])
    t0, k = time.perf_counter(), 0
    while k < n:
        m.embed(x)
        k += len(x)
    return k / (time.perf_counter() - t0)


def search_one(n, backend):
    from synthgen.audit.metrics import topk_search

    rng = np.random.RandomState(0)
    q = rng.randn(n, 512).astype(np.float32)
    g = rng.randn(n, 512).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    import torch  # noqa: F401  (imported before the baseline reading)

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    topk_search(q, g, k=5, backend=backend)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"n": n, "backend": backend, "seconds": round(dt, 2), "peak_rss_mib": round(peak / 1024, 1), "search_extra_mib": round((peak - base) / 1024, 1),
            "inputs_mib": round(2 * n * 512 * 4 / 2**20, 1), "full_matrix_mib": round(n * n * 4 / 2**20, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--embed-images", type=int, default=64)
    ap.add_argument("--_search", default=None)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    if a._search:
        n, backend = a._search.split(":")
        print(json.dumps(search_one(int(n), backend)))
        return
    print(f"machine: {machine()}\n")
    print("| matcher (random weights) | device | embed img/s (112 px input) |\n|---|---|---|")
    for name in ("iresnet-r50", "iresnet-r100", "facenet"):
        print(f"| {name} | cpu | {embed_speed(name, a.embed_images):.1f} |", flush=True)
    print("\n| synthetic x authentic (512-d) | backend | top-5 search (s) | peak RSS (MiB) | RSS added by the search (MiB) | inputs (MiB) | full N x M matrix would be (MiB) |\n|---|---|---|---|---|---|---|")
    from synthgen.audit.metrics import _faiss

    backends = ["torch"] + (["faiss"] if _faiss() else [])
    for n, backend in [(n, b) for n in map(int, a.sizes.split(",")) for b in backends]:
        r = json.loads(subprocess.run([sys.executable, __file__, "--_search", f"{n}:{backend}"], capture_output=True,
                                      text=True, check=True).stdout.strip().splitlines()[-1])
        print(f"| {n:,} x {n:,} | {backend} | {r['seconds']} | {r['peak_rss_mib']} | {r['search_extra_mib']} "
              f"| {r['inputs_mib']} | {r['full_matrix_mib']:,} |", flush=True)


if __name__ == "__main__":
    main()
