"""What `synthgen quality` costs next to `synthgen audit` on the same synthetic set (issue 22: at
most 1.5x an audit of the same run on CPU).

    python benchmarks/bench_quality.py [--images 10000] [--per-class 10] [--matcher pixels] [--authentic N]

Builds an aligned folder of N 112 px crops (smooth random images, N / per-class identities) with
an align-style manifest (landmarks of a face model at random poses, detector probabilities, 2 %
fallback crops), and an authentic folder of --authentic crops (default N). Then times, each
from a cold embedding cache:
    audit     run_audit(synthetic, authentic) with the matcher
    quality   quality(synthetic) with the same matcher (its own cache)
    quality, warm cache   quality again with --cache-dir pointing at the audit's embeddings
`--matcher pixels` (the test double) measures everything but a network; `--matcher dlib` the
real-matcher case (embedding dominates both; use a smaller --images, dlib embeds ~12 img/s here).
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine


def make_set(root: Path, n: int, per_class: int, seed: int, manifest: bool) -> None:
    from PIL import Image

    from synthgen.quality.pose import project_model

    rng = np.random.default_rng(seed)
    recs = []
    base = None
    for i in range(n):
        c, j = divmod(i, per_class)
        if j == 0:
            base = rng.normal(0, 1, (14, 14, 3))
        small = base + 0.3 * rng.normal(0, 1, base.shape)
        img = np.asarray(Image.fromarray(np.clip(128 + 50 * small, 0, 255).astype(np.uint8)).resize((112, 112),
                                                                                                    Image.BICUBIC))
        key = f"{c:06d}/{j:06d}.png"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / key)
        rec = {"source": key, "identity": f"{c:06d}", "path": key, "template": "arcface", "width": 128, "height": 128}
        if rng.random() < 0.02:
            rec.update(status="no_face", fallback="center-crop")
        else:
            pts = project_model(rng.normal(0, 15), rng.normal(0, 8), rng.normal(0, 5), scale=0.9) + 8
            rec.update(status="ok", prob=float(1 - rng.random() * 0.01), faces=1, landmarks=pts.round(3).tolist(),
                       box=[10.0, 5.0, 118.0, 125.0])
        recs.append(rec)
    if manifest:
        (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--authentic", type=int, default=None)
    ap.add_argument("--matcher", default="pixels")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    from synthgen.audit.report import run_audit
    from synthgen.quality.stage import quality

    tmp = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    try:
        t = time.perf_counter()
        make_set(tmp / "syn", args.images, args.per_class, 0, True)
        make_set(tmp / "auth", args.authentic or args.images, args.per_class, 1, False)
        print(f"# data written in {time.perf_counter() - t:.1f} s; {machine()}", file=sys.stderr)
        t = time.perf_counter()
        run_audit(synthetic=str(tmp / "syn"), authentic=str(tmp / "auth"), out=str(tmp / "audit"),
                  matcher=args.matcher, device="cpu", progress=False)
        audit_s = time.perf_counter() - t
        t = time.perf_counter()
        r = quality(inp=str(tmp / "syn"), out=str(tmp / "q"), matcher=args.matcher, device="cpu", progress=False)
        q_s = time.perf_counter() - t
        t = time.perf_counter()
        quality(inp=str(tmp / "syn"), out=str(tmp / "q2"), matcher=args.matcher, device="cpu", progress=False,
                cache_dir=str(tmp / "audit" / "embeddings"))
        q2_s = time.perf_counter() - t
        n_auth = args.authentic or args.images
        print("| input | matcher | audit (s) | quality, cold cache (s) | ratio | quality, audit's cache (s) | ratio |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {args.images:,} synthetic 112 px crops ({r['summary']['classes']:,} classes) + {n_auth:,} authentic "
              f"| {args.matcher} | {audit_s:.1f} | {q_s:.1f} | {q_s / audit_s:.2f}x | {q2_s:.1f} | {q2_s / audit_s:.2f}x |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
