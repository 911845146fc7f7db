"""How long `synthgen release` takes: the demo's run, and a 10k-image run with planted leaks.

    python benchmarks/bench_release.py [--images 10000] [--classes 100] [--leaks 20]
                                       [--formats shards,recordio,webdataset,parquet] [--demo]

The large run: the dummy generator at 128 px (instant, so the table measures the release, not
the network), no alignment, raw shards, audited with the `pixels` matcher double against an
authentic set of 250 identities x 4 images (a random base image + small noise each) plus, for
each of `--leaks` generated images, an identity holding that exact image and 3 noisy copies:
"training images" the generator reproduced. The audit uses the pairwise rule at a fixed cosine
0.95 (exact copies score 1.0; same-identity authentic pairs ~0.99): with the pixel double, the
dummy's images resemble each other, so the search rule's null would be heavy-tailed. The release re-renders the flagged images from
their next retry seeds, re-audits (only the changed images are embedded: the run's cache is
reused) and writes the formats; then `rebuild` regenerates it from the card and compares every
data file. With a real matcher the audit rounds cost more per image: see
the audit embed rows of RESULTS.md for its speed. `--demo`: a fresh release of `synthgen demo`'s
run (all five formats).
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import machine, peak_rss_mib


def _png(path: Path, img) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def build_run(root: Path, images: int, classes: int, leaks: int) -> tuple[Path, dict]:
    from synthgen.generators import write_random_generator
    from synthgen.imageio import load_rgb
    from synthgen.pipeline import run_pipeline

    per_class = images // classes
    net = write_random_generator(root / "gen.json", "dummy", seed=0, c_dim=classes, resolution=128)
    cfg = {"out": str(root / "run"), "generate": {"network": str(net), "per_class": per_class, "seed": 0,
                                                   "device": "cpu", "writers": 2},
           "align": {"enabled": False}, "shard": {"shard_size": 2048},
           "audit": {"authentic": str(root / "authentic"), "matcher": "pixels", "device": "cpu", "batch_size": 256,
                     "rule": "pairwise", "threshold": 0.95}}
    times = {}
    t0 = time.perf_counter()
    run_pipeline({**cfg, "shard": {"enabled": False}, "audit": {"enabled": False}}, progress=False, log=lambda *a: None)
    times["generate"] = time.perf_counter() - t0
    rng = np.random.RandomState(0)
    auth = root / "authentic"
    for i in range(250):
        base = rng.randint(0, 256, (128, 128, 3)).astype(np.int16)
        for j in range(4):
            _png(auth / f"id{i:04d}" / f"{j}.png", np.clip(base + rng.randint(-12, 13, base.shape), 0, 255).astype(np.uint8))
    raw = root / "run" / "raw"
    picks = rng.choice(images, leaks, replace=False)
    keys = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.png"))
    for n, i in enumerate(sorted(picks)):
        img = load_rgb(raw / keys[i]).astype(np.int16)
        _png(auth / f"leak{n:04d}" / "0.png", img.astype(np.uint8))
        for j in range(1, 4):
            _png(auth / f"leak{n:04d}" / f"{j}.png", np.clip(img + rng.randint(-12, 13, img.shape), 0, 255).astype(np.uint8))
    t0 = time.perf_counter()
    run_pipeline(cfg, progress=False, log=lambda *a: None)
    times["shard + audit"] = time.perf_counter() - t0
    v = json.loads((root / "run" / "audit" / "report.json").read_text())["verdict"]
    times["run verdict"] = f"{v['status']} ({v['flagged_images']} images, {v['flagged_identities']} identities flagged)"
    return root / "run", times


def time_release(run: Path, out: Path, formats: str, **kw) -> tuple[float, dict]:
    from synthgen.release import release

    t0 = time.perf_counter()
    r = release(run=str(run), out=str(out), formats=formats, progress=False, **kw)
    return time.perf_counter() - t0, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--leaks", type=int, default=20)
    ap.add_argument("--formats", default="shards,recordio,webdataset,parquet")
    ap.add_argument("--demo", action="store_true")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    print(f"machine: {machine()}\n")
    tmp = Path(tempfile.mkdtemp())
    try:
        if a.demo:
            from synthgen.demo import run_demo

            t0 = time.perf_counter()
            run_demo(tmp / "demo", progress=False, log=lambda *x: None)
            print(f"demo (everything, release included): {time.perf_counter() - t0:.1f} s")
            dt, r = time_release(tmp / "demo" / "run", tmp / "demo-rel",
                                 "shards,recordio,imagefolder,webdataset,parquet", allow_inconclusive=True)
            print(f"| demo run | {r['counts']['images']} images kept | rounds {len(r['rounds']) - 1} | "
                  f"{r['status']} | release {dt:.1f} s |")
        run, times = build_run(tmp, a.images, a.classes, a.leaks)
        for k, v in times.items():
            print(f"{k}: {v if isinstance(v, str) else f'{v:.1f} s'}")
        dt, r = time_release(run, tmp / "rel", a.formats)
        rounds = "; ".join(f"round {x['round']}: {x['status']}, replaced {x.get('replaced', 0)}" for x in r["rounds"])
        from synthgen.release import rebuild

        t0 = time.perf_counter()
        rb = rebuild(tmp / "rel" / "card.json", tmp / "gen.json", tmp / "rebuilt", progress=False)
        rdt = time.perf_counter() - t0
        print(f"\n| run | images | formats | rounds | status | release (s) | rebuild (s) | rebuilt files identical | "
              f"peak RSS (MiB) |\n|---|---|---|---|---|---|---|---|---|")
        print(f"| dummy 128 px, {a.leaks} planted leaks | {a.images} | {a.formats} | {rounds} | {r['status']} | "
              f"{dt:.1f} | {rdt:.1f} | {rb['matched']} of {rb['files']} | {peak_rss_mib():.0f} |")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())
