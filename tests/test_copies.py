"""The copy rule (issue 20, item 1): a synthetic image at copy level against an authentic one is a
leak whatever the null says; a matcher whose scores crowd near 1 has no copy level (no false
copies); duplicate photos inside an authentic identity do not switch the rule off."""

import shutil

import numpy as np
import pytest

from synthgen.audit.config import AuditConfig
from synthgen.audit.report import run_audit
from test_refusals import faces


@pytest.fixture
def sets(tmp_path):
    faces(tmp_path / "auth", n_id=12, per=3, seed=1)
    faces(tmp_path / "syn", n_id=4, per=3, seed=2)
    return tmp_path


def _audit(d, out, **kw):
    return run_audit(AuditConfig(synthetic=str(d / "syn"), authentic=str(d / "auth"), out=str(d / out),
                                 matcher="pixels", device="cpu", progress=False, **kw))


@pytest.mark.slow  # an audit (~2.5 s)
def test_an_exact_copy_is_a_leak_even_when_the_audit_cannot_calibrate(sets):
    shutil.copy(sets / "auth" / "000005" / "1.png", sets / "syn" / "000002" / "copy.png")
    r = _audit(sets, "a")
    c = r["matchers"][0]["decision"]["copy"]
    assert c["measurable"] and c["threshold"] > c["floor"]
    v = r["verdict"]
    assert v["status"] == "leak" and v["flagged_image_keys"] == ["000002/copy.png"]
    assert "copies of an authentic image" in v["reasons"][0] or "is a copy" in v["reasons"][0]
    assert any("Only" in x and "calibrate" in x for x in v["reasons"])  # the other reasons are still given
    assert not any(x.startswith("Nothing flagged") for x in v["reasons"])  # a copy was flagged


class _Images:
    def __init__(self, n=20, size=32):
        self.imgs = np.random.RandomState(0).randint(0, 256, (n, size, size, 3), dtype=np.uint8)

    def __len__(self):
        return len(self.imgs)

    def read(self, i):
        return self.imgs[i]


def test_copy_level_unit():
    """Fast: the level, the floor from different-person pairs only, and no level when scores crowd near 1."""
    from synthgen.audit.analyses import copy_level
    from synthgen.audit.matchers.double import PixelProjectionMatcher

    m = PixelProjectionMatcher()
    rng = np.random.RandomState(1)
    spread = {"authentic vs authentic": (np.ones(50), rng.uniform(-0.2, 0.3, 2000))}  # genuine 1.0: duplicates
    c = copy_level(m, _Images(), spread, seed=0)
    assert c["measurable"] and c["threshold"] >= c["floor"] + (1 - c["floor"]) / 2 and c["floor"] < 0.31
    crowded = {"authentic vs authentic": (np.ones(50), 1 - rng.uniform(0, 1e-4, 2000))}
    c = copy_level(m, _Images(), crowded, seed=0)
    assert not c["measurable"] and c["threshold"] is None
    assert copy_level(m, None, spread, seed=0) is None


@pytest.mark.slow  # an audit (~2.5 s)
def test_a_matcher_whose_scores_crowd_near_1_has_no_copy_level(sets, monkeypatch):
    """A broken matcher (everything scores about 1) called 120 of 120 clean images copies."""
    from synthgen.audit.matchers.double import PixelProjectionMatcher

    def crowded(self, images, raw=False):
        e = np.ones((len(images), 8), np.float32) + 1e-4 * images.reshape(len(images), -1)[:, :8] / 255
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    monkeypatch.setattr(PixelProjectionMatcher, "embed", crowded)
    r = _audit(sets, "b")
    c = r["matchers"][0]["decision"]["copy"]
    assert not c["measurable"] and c["threshold"] is None and "crowd near 1" in c["why_not"]
    assert r["verdict"]["status"] != "leak"


@pytest.mark.slow  # an audit (~2.5 s)
def test_duplicate_photos_inside_an_identity_keep_the_copy_rule(sets):
    for i in range(12):  # every authentic identity holds the same photo twice (common in scraped sets)
        shutil.copy(sets / "auth" / f"{i:06d}" / "0.png", sets / "auth" / f"{i:06d}" / "dup.png")
    shutil.copy(sets / "auth" / "000007" / "2.png", sets / "syn" / "000001" / "copy.png")
    r = _audit(sets, "c")
    assert r["matchers"][0]["decision"]["copy"]["measurable"]
    assert r["verdict"]["status"] == "leak" and r["verdict"]["flagged_image_keys"] == ["000001/copy.png"]


@pytest.mark.slow  # an audit (~1.3 s)
def test_precomputed_embeddings_have_no_copy_probe(tmp_path):
    rng = np.random.RandomState(0)
    for side, n in (("syn", 6), ("auth", 20)):
        e = rng.randn(n, 16).astype(np.float32)
        np.savez(tmp_path / f"{side}.npz", embeddings=e, keys=[f"{i // 2}/{i}.png" for i in range(n)],
                 labels=[str(i // 2) for i in range(n)])
    r = run_audit(AuditConfig(synthetic=str(tmp_path / "syn.npz"), authentic=str(tmp_path / "auth.npz"),
                              out=str(tmp_path / "o"), matcher="embeddings", progress=False, device="cpu"))
    assert r["matchers"][0]["decision"]["copy"] is None
