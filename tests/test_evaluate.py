"""`synthgen evaluate`: the protocol against an independent, literal implementation of insightface's
`eval/verification.py` (loops, sklearn's KFold); the .bin reader on files in every form the field
has written, and on hostile ones; --make-pairs; the CLI end to end."""

import io
import json
import os
import pickle
import struct

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from synthgen.cli.main import cli
from synthgen.errors import DataError, UnsafePickleError, UsageError
from synthgen.evaluate import protocol as P
from synthgen.evaluate.bench import read_bin


def invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# ------------------------------------------------------------------ the protocol, reproduced


def _insightface_roc_accuracy(emb, issame, nfolds=10):
    """What insightface's calculate_roc computes, written the way it is written there (a loop over
    sklearn KFold folds and thresholds; calculate_accuracy's counts)."""
    from sklearn.model_selection import KFold

    thresholds = np.arange(0, 4, 0.01)
    e1, e2 = emb[0::2], emb[1::2]
    dist = np.sum(np.square(np.subtract(e1, e2)), 1)
    issame = np.asarray(issame)
    acc, best = np.zeros(nfolds), []

    def accuracy(threshold, d, same):
        pred = np.less(d, threshold)
        tp = np.sum(np.logical_and(pred, same))
        tn = np.sum(np.logical_and(np.logical_not(pred), np.logical_not(same)))
        return float(tp + tn) / d.size

    for f, (train, test) in enumerate(KFold(n_splits=nfolds, shuffle=False).split(np.arange(len(issame)))):
        train_acc = np.array([accuracy(t, dist[train], issame[train]) for t in thresholds])
        b = np.argmax(train_acc)
        best.append(thresholds[b])
        acc[f] = accuracy(thresholds[b], dist[test], issame[test])
    return acc, best


def _insightface_embeddings(raw, raw_flip):
    from sklearn.preprocessing import normalize

    return normalize(raw + raw_flip)


@pytest.mark.parametrize("n_pairs, dim, seed", [pytest.param(6000, 512, 0, marks=pytest.mark.slow), (1234, 128, 1),
                                                  pytest.param(7000, 64, 2, marks=pytest.mark.slow)])
def test_accuracy_equals_insightface_on_the_same_embeddings(n_pairs, dim, seed):
    pytest.importorskip("sklearn")
    rng = np.random.RandomState(seed)
    ids = rng.randn(n_pairs, dim)
    same = rng.rand(n_pairs) < 0.5
    a = ids + 2.5 * rng.randn(n_pairs, dim)  # accuracy 0.94, 0.78, 0.71: neither trivial nor chance
    b = np.where(same[:, None], ids, rng.randn(n_pairs, dim)) + 2.5 * rng.randn(n_pairs, dim)
    raw = np.empty((2 * n_pairs, dim))
    raw[0::2], raw[1::2] = a, b
    raw_flip = raw + 0.3 * rng.randn(*raw.shape)
    theirs_acc, theirs_thr = _insightface_roc_accuracy(_insightface_embeddings(raw, raw_flip), same)
    ours = P.verification(P.pair_embeddings(raw, raw_flip), same)
    assert 0.6 < ours["accuracy"] < 0.99
    np.testing.assert_allclose(ours["fold_accuracy"], theirs_acc, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours["fold_threshold"], theirs_thr, atol=1e-9, rtol=0)
    assert abs(ours["accuracy"] - theirs_acc.mean()) < 1e-6 and abs(ours["std"] - theirs_acc.std()) < 1e-6


def test_folds_split_like_sklearn_kfold():
    pytest.importorskip("sklearn")
    from sklearn.model_selection import KFold

    for n in (10, 11, 6000, 7003):
        ours = P.folds(n, 10)
        theirs = [t for _, t in KFold(10).split(np.arange(n))]
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))


def test_tar_at_far_counts_and_intervals():
    # 3,000 imposters (LFW): FAR 1e-3 allows 3 false accepts; 1e-4 is not measurable
    imp = np.linspace(-0.5, 0.5, 3000)
    gen = np.r_[np.full(2990, 0.9), np.full(10, 0.2)]
    cos = np.r_[gen, imp]
    same = np.r_[np.ones(3000, bool), np.zeros(3000, bool)]
    t3, t4 = P.tar_at_far(cos, same, 1e-3), P.tar_at_far(cos, same, 1e-4)
    assert t3["supported"] and t3["false_accepts"] == 3 and t3["tar"] == 2990 / 3000
    assert t3["tar_ci95"][0] < t3["tar"] < t3["tar_ci95"][1]
    assert not t4["supported"] and t4["false_accepts"] == 0 and t4["tar"] == 2990 / 3000
    perfect = P.tar_at_far(np.r_[np.ones(50), np.zeros(50)], np.r_[np.ones(50, bool), np.zeros(50, bool)], 1e-2)
    assert perfect["tar"] == 1.0 and perfect["tar_ci95"][1] == 1.0 and perfect["tar_ci95"][0] < 1.0


# ------------------------------------------------------------------ .bin files as the field wrote them


def _png(seed, size=112):
    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _py2_bin(images, issame) -> bytes:
    """A .bin as Python 2's cPickle wrote it (protocol 2): images as BINSTRING `str`."""
    out = bytearray(b"\x80\x02(]q\x00(")
    for im in images:
        out += b"T" + struct.pack("<i", len(im)) + im
    out += b"e]q\x01("
    for s in issame:
        out += b"\x88" if s else b"\x89"
    out += b"et."
    return bytes(out)


@pytest.mark.parametrize("form", ["py2-binstring", "py3-protocol2", "protocol4", "protocol5"])
def test_bin_reader_reads_every_form_the_field_wrote(tmp_path, form):
    images, issame = [_png(i, 16) for i in range(6)], [True, False, True]
    data = {"py2-binstring": lambda: _py2_bin(images, issame),  # lfw.bin, agedb_30.bin, ...
            "py3-protocol2": lambda: pickle.dumps((images, issame), protocol=2),  # bytes as _codecs.encode(...)
            "protocol4": lambda: pickle.dumps((images, issame), protocol=4),
            "protocol5": lambda: pickle.dumps((images, issame), protocol=5)}[form]()
    assert pickle.loads(data, encoding="bytes") == (images, issame)  # what insightface's pickle.load returns
    (tmp_path / "x.bin").write_bytes(data)
    b = read_bin(tmp_path / "x.bin")
    assert b.images == images and b.issame.tolist() == issame and b.name == "x"


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_a_bin_with_a_reduce_payload_is_refused_and_runs_nothing(tmp_path):
    _Payload.marker = tmp_path / "pwned"
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([_png(0, 8), _png(1, 8)], [_Payload()]), protocol=2))
    with pytest.raises(UnsafePickleError, match="refused global 'posix.system'.*nothing in it ran"):
        read_bin(tmp_path / "evil.bin")
    r = invoke(["evaluate", tmp_path / "evil.bin", "--matcher", "pixels", "--out", tmp_path / "e"])
    assert r.exit_code == 1 and "nothing in it ran" in r.stderr and "Traceback" not in r.stderr
    assert not _Payload.marker.exists() and not (tmp_path / "e").exists()


@pytest.mark.parametrize("obj, needle", [
    ({"bins": []}, "holds a dict"),
    (([b"a", b"b"], [True, False]), "2 images for 2 pairs"),
    (([b"a", "text"], [True]), "not a byte string"),
    (([b"a", b"b"], [2]), "not a boolean"),
])
def test_a_bin_of_the_wrong_shape_is_one_line(tmp_path, obj, needle):
    (tmp_path / "w.bin").write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(DataError, match=needle):
        read_bin(tmp_path / "w.bin")


def test_a_huge_image_is_refused_before_it_is_decoded(tmp_path):
    from synthgen.evaluate.bench import decode

    buf = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buf, "PNG")  # 25 MP of zeros: a small file
    with pytest.raises(DataError, match="5000x5000 image .*16,777,216-pixel budget"):
        decode(buf.getvalue(), "lfw.bin image 3")


# ------------------------------------------------------------------ --make-pairs and the CLI


def _faces(root, n_id=8, per=4):
    rng = np.random.RandomState(0)
    for i in range(n_id):
        base = rng.randint(0, 256, (112, 112, 3))
        (root / f"id{i:02d}").mkdir(parents=True)
        for k in range(per):
            img = np.clip(base + rng.randint(-20, 21, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"id{i:02d}" / f"{k}.png")
    return root


def test_make_pairs_then_evaluate_end_to_end(tmp_path):
    faces = _faces(tmp_path / "aligned")
    r = invoke(["evaluate", "--make-pairs", faces, "--out", tmp_path / "mine.bin", "--pairs", "40", "--folds", "2",
                "--seed", "3"])
    assert r.exit_code == 0, r.output
    side = json.loads((tmp_path / "mine.bin.json").read_text())
    assert side["seed"] == 3 and side["genuine"] == side["imposter"] == 20 and len(side["keys"]) == 40
    images, issame = pickle.load(open(tmp_path / "mine.bin", "rb"))  # what insightface's load_bin does first
    assert len(images) == 80 and issame[:10] == [True] * 10 and issame[10:20] == [False] * 10
    assert invoke(["evaluate", "--make-pairs", faces, "--out", tmp_path / "mine.bin"]).exit_code == 2  # no overwrite

    out = tmp_path / "eval"
    r = invoke(["evaluate", tmp_path / "mine.bin", "--matcher", "pixels", "--out", out, "--folds", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "mine" in r.stdout and f"report: {out}/report.html" in r.stdout
    rep = json.loads((out / "report.json").read_text())
    b = rep["benchmarks"][0]
    assert b["pairs"] == 40 and b["flip"]["accuracy"] >= 0.9  # the pixel projection sees these near-copies
    assert b["sha256"] == side["sha256"] and rep["matcher"]["name"] == "pixels"
    z = np.load(out / "embeddings.npz")
    assert z["mine__embeddings"].shape == (80, 64) and z["mine__issame"].tolist() == issame
    assert "<img src='data:image/png;base64," in (out / "report.html").read_text() or "every pair" in (out / "report.html").read_text()

    # the same embeddings through --matcher embeddings give the same numbers
    np.savez(tmp_path / "emb.npz", embeddings=z["mine__embeddings"])
    r = invoke(["evaluate", tmp_path / "mine.bin", "--matcher", "embeddings", "--embeddings", tmp_path / "emb.npz",
                "--out", tmp_path / "eval2", "--folds", "2", "--json"])
    assert r.exit_code == 0, r.output
    again = json.loads(r.stdout)["benchmarks"][0]
    assert again["flip"] is None and again["no_flip"]["fold_accuracy"] == b["flip"]["fold_accuracy"]


def test_an_lfw_style_folder_is_a_benchmark(tmp_path):
    root = tmp_path / "lfw-mini"
    for name, n in (("Ann_A", 3), ("Bob_B", 2), ("Cy_C", 1)):
        (root / name).mkdir(parents=True)
        for i in range(1, n + 1):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(_png(hash((name, i)) % 1000, 32))
    (root / "pairs.txt").write_text("2\t2\nAnn_A\t1\t2\nBob_B\t1\t2\nAnn_A\t3\tCy_C\t1\nBob_B\t2\tCy_C\t1\n")
    from synthgen.evaluate.bench import read_pairs_folder

    b = read_pairs_folder(root)
    assert b.issame.tolist() == [True, True, False, False] and len(b.images) == 8
    (root / "pairs.txt").write_text("2\t2\nAnn_A\t1\t9\n")
    with pytest.raises(DataError, match="no Ann_A_0009"):
        read_pairs_folder(root)


@pytest.mark.parametrize("args, code, needle", [
    (["{t}/nosuch.bin", "--matcher", "pixels"], 2, "nosuch.bin: no such file"),
    (["{t}/mine.bin"], 2, "--matcher"),
    (["{t}/mine.bin", "--matcher", "embeddings"], 2, "one --embeddings FILE per benchmark"),
    (["{t}/mine.bin", "--matcher", "iresnet", "--weights", "{t}/nosuch.pth"], 2, "--weights"),
])
def test_refusals_leave_no_report_folder(tmp_path, args, code, needle):
    (tmp_path / "mine.bin").write_bytes(pickle.dumps(([_png(0, 8), _png(1, 8)], [True]), protocol=4))
    r = invoke(["evaluate", *[a.format(t=tmp_path) for a in args], "--out", tmp_path / "e"])
    assert r.exit_code == code, r.output
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()


# ------------------------------------------------------------------ red-team findings (each failed before)


def test_unit_embeddings_equal_sklearn_normalize_bit_for_bit():
    """insightface normalises with sklearn; np.linalg.norm differed in the last bit for most rows,
    which moved distances sitting exactly on a threshold (2,019 calls of 6,000 pairs x thresholds)."""
    sk = pytest.importorskip("sklearn.preprocessing")
    rng = np.random.RandomState(0)
    for scale in (1.0, 1e-13, 1e5):
        a, b = rng.randn(500, 64) * scale, rng.randn(500, 64) * scale
        assert np.array_equal(P.pair_embeddings(a, b), sk.normalize(a + b))


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_fifo_or_device_as_bench_is_refused_at_once(tmp_path, kind):
    import signal

    p = tmp_path / "lfw.bin"
    os.mkfifo(p) if kind == "fifo" else os.symlink("/dev/zero", p)
    signal.alarm(20)  # before: blocked forever / read until memory ran out
    try:
        r = invoke(["evaluate", p, "--matcher", "pixels", "--out", tmp_path / "e"])
    finally:
        signal.alarm(0)
    assert r.exit_code == 1 and "not a regular file" in r.stderr and not (tmp_path / "e").exists()


def test_a_linked_bench_file_is_read(tmp_path):
    (tmp_path / "real.bin").write_bytes(pickle.dumps(([_png(0, 8), _png(1, 8)] * 2, [True, False]), protocol=4))
    os.symlink(tmp_path / "real.bin", tmp_path / "lfw.bin")
    assert len(read_bin(tmp_path / "lfw.bin")) == 2


@pytest.mark.parametrize("images, needle", [
    ([b"not an image", b"x"], "not an image Pillow can read"),
    ([_png(0, 8)] * 1 + [None], "4097x4096 image"),
])
def test_images_are_checked_from_their_headers_before_out_exists(tmp_path, images, needle):
    if images[1] is None:
        buf = io.BytesIO()
        Image.new("L", (4097, 4096)).save(buf, "PNG")
        images = [images[0], buf.getvalue()]
    (tmp_path / "b.bin").write_bytes(pickle.dumps((images, [True]), protocol=4))
    np.savez(tmp_path / "e.npz", embeddings=np.ones((2, 4)))
    r = invoke(["evaluate", tmp_path / "b.bin", "--matcher", "embeddings", "--embeddings", tmp_path / "e.npz",
                "--folds", "1", "--out", tmp_path / "o"])
    assert r.exit_code == 2  # --folds 1 is refused by its range first
    r = invoke(["evaluate", tmp_path / "b.bin", "--matcher", "pixels", "--folds", "2", "--out", tmp_path / "o"])
    assert r.exit_code == 2 and "fewer than --folds 2" in r.stderr and not (tmp_path / "o").exists()
    (tmp_path / "b.bin").write_bytes(pickle.dumps((images * 2, [True, False]), protocol=4))
    r = invoke(["evaluate", tmp_path / "b.bin", "--matcher", "pixels", "--folds", "2", "--out", tmp_path / "o"])
    assert r.exit_code == 1 and needle in r.stderr and not (tmp_path / "o").exists()


@pytest.mark.slow  # 100 large PNGs to encode (~0.7 s)
def test_one_large_image_in_every_slot_is_refused_by_the_total_budget(tmp_path):
    buf = io.BytesIO()
    Image.new("L", (4096, 4096)).save(buf, "PNG")  # 16 MP, a few kB: every slot references it
    big = buf.getvalue()
    (tmp_path / "b.bin").write_bytes(pickle.dumps(([big] * 40, [True, False] * 10), protocol=4))
    r = invoke(["evaluate", tmp_path / "b.bin", "--matcher", "pixels", "--folds", "2", "--out", tmp_path / "o"])
    assert r.exit_code == 1 and "per image on average" in r.stderr and not (tmp_path / "o").exists()


@pytest.mark.parametrize("arrays, needle", [
    (dict(embeddings=np.full((4, 3), 1e308), embeddings_flip=np.full((4, 3), 1e308)), "overflows"),
    (dict(embeddings=np.zeros((4, 0))), "expected numbers"),
    (dict(embeddings=np.zeros((4, 3))), "is zero"),
])
def test_embeddings_that_cannot_be_scored_are_refused_not_reported_as_nan(tmp_path, arrays, needle):
    (tmp_path / "b.bin").write_bytes(pickle.dumps(([_png(i, 8) for i in range(4)], [True, False]), protocol=4))
    np.savez(tmp_path / "e.npz", **arrays)
    r = invoke(["evaluate", tmp_path / "b.bin", "--matcher", "embeddings", "--embeddings", tmp_path / "e.npz",
                "--folds", "2", "--out", tmp_path / "o", "--json"])
    assert r.exit_code == 1 and needle in r.stderr and "NaN" not in r.stdout


def test_make_pairs_asking_for_more_pairs_than_exist_is_refused_at_once(tmp_path):
    import time

    faces = _faces(tmp_path / "aligned", n_id=4, per=3)  # 12 genuine pairs, 54 imposter pairs
    t = time.perf_counter()
    r = invoke(["evaluate", "--make-pairs", faces, "--out", tmp_path / "x.bin", "--pairs", "1000000000000000000"])
    assert r.exit_code == 2 and "distinct genuine pairs" in r.stderr and time.perf_counter() - t < 5
    (tmp_path / "y.bin.json").write_text("{}")
    r = invoke(["evaluate", "--make-pairs", faces, "--out", tmp_path / "y.bin", "--pairs", "20", "--folds", "2"])
    assert r.exit_code == 2 and "y.bin.json exists" in r.stderr


@pytest.mark.parametrize("payload, needle", [
    (b"\x80\x02c_codecs\nencode\nq\x00X\x02\x00\x00\x00\xc3\xbfq\x01\x85q\x02Rq\x03.", "allowed only as (text, 'latin1')"),
    (b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00\xe2\x82\xacX\x06\x00\x00\x00latin1\x86R.", "not latin-1"),
])
def test_codecs_encode_only_in_the_form_python_writes(tmp_path, payload, needle):
    """The one-argument form decoded differently from pickle.load (UTF-8 by default): refused."""
    (tmp_path / "c.bin").write_bytes(payload)
    import re

    with pytest.raises(DataError, match=re.escape(needle)) as e:
        read_bin(tmp_path / "c.bin")
    assert "c.bin" in str(e.value)
