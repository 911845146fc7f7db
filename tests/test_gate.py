"""The release gate: p-values, the tail model, Holm, the three-way verdict, its preconditions,
several matchers, and the false-alarm property by simulation on constructed embeddings."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from synthgen.audit import decision as D
from synthgen.audit import metrics as M
from synthgen.audit.report import AuditConfig, _n, _pct, provenance, run_audit
from synthgen.cli.main import cli

ALPHA = 0.01


def clusters(n_id, per, dim, rng, spread=0.6, prefix=""):
    """Identities as random unit centres; images = centre + noise (genuine cosine ~0.75, imposter ~0)."""
    c = rng.randn(n_id, dim)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    e = np.repeat(c, per, 0) + spread * rng.randn(n_id * per, dim) / np.sqrt(dim)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    lab = np.repeat(np.arange(n_id), per)
    keys = [f"{prefix}{l:06d}/{k % per}.png" for k, l in enumerate(lab)]
    return e.astype(np.float32), lab, keys


def one_gate(a, al, s, sl):
    """The search rule exactly as run_audit applies it (same functions), on arrays."""
    null, _ = M.leave_identity_out_best(a, al, np.arange(len(a)))
    best, _ = M.topk_search(s, a, 1)
    _, st = M.templates(s, sl)
    _, at = M.templates(a, al)
    ids, _ = M.topk_search(st, at, 1)
    idn, _ = M.topk_search(at, at, 1, exclude_self=True)
    return D.gate(best[:, 0], null, ALPHA, ids[:, 0], idn[:, 0]), best[:, 0]


# ----------------------------------------------------------------------------------------------
# the pieces, on exact values


def test_holm_matches_hand_computation():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    rej, adj = D.holm(p, 0.05)
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    assert rej.tolist() == [True, False, False, True]
    assert D.holm([], 0.05)[0].size == 0


def test_empirical_pvalues_and_critical_score():
    null = np.arange(10) / 10.0  # 0.0 .. 0.9, no tail model below TAIL_MIN
    p = D.pvalues([0.95, 0.9, 0.0, -1.0], null, None)
    np.testing.assert_allclose(p, [1 / 11, 2 / 11, 11 / 11, 11 / 11])
    assert D.critical_score(0.05, null, None) == np.inf  # 1 / 11 is the smallest p-value 10 scores can give
    t = D.critical_score(2 / 11, null, None)
    assert D.pvalues([t], null, None)[0] <= 2 / 11 < D.pvalues([np.nextafter(t, -1)], null, None)[0]


def test_tail_fit_recovers_known_tails_and_is_conservative_for_bounded_ones():
    """The tail is fitted on t = -log(1 - cosine): known tails are given on that scale."""
    rng = np.random.RandomState(0)
    fit = D.tail_fit(np.vectorize(D.from_t)(rng.exponential(0.05, 20000)))
    assert fit["xi"] < 0.05 and fit["sigma"] == pytest.approx(0.05, rel=0.15) and fit["ks_pvalue"] > 0.01
    from scipy import stats

    # a heavier (xi = 0.25) tail: the shape is estimated and reported, the model stays exponential,
    # and the Kolmogorov-Smirnov check says it fits poorly (the report then says p-values are approximate)
    fit = D.tail_fit(np.vectorize(D.from_t)(stats.genpareto.rvs(0.25, scale=1.0, size=20000, random_state=1)))
    assert fit["xi_unconstrained"] == pytest.approx(0.25, abs=0.1) and fit["xi"] == 0.0 and fit["ks_pvalue"] < 0.01
    # a bounded tail (uniform on t): the MLE says xi ~ -1; the model used is the exponential, whose
    # p-values are LARGER than the truth there (conservative), never 0 inside the sampled range
    u = rng.uniform(0, 1, 5000)
    us = np.vectorize(D.from_t)(u)
    fit = D.tail_fit(us)
    assert fit["xi_unconstrained"] < -0.5 and fit["xi"] == 0.0
    t = np.array([0.995, 0.999])
    p = D.pvalues(np.vectorize(D.from_t)(t), us, fit)
    assert (p >= 1 - t).all() and (p > 0).all()
    # p-values are continuous at u and the critical score inverts them
    c = D.critical_score(1e-6, us, fit)
    assert D.pvalues([c], us, fit)[0] == pytest.approx(1e-6, rel=1e-6)


def test_no_critical_score_reaches_the_cosine_bound():
    """dlib-like compressed cosines (different people up to ~0.9): the old raw-scale exponential tail
    put the operating score past 1; on the t scale it stays below 1 at any level, and an exact copy
    (cosine 1, or 1 + rounding) gets a finite t and the smallest p-value."""
    rng = np.random.RandomState(3)
    null = np.clip(0.86 + 0.02 * rng.randn(5000) + rng.exponential(0.012, 5000), -1, 0.995)
    fit = D.tail_fit(null)
    for q in (1e-3, 1e-6, 1e-9, 1e-12):
        c = D.critical_score(q, null, fit)
        assert np.isfinite(c) and c < 1
    p = D.pvalues([1.0, 1.0000001, 0.9], null, fit)
    assert np.isfinite(D.to_t([1.0000001])).all() and p[0] == p[1] < 1e-6 < p[2]


def test_weighted_holm_splits_alpha_between_families():
    p = np.array([0.004, 0.3, 0.6, 0.02, 0.5])
    w = np.array([0.5 / 3] * 3 + [0.25, 0.25])  # 3 images share half, 2 identities the other half
    rej, adj = D.holm(p, 0.05, w)
    # order by p / w: 0.024, 0.08, 1.8, 2.0, 3.6; step 1: 0.004 * 3 / 0.5 * 1 = 0.024; step 2: 0.02 / 0.25 *
    # (1 - 1/6) = 0.0667 -> stop
    np.testing.assert_allclose(adj[[0, 3]], [0.024, 0.02 / 0.25 * (5 / 6)])
    assert rej.tolist() == [True, False, False, False, False]
    np.testing.assert_allclose(D.holm(p, 0.05, np.ones(5))[1], D.holm(p, 0.05)[1])
    assert not D.holm([1e-9, 0.5], 0.05, [0.0, 1.0])[0][0]  # a zero weight is never rejected


def test_distinct_pairs_without_replacement_on_a_tiny_set():
    lab = np.repeat(np.arange(3), 3)  # 3 identities x 3 images: 27 distinct imposter pairs, 9 genuine
    assert M.pair_totals(lab) == (9, 27)
    i, j = M.imposter_pairs_distinct(lab, 200_000, np.random.RandomState(0))
    assert len(set(zip(i.tolist(), j.tolist()))) == 27 == len(i) and (lab[i] != lab[j]).all()
    big = np.random.RandomState(1).randint(0, 300, 40_000)  # rejection-sampling path
    i, j = M.imposter_pairs_distinct(big, 50_000, np.random.RandomState(0))
    assert len(set((i * 40_000 + j).tolist())) == 50_000 and (i < j).all() and (big[i] != big[j]).all()


def test_clopper_pearson_and_wording():
    lo, hi = M.clopper_pearson(0, 300)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / 300))
    lo, hi = M.clopper_pearson(3, 10)
    assert lo == pytest.approx(0.06673, abs=1e-4) and hi == pytest.approx(0.65245, abs=1e-4)
    assert _n(1, "synthetic identity") == "1 synthetic identity" and _n(3, "synthetic identity") == "3 synthetic identities"
    assert _n(1, "image") == "1 image" and _n(1200, "image") == "1,200 images"
    assert [_pct(x) for x in (0.77, 0.0123, 0.00013, 0.0, 1.0)] == ["77 %", "1.2 %", "0.013 %", "0 %", "100 %"]


# ----------------------------------------------------------------------------------------------
# the property, by simulation


def test_clean_sets_trip_the_gate_at_most_alpha_of_the_time():
    """Clean synthetic sets (new identities) against galleries where the per-pair FMR 1e-3
    threshold flags most clean images: the search rule must flag anything in <= alpha of runs.

    300 repetitions: if the true rate were alpha = 1 %, P(>= 9 tripped runs) = 0.4 %, so this test
    fails a gate whose rate is clearly above alpha. (benchmarks/bench_audit.py --simulate runs more.)"""
    reps, tripped, pairwise = 300, 0, []
    for r in range(reps):
        rng = np.random.RandomState(1000 + r)
        a, al, _ = clusters(300, 5, 48, rng)
        s, sl, _ = clusters(60, 5, 48, rng)
        g, best = one_gate(a, al, s, sl)
        tripped += bool(g["image_flag"].any() or g["identity_flag"].any())
        if r < 5:
            ii, ij = M.imposter_pairs_distinct(al, 200_000, rng)
            pairwise.append(np.mean(best >= M.threshold_at_fmr(M.pair_scores(a, a, ii, ij), 1e-3)))
    lo, hi = M.clopper_pearson(tripped, reps)
    print(f"clean runs tripped: {tripped}/{reps} (95 % CI {lo:.4f}-{hi:.4f}); per-pair rule flags "
          f"{np.mean(pairwise):.0%} of clean images")
    assert np.mean(pairwise) > 0.5  # the regime the issue describes
    assert tripped <= 8


def test_planted_near_copies_are_always_flagged():
    for r in range(30):
        rng = np.random.RandomState(r)
        a, al, _ = clusters(300, 5, 48, rng)
        s, sl, _ = clusters(60, 5, 48, rng)
        src = rng.choice(len(a), 3, replace=False)
        for k, i in enumerate(src):  # near-copies: cosine ~0.98 with an authentic image
            v = a[i] + 0.2 * rng.randn(48) / np.sqrt(48)
            s[5 * k] = v / np.linalg.norm(v)
        g, best = one_gate(a, al, s, sl)
        assert g["image_flag"][[0, 5, 10]].all(), (r, best[[0, 5, 10]], g["operating_score"])
        assert g["image_flag"].sum() <= 3 + 1


# ----------------------------------------------------------------------------------------------
# the stage and the CLI on embedding files


def save(path, e, lab, keys):
    np.savez(path, embeddings=e, keys=np.array(keys), labels=np.array([k.split("/")[0] for k in keys]))


def audit(tmp_path, syn, auth, out, **kw):
    return run_audit(AuditConfig(synthetic=str(syn), authentic=str(auth), out=str(tmp_path / out),
                                 matcher="embeddings", progress=False, **kw))


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    d = tmp_path_factory.mktemp("gate")
    rng = np.random.RandomState(7)
    a, al, ak = clusters(400, 5, 48, rng, prefix="real")
    s, sl, sk = clusters(80, 5, 48, rng)
    save(d / "auth.npz", a, al, ak)
    save(d / "clean.npz", s, sl, sk)
    leak = s.copy()
    for k, i in enumerate((3, 700, 1501)):
        leak[5 * k] = a[i]  # exact copies of three authentic images
    for k in range(5):  # and one synthetic identity whose images are all near one real person
        v = a[1000 + k] + 0.1 * rng.randn(48) / np.sqrt(48)
        leak[50 + k] = v / np.linalg.norm(v)
    save(d / "leak.npz", leak, sl, sk)
    return d, a, al, ak, s, sl, sk


def test_clean_large_gallery_passes_where_the_pairwise_rule_cries_leak(tmp_path, sets):
    d, *_ = sets
    r = audit(tmp_path, d / "clean.npz", d / "auth.npz", "o")
    v = r["verdict"]
    assert v["status"] == "pass" and v["leak"] is False and v["flagged_images"] == 0, v["reasons"]
    assert r["nearest"]["images"]["chance_fraction_pairwise_threshold"] > 0.5  # the old rule's false alarms
    assert r["matchers"][0]["decision"]["null_queries"] == 2000 and r["null"]["fit"]["k"] == 200
    assert r["calibration"]["eer_ci95"][0] <= r["calibration"]["eer"] <= r["calibration"]["eer_ci95"][1]
    assert v["next_steps"][0].startswith("Release")
    assert r["dataset"]["synthetic"]["sha256"] and r["dataset"]["authentic"]["sha256"]
    assert list(csv.reader(open(tmp_path / "o" / "flagged.csv")))[1:] == []
    old = audit(tmp_path, d / "clean.npz", d / "auth.npz", "o2", rule="pairwise")
    assert old["verdict"]["status"] == "leak" and old["verdict"]["flagged_images"] > 200
    assert "already match another real person" in " ".join(old["verdict"]["reasons"])


def test_planted_copies_are_a_leak_with_names_pvalues_and_next_steps(tmp_path, sets):
    d, a, al, ak, s, sl, sk = sets
    r = audit(tmp_path, d / "leak.npz", d / "auth.npz", "o")
    v = r["verdict"]
    assert v["status"] == "leak"
    planted = {sk[0], sk[5], sk[10]} | {sk[50 + k] for k in range(5)}
    assert planted <= set(v["flagged_image_keys"]) and len(v["flagged_image_keys"]) <= len(planted) + 1
    assert "000010" in v["flagged_identity_names"]
    rows = list(csv.DictReader(open(tmp_path / "o" / "flagged.csv")))
    assert {r_["synthetic"] for r_ in rows if r_["kind"] == "image"} == set(v["flagged_image_keys"])
    copy = next(r_ for r_ in rows if r_["synthetic"] == sk[0])
    assert copy["authentic"] == ak[3] and float(copy["score"]) > 0.999 and float(copy["p_value"]) < 1e-8
    assert any("Remove or regenerate these" in x for x in v["next_steps"])
    assert any(x.startswith("Drop synthetic identity 000010") for x in v["next_steps"])
    page = (tmp_path / "o" / "report.html").read_text()
    assert page.index("Verdict: LEAK") < page.index("What was audited") < page.index("Flagged synthetic identities")
    res = CliRunner().invoke(cli, ["audit", "--synthetic", str(d / "leak.npz"), "--authentic", str(d / "auth.npz"),
                                   "--out", str(tmp_path / "cli"), "--matcher", "embeddings", "--fail-on-leak", "--json"])
    assert res.exit_code == 3 and json.loads(res.stdout)["status"] == "leak"
    res = CliRunner().invoke(cli, ["audit", "--synthetic", str(d / "clean.npz"), "--authentic", str(d / "auth.npz"),
                                   "--out", str(tmp_path / "cli2"), "--matcher", "embeddings", "--fail-on-leak"])
    assert res.exit_code == 0 and "verdict: PASS" in res.output


def test_nan_never_passes_and_is_named(tmp_path, sets):
    d, a, al, ak, s, sl, sk = sets
    bad = a.copy()
    bad[17, 3] = np.nan
    save(tmp_path / "auth_nan.npz", bad, al, ak)
    r = audit(tmp_path, d / "clean.npz", tmp_path / "auth_nan.npz", "o")
    assert r["verdict"]["status"] == "inconclusive" and r["verdict"]["leak"] is True
    assert r["matchers"][0]["excluded_nonfinite"]["authentic"] == [ak[17]]
    assert ak[17] in " ".join(r["verdict"]["reasons"]) and np.isfinite(r["verdict"]["threshold"])
    # NaN on the synthetic side next to planted copies: still never a pass, copies still listed
    leak = np.load(d / "leak.npz")["embeddings"].copy()
    leak[1] = np.inf
    save(tmp_path / "syn_nan.npz", leak, sl, sk)
    r = audit(tmp_path, tmp_path / "syn_nan.npz", d / "auth.npz", "o2")
    assert r["verdict"]["status"] == "inconclusive" and sk[0] in r["verdict"]["flagged_image_keys"]
    res = CliRunner().invoke(cli, ["audit", "--synthetic", str(tmp_path / "syn_nan.npz"), "--authentic",
                                   str(d / "auth.npz"), "--out", str(tmp_path / "cli"), "--matcher", "embeddings",
                                   "--fail-on-leak", "--quiet"])
    assert res.exit_code == 4


def test_tiny_calibration_is_inconclusive_and_counts_distinct_pairs(tmp_path):
    rng = np.random.RandomState(3)
    a, al, ak = clusters(3, 3, 48, rng, prefix="real")
    s, sl, sk = clusters(2, 3, 48, rng)
    s[0] = a[4]  # even an exact copy
    save(tmp_path / "a.npz", a, al, ak)
    save(tmp_path / "s.npz", s, sl, sk)
    for rule in ("pairwise", "search"):
        r = audit(tmp_path, tmp_path / "s.npz", tmp_path / "a.npz", rule, rule=rule)
        c = r["calibration"]
        assert c["imposter_pairs"] == c["imposter_pairs_distinct"] == 27 and c["genuine_pairs"] == 9
        assert r["verdict"]["status"] == "inconclusive"
        assert "rule of three" in " ".join(r["verdict"]["reasons"])


def test_uninformative_matcher_is_inconclusive(tmp_path):
    rng = np.random.RandomState(4)
    a, al, ak = clusters(400, 5, 48, rng, spread=1e3, prefix="real")  # labels carry no signal
    s, sl, sk = clusters(50, 5, 48, rng, spread=1e3)
    save(tmp_path / "a.npz", a, al, ak)
    save(tmp_path / "s.npz", s, sl, sk)
    r = audit(tmp_path, tmp_path / "s.npz", tmp_path / "a.npz", "o")
    dec = r["matchers"][0]["decision"]
    assert dec["fnmr_at_operating"] > 0.9 and r["verdict"]["status"] == "inconclusive"
    assert "cannot tell authentic people apart" in " ".join(r["verdict"]["reasons"])
    assert [c["cause"] for c in dec["causes"]] == ["useless_matcher"]


# ----------------------------------------------------------------------------------------------
# several matchers, image folders, provenance, the alignment warning


def write_faces(root, n_id, per, rng, size=32, prefix=""):
    for c in range(n_id):
        base = rng.randint(0, 255, (8, 8, 3)).astype(np.int16)
        (root / f"{prefix}{c:06d}").mkdir(parents=True, exist_ok=True)
        for k in range(per):
            img = np.clip(np.kron(base, np.ones((size // 8, size // 8, 1))) + rng.randint(-40, 40, (size, size, 3)), 0, 255)
            Image.fromarray(img.astype(np.uint8)).save(root / f"{prefix}{c:06d}" / f"{k}.png")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    import shutil

    d = tmp_path_factory.mktemp("folders")
    rng = np.random.RandomState(0)
    write_faces(d / "auth", 140, 5, rng, prefix="real")  # 700: alpha / 2 needs >= 600 null queries
    write_faces(d / "syn", 10, 3, rng)
    shutil.copy(d / "auth" / "real000042" / "1.png", d / "syn" / "000004" / "planted.png")
    return d


def test_several_matchers_each_calibrated_and_combined(tmp_path, folders, monkeypatch):
    from synthgen.audit import matchers as mreg
    from synthgen.audit import report as rep
    from synthgen.audit.matchers.double import PixelProjectionMatcher

    class BlindToPlanted(PixelProjectionMatcher):  # a second matcher that does not see the copy
        name = "pixels-blind"

        def __init__(self):
            super().__init__(dim=48, seed=1)

        def embed_path(self, *a, **k):
            e, images = super().embed_path(*a, **k)
            e.emb = e.emb.copy()
            for i, key in enumerate(e.keys):
                if key.endswith("planted.png"):
                    v = np.random.RandomState(0).randn(e.emb.shape[1])
                    e.emb[i] = v / np.linalg.norm(v)
            return e, images

    monkeypatch.setitem(mreg.REGISTRY, "pixels-blind", lambda w, a, dv: BlindToPlanted())
    monkeypatch.setattr(mreg, "MATCHERS", tuple(mreg.REGISTRY))
    kw = dict(synthetic=str(folders / "syn"), authentic=str(folders / "auth"), progress=False, device="cpu",
              cache_dir=str(tmp_path / "cache"))
    one = run_audit(AuditConfig(out=str(tmp_path / "one"), matcher="pixels", **kw))  # single matcher, as before
    assert one["verdict"]["status"] == "leak" and one["verdict"]["flagged_image_keys"] == ["000004/planted.png"]
    assert len(one["matchers"]) == 1 and one["matcher"]["name"] == "pixels"
    assert any(w.startswith("--authentic") and "32x32" in w for w in one["warnings"])  # not 112x112 crops
    page = (tmp_path / "one" / "report.html").read_text()
    assert "<figure>" in page and "pixels-" in page and one["matcher"]["weights_sha256"] in page
    anyr = run_audit(AuditConfig(out=str(tmp_path / "any"), matcher=["pixels", "pixels-blind"], combine="any", **kw))
    allr = run_audit(AuditConfig(out=str(tmp_path / "all"), matcher=["pixels", "pixels-blind"], combine="all", **kw))
    ms = anyr["matchers"]
    assert [m["matcher"]["name"] for m in ms] == ["pixels", "pixels-blind"]
    assert ms[0]["matcher"]["weights_sha256"] != ms[1]["matcher"]["weights_sha256"]
    assert ms[0]["calibration"]["threshold"] != ms[1]["calibration"]["threshold"]  # each its own calibration
    assert ms[0]["decision"]["alpha"] == pytest.approx(ALPHA / 2) and allr["matchers"][0]["decision"]["alpha"] == ALPHA
    assert anyr["verdict"]["status"] == "leak" and anyr["verdict"]["flagged_image_keys"] == ["000004/planted.png"]
    assert allr["verdict"]["status"] == "pass", allr["verdict"]["reasons"]
    with pytest.raises(rep.UsageError, match="one --weights per --matcher"):
        run_audit(AuditConfig(out=str(tmp_path / "x"), matcher=["pixels", "pixels-blind"], weights=["w"], **kw))
    opt = next(o for o in cli.commands["audit"].params if o.name == "matchers")
    monkeypatch.setattr(opt.type, "choices", [*opt.type.choices, "pixels-blind"])
    res = CliRunner().invoke(cli, ["audit", "--synthetic", str(folders / "syn"), "--authentic", str(folders / "auth"),
                                   "--out", str(tmp_path / "cli"), "--matcher", "pixels", "--matcher", "pixels-blind",
                                   "--combine", "all", "--quiet", "--device", "cpu", "--cache-dir",
                                   str(tmp_path / "cache"), "--fail-on-leak"])
    assert res.exit_code == 0, res.output


def test_provenance_of_a_shard_directory(tmp_path, folders):
    from synthgen.shards import ShardConfig, shard

    shard(ShardConfig(inp=str(folders / "syn"), out=str(tmp_path / "shards"), progress=False))
    p = provenance(tmp_path / "shards")
    idx = json.loads((tmp_path / "shards" / "index.json").read_text())
    import hashlib

    assert p["shard"]["sha256"] == hashlib.sha256((tmp_path / "shards" / "index.json").read_bytes()).hexdigest()
    assert p["shard"]["config_hash"] == idx["config_hash"]


def test_search_shows_a_progress_bar(capsys):
    rng = np.random.RandomState(0)
    a, al, _ = clusters(50, 4, 16, rng)
    M.topk_search(a, a, 2, progress=True, desc="search synthetic")
    M.leave_identity_out_best(a, al, np.arange(len(a)), progress=True, desc="search authentic (null)")
    err = capsys.readouterr().err
    assert "search synthetic" in err and "search authentic (null)" in err and "200/200" in err
