"""Issue 20: the authentic set's label noise, the leave-cluster-out null, the reasons by cause and
the suspects of an inconclusive verdict, on embeddings from the simulation harness's world."""

import csv
import importlib.util
import os

import numpy as np
import pytest

from synthgen.audit import labels as L
from synthgen.audit import metrics as M
from synthgen.audit.embed import Embedded
from synthgen.audit.report import decide_embedded

_spec = importlib.util.spec_from_file_location(
    "sim_gate", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "sim_gate.py"))
G = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(G)


def _emb(e, lab, prefix):
    return Embedded([f"{prefix}{l}/{k}.png" for k, l in enumerate(lab)], [f"{prefix}{l}" for l in lab],
                    np.ascontiguousarray(e, np.float32), [])


def _find(e, lab, q=None, dup=None):
    names, tmpl = M.templates(e, lab)
    a_lab = np.unique(lab, return_inverse=True)[1]
    q = np.arange(len(e)) if q is None else q
    return L.find(e, a_lab, names, tmpl, [str(i) for i in range(len(e))], q, dup, np.random.RandomState(0))


@pytest.mark.slow
def test_split_labels_are_found_and_the_null_is_what_clean_labels_give():
    """10 of 100 identities split under two labels: every split is found as one pair, and the null
    equals, value for value, the null of the same images under their true labels."""
    w = G.World("arcface", 1)
    e = w.images(w.centres(100), 10)
    true = np.repeat(np.arange(100), 10)
    noisy = true.copy()
    rng = np.random.RandomState(2)
    for c in range(0, 100, 10):
        rows = np.flatnonzero(true == c)
        noisy[rng.permutation(rows)[:5]] = 100 + c
    clean, got = _find(e, true), _find(e, noisy)
    pairs = {(r["identity_a"], r["identity_b"]) for r in got["rows"]}
    assert pairs == {(c, 100 + c) for c in range(0, 100, 10)} and not clean["rows"]
    assert got["summary"]["identities_in_issues"] == 20 and got["summary"]["sensitivity"] > 0.95
    np.testing.assert_array_equal(got["null"], clean["null"])
    # what the old leave-identity-out null did: same-person scores at the top
    old, _ = M.leave_identity_out_best(e, np.unique(noisy, return_inverse=True)[1], np.arange(len(e)))
    assert old.max() > 0.5 > clean["null"].max()


def test_the_same_photo_under_two_labels_is_found_and_left_out():
    w = G.World("arcface", 3)
    e = w.images(w.centres(60), 10)
    lab = np.repeat(np.arange(60), 10)
    e[5] = e[300]  # identity 0 holds a photo of identity 30
    got = _find(e, lab, dup=0.95)
    dup = [r for r in got["rows"] if r["kind"].startswith("same photo")]
    assert [(r["image_a"], r["image_b"]) for r in dup] == [("5", "300")] and dup[0]["score"] > 0.999
    assert got["null"].max() < 0.5  # both labels are one cluster now: the copy is not in the null


@pytest.mark.slow
def test_label_noise_leaves_the_gate_its_power():
    """10 % label noise at the 1k size: clean passes, copies and whole leaked classes are flagged
    (the old null: inconclusive on every such run, copies unflagged)."""
    v, m = decide_embedded(*G.make("arcface", "1k", "label10", None, 11)[:2], max_pairs=5_000)
    assert v["status"] == "pass", v["reasons"]
    assert m["report"]["label_issues"]["same_person_pairs"] == 10
    for leak in ("copy", "class"):
        syn, auth, planted, planted_ids = G.make("arcface", "1k", "label10", leak, 11)
        v, _ = decide_embedded(syn, auth, max_pairs=5_000)
        assert v["status"] == "leak"
        assert set(planted) <= set(v["flagged_image_keys"]) and set(planted_ids) <= set(v["flagged_identity_names"])


@pytest.mark.slow
def test_a_small_authentic_set_is_inconclusive_and_names_its_suspects(tmp_path):
    """37 authentic images of 12 people, 50 synthetic images of which 6 are other photos of authentic
    people: too few for the null (inconclusive), and the 6 are the top suspects, by name."""
    w = G.World("arcface", 5)
    ca = w.centres(12)
    a = np.concatenate([w.images(ca, 3), w.images(ca[:1], 1)])
    a_lab = np.r_[np.repeat(np.arange(12), 3), 0]
    s = w.images(w.centres(10), 5)
    for k in range(6):
        s[5 * k] = w.images(ca[[k]], 1)[0]
    v, m = decide_embedded(_emb(s, np.repeat(np.arange(10), 5), "s"), _emb(a, a_lab, "a"))
    assert v["status"] == "inconclusive"
    assert [c["cause"] for c in m["decision"]["causes"]] == ["too_few_authentic"]
    top = {r["synthetic"] for r in m["suspects"][:6]}
    assert top == {f"s{k}/{5 * k}.png" for k in range(6)}
    assert any(r.startswith("Suspects, not a decision") for r in v["reasons"])


def test_a_matcher_that_cannot_tell_people_apart_is_named_with_advice_that_fits_it():
    rng = np.random.RandomState(0)
    noise = lambda n: rng.randn(n, 64) / 8
    a, s = noise(1000), noise(500)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    s /= np.linalg.norm(s, axis=1, keepdims=True)
    v, m = decide_embedded(_emb(s, np.repeat(np.arange(50), 10), "s"), _emb(a, np.repeat(np.arange(100), 10), "a"),
                          max_pairs=5_000)
    assert v["status"] == "inconclusive"
    assert [c["cause"] for c in m["decision"]["causes"]] == ["useless_matcher"]
    assert not any("--weights" in step for step in v["next_steps"])  # embeddings take no weights


def test_too_many_tests_for_a_weak_matcher_says_what_it_could_detect():
    """Few authentic identities (the image level decides) and a weak matcher (same-person ~0.3):
    the smallest detectable leak is stated as a score and as a share of same-person pairs."""
    w = G.World("arcface", 8)
    w.sigma = 1.6
    a = w.images(w.centres(60), 10)
    s = w.images(w.centres(400), 10)
    v, m = decide_embedded(_emb(s, np.repeat(np.arange(400), 10), "s"), _emb(a, np.repeat(np.arange(60), 10), "a"),
                          max_pairs=5_000)
    d = m["decision"]
    assert v["status"] == "inconclusive" and d["deciding_level"] == "images"
    assert [c["cause"] for c in d["causes"]] == ["too_many_tests"]
    leak = d["smallest_detectable_leak"]["image"]
    assert leak["score"] == d["operating_score"] and leak["same_person_share"] < 0.5
    assert "smallest leak it can detect scores" in v["reasons"][0]


@pytest.mark.slow
def test_run_audit_writes_suspects_and_label_issues(tmp_path):
    from synthgen.audit.report import run_audit

    syn, auth, _, _ = G.make("arcface", "1k", "label10", "copy", 2)
    for name, e in (("syn", syn), ("auth", auth)):
        np.savez(tmp_path / f"{name}.npz", embeddings=e.emb, keys=np.array(e.keys), labels=np.array(e.identities))
    run_audit(synthetic=str(tmp_path / "syn.npz"), authentic=str(tmp_path / "auth.npz"), out=str(tmp_path / "out"),
              matcher="embeddings", progress=False, max_pairs=5_000)
    issues = list(csv.DictReader(open(tmp_path / "out" / "authentic_label_issues.csv")))
    assert len(issues) == 10 and all(r["kind"] == "same person under two labels" for r in issues)
    sus = list(csv.DictReader(open(tmp_path / "out" / "suspects.csv")))
    assert sus and sus[0]["flagged"] == "True" and float(sus[0]["score"]) > 0.999


@pytest.mark.slow
def test_the_simulated_world_at_1k_every_departure():
    """The harness's fast cases (benchmarks/sim_gate.py; RESULTS.md has the full table): 6 clean
    runs per departure at 1k give no leak and at most one inconclusive each (look-alikes: no leak;
    they are inconclusive, the power gap RESULTS.md states); planted copies, 0.8
    near-copies, new images of an authentic person and whole leaked classes are all found under
    10 % label noise; dlib-like compressed scores keep copies and leaked classes."""
    for dep in G.DEPARTURES:
        rows = [G.one("arcface", "1k", dep, None, 900 + s) for s in range(6)]
        assert not [r for r in rows if r["status"] == "leak"], dep
        if dep != "lookalike":  # 20 % look-alike pairs: valid (no leak) but without power yet (RESULTS.md)
            assert sum(r["status"] == "inconclusive" for r in rows) <= 1, (dep, [r["causes"] for r in rows])
    for leak in ("copy", "near0.8", "newimg", "class"):
        r = G.one("arcface", "1k", "label10", leak, 950)
        assert r["status"] == "leak" and r["found"] == r["planted"] == 3, r
    assert G.one("dlib", "1k", "clean", None, 960)["status"] == "pass"
    for leak in ("copy", "class"):
        r = G.one("dlib", "1k", "clean", leak, 961)
        assert r["status"] == "leak" and r["found"] == 3, r


def test_a_set_that_mostly_leaks_is_never_a_pass():
    """The null is moved up by the median shift of the synthetic scores; when every synthetic class
    IS an authentic person that shift would hide them all, so the audit says `shifted`, never pass."""
    w = G.World("arcface", 12)
    ca = w.centres(100)
    a = w.images(ca, 10)
    s = w.images(ca, 5)  # every class leaks
    v, m = decide_embedded(_emb(s, np.repeat(np.arange(100), 5), "s"), _emb(a, np.repeat(np.arange(100), 10), "a"),
                           max_pairs=5_000)
    assert v["status"] == "inconclusive" and m["decision"]["identity_shift"] > 0
    assert {c["cause"] for c in m["decision"]["causes"]} == {"shifted"}


def test_advice_fits_the_matcher():
    """A useless matcher's fix names --weights only for matchers that take weights."""
    from synthgen.audit.report import AuditConfig, _analyse

    rng = np.random.RandomState(0)
    a, s = _unit(rng.randn(600, 64)), _unit(rng.randn(200, 64))
    cfg = AuditConfig(synthetic="-", authentic="-", out="-", progress=False, max_pairs=5_000)
    fixes = {}
    for name in ("dlib", "facenet-casia", "pixels", "embeddings"):
        m = _analyse(cfg, name, None, _emb(s, np.repeat(np.arange(20), 10), "s"),
                     _emb(a, np.repeat(np.arange(60), 10), "a"), "cpu", "search", 0.01)
        (c,) = m["decision"]["causes"]
        assert c["cause"] == "useless_matcher"
        fixes[name] = c["fix"]
    assert "--weights" in fixes["facenet-casia"] and not any("--weights" in fixes[n] for n in ("dlib", "pixels", "embeddings"))
    assert "aligned face crops" in fixes["dlib"] and "test double" in fixes["pixels"]


def test_suspects_are_few_on_clean_data_and_counted_before_the_cut():
    """At scale nearly every clean image is over the per-pair threshold; suspects are ranked by their
    own p-value instead, so a clean set has about alpha of its images as suspects, counted in full."""
    syn, auth, _, _ = G.make("arcface", "1k", "clean", None, 4)
    v, m = decide_embedded(syn, auth, max_pairs=5_000)
    c = m["report"]["suspects"]
    assert c["images_by"] == "p-value" and c["images"] <= 0.05 * len(syn.keys)
    assert sum(r["kind"] == "image" for r in m["suspects"]) == c["images"]


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------ the red-team pass


@pytest.mark.slow
def test_a_placeholder_photo_under_most_labels_does_not_hide_leaks():
    """One photo under 70 % of the authentic labels made 0.1 % of different-label pairs score 1.0:
    the near-duplicate level vanished, the image null held 1.0s and planted near copies passed.
    Pairs at copy level are now one photo, not two people: the labels merge and the leaks are found."""
    for leak in ("near0.9", "newimg"):
        syn, auth, planted, _ = G.make("arcface", "1k", "clean", leak, 3)
        emb, rng = auth.emb.copy(), np.random.RandomState(0)
        ph = _unit(rng.randn(1, emb.shape[1]))[0]
        emb[np.arange(0, 700, 10)] = ph  # the first photo of 70 of the 100 identities
        v, m = decide_embedded(syn, Embedded(auth.keys, auth.identities, emb, []), max_pairs=20_000)
        assert v["status"] == "leak" and set(planted) <= set(v["flagged_image_keys"]), (leak, v["reasons"])
        assert m["report"]["label_issues"]["same_photo_pairs"] >= 69


def test_a_tied_null_from_few_people_is_not_a_tail():
    """12 people x 100 near-identical photos: the top of the null came from 12 (tied) people, sigma
    ~ 0, p = 0 for clean images, 52-74 false flags. Now the tail is unused and the audit says why."""
    rng = np.random.RandomState(0)
    c = _unit(rng.randn(12, 64))
    a = _unit(np.repeat(c, 100, 0) + 1e-3 * rng.randn(1200, 64))
    s = _unit(rng.randn(1100, 64))
    v, m = decide_embedded(_emb(s, np.repeat(np.arange(110), 10), "s"), _emb(a, np.repeat(np.arange(12), 100), "a"),
                           max_pairs=5_000)
    assert v["status"] == "inconclusive" and not v["flagged_images"]
    assert m["decision"]["tail_fit"]["degenerate"] and m["decision"]["causes"][0]["cause"] == "too_few_authentic"
    assert (m["decision"]["tail_fit"]["groups"] or 0) < 20


def test_degenerate_authentic_sets_are_inconclusive_not_a_crash():
    rng = np.random.RandomState(0)
    s, sl = _unit(rng.randn(100, 64)), np.repeat(np.arange(10), 10)
    a = _unit(np.repeat(rng.randn(2, 64), 300, 0) + 0.8 * rng.randn(600, 64))
    a[599] = a[0]  # one photo under both labels: every label is one cluster, the null is empty
    v, m = decide_embedded(_emb(s, sl, "s"), _emb(a, np.repeat([0, 1], 300), "a"), max_pairs=5_000)
    assert v["status"] == "inconclusive" and "too_few_authentic" in [c["cause"] for c in m["decision"]["causes"]]
    v, m = decide_embedded(_emb(s, sl, "s"), _emb(_unit(rng.randn(1500, 64)), np.arange(1500), "a"), max_pairs=5_000)
    assert v["status"] == "inconclusive" and "two images" in " ".join(v["reasons"])  # no identity with two images
