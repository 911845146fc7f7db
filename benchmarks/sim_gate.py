"""The release gate by simulation: clean sets and planted leaks in a simulated world.

    python benchmarks/sim_gate.py --sizes 1k,10k --reps 100,20 --out /tmp/sim.jsonl   # the table rows
    python benchmarks/sim_gate.py --table /tmp/sim.jsonl                              # markdown from rows

Every run calls `synthgen.audit.report.decide_embedded`: exactly what `synthgen audit --matcher
embeddings` decides (calibration, label issues, the leave-cluster-out null, the tail, weighted Holm,
the preconditions), on embeddings drawn from this world:

matchers   arcface   512-d, identities' centres in a 204-d subspace: different-person cosine about
                     N(0.01, 0.07), same-person about 0.58 (ArcFace-like on CASIA-WebFace)
           dlib      128-d, a strong shared direction: different people 0.8 +- 0.03 (up to ~0.9),
                     same person about 0.95 (dlib's compressed cosines)
departures clean; label2 / label10: 2 % / 10 % of authentic identities split under two labels;
           lookalike: 20 % of authentic identities paired with a look-alike (centre cosine 0.6), and
           10 % of synthetic identities look-alikes of authentic ones (different people: no leak);
           hubs: 2 % of authentic identities pulled toward the shared direction (they score high
           against everyone); pull: synthetic faces pulled toward the mean face; tight: synthetic
           classes tighter than authentic ones (same-person ~0.75)
leaks      copy (exact), near0.9 / near0.8 / near0.7 (cosine to one authentic image), newimg (a new
           image of an authentic identity), class (a whole synthetic class that is an authentic
           identity); planted 3 of each per run, in runs of their own, into a clean synthetic set.

Sizes: authentic images x synthetic images, 10 images per identity: 1k = 1,000 x 1,000, 10k =
10,000 x 10,000, 100k = 100,000 x 20,000, sface = 494,000 x 634,000 (10,572 x 47 authentic; slow:
about an hour per run on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MATCHERS = {  # dim, active dims, image noise sigma, shared-direction weight mu
    "arcface": (512, 204, 0.85, 0.13),
    "dlib": (128, 64, 0.58, 2.31),
}
SIZES = {"1k": (100, 10, 100, 10), "10k": (1000, 10, 1000, 10), "100k": (10000, 10, 2000, 10),
         "sface": (10572, 47, 10572, 60)}
DEPARTURES = ("clean", "label2", "label10", "lookalike", "hubs", "pull", "tight")
MAX_PAIRS = 50_000  # sampled pairs per score distribution (the audit's default is 200,000; only speed differs)
LEAKS = ("copy", "near0.9", "near0.8", "near0.7", "newimg", "class")


class World:
    def __init__(self, matcher: str, seed: int):
        self.dim, self.active, self.sigma, self.mu = MATCHERS[matcher]
        self.rng = np.random.RandomState(seed)
        m = np.zeros(self.dim)
        m[self.active] = 1.0  # the shared direction sits outside the identity subspace
        self.mean = m

    def centres(self, n):
        c = np.zeros((n, self.dim))
        c[:, : self.active] = self.rng.randn(n, self.active) / np.sqrt(self.active)
        return c

    def images(self, centres, per, sigma=None, pull=0.0):
        sigma = self.sigma if sigma is None else sigma
        n = len(centres)
        noise = np.zeros((n * per, self.dim))
        noise[:, : self.active] = self.rng.randn(n * per, self.active) / np.sqrt(self.active)
        e = np.repeat(centres, per, 0) + sigma * noise + (self.mu + pull) * self.mean
        return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)

    def unit_near(self, v, rho):
        """A unit vector at cosine rho to unit vector v."""
        w = np.zeros(self.dim)
        w[: self.active] = self.rng.randn(self.active)
        w[self.active] = self.rng.randn() * 0.2
        w -= (w @ v) * v
        w /= np.linalg.norm(w)
        return (rho * v + np.sqrt(max(1 - rho * rho, 0)) * w).astype(np.float32)


def _embedded(emb, labels, prefix):
    from synthgen.audit.embed import Embedded

    keys = [f"{prefix}{l}/{k}.png" for k, l in enumerate(labels)]
    return Embedded(keys, [f"{prefix}{l}" for l in labels], np.ascontiguousarray(emb, np.float32), [])


def make(matcher, size, departure, leak, seed):
    """-> (synthetic Embedded, authentic Embedded, planted synthetic keys, planted identity names)."""
    n_a, per_a, n_s, per_s = SIZES[size]
    w = World(matcher, seed)
    ca = w.centres(n_a)
    if departure == "lookalike":
        k = n_a // 10  # 20 % of identities in look-alike pairs
        for i in range(k):
            v = ca[2 * i] / np.linalg.norm(ca[2 * i])
            u = w.centres(1)[0]
            u -= (u @ v) * v
            ca[2 * i + 1] = (0.6 * v + 0.8 * u / np.linalg.norm(u)) * np.linalg.norm(ca[2 * i + 1])
    a = w.images(ca, per_a)
    if departure == "hubs":
        hubs = np.arange(max(1, n_a // 50))
        rows = np.concatenate([np.arange(h * per_a, (h + 1) * per_a) for h in hubs])
        e = a[rows] + 0.5 * w.mean / 1.0
        a[rows] = e / np.linalg.norm(e, axis=1, keepdims=True)
    a_lab = np.repeat(np.arange(n_a), per_a)
    if departure in ("label2", "label10"):
        frac = 0.02 if departure == "label2" else 0.10
        split = w.rng.choice(n_a, int(round(frac * n_a)), replace=False)
        new = n_a
        for c in split:
            rows = np.flatnonzero(a_lab == c)
            move = w.rng.permutation(rows)[: len(rows) // 2]
            a_lab[move] = new
            new += 1
    cs = w.centres(n_s)
    if departure == "lookalike":  # the same population on both sides: 10 % of synthetic people look like an
        for j in range(n_s // 10):  # authentic one (centre cosine 0.6: different people, not a leak)
            v = ca[w.rng.randint(n_a)]
            v = v / np.linalg.norm(v)
            u = w.centres(1)[0]
            u -= (u @ v) * v
            cs[j] = (0.6 * v + 0.8 * u / np.linalg.norm(u)) * np.linalg.norm(cs[j])
    s = w.images(cs, per_s, sigma=0.6 if departure == "tight" else None, pull=0.35 if departure == "pull" else 0.0)
    s_lab = np.repeat(np.arange(n_s), per_s)
    planted, planted_ids = [], []
    if leak:
        targets = w.rng.choice(len(a), 3, replace=False)
        slots = w.rng.choice(n_s, 3, replace=False)  # one synthetic class per planted leak
        for t, c in zip(targets, slots):
            r = c * per_s  # the first image of that class
            if leak == "copy":
                s[r] = a[t]
            elif leak.startswith("near"):
                s[r] = w.unit_near(a[t].astype(np.float64), float(leak[4:]))
            elif leak == "newimg":
                s[r] = w.images(ca[[t // per_a]], 1)[0]
            elif leak == "class":
                s[c * per_s : (c + 1) * per_s] = w.images(ca[[t // per_a]], per_s)
                planted_ids.append(f"s{c}")
                continue
            planted.append(f"s{c}/{r}.png")
    return _embedded(s, s_lab, "s"), _embedded(a, a_lab, "a"), planted, planted_ids


def one(matcher, size, departure, leak, seed, alpha=0.01) -> dict:
    from synthgen.audit.report import decide_embedded

    syn, auth, planted, planted_ids = make(matcher, size, departure, leak, seed)
    t0 = time.perf_counter()
    v, m = decide_embedded(syn, auth, alpha=alpha, max_pairs=MAX_PAIRS)
    dt = time.perf_counter() - t0
    flagged = m["flag_images"] | m["flag_ids"]  # the verdict lists at most 1,000 keys
    dec = m["decision"]
    hit = sum(k in flagged for k in planted) + sum(k in flagged for k in planted_ids)
    # a planted leak counts as found when its image, or (class) its identity, is flagged
    if leak == "class":
        hit = sum(k in flagged or any(f.startswith(k + "/") for f in flagged) for k in planted_ids)
    return {"matcher": matcher, "size": size, "departure": departure, "leak": leak or "none", "seed": seed,
            "status": v["status"], "flags": len(flagged), "planted": len(planted) + len(planted_ids), "found": hit,
            "causes": sorted({c["cause"] for c in dec["causes"]}), "operating": dec["operating_score"],
            "id_operating": dec["identity_operating_score"], "id_fnmr": dec["identity_fnmr_at_operating"],
            "fnmr": dec["fnmr_at_operating"], "label_fraction": m["report"]["label_issues"]["fraction"],
            "seconds": round(dt, 2)}


def table(path):
    from synthgen.audit.metrics import clopper_pearson

    rows = [json.loads(line) for line in open(path)]
    groups = {}
    for r in rows:
        groups.setdefault((r["matcher"], r["size"], r["departure"], r["leak"]), []).append(r)
    ci = lambda k, n: "{:.1f}-{:.1f} %".format(*(100 * x for x in clopper_pearson(k, n)))
    print("| matcher | size | departure | planted | runs | leak verdicts (95 % CI) | inconclusive (95 % CI) | "
          "planted found (95 % CI) | causes of inconclusive | s / run |\n|---|---|---|---|---|---|---|---|---|---|")
    for (mt, sz, dep, leak), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], list(SIZES).index(kv[0][1]),
                                                                         DEPARTURES.index(kv[0][2]), kv[0][3])):
        n = len(rs)
        lk = sum(r["status"] == "leak" for r in rs)
        inc = sum(r["status"] == "inconclusive" for r in rs)
        pl, fd = sum(r["planted"] for r in rs), sum(r["found"] for r in rs)
        causes = sorted({c for r in rs if r["status"] == "inconclusive" for c in r["causes"]})
        found = f"{fd}/{pl} ({ci(fd, pl)})" if pl else "-"
        print(f"| {mt} | {sz} | {dep} | {leak} | {n} | {lk} ({ci(lk, n)}) | {inc} ({ci(inc, n)}) | {found} | "
              f"{', '.join(causes) or '-'} | {np.median([r['seconds'] for r in rs]):.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matchers", default="arcface")
    ap.add_argument("--sizes", default="1k")
    ap.add_argument("--reps", default="20", help="clean runs per (size, departure); one number per size")
    ap.add_argument("--leak-reps", default="5", help="runs per planted leak kind; one number per size")
    ap.add_argument("--departures", default=",".join(DEPARTURES))
    ap.add_argument("--leaks", default=",".join(LEAKS))
    ap.add_argument("--leak-departures", default="clean,label10", help="departures the leak runs are planted into")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="append one JSON row per run here")
    ap.add_argument("--table", default=None, help="print the markdown table of a rows file and exit")
    a = ap.parse_args()
    if a.table:
        return table(a.table)
    sizes = a.sizes.split(",")
    reps = [int(x) for x in a.reps.split(",")] * (len(sizes) if "," not in a.reps else 1)
    lreps = [int(x) for x in a.leak_reps.split(",")] * (len(sizes) if "," not in a.leak_reps else 1)
    out = open(a.out, "a") if a.out else None
    for mt in a.matchers.split(","):
        for sz, r, lr in zip(sizes, reps, lreps):
            jobs = [(dep, None, n) for dep in a.departures.split(",") for n in range(r)]
            jobs += [(dep, lk, n) for dep in a.leak_departures.split(",") for lk in a.leaks.split(",") if lk
                     for n in range(lr)]
            for dep, lk, n in jobs:
                row = one(mt, sz, dep, lk, a.seed + 1000 * n + 7)
                line = json.dumps(row)
                print(line, flush=True)
                if out:
                    out.write(line + "\n")
                    out.flush()


if __name__ == "__main__":
    main()
