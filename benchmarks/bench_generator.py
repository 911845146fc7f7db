"""Generator throughput: images/s and peak memory per batch size, CPU fp32 (and CUDA fp16/fp32).

    python benchmarks/bench_generator.py [--network FILE] [--batches 1,8,32] [--seconds 20]

Without --network it builds a random-init 128 px, 10,572-class net shaped like SFace's
(see common.sface_like_config). Each (device, precision, batch) runs in a fresh subprocess so
peak memory (max RSS on CPU, torch.cuda.max_memory_allocated on CUDA) belongs to it alone.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import machine, make_sface_like_checkpoint, peak_rss_mib


def one(network, device, fp32, batch, seconds, threads):
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from synthgen.generators import load_generator

    G = load_generator(network, device=device, force_fp32=fp32)
    rng = np.random.RandomState(0)
    cls = list(rng.randint(0, max(G.c_dim, 1), batch)) if G.c_dim else None

    def step():
        img = G.synthesize(G.map(rng.randn(batch, G.z_dim), cls))
        if device != "cpu":
            torch.cuda.synchronize()
        return img

    step()  # warm-up
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2 * batch:
        step()
        n += batch
    dt = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated() / 2**20 if device != "cpu" else peak_rss_mib()
    return {"device": device, "precision": "fp32" if (fp32 or device == "cpu") else "fp16 blocks",
            "batch": batch, "images_per_s": round(n / dt, 2), "peak_mib": round(mem, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--network", default=None)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--_one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._one:
        device, fp32, batch = json.loads(a._one)
        print(json.dumps(one(a.network, device, fp32, batch, a.seconds, a.threads)))
        return
    network = a.network or str(make_sface_like_checkpoint(Path(__file__).parent / ".cache" / "sface_like_128.pt"))
    import torch

    runs = [("cpu", True)] + ([("cuda", False), ("cuda", True)] if torch.cuda.is_available() else [])
    print(f"machine: {machine()}\nnetwork: {network}\n")
    print("| device | precision | batch | images/s | peak memory (MiB) |\n|---|---|---|---|---|")
    for device, fp32 in runs:
        for b in map(int, a.batches.split(",")):
            args = [sys.executable, __file__, "--network", network, "--seconds", str(a.seconds),
                    "--threads", str(a.threads), "--_one", json.dumps([device, fp32, b])]
            r = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            print(f"| {r['device']} | {r['precision']} | {r['batch']} | {r['images_per_s']} | {r['peak_mib']} |", flush=True)


if __name__ == "__main__":
    main()
