"""audit: metrics against scikit-learn, chunked search, matchers' weight loading, end-to-end reports."""

import csv
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from synthgen.audit import metrics as M
from synthgen.audit.matchers import FacenetMatcher, IResNet, IResNetMatcher, IRESNET_LAYERS
from synthgen.audit.report import AuditConfig, run_audit
from synthgen.cli.main import cli
from synthgen.errors import DataError, UsageError


def test_eer_and_threshold_match_sklearn():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.RandomState(0)
    gen = rng.normal(0.6, 0.15, 3000)
    imp = rng.normal(0.1, 0.1, 20000)
    y = np.r_[np.ones_like(gen), np.zeros_like(imp)]
    s = np.r_[gen, imp]
    fpr, tpr, thr = roc_curve(y, s)  # sklearn: predicted positive when score >= thr
    fnr = 1 - tpr
    k = np.argmin(np.abs(fpr - fnr))
    e, _ = M.eer(gen, imp)
    assert e == pytest.approx((fpr[k] + fnr[k]) / 2, abs=2e-3)
    assert M.auc(gen, imp) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    t = M.threshold_at_fmr(imp, 1e-3)
    assert M.fmr_at(imp, t) <= 1e-3
    ok = fpr <= 1e-3  # sklearn's best TPR with FPR <= 1e-3 equals 1 - our FNMR at our threshold
    assert 1 - M.fnmr_at(gen, t) == pytest.approx(tpr[ok].max(), abs=1e-12)


def test_exact_values_on_constructed_scores():
    gen = np.array([0.9, 0.8, 0.7, 0.4])
    imp = np.array([0.1, 0.2, 0.3, 0.5, 0.6, 0.05, 0.0, -0.1, -0.2, -0.3])
    assert M.threshold_at_fmr(imp, 0.1) == pytest.approx(np.nextafter(0.5, 1))
    assert M.fmr_at(imp, 0.55) == 0.1 and M.fnmr_at(gen, 0.55) == 0.25
    assert M.auc(gen, imp) == pytest.approx(38 / 40)
    # At t = 0.4: FMR 2/10, FNMR 0; at t = 0.5: FMR 2/10, FNMR 1/4. FMR - FNMR goes 0.2 -> -0.05,
    # so the curves cross 0.8 of the way: EER = 0.2 at threshold 0.48.
    e, t = M.eer(gen, imp)
    assert e == pytest.approx(0.2) and t == pytest.approx(0.48)


def test_chunked_search_equals_brute_force():
    rng = np.random.RandomState(1)
    q = rng.randn(53, 16).astype(np.float32)
    g = rng.randn(211, 16).astype(np.float32)
    s, i = M.topk_search(q, g, k=4, chunk_q=7, chunk_g=19, backend="torch")
    full = q @ g.T
    np.testing.assert_array_equal(i, np.argsort(-full, 1)[:, :4])
    np.testing.assert_allclose(s, np.sort(full, 1)[:, ::-1][:, :4], atol=1e-5)
    ql, gl = rng.randint(0, 5, 53), rng.randint(0, 5, 211)
    s2, i2 = M.topk_search(q, g, k=1, chunk_q=8, chunk_g=50, q_labels=ql, g_labels=gl, exclude_same_label=True)
    masked = np.where(ql[:, None] == gl[None], -np.inf, full)
    np.testing.assert_array_equal(i2[:, 0], masked.argmax(1))


def test_genuine_pairs_all_and_sampled():
    labels = np.array([0, 1, 0, 2, 1, 0])
    i, j = M.genuine_pairs(labels, 100, np.random.RandomState(0))
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 2), (0, 5), (1, 4), (2, 5)]
    i, j = M.genuine_pairs(np.repeat(np.arange(50), 20), 500, np.random.RandomState(0))
    assert len(i) == 500 and (i != j).all() and (i // 20 == j // 20).all()


def clusters(n_id, per, dim, rng, spread=0.25, names=None):
    centres = rng.randn(n_id, dim)
    emb, keys, labels = [], [], []
    for c in range(n_id):
        for k in range(per):
            emb.append(centres[c] + spread * rng.randn(dim))
            name = names[c] if names else f"{c:06d}"
            keys.append(f"{name}/{k}.png")
            labels.append(name)
    emb = np.array(emb, np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), keys, labels


def test_embeddings_matcher_flags_planted_leak(tmp_path):
    rng = np.random.RandomState(0)
    a_emb, a_keys, a_lab = clusters(30, 6, 512, rng, names=[f"real{c:03d}" for c in range(30)])
    s_emb, s_keys, s_lab = clusters(12, 5, 512, rng)
    s_emb[7] = a_emb[40] + 0.01 * rng.randn(512)  # planted: synthetic image is an authentic one
    s_emb[7] /= np.linalg.norm(s_emb[7])
    np.savez(tmp_path / "auth.npz", embeddings=a_emb, keys=np.array(a_keys), labels=np.array(a_lab))
    np.savez(tmp_path / "syn.npz", embeddings=s_emb, keys=np.array(s_keys), labels=np.array(s_lab))
    r = run_audit(AuditConfig(synthetic=str(tmp_path / "syn.npz"), authentic=str(tmp_path / "auth.npz"),
                              out=str(tmp_path / "out"), matcher="embeddings", progress=False))
    n = r["nearest"]["images"]
    assert r["calibration"]["fmr_at_threshold"] <= 1.1e-3 and 0 < n["chance_fraction_pairwise_threshold"] < 0.5
    # 180 authentic images of 30 people are too few null queries for alpha 0.01 (rule of three: 300):
    # inconclusive, and the planted image is the first suspect (embeddings carry no copy probe)
    assert r["verdict"]["status"] == "inconclusive" and "rule of three" in " ".join(r["verdict"]["reasons"])
    rows = list(csv.DictReader(open(tmp_path / "out" / "suspects.csv")))
    assert rows[0]["synthetic"] == s_keys[7] and rows[0]["authentic"] == a_keys[40] and float(rows[0]["score"]) > 0.95
    assert r["same_label"]["label_map"] == "index"  # 000003 -> 4th authentic class in sorted order
    assert r["same_label"]["synthetic_vs_authentic"]["genuine_pairs"] == 12 * 5 * 6
    assert (tmp_path / "out" / "report.html").read_text().count("data:image/png") >= 2

    def gate(threshold, out):
        return CliRunner().invoke(cli, ["audit", "--synthetic", str(tmp_path / "syn.npz"), "--authentic",
                                        str(tmp_path / "auth.npz"), "--out", str(tmp_path / out), "--matcher",
                                        "embeddings", "--fail-on-leak", "--quiet", "--threshold", str(threshold)])

    assert gate(0.9, "g1").exit_code == 3  # the planted image (~0.975) and nothing else
    flagged = list(csv.DictReader(open(tmp_path / "g1" / "flagged.csv")))
    assert [f["synthetic"] for f in flagged] == [s_keys[7]]
    # nothing reaches 0.99, but at 0.99 the matcher misses most same-person pairs: inconclusive, exit 4
    assert gate(0.99, "g2").exit_code == 4
    np.savez(tmp_path / "bad.npz", embeddings=s_emb[:, :32], keys=np.array(s_keys), labels=np.array(s_lab))
    with pytest.raises(DataError, match="dimensions differ"):
        run_audit(AuditConfig(synthetic=str(tmp_path / "bad.npz"), authentic=str(tmp_path / "auth.npz"),
                              out=str(tmp_path / "o3"), matcher="embeddings", progress=False))


def test_no_identity_overlap_skips_same_label(tmp_path):
    rng = np.random.RandomState(1)
    a_emb, a_keys, a_lab = clusters(5, 4, 32, rng, names=[f"a{c}" for c in range(5)])
    s_emb, s_keys, s_lab = clusters(3, 4, 32, rng, names=[f"s{c}" for c in range(3)])
    np.savez(tmp_path / "a.npz", embeddings=a_emb, keys=np.array(a_keys), labels=np.array(a_lab))
    np.savez(tmp_path / "s.npz", embeddings=s_emb, keys=np.array(s_keys), labels=np.array(s_lab))
    r = run_audit(AuditConfig(synthetic=str(tmp_path / "s.npz"), authentic=str(tmp_path / "a.npz"),
                              out=str(tmp_path / "o"), matcher="embeddings", progress=False))
    # 20 authentic images cannot calibrate a family-wise rate of 0.01: nothing flagged, but not a pass
    assert "skipped" in r["same_label"] and r["verdict"]["flagged_images"] == 0
    assert r["verdict"]["status"] == "inconclusive"


@pytest.fixture(scope="module")
def r18_weights(tmp_path_factory):
    torch.manual_seed(0)
    net = IResNet(IRESNET_LAYERS["r18"]).eval()
    p = tmp_path_factory.mktemp("w") / "backbone.pth"
    torch.save(net.state_dict(), p)  # arcface_torch saves a plain state dict
    return p


def test_iresnet_weights_load_and_wrong_arch_named(r18_weights):
    m = IResNetMatcher(r18_weights, "r18")
    e = m.embed(np.random.RandomState(0).randint(0, 255, (2, 112, 112, 3), dtype=np.uint8))
    assert e.shape == (2, 512) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    with pytest.raises(DataError, match=r"not arcface_torch iResNet-50 weights: missing keys \['layer1.2.bn1"):
        IResNetMatcher(r18_weights, "r50")


def _facenet_release_file(path, which, monkeypatch):
    """A file in the release's exact structure, proven by facenet-pytorch's own loader: it builds
    `logits` (8631/10575 classes) before a strict load_state_dict of the cached file."""
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    net = InceptionResnetV1(pretrained=None, classify=False)
    net.logits = torch.nn.Linear(512, {"vggface2": 8631, "casia-webface": 10575}[which])
    torch.save(net.state_dict(), path)
    home = path.parent / "torch-home"
    (home / "checkpoints").mkdir(parents=True, exist_ok=True)
    name = {"vggface2": "20180402-114759-vggface2.pt", "casia-webface": "20180408-102900-casia-webface.pt"}[which]
    (home / "checkpoints" / name).write_bytes(path.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(home))
    InceptionResnetV1(pretrained=which)  # raises if the structure differs from the real release
    return net


@pytest.mark.parametrize("which,matcher", [("casia-webface", "facenet-casia"), ("vggface2", "facenet-vggface2")])
def test_facenet_release_weights_load(tmp_path, monkeypatch, which, matcher):
    p = tmp_path / "release.pt"
    net = _facenet_release_file(p, which, monkeypatch)
    assert "logits.weight" in torch.load(p, weights_only=True)
    m = FacenetMatcher(matcher, p)
    x = np.random.RandomState(0).randint(0, 255, (2, 160, 160, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(net.eval()((torch.from_numpy(x).permute(0, 3, 1, 2).float() - 127.5) / 128))
    np.testing.assert_allclose(m.embed(x), ref.numpy(), atol=1e-5)
    other = "facenet-vggface2" if matcher == "facenet-casia" else "facenet-casia"
    with pytest.raises(DataError, match=f"use --matcher {matcher}"):
        FacenetMatcher(other, p)


def test_facenet_offline_message_and_wrong_file(tmp_path, monkeypatch):
    import facenet_pytorch.models.inception_resnet_v1 as irv

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(irv, "load_weights", offline)
    with pytest.raises(UsageError, match="--weights FILE"):  # what to pass: a usage error (exit 2)
        FacenetMatcher("facenet-vggface2", None)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(DataError, match="missing keys"):
        FacenetMatcher("facenet-casia", tmp_path / "wrong.pt")
    torch.save({"conv.weight": "not a tensor"}, tmp_path / "odd.pt")
    with pytest.raises(DataError, match="names -> tensors"):
        FacenetMatcher("facenet-casia", tmp_path / "odd.pt")


def write_faces(root, n_id, per, rng, size=112):
    for c in range(n_id):
        base = rng.randint(0, 255, (8, 8, 3)).astype(np.uint8)
        for k in range(per):
            img = np.clip(np.kron(base, np.ones((size // 8, size // 8, 1))) + rng.randint(-20, 20, (size, size, 3)), 0, 255)
            (root / f"{c:06d}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.astype(np.uint8)).save(root / f"{c:06d}" / f"{k}.png")


def test_folder_audit_with_cache_reuse(tmp_path, r18_weights, monkeypatch):
    rng = np.random.RandomState(0)
    write_faces(tmp_path / "auth", 6, 3, rng)
    write_faces(tmp_path / "syn", 4, 3, rng)
    shutil.copy(tmp_path / "auth" / "000002" / "1.png", tmp_path / "syn" / "000003" / "planted.png")
    (tmp_path / "syn" / "000001" / "broken.png").write_bytes(b"not a png")
    # rule pairwise: 18 authentic images are too few for the search rule's null (it would flag nothing)
    cfg = dict(synthetic=str(tmp_path / "syn"), authentic=str(tmp_path / "auth"), matcher="iresnet", arch="r18",
               weights=str(r18_weights), progress=False, device="cpu", cache_dir=str(tmp_path / "cache"),
               rule="pairwise")
    r = run_audit(AuditConfig(out=str(tmp_path / "o1"), **cfg))
    assert r["counts"]["unreadable_synthetic"] == ["000001/broken.png"]
    flagged = list(csv.DictReader(open(tmp_path / "o1" / "flagged.csv")))
    planted = [f for f in flagged if f["synthetic"] == "000003/planted.png"]
    assert planted and planted[0]["authentic"] == "000002/1.png" and float(planted[0]["score"]) > 0.999
    assert "<figure>" in (tmp_path / "o1" / "report.html").read_text()  # thumbnails of flagged pairs
    calls = {"n": 0}
    real = IResNetMatcher.embed

    def counting(self, x):
        calls["n"] += len(x)
        return real(self, x)

    monkeypatch.setattr(IResNetMatcher, "embed", counting)
    r2 = run_audit(AuditConfig(out=str(tmp_path / "o2"), **cfg))
    probes = r2["matchers"][0]["decision"]["copy"]["probes"]  # the copy-level probe: authentic images + re-encodes
    assert calls["n"] == 2 * probes  # everything else came from the cache (the unreadable file: 0 readable)
    assert r2["nearest"] == r["nearest"]


def test_audit_on_shards(tmp_path, r18_weights):
    from synthgen.shards import ShardConfig, shard

    rng = np.random.RandomState(0)
    write_faces(tmp_path / "auth", 4, 3, rng)
    write_faces(tmp_path / "syn", 3, 2, rng)
    shard(ShardConfig(inp=str(tmp_path / "syn"), out=str(tmp_path / "syn_shards"), progress=False))
    r = run_audit(AuditConfig(synthetic=str(tmp_path / "syn_shards"), authentic=str(tmp_path / "auth"),
                              out=str(tmp_path / "o"), matcher="iresnet", arch="r18", weights=str(r18_weights),
                              progress=False, device="cpu"))
    assert r["counts"]["synthetic_images"] == 6 and r["counts"]["synthetic_identities"] == 3


def test_onnx_matcher_equals_torch_matcher(tmp_path, r18_weights):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import warnings

    from synthgen.audit.matchers import OnnxMatcher

    tm = IResNetMatcher(r18_weights, "r18")
    onnx_path = tmp_path / "r18.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tm.model, torch.zeros(1, 3, 112, 112), str(onnx_path), input_names=["input"],
                          dynamic_axes={"input": {0: "n"}}, dynamo=False)
    om = OnnxMatcher(onnx_path)
    x = np.random.RandomState(0).randint(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    np.testing.assert_allclose(om.embed(x), tm.embed(x), atol=1e-4)
    (tmp_path / "bad.onnx").write_bytes(b"nope")
    with pytest.raises(DataError, match="not a loadable ONNX model"):
        OnnxMatcher(tmp_path / "bad.onnx")


def test_faiss_backend_equals_torch_backend():
    pytest.importorskip("faiss")
    rng = np.random.RandomState(2)
    q = rng.randn(300, 64).astype(np.float32)
    g = rng.randn(900, 64).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    s1, i1 = M.topk_search(q, g, k=5, backend="torch", chunk_g=100)
    s2, i2 = M.topk_search(q, g, k=5, backend="faiss")
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
