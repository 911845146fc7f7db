"""Time opening a StyleGAN2-ADA .pkl as a ready torch module: synthgen's no-code reader against
NVIDIA's own (unsafe: it runs the source stored in the pickle) `legacy.load_network_pkl`.

    python benchmarks/bench_pickle_load.py --pkl /tmp/sface_like.pkl --nvidia-src /tmp/nv --reps 7

Each repetition runs each loader in a fresh Python process (torch and the loader's modules are
imported before the clock starts), alternating synthgen and NVIDIA, so a shared machine's load
drifts over both alike; the file is read once before timing so both find it in the page cache.
Reported: median and range (min-max) of the seconds from the path to a module on the CPU.

synthgen's path is the one `generate` uses: `synthgen.generators.load_generator(PKL, device="cpu")`
(the file's sha256 for provenance included). NVIDIA's is generate.py's:
`legacy.load_network_pkl(f)["G_ema"].to("cpu")`.

NVIDIA's code is not part of synthgen (non-commercial licence). To include it, clone it outside
this repository and pass its folder:

    git clone https://github.com/NVlabs/stylegan2-ada-pytorch /tmp/nv   # commit d72cc7d was used
    python benchmarks/bench_pickle_load.py --pkl /tmp/sface_like.pkl --nvidia-src /tmp/nv --make

--make writes PKL first (if absent) with NVIDIA's classes: a snapshot shaped like SFace's (128 px,
10,572 classes, --cfg auto: channel_base 16384, 2 mapping layers, 4 fp16 resolutions; G, D, G_ema
and an augment pipe, as the training loop writes them; about 356 MB), random weights.
Without --nvidia-src only synthgen is timed (PKL must exist).

--compare-src DIR also times another synthgen checkout (e.g. `git archive OLDCOMMIT | tar -x -C DIR`)
as "before". --generate N times whole processes instead: `synthgen generate` writing N images
(N classes x 1, fp32 CPU) against NVIDIA's generate.py writing N seeds (run on the CPU in fp32:
the script replaces its hard-coded CUDA device and passes force_fp32, nothing else).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_MAKE = r"""
import copy, pickle, sys
sys.path.insert(0, sys.argv[1])
import torch, dnnlib
from training.networks import Generator, Discriminator
from training.augment import AugmentPipe
torch.manual_seed(0)
common = dict(c_dim=10572, img_resolution=128, img_channels=3)
sk = dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256)
G = Generator(z_dim=512, w_dim=512, mapping_kwargs=dnnlib.EasyDict(num_layers=2),
              synthesis_kwargs=dnnlib.EasyDict(sk), **common)
D = Discriminator(block_kwargs=dnnlib.EasyDict(), mapping_kwargs=dnnlib.EasyDict(),
                  epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=4), **sk, **common)
aug = AugmentPipe(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1,
                  lumaflip=1, hue=1, saturation=1)
data = dict(training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path='casia.zip',
                                     use_labels=True, max_size=None, xflip=False, resolution=128))
for name, m in [('G', G), ('D', D), ('G_ema', copy.deepcopy(G)), ('augment_pipe', aug)]:
    data[name] = copy.deepcopy(m).eval().requires_grad_(False)
with open(sys.argv[2], 'wb') as f:
    pickle.dump(data, f)
"""

_OURS = r"""
import json, sys, time
from importlib.util import spec_from_file_location
from pathlib import Path
sys.path.insert(0, sys.argv[1])
_MAP = {"synthgen.generators": Path(sys.argv[1]) / "generators", "synthgen.cli": Path(sys.argv[1]) / "cli"}
class _Checkout:  # this checkout's generators/ and cli/, whatever an editable install maps them to
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name in _MAP:
            return spec_from_file_location(name, _MAP[name] / "__init__.py", submodule_search_locations=[str(_MAP[name])])
sys.meta_path.insert(0, _Checkout)
import torch
from synthgen.generators import load_generator
import synthgen.generators.stylegan2ada.pkl
torch.set_num_threads(int(sys.argv[3]))
t = time.perf_counter()
G = load_generator(sys.argv[2], device="cpu")
dt = time.perf_counter() - t
import resource
print(json.dumps({"s": dt, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "params": sum(p.numel() for p in G.net.parameters())}))
"""

_NVIDIA = r"""
import json, sys, time, warnings
sys.path.insert(0, sys.argv[1])
warnings.filterwarnings("ignore")
import torch
import dnnlib, legacy
torch.set_num_threads(int(sys.argv[3]))
t = time.perf_counter()
with open(sys.argv[2], "rb") as f:
    G = legacy.load_network_pkl(f)["G_ema"].to("cpu")
dt = time.perf_counter() - t
import resource
print(json.dumps({"s": dt, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "params": sum(p.numel() for p in G.parameters())}))
"""


# NVIDIA's generate.py as it is, except for the device it hard-codes (cuda -> cpu) and fp32 (its
# default on a CPU would run the fp16 blocks in half precision; synthgen's CPU default is fp32)
_NVIDIA_GENERATE = r"""
import sys, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, sys.argv[1])
import legacy
real = legacy.load_network_pkl
def load(f, **kw):
    d = real(f, **kw)
    fwd = d["G_ema"].forward
    d["G_ema"].forward = lambda *a, **k: fwd(*a, **{**k, "force_fp32": True})
    return d
legacy.load_network_pkl = load
src = open(sys.argv[1] + "/generate.py").read().replace("torch.device('cuda')", "torch.device('cpu')")
sys.argv = ["generate.py", "--network", sys.argv[2], "--seeds", "0-%d" % (int(sys.argv[3]) - 1), "--class", "0",
            "--outdir", sys.argv[4]]
exec(compile(src, "generate.py", "exec"), {"__name__": "__main__"})
"""


def _whole(cmd: list, env=None) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed:\n{r.stderr[-3000:]}")
    return dt


def generate_runs(a, pkl: Path) -> None:
    """--generate N: whole processes (start, imports, load, N images written as PNG), alternately."""
    import os
    import shutil
    import tempfile

    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    # the synthgen CLI from this checkout, whatever an editable install maps generators/ and cli/ to
    ours_code = _OURS.split("import torch")[0] + "from synthgen.cli.entry import main\nsys.argv = ['synthgen'] + sys.argv[2:]\nmain()\n"
    rows = {"synthgen": [], "nvidia": []}
    for i in range(a.reps):
        order = ["synthgen", "nvidia"] if i % 2 == 0 else ["nvidia", "synthgen"]
        for name in order:
            out = Path(tempfile.mkdtemp(prefix="bench-gen-"))
            if name == "synthgen":
                cmd = [sys.executable, "-c", ours_code, str(ROOT), "generate", "--network", str(pkl), "--classes",
                       f"0-{a.generate - 1}", "--per-class", "1", "--out", str(out / "o"), "--device", "cpu", "--quiet"]
            else:
                cmd = [sys.executable, "-c", _NVIDIA_GENERATE, a.nvidia_src, str(pkl), str(a.generate), str(out / "o")]
            dt = _whole(cmd, env)
            n = len(list((out / "o").rglob("*.png")))
            shutil.rmtree(out, ignore_errors=True)
            assert n == a.generate, (name, n)
            rows[name].append(dt)
            print(f"rep {i + 1}/{a.reps} {name:8s} {dt:.2f} s for {n} images, whole process", flush=True)
    print(f"\n{a.generate}-image generate, whole process, {a.reps} repetitions; median (min-max):")
    for name, xs in rows.items():
        print(f"| {name} | {_summary(xs)} |")
    print(f"synthgen speed / NVIDIA speed: {statistics.median(rows['nvidia']) / statistics.median(rows['synthgen']):.2f}x")


def _child(code: str, *args) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"loader failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _summary(xs: list) -> str:
    return f"{statistics.median(xs):.2f} s ({min(xs):.2f}-{max(xs):.2f})"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pkl", required=True, help="StyleGAN2-ADA network pickle to load (see --make).")
    ap.add_argument("--nvidia-src", default=None, metavar="DIR",
                    help="A checkout of NVlabs/stylegan2-ada-pytorch (outside this repo); omit to time synthgen only.")
    ap.add_argument("--compare-src", default=None, metavar="DIR",
                    help="Another synthgen checkout (e.g. a git worktree of an older commit) timed too, as 'before'.")
    ap.add_argument("--make", action="store_true", help="Write --pkl with NVIDIA's classes first if it is absent.")
    ap.add_argument("--reps", type=int, default=5, help="Repetitions (each: one synthgen and one NVIDIA load).")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in each loader process.")
    ap.add_argument("--json", default=None, metavar="FILE", help="Also write every timing here.")
    ap.add_argument("--generate", type=int, default=0, metavar="N",
                    help="Instead: time whole processes writing N images (synthgen generate, fp32 CPU, N classes x 1, "
                         "against NVIDIA's generate.py run on the CPU in fp32, N seeds); needs --nvidia-src.")
    a = ap.parse_args(argv)
    pkl = Path(a.pkl)
    if a.make and not pkl.exists():
        if not a.nvidia_src:
            raise SystemExit("--make needs --nvidia-src (the pickle is written by NVIDIA's classes)")
        subprocess.run([sys.executable, "-c", _MAKE, a.nvidia_src, str(pkl)], check=True, timeout=600)
    if not pkl.is_file():
        raise SystemExit(f"{pkl}: not found (pass --make with --nvidia-src to write one)")
    pkl.read_bytes()  # into the page cache, for both loaders alike
    if a.generate:
        if not a.nvidia_src:
            raise SystemExit("--generate needs --nvidia-src")
        return generate_runs(a, pkl)
    rows = {"synthgen": [], "before": [], "nvidia": []}
    rss = {k: [] for k in rows}
    for i in range(a.reps):
        order = ([("synthgen", _OURS, ROOT)] + ([("before", _OURS, a.compare_src)] if a.compare_src else [])
                 + ([("nvidia", _NVIDIA, a.nvidia_src)] if a.nvidia_src else []))
        if i % 2:
            order.reverse()
        for name, code, src in order:
            r = _child(code, src, pkl, a.threads)
            rows[name].append(r["s"])
            rss[name].append(r["rss_mib"])
            print(f"rep {i + 1}/{a.reps} {name:8s} {r['s']:.3f} s  peak RSS {r['rss_mib']:.0f} MiB  "
                  f"({r['params']:,} parameters)", flush=True)
    size = pkl.stat().st_size / 1e6
    print(f"\n{pkl} ({size:.0f} MB), {a.reps} repetitions, {a.threads} torch threads; median (min-max):")
    print("| loader | load to a CPU module | peak RSS (MiB) |\n|---|---|---|")
    for name in rows:
        if rows[name]:
            print(f"| {name} | {_summary(rows[name])} | {statistics.median(rss[name]):.0f} |")
    for other in ("before", "nvidia"):
        if rows[other]:
            print(f"synthgen / {other} time: {statistics.median(rows['synthgen']) / statistics.median(rows[other]):.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps({"pkl": str(pkl), "bytes": pkl.stat().st_size, "seconds": rows,
                                            "rss_mib": rss, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}))


if __name__ == "__main__":
    main()
