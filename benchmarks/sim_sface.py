"""The release gate at SFace scale, in the simulated world of sim_gate.py (issue 20's SFace targets).

    python benchmarks/sim_sface.py --kind clean --out /tmp/sface.jsonl
    python benchmarks/sim_sface.py --kind leak  --out /tmp/sface.jsonl

One run: 10,572 authentic identities x 47 images (496,884) with 10 % of them split under two
labels (CASIA-WebFace's estimated noise), against 10,572 synthetic classes x 60 images (634,320),
512-d ArcFace-like (sim_gate.World). `--kind leak` plants, each into its own synthetic class:
10 exact copies, 10 near copies at cosine 0.9 and 10 at 0.8 (first image of the class), and 40
whole classes that are an authentic identity (60 new images of it).

The world is drawn in a child process and handed over as .npy files, so the audit process's peak
RSS (`ru_maxrss`) is the audit's: the loaded embeddings plus everything `decide_embedded` does.
The matrix-multiply floor is timed in child processes (its memory is not the audit's) on a
fraction of the synthetic queries (`--floor-fraction`, default 5 %: half before the audit from the
first half of the set, half after from the second, averaged) and scaled to all of them: torch
matmul in 1,024 x 65,536 blocks with a running max per row, nothing else (no top-k, no indices).
`rss_peak_gb` is the audit process's ru_maxrss after the decision: the loaded embeddings and
everything `decide_embedded` allocated. Exact search is linear in the
number of queries, so the scaled figure is the floor of the full search up to timer noise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PER_A, PER_S = 47, 60
N_A = N_S = int(os.environ.get("SIM_SFACE_IDS", 10572))  # fewer only for a quick check of the script
PLANT = {"copy": 10, "near0.9": 10, "near0.8": 10, "class": 40}


def draw(kind: str, seed: int, work: Path) -> None:
    """Write auth.npy, auth_lab.npy, syn.npy, syn_lab.npy and planted.json into `work`."""
    from sim_gate import World

    w = World("arcface", seed)
    ca = w.centres(N_A)
    a = np.concatenate([w.images(ca[i : i + 500], PER_A) for i in range(0, N_A, 500)])
    a_lab = np.repeat(np.arange(N_A), PER_A)
    split = w.rng.choice(N_A, int(round(0.10 * N_A)), replace=False)
    for new, c in enumerate(split, start=N_A):
        rows = np.flatnonzero(a_lab == c)
        a_lab[w.rng.permutation(rows)[: len(rows) // 2]] = new
    cs = w.centres(N_S)
    s = np.concatenate([w.images(cs[i : i + 500], PER_S) for i in range(0, N_S, 500)])
    s_lab = np.repeat(np.arange(N_S), PER_S)
    planted = {k: [] for k in PLANT}
    if kind == "leak":
        slots = iter(w.rng.choice(N_S, sum(PLANT.values()), replace=False))
        for leak, n in PLANT.items():
            for t in w.rng.choice(len(a), n, replace=False):
                c = int(next(slots))
                r = c * PER_S
                if leak == "copy":
                    s[r] = a[t]
                elif leak.startswith("near"):
                    s[r] = w.unit_near(a[t].astype(np.float64), float(leak[4:]))
                else:
                    s[r : r + PER_S] = w.images(ca[[t // PER_A]], PER_S)
                    planted[leak].append(f"s{c}")
                    continue
                planted[leak].append(f"s{c}/{r}.png")
    for name, arr in (("auth", a), ("auth_lab", a_lab), ("syn", s), ("syn_lab", s_lab)):
        np.save(work / f"{name}.npy", arr)
    (work / "planted.json").write_text(json.dumps(planted))


def floor_seconds(work: Path, fraction: float, half: int, qb: int = 1024, gb: int = 65536) -> tuple[float, int]:
    """Seconds of a plain exact search (torch matmul in query x gallery blocks, a running max per
    row, nothing else) over `fraction` of the synthetic queries (from the first or second half of
    the set), scaled to all of them; and the number of queries timed. Runs in its own process (see
    --stage floor), so its memory is not the audit's."""
    import torch

    s = np.load(work / "syn.npy", mmap_mode="r")
    g = torch.from_numpy(np.load(work / "auth.npy"))
    n = max(qb, int(len(s) * fraction) // qb * qb)
    start = 0 if half == 0 else len(s) // 2
    q = torch.from_numpy(np.ascontiguousarray(s[start : start + n]))
    t0 = time.perf_counter()
    for i in range(0, n, qb):
        best = torch.full((qb,), -2.0)
        for j in range(0, len(g), gb):
            best = torch.maximum(best, (q[i : i + qb] @ g[j : j + gb].T).amax(1))
    return (time.perf_counter() - t0) * len(s) / n, n


def _floor_child(work: Path, fraction: float, half: int) -> tuple[float, int]:
    r = subprocess.run([sys.executable, __file__, "--kind", "clean", "--work", str(work), "--floor-fraction",
                        str(fraction), "--stage", f"floor{half}"], check=True, capture_output=True, text=True)
    sec, n = r.stdout.split()[-2:]
    return float(sec), int(n)


def audit(kind: str, seed: int, work: Path, fraction: float) -> dict:
    from synthgen.audit.report import decide_embedded
    from sim_gate import _embedded

    a, a_lab = np.load(work / "auth.npy"), np.load(work / "auth_lab.npy")
    s, s_lab = np.load(work / "syn.npy"), np.load(work / "syn_lab.npy")
    planted = json.loads((work / "planted.json").read_text())
    syn, auth = _embedded(s, s_lab, "s"), _embedded(a, a_lab, "a")
    del a, s
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    # the floor is timed in child processes before and after the audit (half the sample each, from
    # each half of the set) and averaged, so a machine that got busier or quieter biases it less
    f1, n1 = _floor_child(work, fraction / 2, 0)
    t0 = time.perf_counter()
    v, m = decide_embedded(syn, auth, alpha=0.01)
    dt = time.perf_counter() - t0
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    f2, n2 = _floor_child(work, fraction / 2, 1)
    floor, n_floor = (f1 + f2) / 2, n1 + n2
    flagged_img, flagged_id = m["flag_images"], m["flag_ids"]  # the verdict lists at most 1,000 keys
    found = {}
    for leak, keys in planted.items():
        if leak == "class":
            found[leak] = sum(k in flagged_id or any(f.startswith(k + "/") for f in flagged_img) for k in keys)
        else:
            found[leak] = sum(k in flagged_img for k in keys)
    dec, lab = m["decision"], m["report"]["label_issues"]
    planted_ids = {k for k in planted.get("class", [])}
    planted_imgs = {k for leak, ks in planted.items() if leak != "class" for k in ks}
    false_img = sorted(k for k in flagged_img if k not in planted_imgs and k.split("/")[0] not in planted_ids)
    false_id = sorted(k for k in flagged_id if k not in planted_ids)
    return {"kind": kind, "seed": seed, "authentic": len(auth.keys), "synthetic": len(syn.keys),
            "status": v["status"], "planted": {k: len(x) for k, x in planted.items()}, "found": found,
            "other_flagged_images": len(false_img), "other_flagged_identities": len(false_id),
            "deciding_level": dec["deciding_level"], "operating": dec["operating_score"],
            "id_operating": dec["identity_operating_score"], "fnmr": dec["fnmr_at_operating"],
            "id_fnmr": dec["identity_fnmr_at_operating"], "causes": sorted({c["cause"] for c in dec["causes"]}),
            "label_fraction": lab["fraction"], "label_fraction_ci95": lab["fraction_ci95"],
            "label_true_fraction": round(2 * 0.10 / 1.10, 4),
            "seconds_audit": round(dt, 1), "seconds_floor": round(floor, 1), "seconds_floor_before_after": [round(f1, 1), round(f2, 1)],
            "floor_queries_timed": n_floor,
            "ratio": round(dt / floor, 3), "rss_loaded_gb": round(rss_loaded, 2),
            "rss_peak_gb": round(rss_peak, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=("clean", "leak"), required=True)
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--work", default="/tmp/sim_sface", help="folder for the drawn world (.npy, about 2.3 GB)")
    ap.add_argument("--floor-fraction", type=float, default=0.05)
    ap.add_argument("--out", default=None, help="append the JSON row here")
    ap.add_argument("--stage", choices=("all", "draw", "audit", "floor0", "floor1"), default="all", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.stage.startswith("floor"):  # --work is the drawn world's folder itself here
        sec, n = floor_seconds(Path(a.work), a.floor_fraction, int(a.stage[-1]))
        return print(sec, n)
    work = Path(a.work) / f"{a.kind}-{a.seed}"
    work.mkdir(parents=True, exist_ok=True)
    if a.stage in ("all", "draw"):
        if a.stage == "draw":
            return draw(a.kind, a.seed, work)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--kind", a.kind, "--seed", str(a.seed), "--work", a.work,
                        "--stage", "draw"], check=True)
        print(f"drawn in {time.perf_counter() - t0:.0f} s", flush=True)
    if a.stage == "all":
        r = subprocess.run([sys.executable, __file__, "--kind", a.kind, "--seed", str(a.seed), "--work", a.work,
                            "--floor-fraction", str(a.floor_fraction), "--stage", "audit"],
                           check=True, capture_output=True, text=True)
        line = r.stdout.strip().splitlines()[-1]
    else:
        line = json.dumps(audit(a.kind, a.seed, work, a.floor_fraction))
    print(line, flush=True)
    if a.out and a.stage == "all":
        with open(a.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
