"""Compare a CUDA `generate` run with a CPU run of the same config: the largest pixel difference.

    python benchmarks/cuda_vs_cpu.py [--network FILE] [--classes 0-3] [--per-class 8] [--precision auto]
    python benchmarks/cuda_vs_cpu.py --cpu-dir A --cuda-dir B     # compare two finished runs

Outputs are byte-identical per device type (and precision and chunk size), not across device
types: float reductions run in a different order on a GPU, and `--precision auto` runs the
file's fp16 blocks in fp16 on CUDA only. This script measures how far apart the two are. By
default both runs use the same chunk size (16) so that only the device differs; pass
--cuda-chunk 256 to compare against CUDA's default. Without CUDA it says so and exits 2.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def compare(cpu_dir: Path, cuda_dir: Path) -> dict:
    from PIL import Image

    a = {p.relative_to(cpu_dir) for p in cpu_dir.rglob("*.png")}
    b = {p.relative_to(cuda_dir) for p in cuda_dir.rglob("*.png")}
    if not a or a != b:
        raise SystemExit(f"the two runs hold different images ({len(a)} vs {len(b)} PNGs, {len(a ^ b)} not in both)")
    worst, worst_path, differing, total, identical = 0, None, 0, 0, 0
    hist = np.zeros(256, np.int64)
    for rel in sorted(a):
        x = np.asarray(Image.open(cpu_dir / rel).convert("RGB")).astype(np.int16)
        y = np.asarray(Image.open(cuda_dir / rel).convert("RGB")).astype(np.int16)
        d = np.abs(x - y)
        hist += np.bincount(d.ravel(), minlength=256)
        differing += int((d > 0).sum())
        total += d.size
        identical += int(not d.any())
        if d.max() > worst:
            worst, worst_path = int(d.max()), str(rel)
    return {"images": len(a), "identical_images": identical, "max_pixel_difference": worst, "worst_image": worst_path,
            "differing_values": differing, "values": total,
            "difference_histogram": {str(k): int(v) for k, v in enumerate(hist) if v and k}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--network", default=str(ROOT / "tests/data/stylegan2ada_micro/network-scrubbed-p4.pkl"))
    ap.add_argument("--classes", default="0-3")
    ap.add_argument("--per-class", type=int, default=8)
    ap.add_argument("--psi", type=float, default=1.0)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16"])
    ap.add_argument("--cpu-precision", default="fp32", choices=["fp32", "fp16"],
                    help="the CPU run's precision (fp16: the same fp16 blocks as CUDA auto, slow)")
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--cuda-chunk", type=int, default=None, help="CUDA chunk size [default: --chunk]")
    ap.add_argument("--out", default=None, help="keep both runs here [default: a temp dir]")
    ap.add_argument("--cpu-dir", default=None)
    ap.add_argument("--cuda-dir", default=None)
    a = ap.parse_args()
    if a.cpu_dir and a.cuda_dir:
        print(json.dumps(compare(Path(a.cpu_dir), Path(a.cuda_dir)), indent=2))
        return
    import torch

    if not torch.cuda.is_available():
        print("cuda_vs_cpu: CUDA is not available on this machine; nothing to compare", file=sys.stderr)
        sys.exit(2)
    from synthgen.generation import GenerateConfig, generate

    root = Path(a.out or tempfile.mkdtemp(prefix="cuda-vs-cpu-"))
    common = dict(network=a.network, classes=a.classes, per_class=a.per_class, psi=a.psi, progress=False)
    generate(GenerateConfig(out=str(root / "cpu"), device="cpu", precision=a.cpu_precision, chunk_size=a.chunk, **common))
    generate(GenerateConfig(out=str(root / "cuda"), device="cuda", precision=a.precision,
                            chunk_size=a.cuda_chunk or a.chunk, **common))
    r = compare(root / "cpu", root / "cuda")
    r.update(cpu=json.loads((root / "cpu" / "run.json").read_text())["identity"] | {"dir": str(root / "cpu")},
             cuda_device=torch.cuda.get_device_name(0))
    r["cpu"] = {k: r["cpu"][k] for k in ("device_type", "precision", "forward_chunk", "dir")}
    cu = json.loads((root / "cuda" / "run.json").read_text())["identity"]
    r["cuda"] = {k: cu[k] for k in ("device_type", "precision", "forward_chunk")} | {"dir": str(root / "cuda")}
    print(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
