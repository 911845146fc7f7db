"""synthgen quality: pose, image and identity measures, filters, the stage and its command (fast;
the real-face checks are in test_quality_real.py)."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import DATA
from synthgen.alignment import ARCFACE_112
from synthgen.quality.filters import apply_filters
from synthgen.quality.identity import identity_measures, nearest_classes, template_cosines
from synthgen.quality.image import image_measures
from synthgen.quality.pose import head_pose, project_model


# ------------------------------------------------------------------------------------------ pose


@pytest.mark.parametrize("pose", [(0, 0, 0), (30, 0, 0), (-45, 0, 0), (0, 20, 0), (0, -20, 0), (0, 0, 25),
                                  (0, 0, -10), (20, 0, 15)])
def test_pose_inverts_the_model_it_assumes(pose):
    got = head_pose(project_model(*pose, scale=1.7)[None])[0]
    np.testing.assert_allclose(got, pose, atol=1e-6)


def test_the_template_is_frontal_and_a_horizontal_flip_negates_yaw_and_roll():
    assert np.abs(head_pose(ARCFACE_112[None])[0]).max() < 0.5
    pts = project_model(25, 12, 8)
    flipped = pts.copy()
    flipped[:, 0] = 112 - flipped[:, 0]
    flipped = flipped[[1, 0, 2, 4, 3]]  # the image-left eye of the mirror is the right eye of the original
    a, b = head_pose(pts[None])[0], head_pose(flipped[None])[0]
    np.testing.assert_allclose(b, [-a[0], a[1], -a[2]], atol=1e-9)


def test_pose_of_missing_or_degenerate_landmarks_is_nan():
    pts = np.stack([np.full((5, 2), np.nan), np.zeros((5, 2)), project_model(0, 0, 0)])
    out = head_pose(pts)
    assert np.isnan(out[:2]).all() and np.isfinite(out[2]).all()


# ----------------------------------------------------------------------------------------- image


def _astronaut_face():
    img = Image.open(DATA / "astronaut.png").convert("RGB").crop((150, 40, 300, 190)).resize((112, 112))
    return np.asarray(img)


def test_blur_lowers_sharpness_and_exposure_is_measured_on_the_face_region():
    from PIL import ImageFilter

    face = _astronaut_face()
    blurred = np.asarray(Image.fromarray(face).filter(ImageFilter.GaussianBlur(3)))
    assert image_measures(blurred)["sharpness"] < 0.2 * image_measures(face)["sharpness"]
    black = image_measures(np.zeros((112, 112, 3), np.uint8))
    assert black["brightness"] == 0 and black["clipped"] == 1 and black["sharpness"] == 0
    framed = face.copy()
    framed[:, :15] = 0  # a warp's black border outside the face region changes nothing
    assert image_measures(framed) == image_measures(face)


# -------------------------------------------------------------------------------------- identity


def _clusters(k=4, n=5, d=16, spread=0.15, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    emb = np.concatenate([c + spread * rng.normal(size=(n, d)) for c in centres])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb, [f"c{i}" for i in range(k) for _ in range(n)], centres


def test_a_mislabeled_image_has_the_lowest_template_cosine_and_lowers_its_class():
    emb, ids, centres = _clusters()
    emb[3] = centres[2] / np.linalg.norm(centres[2])  # an image of c2 filed under c0
    tc, classes = identity_measures(emb, ids)
    assert int(np.nanargmin(tc)) == 3
    assert classes["c0"]["consistency_min"] == pytest.approx(tc[3])
    assert min(classes, key=lambda c: classes[c]["consistency_mean"]) == "c0"


def test_leave_one_out_and_nearest_class_match_brute_force():
    emb, ids, _ = _clusters(k=5, n=3, seed=1)
    labels = np.array([int(i[1:]) for i in ids])
    tc = template_cosines(emb, labels)
    for i in range(len(emb)):
        rest = emb[(labels == labels[i]) & (np.arange(len(emb)) != i)].mean(0)
        assert tc[i] == pytest.approx(emb[i] @ rest / np.linalg.norm(rest))
    t = np.stack([emb[labels == c].mean(0) for c in range(5)])
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    s = t @ t.T
    np.fill_diagonal(s, -np.inf)
    import synthgen.quality.identity as I

    old, I.BLOCK = I.BLOCK, 2  # several blocks
    try:
        idx, cos = nearest_classes(t)
    finally:
        I.BLOCK = old
    np.testing.assert_array_equal(idx, s.argmax(1))
    np.testing.assert_allclose(cos, s.max(1))
    tc1, classes = identity_measures(emb[:4], ids[:4])  # c1 has one image here: not measurable
    assert np.isnan(tc1[3]) and classes["c1"]["consistency_mean"] is None


# --------------------------------------------------------------------------------------- filters


def test_filters_count_exactly_and_record_every_decision():
    rows = [{"key": "a/1", "identity": "a", "fallback": "", "det_prob": 0.99, "yaw": 10.0, "sharpness": 50.0},
            {"key": "a/2", "identity": "a", "fallback": "center-crop", "det_prob": None, "yaw": None, "sharpness": 5.0},
            {"key": "b/1", "identity": "b", "fallback": "", "det_prob": 0.95, "yaw": -60.0, "sharpness": 80.0},
            {"key": "b/2", "identity": "b", "fallback": "", "det_prob": 0.97, "yaw": -5.0, "sharpness": 9.0}]
    decisions, s = apply_filters(rows, {"no_fallback": True, "max_yaw": 45, "min_sharpness": 10, "min_det_prob": None})
    assert [d["decision"] for d in decisions] == ["kept", "dropped", "dropped", "dropped"]
    assert decisions[1]["measure"] == "no_fallback" and decisions[1]["also_failed"] == "max_yaw;min_sharpness"
    assert decisions[2]["measure"] == "max_yaw" and decisions[2]["value"] == -60.0 and decisions[2]["threshold"] == 45
    assert s["kept"] == 1 and s["dropped"] == 3 and list(s["thresholds"]) == ["no_fallback", "max_yaw", "min_sharpness"]
    assert {n: (v["failed"], v["first_reason"]) for n, v in s["per_filter"].items()} == {
        "no_fallback": (1, 1), "max_yaw": (2, 1), "min_sharpness": (2, 1)}  # unmeasured yaw fails max_yaw
    assert sum(v["first_reason"] for v in s["per_filter"].values()) == s["dropped"]


# ------------------------------------------------------------------------------------ the stage


def aligned_folder(root, n_classes=3, per_class=4, seed=0):
    """A hand-made aligned folder: 32 px crops (class colour + noise), a manifest with landmarks,
    one fallback crop without a face and one blurred crop."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    recs = []
    for c in range(n_classes):
        base = rng.integers(0, 255, (32, 32, 3))
        for j in range(per_class):
            key = f"id{c}/{j}.png"
            (root / f"id{c}").mkdir(exist_ok=True)
            img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            rec = {"source": key, "identity": f"id{c}", "path": key, "template": "arcface", "width": 64, "height": 64}
            if (c, j) == (0, 0):
                rec.update(status="no_face", fallback="center-crop")
            else:
                yaw = 10.0 * j - 15
                pts = project_model(yaw, 0, 0, scale=0.5) - 12
                rec.update(status="ok", prob=0.999 - 0.001 * j, faces=1, landmarks=pts.round(3).tolist(),
                           box=[4.0, 4.0, 60.0, 62.0])
            if (c, j) == (1, 1):
                img = np.full_like(img, 128)
            Image.fromarray(img).save(root / key)
            recs.append(rec)
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return root


def test_measure_reads_align_records_and_catches_the_fallback_and_the_flat_crop(tmp_path):
    from synthgen.audit.embed import ImageSet
    from synthgen.audit.matchers import make_matcher
    from synthgen.quality.stage import measure, summarize

    root = aligned_folder(tmp_path / "al")
    rows, classes = measure(ImageSet(root), make_matcher("pixels"), tmp_path / "cache")
    by = {r["key"]: r for r in rows}
    assert by["id0/0.png"]["detected"] == 0 and by["id0/0.png"]["fallback"] == "center-crop"
    assert by["id0/0.png"]["yaw"] is None and by["id0/0.png"]["det_prob"] is None
    assert by["id0/1.png"]["detected"] == 1 and by["id0/1.png"]["yaw"] == pytest.approx(-5, abs=1e-3)
    assert by["id0/1.png"]["face_px"] == pytest.approx(112 / 2, rel=1e-3)  # the model at half the template's scale
    assert by["id0/1.png"]["box_w"] == 56.0
    assert min(rows, key=lambda r: r["sharpness"])["key"] == "id1/1.png"
    assert set(classes) == {"id0", "id1", "id2"} and all(c["nearest_class"] for c in classes.values())
    s = summarize(rows, classes)
    assert s["detection"]["detected"] == 11 and s["detection"]["fallback_rate"] == pytest.approx(1 / 12)
    assert s["pose"]["yaw"]["count"] == 11 and s["identity"]["consistency_mean"]["count"] == 3


def test_cli_errors_name_the_input(tmp_path):
    from synthgen.cli.main import cli

    r = CliRunner().invoke(cli, ["quality", str(tmp_path / "nope"), "--out", str(tmp_path / "q"), "--matcher", "none"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "IN:" in r.stderr and "no such file" in r.stderr
    assert not (tmp_path / "q").exists()
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(cli, ["quality", str(tmp_path / "empty"), "--out", str(tmp_path / "q"), "--matcher", "none"])
    assert r.exit_code == 1 and "no images" in r.stderr and not (tmp_path / "q").exists()
    r = CliRunner().invoke(cli, ["quality", str(tmp_path / "empty"), "--out", str(tmp_path / "q"), "--matcher", "none",
                                 "--min-consistency", "0.5"])
    assert r.exit_code == 2 and "--min-consistency" in r.stderr and "matcher" in r.stderr
    r = CliRunner().invoke(cli, ["quality", str(tmp_path / "empty"), "--out", str(tmp_path / "q"), "--matcher", "pixels",
                                 "--serfiq"])
    assert r.exit_code == 2 and "--serfiq" in r.stderr and "facenet-casia" in r.stderr


@pytest.mark.slow  # ~1.5 s: the report's histograms (matplotlib)
def test_cli_end_to_end_writes_every_file_and_refuses_another_config(tmp_path):
    from synthgen.cli.main import cli

    root = aligned_folder(tmp_path / "al")
    q = tmp_path / "q"
    args = ["quality", str(root), "--out", str(q), "--matcher", "pixels", "--device", "cpu", "--quiet"]
    r = CliRunner().invoke(cli, args + ["--no-fallback", "--min-sharpness", "1"])
    assert r.exit_code == 0, r.output
    assert "detection rate 91.7 %" in r.stdout and "kept 10 of 12" in r.stdout and "report: " in r.stdout
    for name in ("quality.csv", "classes.csv", "report.json", "report.html", "decisions.csv", "quality.json"):
        assert (q / name).is_file(), name
    rows = list(csv.DictReader((q / "quality.csv").open()))
    assert len(rows) == 12 and rows[0]["key"] == "id0/0.png" and rows[0]["fallback"] == "center-crop"
    dec = {d["key"]: d for d in csv.DictReader((q / "decisions.csv").open())}
    assert dec["id0/0.png"]["measure"] == "no_fallback" and dec["id1/1.png"]["measure"] == "min_sharpness"
    rep = json.loads((q / "report.json").read_text())
    assert rep["filters"]["dropped"] == 2 and rep["summary"]["detection"]["detected"] == 11
    page = (q / "report.html").read_text()
    assert page.index("Summary") < page.index("Distributions") < page.index("Worst images")
    assert "http://" not in page and "https://" not in page and page.count("data:image/png;base64") > 5
    assert json.loads((q / "quality.json").read_text())["status"] == "complete"
    r = CliRunner().invoke(cli, args + ["--max-yaw", "30"])  # another config into the same folder
    assert r.exit_code == 2 and "--out" in r.stderr and "different config" in r.stderr
    r = CliRunner().invoke(cli, args + ["--no-fallback", "--min-sharpness", "1", "--json"])  # the same: redone
    assert r.exit_code == 0 and json.loads(r.stdout)["filters"]["kept"] == 10
    (tmp_path / "plain" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "plain" / "a" / "0.png")
    r = CliRunner().invoke(cli, ["quality", str(tmp_path / "plain"), "--out", str(tmp_path / "q-plain"), "--matcher", "none",
                                 "--json"])
    assert r.exit_code == 0 and "warning: IN" in r.stderr and "no alignment records" in r.stderr
    assert json.loads(r.stdout)["summary"]["images"] == 1


@pytest.mark.slow  # a whole run, with 60 re-renderings (~10 s)
def test_run_measures_quality_after_align_then_skips_it(tmp_path):
    from conftest import MICRO
    from synthgen.errors import DataError, UsageError
    from synthgen.pipeline import run_pipeline

    cfg = {"out": str(tmp_path / "run"),
           "generate": {"network": str(MICRO / "network-scrubbed-p4.pkl"), "classes": "0-1", "per_class": 3,
                        "device": "cpu"},
           "align": {"size": 64, "on_miss": "center-crop", "device": "cpu"},
           "quality": {"enabled": True, "matcher": "pixels", "device": "cpu", "no_fallback": True},
           "audit": {"enabled": False}}
    logs = []
    # the micro network draws noise: no face anywhere, and none in 10 re-renderings per image either,
    # so the filters leave nothing to shard (the 100 % no-face run of issue 22 stops here)
    with pytest.raises(DataError, match="dropped every image"):
        run_pipeline(cfg, progress=False, log=logs.append)
    q = json.loads((tmp_path / "run" / "quality" / "report.json").read_text())
    assert q["summary"]["images"] == 6 and q["filters"]["dropped"] == 6
    assert (tmp_path / "run" / "quality" / "decisions.csv").is_file() and not (tmp_path / "run" / "shards").exists()
    del cfg["quality"]["no_fallback"]  # measured, not filtered: shard reads the aligned crops
    rec = run_pipeline(cfg, progress=False, log=logs.append, overwrite=True)
    assert list(rec["stages"])[:3] == ["generate", "align", "quality"]
    assert rec["stages"]["quality"]["status"] == "complete" and rec["stages"]["quality"]["summary"]["images"] == 6
    assert rec["stages"]["shard"]["summary"]["total"] == 6 and not (tmp_path / "run" / "filtered").exists()
    logs.clear()
    run_pipeline(cfg, progress=False, log=logs.append)
    assert "[quality] complete for this config, skipped" in logs
    cfg["quality"]["matcher"] = "dlib"
    cfg["align"]["enabled"] = False
    with pytest.raises(UsageError, match="needs \\[align\\]"):
        run_pipeline(cfg, progress=False, log=logs.append)


def test_a_shard_folder_gives_the_same_measures_as_its_aligned_folder(tmp_path):
    from synthgen.audit.embed import ImageSet
    from synthgen.quality.stage import measure
    from synthgen.shards import ShardConfig, shard

    root = aligned_folder(tmp_path / "al")
    shard(ShardConfig(inp=str(root), out=str(tmp_path / "sh"), shard_size=5, progress=False))
    a, _ = measure(ImageSet(root))
    b, _ = measure(ImageSet(tmp_path / "sh"))
    assert [r["key"] for r in a] == [r["key"] for r in b]
    for ra, rb in zip(a, b):
        for col in ("detected", "fallback", "status", "sharpness", "brightness"):
            assert ra[col] == rb[col], (ra["key"], col)
        for col in ("det_prob", "yaw", "pitch", "roll", "face_px"):
            assert (ra[col] is None and rb[col] is None) or ra[col] == pytest.approx(rb[col], abs=1e-3)
        assert rb["box_w"] is None  # shards keep no box


def test_an_unreadable_crop_is_a_row_not_a_crash(tmp_path):
    from synthgen.audit.embed import ImageSet
    from synthgen.audit.matchers import make_matcher
    from synthgen.quality.stage import measure

    root = aligned_folder(tmp_path / "al", n_classes=2, per_class=3)
    (root / "id1" / "2.png").write_bytes(b"not a png")
    rows, classes = measure(ImageSet(root), make_matcher("pixels"), tmp_path / "cache")
    bad = {r["key"]: r for r in rows}["id1/2.png"]
    assert bad["error"].startswith("unreadable crop") and bad["status"] == "ok"  # align's status stays
    assert bad["sharpness"] is None and bad["template_cos"] is None
    assert classes["id1"]["images"] == 2  # embedded: the two readable ones


def test_min_distinctness_keeps_one_class_of_each_too_close_pair():
    from synthgen.quality.identity import keep_distinct

    # a chain: a ~ b and b ~ c, a and c apart: b goes (too close to a), c stays (b is gone)
    assert keep_distinct(["a", "b", "c", "d"], [(0, 1, 0.99), (1, 2, 0.98)]) == {"b": ("a", 0.99)}
    rng = np.random.default_rng(3)
    base = rng.normal(size=(3, 16))
    emb = np.concatenate([base[[0, 0, 1, 1]], base[[0, 0]] + 1e-3, base[[2, 2]]]) + 1e-2 * rng.normal(size=(8, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = ["c0", "c0", "c1", "c1", "c9", "c9", "c2", "c2"]  # c9 is a second rendering of c0's identity
    tc, classes = identity_measures(emb, ids, min_distinctness=0.05)
    assert classes["c9"]["too_close_to"][0] == "c0" and classes["c0"]["too_close_to"] is None
    rows = [{"key": f"{i}/{n}", "identity": i, "distinctness": classes[i]["distinctness"]} for n, i in enumerate(ids)]
    decisions, s = apply_filters(rows, {"min_distinctness": 0.05}, classes)
    assert [d["identity"] for d in decisions if d["decision"] == "dropped"] == ["c9", "c9"]
    assert decisions[4]["value"] == pytest.approx(1 - classes["c9"]["too_close_to"][1])
    _, both = apply_filters(rows, {"min_distinctness": 0.05})  # without the classes: both of the pair go
    assert both["dropped"] == 4


def test_the_stage_refuses_a_folder_made_by_another_config_and_writes_its_marker_last(tmp_path, monkeypatch):
    import synthgen.quality.html as H
    from synthgen.errors import UsageError
    from synthgen.quality.stage import quality

    monkeypatch.setattr(H, "render", lambda *a, **k: "<html></html>")  # the page is the slow test's job
    root = aligned_folder(tmp_path / "al", n_classes=2, per_class=3)
    q = tmp_path / "q"
    r = quality(inp=str(root), out=str(q), matcher="none", progress=False, max_yaw=30.0)
    assert r.status == "complete" and r.brief()["images"] == 6 and r["filters"]["per_filter"]["max_yaw"]["failed"] == 1
    marker = json.loads((q / "quality.json").read_text())
    assert marker["status"] == "complete" and marker["config_hash"] == r.config_hash
    assert not [p.name for p in q.iterdir() if ".tmp-" in p.name]
    with pytest.raises(UsageError, match="different config .*max_yaw"):
        quality(inp=str(root), out=str(q), matcher="none", progress=False, max_yaw=20.0)
    quality(inp=str(root), out=str(q), matcher="none", progress=False, max_yaw=20.0, overwrite=True)
    assert json.loads((q / "report.json").read_text())["filters"]["thresholds"] == {"max_yaw": 20.0}
