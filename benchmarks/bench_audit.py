"""Audit costs: matcher embedding speed, nearest-neighbour search time / peak memory, the whole
audit before/after a change, and the release gate's false-alarm rate by simulation.

    python benchmarks/bench_audit.py [--sizes 10000,100000] [--embed-images 64]
    python benchmarks/bench_audit.py --whole 10000,100000 [--before-src DIR]   # whole `run_audit`
    python benchmarks/bench_audit.py --simulate 1000                          # gate false-alarm rate

--whole times `run_audit` on precomputed 512-d embeddings (N synthetic and N authentic images, 10
per identity, --matcher embeddings: no network runs), in a subprocess per run. --before-src DIR
runs the same with the `synthgen` package found in DIR (e.g. `git archive <commit> synthgen |
tar -x -C DIR`), alternating before/after, so both are measured under the same machine load.
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


def _clusters(n_id, per, dim, rng, spread=0.6):
    c = rng.randn(n_id, dim)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    e = np.repeat(c, per, 0) + spread * rng.randn(n_id * per, dim) / np.sqrt(dim)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return e.astype(np.float32), np.repeat(np.arange(n_id), per)


def whole_one(n, d):
    """One whole audit, in a subprocess: the synthgen package from $BENCH_SRC when set."""
    if os.environ.get("BENCH_SRC"):
        sys.path.insert(0, os.environ["BENCH_SRC"])
    import synthgen.audit.report as R

    syn, auth = os.path.join(d, f"syn{n}.npz"), os.path.join(d, f"auth{n}.npz")
    if not os.path.exists(auth):
        rng = np.random.RandomState(0)
        for path, prefix in ((auth, "real"), (syn, "")):
            e, lab = _clusters(n // 10, 10, 512, rng)
            keys = np.array([f"{prefix}{l:06d}/{k % 10}.png" for k, l in enumerate(lab)])
            np.savez(path, embeddings=e, keys=keys, labels=np.array([k.split("/")[0] for k in keys]))
    t0 = time.perf_counter()
    r = R.run_audit(R.AuditConfig(synthetic=syn, authentic=auth, out=tempfile.mkdtemp(), matcher="embeddings",
                                  progress=False, device="cpu"))
    v = r["verdict"]
    return {"n": n, "seconds": round(time.perf_counter() - t0, 2), "code": os.path.dirname(R.__file__),
            "status": v.get("status", "leak" if v["leak"] else "no leak"), "flagged_images": v["flagged_images"]}


def whole(sizes, before_src, reps=1):
    d = tempfile.mkdtemp()
    here = os.path.dirname(os.path.abspath(__file__))
    print("| synthetic x authentic images (512-d, 10 per identity) | code | whole audit (s) | verdict | flagged images |\n"
          "|---|---|---|---|---|")
    for n in sizes:
        for _ in range(reps):
            for label, src in ([("before", before_src)] if before_src else []) + [("after", None)]:
                env = dict(os.environ)
                env["BENCH_SRC"] = src if src else os.path.dirname(here)
                r = json.loads(subprocess.run([sys.executable, __file__, "--_whole", f"{n}:{d}"], capture_output=True,
                                              text=True, check=True, env=env, cwd="/").stdout.strip().splitlines()[-1])
                print(f"| {n:,} x {n:,} | {label} | {r['seconds']} | {r['status']} | {r['flagged_images']:,} |", flush=True)


def simulate(reps, alpha=0.01, sizes=((2000, 500), (10000, 1000)), start=0):
    """Clean sets and planted near-copies, as tests/test_gate.py, with more repetitions."""
    from synthgen.audit import decision as D
    from synthgen.audit import metrics as M

    print("| gallery (authentic images) | synthetic images | repetitions | clean runs with any flag (95 % CI) | "
          "clean images over the per-pair FMR 1e-3 threshold | planted near-copies flagged |\n|---|---|---|---|---|---|")
    for n_a, n_s in sizes:
        tripped, pairwise, planted, planted_hit = 0, [], 0, 0
        r_eff = reps if n_a <= 2000 or len(sizes) == 1 else max(reps // 5, 1)
        for r in range(start, start + r_eff):
            rng = np.random.RandomState(r)
            a, al = _clusters(n_a // 5, 5, 64, rng)
            s, sl = _clusters(n_s // 5, 5, 64, rng)
            null, _ = M.leave_identity_out_best(a, al, np.arange(len(a)))
            at = M.templates(a, al)[1]
            idn = M.topk_search(at, at, 1, exclude_self=True)[0][:, 0]
            for plant in (False, True):
                s2 = s.copy()
                if plant:
                    for k, i in enumerate(rng.choice(len(a), 3, replace=False)):
                        v = a[i] + 0.2 * rng.randn(64) / 8
                        s2[5 * k] = v / np.linalg.norm(v)
                best = M.topk_search(s2, a, 1)[0][:, 0]
                ids = M.topk_search(M.templates(s2, sl)[1], at, 1)[0][:, 0]
                g = D.gate(best, null, alpha, ids, idn)
                if plant:
                    planted += 3
                    planted_hit += int(g["image_flag"][[0, 5, 10]].sum())
                else:
                    tripped += bool(g["image_flag"].any() or g["identity_flag"].any())
                    if r < start + 10:
                        ii, ij = M.imposter_pairs_distinct(al, 200_000, rng)
                        pairwise.append(np.mean(best >= M.threshold_at_fmr(M.pair_scores(a, a, ii, ij), 1e-3)))
        lo, hi = M.clopper_pearson(tripped, r_eff)
        print(f"| {n_a:,} | {n_s:,} | {r_eff} | {tripped} ({100 * lo:.2f}-{100 * hi:.2f} %) | {np.mean(pairwise):.0%} | "
              f"{planted_hit}/{planted} |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--embed-images", type=int, default=64)
    ap.add_argument("--whole", default=None, help="comma-separated N: time whole audits")
    ap.add_argument("--before-src", default=None, help="directory holding the `synthgen` package to compare with")
    ap.add_argument("--simulate", type=int, default=None, help="repetitions of the gate simulation")
    ap.add_argument("--sim-size", default=None, metavar="GALLERY:SYNTHETIC", help="one simulation size only")
    ap.add_argument("--sim-start", type=int, default=0, help="first simulation seed")
    ap.add_argument("--_search", default=None)
    ap.add_argument("--_whole", default=None)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    if a._whole:
        n, d = a._whole.split(":", 1)
        print(json.dumps(whole_one(int(n), d)))
        return
    if a.whole:
        print(f"machine: {machine()}\n")
        whole([int(x) for x in a.whole.split(",")], a.before_src)
        return
    if a.simulate:
        print(f"machine: {machine()}\n")
        sizes = (tuple(int(x) for x in a.sim_size.split(":")),) if a.sim_size else ((2000, 500), (10000, 1000))
        simulate(a.simulate, sizes=sizes, start=a.sim_start)
        return
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
