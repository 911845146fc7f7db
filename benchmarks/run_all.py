"""Every benchmark for the devices present, as one table written into benchmarks/RESULTS.md.

    python benchmarks/run_all.py            # make bench: full sizes (minutes on a CPU)
    python benchmarks/run_all.py --quick    # make bench-quick: small sizes, < 2 min on 2 cores
    python benchmarks/run_all.py --quick --no-write   # print only

Rows: generator fp32 / fp16 at several batch sizes, generate end to end vs the NVIDIA-style
batch-1 + PNG-per-image loop (built from our network), align (CPU workers; CUDA batched), shard
write/read, export write per format, audit embedding per matcher and nearest-neighbour search (torch blocks, faiss CPU,
faiss GPU). Without CUDA the GPU rows say "not yet measured: no GPU lent". The section between
the run_all markers in RESULTS.md is replaced on each run; the rest of the file is kept.
"""

import argparse
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import make_sface_like_checkpoint  # noqa: E402

ROOT = HERE.parent
MICRO = ROOT / "tests/data/stylegan2ada_micro/network-scrubbed-p4.pkl"
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"
NO_GPU = "not yet measured: no GPU lent"


def timed(fn, min_seconds, min_reps=1):
    """Calls fn() (returning the number of items it did) until min_seconds and min_reps; items/s."""
    fn()  # warm-up
    n, reps, t0 = 0, 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - t0 < min_seconds:
        n += fn()
        reps += 1
    return n / (time.perf_counter() - t0)


def sync(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------


def bench_generator(rows, net, devices, q):
    from synthgen.generators import load_generator

    for device in devices:
        for precision in ("fp32", "fp16"):
            G = load_generator(net, device=device, precision=precision)
            batches = q["gen_batches_cuda"] if device == "cuda" else q["gen_batches_cpu"]
            if device == "cpu" and precision == "fp16":
                if q["quick"]:  # fp16 on CPU is a verification mode (no fast fp16 kernels): full run only
                    rows.append(("generator, 128 px SFace-like", device, "fp16", "measured by `make bench` only (slow on CPU)"))
                    continue
                batches = batches[:1]
            for b in batches:
                rng = np.random.RandomState(0)
                cls = list(rng.randint(0, G.c_dim, b)) if G.c_dim else None

                def step():
                    G.synthesize(G.map(rng.randn(b, G.z_dim), cls))
                    sync(device)
                    return b

                slow = device == "cpu" and precision == "fp16"  # ~1-2 min per image: one timed call
                rate = timed(step, 0 if slow else q["seconds"])
                rows.append(("generator, 128 px SFace-like", device, f"{precision}, batch {b}",
                             f"{rate:.3f} img/s ({1 / rate:.0f} s per image)" if slow else f"{rate:.1f} img/s"))
    if "cuda" not in devices:
        rows.append(("generator, 128 px SFace-like", "cuda", "fp16 / fp32, batch 16-1024", NO_GPU))


def bench_generate(rows, net, devices, q):
    from bench_generate import baseline_loop, ours

    for device in devices:
        n = q["generate_cuda"] if device == "cuda" else q["generate_cpu"]
        tmp = Path(tempfile.mkdtemp())
        try:
            # precision auto, batch 1, PIL save per image; a rate, so fewer images suffice on a GPU
            base = baseline_loop(net, min(n, q["baseline_max"]), tmp / "base", device)
            mine = ours(net, n, tmp / "ours", device, 256 if device == "cuda" else 64, 10572)
        finally:
            shutil.rmtree(tmp)
        chunk = 256 if device == "cuda" else 16
        rows.append(("generate end to end, 128 px, PNG", device, f"precision auto, chunk {chunk}",
                     f"{mine:.1f} img/s vs {base:.1f} for the batch-1 + PNG loop ({mine / base:.2f}x)"))
    if "cuda" not in devices:
        rows.append(("generate end to end, 128 px, PNG", "cuda", "fp16, chunk 256", NO_GPU))


def bench_align(rows, devices, q):
    import torch

    from bench_align import baseline, make_inputs
    from synthgen.alignment import AlignConfig, align

    tmp = Path(tempfile.mkdtemp())
    try:
        make_inputs(tmp / "in", q["align"], 128)
        base = baseline(tmp / "in", tmp / "base")
        runs = [("cpu", 1, False), ("cpu", 2, False), ("cpu", 2, True)] + ([("cuda", 1, True)] if "cuda" in devices else [])
        for device, workers, batched in runs:
            torch.set_num_threads(1 if workers > 1 else 2)
            t0 = time.perf_counter()
            s = align(AlignConfig(inp=str(tmp / "in"), out=str(tmp / f"o-{device}-{workers}-{batched}"), workers=workers,
                                  device=device, batched_detection=batched, batch_size=256 if device == "cuda" else 32,
                                  progress=False))
            rate = s["total"] / (time.perf_counter() - t0)
            what = f"{workers} worker{'s' if workers > 1 else ''}, {'batched' if batched else 'per-image'} detection"
            rows.append(("align, 128 px inputs", device, what, f"{rate:.1f} img/s (per-image MTCNN loop: {base:.1f})"))
        torch.set_num_threads(2)
    finally:
        shutil.rmtree(tmp)
    if "cuda" not in devices:
        rows.append(("align, 128 px inputs", "cuda", "batched detection, batch 256", NO_GPU))


def bench_shards(rows, q):
    import torch
    import torchvision

    from bench_shards import make_folder, read_speed
    from synthgen.data import ShardDataset
    from synthgen.shards import ShardConfig, shard

    n = q["shards"]
    tmp = Path(tempfile.mkdtemp())
    try:
        make_folder(tmp / "png", n, 112)
        for enc in ("raw", "png"):
            t0 = time.perf_counter()
            shard(ShardConfig(inp=str(tmp / "png"), out=str(tmp / f"s-{enc}"), encoding=enc, shard_size=2048, progress=False))
            rows.append(("shard write, 112 px", "cpu", enc, f"{n / (time.perf_counter() - t0):.0f} img/s"))
        torch.set_num_threads(1)
        folder = torchvision.datasets.ImageFolder(str(tmp / "png"), transform=torchvision.transforms.PILToTensor())
        base = read_speed(folder, 0, n)
        for enc in ("raw", "png"):
            sp = read_speed(ShardDataset(tmp / f"s-{enc}", output="tensor"), 0, n)
            rows.append(("shard read, random order, batch 256", "cpu", f"{enc}, 0 workers",
                         f"{sp:.0f} img/s (PNG ImageFolder: {base:.0f}, {sp / base:.1f}x)"))
        torch.set_num_threads(2)
    finally:
        shutil.rmtree(tmp)


def bench_formats(rows, q):
    from bench_formats import FORMATS, export_speed
    from bench_shards import make_folder
    from synthgen.shards import ShardConfig, shard

    n = q["formats"]
    tmp = Path(tempfile.mkdtemp())
    try:
        make_folder(tmp / "png", n, 112)
        shard(ShardConfig(inp=str(tmp / "png"), out=str(tmp / "s"), shard_size=2048, progress=False))
        for fmt in FORMATS:
            try:
                ips, mbs, _ = export_speed(tmp / "s", tmp / fmt, fmt, n)
            except Exception as e:  # parquet without pyarrow
                rows.append(("export write, 112 px, from raw shards", "cpu", fmt, f"not measured: {e}"))
                continue
            rows.append(("export write, 112 px, from raw shards", "cpu", fmt, f"{ips:.0f} img/s ({mbs:.1f} MiB/s)"))
    finally:
        shutil.rmtree(tmp)


def bench_release(rows, q):
    from bench_release import build_run, time_release

    n = q["release"]
    tmp = Path(tempfile.mkdtemp())
    try:
        run, _ = build_run(tmp, n, max(1, n // 100), max(1, n // 500))
        dt, r = time_release(run, tmp / "rel", "shards,recordio")
        rows.append((f"release, {n:,} images 128 px (dummy generator, pixels matcher)", "cpu",
                     "shards + recordio, 1 round", f"{dt:.1f} s ({r['status']}, {r['rounds'][-1].get('replaced', 0)} re-rendered)"))
    finally:
        shutil.rmtree(tmp)


def bench_audit(rows, devices, q):
    import torch

    from bench_audit import embed_speed, search_one
    from synthgen.audit.metrics import _faiss

    for device in devices:
        for name in ("iresnet-r50", "iresnet-r100", "facenet"):
            n = q["embed"] * (64 if device == "cuda" else 1)
            rows.append(("audit embed, 112 px (random weights)", device, name, f"{embed_speed(name, n, device):.1f} img/s"))
    if "cuda" not in devices:
        rows.append(("audit embed, 112 px (random weights)", "cuda", "iresnet-r50 / r100 / facenet", NO_GPU))
    n = q["search"]
    faiss = _faiss()
    backends = ["torch"] + (["faiss"] if faiss else [])
    for backend in backends:
        r = search_one(n, backend)
        rows.append((f"audit search top-5, {n:,} x {n:,}, 512-d", "cpu", f"{backend}{' blocks' if backend == 'torch' else ' (exact IndexFlatIP)'}",
                     f"{r['seconds']} s"))
    if not faiss:
        rows.append((f"audit search top-5, {n:,} x {n:,}, 512-d", "cpu", "faiss", "not measured: faiss not installed"))
    gpu_faiss = bool(faiss) and hasattr(faiss, "StandardGpuResources") and torch.cuda.is_available()
    if "cuda" in devices:
        rows.append((f"audit search top-5, {n:,} x {n:,}, 512-d", "cuda", "torch blocks", _search_cuda(n)))
        rows.append((f"audit search top-5, {n:,} x {n:,}, 512-d", "cuda", "faiss GPU",
                     _search_faiss_gpu(faiss, n) if gpu_faiss else "not measured: faiss GPU not installed"))
    else:
        rows.append((f"audit search top-5, {n:,} x {n:,}, 512-d", "cuda", "torch blocks / faiss GPU", NO_GPU))


def _search_cuda(n):
    import torch

    from synthgen.audit.metrics import topk_search

    rng = np.random.RandomState(0)
    q = rng.randn(n, 512).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    t0 = time.perf_counter()
    topk_search(q, q, k=5, backend="torch", device="cuda")
    torch.cuda.synchronize()
    return f"{time.perf_counter() - t0:.2f} s"


def _search_faiss_gpu(faiss, n):
    rng = np.random.RandomState(0)
    q = rng.randn(n, 512).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    t0 = time.perf_counter()
    index = faiss.GpuIndexFlatIP(faiss.StandardGpuResources(), 512)
    index.add(q)
    index.search(q, 5)
    return f"{time.perf_counter() - t0:.2f} s"


# ----------------------------------------------------------------------------------------------

QUICK = dict(quick=True, seconds=1.0, gen_batches_cpu=[1, 8], gen_batches_cuda=[16, 256, 1024], generate_cpu=16,
             generate_cuda=2048, baseline_max=512, align=32, shards=512, formats=512, embed=16, search=10000,
             release=1000)
FULL = dict(quick=False, seconds=10.0, gen_batches_cpu=[1, 8, 32], gen_batches_cuda=[16, 64, 256, 1024], generate_cpu=96,
            generate_cuda=20480, baseline_max=4096, align=512, shards=4096, formats=4096, embed=128,
            search=100000, release=10000)


def header(quick, seconds):
    import torch

    cuda = torch.version.cuda or "none"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (no GPU lent)"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return (f"Device: CPU {cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads); GPU {gpu}.  \n"
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch {torch.__version__}, CUDA {cuda}, "
            f"Python {platform.python_version()}; mode: {'quick' if quick else 'full'}, {seconds:.0f} s total.")


def write_results(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{BEGIN}\n{text.rstrip()}\n{END}"
    if BEGIN in old and END in old:
        new = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda m: block, old, count=1, flags=re.S)
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (< 2 min on 2 CPU cores)")
    ap.add_argument("--no-write", action="store_true", help="print the table; leave RESULTS.md alone")
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--note", default="", help="a line to print under the header (e.g. how busy the machine was)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    q = QUICK if a.quick else FULL
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    t0 = time.perf_counter()
    net = str(make_sface_like_checkpoint(HERE / ".cache" / "sface_like_128.pt"))
    rows = []
    for name, fn in (("generator", lambda: bench_generator(rows, net, devices, q)),
                     ("generate", lambda: bench_generate(rows, net, devices, q)),
                     ("align", lambda: bench_align(rows, devices, q)),
                     ("shards", lambda: bench_shards(rows, q)),
                     ("formats", lambda: bench_formats(rows, q)),
                     ("release", lambda: bench_release(rows, q)),
                     ("audit", lambda: bench_audit(rows, devices, q))):
        t = time.perf_counter()
        fn()
        print(f"[{name}: {time.perf_counter() - t:.1f} s]", file=sys.stderr, flush=True)
    total = time.perf_counter() - t0
    lines = ["## All benchmarks (`make bench` / `make bench-quick`)", "",
             "Written by `benchmarks/run_all.py`; replaced on each run.", "", header(a.quick, total), "",
             "| benchmark | device | setting | result |", "|---|---|---|---|"]
    if a.note:
        lines[6:6] = [f"Note: {a.note}", ""]
    lines += [f"| {w} | {d} | {s} | {r} |" for w, d, s, r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if not a.no_write:
        write_results(Path(a.results), text)
        print(f"written to {a.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
