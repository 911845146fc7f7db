"""`synthgen align`: similarity fit, warp, input normalisation, golden test on a real face, resume."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import DATA
from synthgen.alignment import (ARCFACE_112, AlignConfig, MTCNNDetector, align, apply_transform, residual,
                            similarity_transform, warp)
from synthgen.cli.main import cli
from synthgen.errors import UsageError
from synthgen.imageio import to_rgb_array

ASTRONAUT = DATA / "astronaut.png"


@pytest.mark.parametrize("angle,scale,shift", [(0.0, 1.0, (0, 0)), (0.3, 2.5, (10, -4)), (-2.0, 0.4, (-7.5, 33))])
def test_similarity_fit_recovers_known_transform(angle, scale, shift):
    rng = np.random.RandomState(0)
    src = rng.uniform(0, 200, (5, 2))
    r = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m_true = np.hstack([scale * r, np.array(shift, float)[:, None]])
    dst = apply_transform(m_true, src)
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m, m_true, atol=1e-9)
    assert residual(m, src, dst) < 1e-9


def test_similarity_fit_is_least_squares_with_noise():
    rng = np.random.RandomState(1)
    src = rng.uniform(0, 100, (5, 2))
    m = similarity_transform(src, apply_transform(similarity_transform(src, ARCFACE_112), src) + rng.normal(0, 0.5, (5, 2)))
    assert m[0, 0] == pytest.approx(m[1, 1]) and m[0, 1] == pytest.approx(-m[1, 0])  # rotation + uniform scale


def test_warp_identity_and_shift_match_pixel_convention():
    img = np.random.RandomState(0).randint(0, 256, (20, 20, 3), dtype=np.uint8)
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_array_equal(warp([img], [ident], 20)[0], img)
    shift = np.array([[1.0, 0, -3], [0, 1.0, -2]])  # output (u, v) = source (u + 3, v + 2)
    out = warp([img], [shift], 20)[0]
    np.testing.assert_array_equal(out[:18, :17], img[2:, 3:])
    assert (out[18:] == 0).all()  # outside the source: black


def test_input_forms_normalise_to_same_rgb():
    rgb = np.random.RandomState(0).randint(0, 256, (8, 9, 3), dtype=np.uint8)
    pil = Image.fromarray(rgb)
    rgba = Image.fromarray(np.dstack([rgb, np.full((8, 9), 255, np.uint8)]))
    for form in (pil, rgba, rgb, np.dstack([rgb, np.full((8, 9), 255, np.uint8)])):
        np.testing.assert_array_equal(to_rgb_array(form), rgb)
    import torch

    np.testing.assert_array_equal(to_rgb_array(torch.from_numpy(rgb).permute(2, 0, 1)), rgb)
    gray = Image.fromarray(rgb[..., 0])
    np.testing.assert_array_equal(to_rgb_array(gray), np.repeat(rgb[..., :1], 3, 2))
    pal = pil.convert("P")
    assert to_rgb_array(pal).shape == (8, 9, 3)


def test_exif_orientation_applied(tmp_path):
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[:, :5] = 255  # white band on the left
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    p = tmp_path / "r.jpg"
    im.save(p, exif=exif, quality=100)
    from synthgen.imageio import load_rgb

    out = load_rgb(p)
    assert out.shape == (20, 10, 3) and out[:5].mean() > 200  # band now at the top


@pytest.fixture(scope="module")
def detector():
    return MTCNNDetector()


def test_golden_astronaut(detector):
    img = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    det = detector.detect([img])[0]
    assert det is not None
    boxes, probs, pts = det
    j = int(np.argmax(probs))
    assert probs[j] > 0.99
    m = similarity_transform(pts[j], ARCFACE_112)
    res = residual(m, pts[j], ARCFACE_112)
    assert res < 8.0  # a real (smiling, slightly turned) face: a few px RMS in the 112 crop
    rng = np.random.RandomState(0)  # least squares: any other similarity fits worse
    for _ in range(20):
        a, s, t = rng.normal(0, 0.02), 1 + rng.normal(0, 0.02), rng.normal(0, 1, 2)
        r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * s
        other = np.hstack([r @ m[:, :2], (r @ m[:, 2] + t)[:, None]])
        assert residual(other, pts[j], ARCFACE_112) > res
    crop = warp([img], [m], 112)[0]
    re = detector.detect([crop])[0]
    assert re is not None
    k = int(np.argmax(re[1]))
    # Re-detected landmarks on the crop land where the fit put them, within a few px.
    np.testing.assert_allclose(re[2][k], apply_transform(m, pts[j]), atol=3.0)
    assert np.abs(re[2][k] - ARCFACE_112).max() < 10.0


def make_tree(root: Path, n_face=2):
    face = Image.open(ASTRONAUT).convert("RGB").crop((120, 20, 320, 220))
    (root / "id_a").mkdir(parents=True)
    (root / "id_b" / "nested").mkdir(parents=True)
    for i in range(n_face):
        face.rotate(8 * i).save(root / "id_a" / f"{i}.jpg", quality=95)
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(root / "id_b" / "flat.png")  # no face
    face.convert("RGBA").save(root / "id_b" / "nested" / "rgba.png")
    (root / "id_b" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def test_align_tree_records_and_statuses(tmp_path):
    src = make_tree(tmp_path / "raw")
    s = align(AlignConfig(inp=str(src), out=str(tmp_path / "al"), progress=False))
    assert s["counts"] == {"ok": 3, "no_face": 1, "low_prob": 0, "unreadable": 1, "error": 0, "skipped": 0}
    assert s["per_identity"]["id_b"]["unreadable"] == 1
    out = tmp_path / "al"
    rec = {r["source"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert rec["id_b/flat.png"]["status"] == "no_face" and "path" not in rec["id_b/flat.png"]
    assert rec["id_b/broken.jpg"]["status"] == "unreadable"
    ok = rec["id_b/nested/rgba.png"]
    assert ok["path"] == "id_b/nested/rgba.png" and len(ok["landmarks"]) == 5 and len(ok["transform"]) == 2
    assert Image.open(out / "id_a" / "0.png").size == (112, 112)
    assert not (out / ".align-journal.jsonl").exists()


def test_on_miss_center_crop(tmp_path):
    src = make_tree(tmp_path / "raw", n_face=1)
    s = align(AlignConfig(inp=str(src), out=str(tmp_path / "al"), on_miss="center-crop", size=64, progress=False))
    assert s["written"] == 3
    r = [json.loads(l) for l in (tmp_path / "al" / "manifest.jsonl").read_text().splitlines()]
    flat = [x for x in r if x["source"] == "id_b/flat.png"][0]
    assert flat["status"] == "no_face" and flat["fallback"] == "center-crop"
    assert np.asarray(Image.open(tmp_path / "al" / "id_b" / "flat.png")).mean() == pytest.approx(128, abs=0.5)


@pytest.mark.parametrize("batched", [False, True])
def test_resume_and_config_mismatch(tmp_path, monkeypatch, batched):
    src = make_tree(tmp_path / "raw")
    ref = align(AlignConfig(inp=str(src), out=str(tmp_path / "ref"), batch_size=2, batched_detection=batched, progress=False))
    import synthgen.alignment.stage as al

    real = al.align_step
    calls = {"n": 0}

    def crash_after_first(rels, *a, **k):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(rels, *a, **k)

    monkeypatch.setattr(al, "align_step", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        align(AlignConfig(inp=str(src), out=str(tmp_path / "x"), batch_size=2, batched_detection=batched, progress=False))
    assert not (tmp_path / "x" / "manifest.jsonl").exists()
    monkeypatch.setattr(al, "align_step", real)
    s = align(AlignConfig(inp=str(src), out=str(tmp_path / "x"), batch_size=2, batched_detection=batched, progress=False))
    assert s["processed_this_run"] == 3 and s["counts"] == ref["counts"]
    a = (tmp_path / "ref" / "manifest.jsonl").read_text()
    assert (tmp_path / "x" / "manifest.jsonl").read_text() == a
    for png in (tmp_path / "ref").rglob("*.png"):  # resumed crops equal the uninterrupted run's
        assert png.read_bytes() == (tmp_path / "x" / png.relative_to(tmp_path / "ref")).read_bytes()
    with pytest.raises(UsageError, match="differs in: size"):
        align(AlignConfig(inp=str(src), out=str(tmp_path / "x"), size=96, batch_size=2, batched_detection=batched,
                          progress=False))


def test_cli_align(tmp_path):
    src = make_tree(tmp_path / "raw", n_face=1)
    r = CliRunner().invoke(cli, ["align", "--in", str(src), "--out", str(tmp_path / "al"), "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["counts"]["ok"] == 2
    r = CliRunner().invoke(cli, ["align", "--in", str(tmp_path / "nope"), "--out", str(tmp_path / "al2")])
    assert r.exit_code == 2 and "--in" in r.output
    r = CliRunner().invoke(cli, ["align", "--in", str(src), "--out", str(tmp_path / "al3"), "--template", "nope"])
    assert r.exit_code == 2 and "--template" in r.output


def test_images_smaller_than_min_face_are_no_face_not_errors(tmp_path):
    (tmp_path / "raw" / "a").mkdir(parents=True)
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "raw" / "a" / "tiny.png")
    s = align(AlignConfig(inp=str(tmp_path / "raw"), out=str(tmp_path / "al"), on_miss="center-crop", progress=False))
    assert s["counts"]["no_face"] == 1 and s["counts"]["error"] == 0 and s["written"] == 1


def test_cropped_warp_of_large_image_equals_full_warp():
    import torch

    from synthgen.alignment.geometry import _crop_for

    rng = np.random.RandomState(0)
    img = rng.randint(0, 256, (400, 500, 3), dtype=np.uint8)
    pts = np.array([[200.0, 150], [260, 152], [231, 190], [205, 225], [255, 226]])
    m = similarity_transform(pts, ARCFACE_112)
    fast = warp([img], [m], 112)[0]  # takes the cropped path (400*500 > 4*112*112)
    crop, m2 = _crop_for(img, m, 112)
    assert crop[0].shape[0] < 400 and crop[0].shape[1] < 500
    full = warp(torch.from_numpy(img[None]), [m], 112)[0]  # a tensor input takes the full-image path
    diff = np.abs(fast.astype(int) - full)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.005  # same up to float32 coordinate rounding


def test_mixed_sizes_letterboxed_for_batched_detection(detector):
    from synthgen.alignment import detect_any_size

    face = Image.open(ASTRONAUT).convert("RGB").crop((120, 20, 320, 220))
    small, big = np.asarray(face), np.asarray(face.resize((320, 320), Image.BILINEAR))
    per_image = detect_any_size(detector, [small, big])  # detector fixture: per-image
    batched = MTCNNDetector(batched=True)
    together = detect_any_size(batched, [small, big])
    for a, b in zip(per_image, together):
        assert a is not None and b is not None
        np.testing.assert_allclose(a[2][np.argmax(a[1])], b[2][np.argmax(b[1])], atol=2.0)
    np.testing.assert_allclose(together[1][2][0] / 1.6, together[0][2][0], atol=4.0)  # same face, scaled
    resized = detect_any_size(detector, [big], detect_size=200)[0]  # detect at 200 px, map back
    np.testing.assert_allclose(resized[2][0], per_image[1][2][0], atol=4.0)  # MTCNN jitters across scales


@pytest.mark.slow
def test_worker_processes_give_identical_outputs(tmp_path):
    src = make_tree(tmp_path / "raw", n_face=4)
    a = align(AlignConfig(inp=str(src), out=str(tmp_path / "one"), batch_size=2, progress=False))
    b = align(AlignConfig(inp=str(src), out=str(tmp_path / "two"), batch_size=2, workers=2, progress=False))
    assert a["counts"] == b["counts"]
    assert (tmp_path / "one" / "manifest.jsonl").read_text() == (tmp_path / "two" / "manifest.jsonl").read_text()
    for png in (tmp_path / "one").rglob("*.png"):
        assert png.read_bytes() == (tmp_path / "two" / png.relative_to(tmp_path / "one")).read_bytes()


def test_a_finished_align_rerun_is_a_no_op_and_drops_the_crops_of_deleted_inputs(tmp_path, monkeypatch):
    """Before: a finished align, run again, redid every image, and a deleted input's crop stayed
    in --out (where audit and shard then counted it)."""
    import synthgen.alignment.stage as al

    src = make_tree(tmp_path / "raw")
    out = tmp_path / "al"
    first = align(AlignConfig(inp=str(src), out=str(out), progress=False))
    manifest = (out / "manifest.jsonl").read_text()

    def no_work(*a, **k):
        raise AssertionError("a finished image was aligned again")

    monkeypatch.setattr(al, "align_step", no_work)
    again = align(AlignConfig(inp=str(src), out=str(out), progress=False))
    assert again["processed_this_run"] == 0 and again["counts"] == first["counts"]
    assert (out / "manifest.jsonl").read_text() == manifest
    (src / "id_b" / "nested" / "rgba.png").unlink()
    after = align(AlignConfig(inp=str(src), out=str(out), progress=False))
    assert not (out / "id_b" / "nested" / "rgba.png").exists() and not (out / "id_b" / "nested").exists()
    assert after["counts"]["ok"] == first["counts"]["ok"] - 1 and after["processed_this_run"] == 0
    assert "rgba.png" not in (out / "manifest.jsonl").read_text()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["id_a/0.png", "id_a/1.png"]


@pytest.mark.slow  # a 13,000 px image header and an MTCNN pass (~1 s)
def test_a_huge_image_is_refused_from_its_header_and_its_neighbours_are_aligned(tmp_path, monkeypatch):
    """A 13000 x 13000 PNG is a small file (it compresses to almost nothing) but 507 MB decoded: it is
    refused from its header, as unreadable, and the face beside it is aligned (before, the batch's
    failure made every image of the step an error)."""
    from synthgen.imageio import MAX_PIXELS

    src = make_tree(tmp_path / "raw", n_face=1)
    Image.new("L", (13000, 13000)).save(src / "id_a" / "huge.png")
    assert 13000 * 13000 > MAX_PIXELS and (src / "id_a" / "huge.png").stat().st_size < 1_000_000
    s = align(AlignConfig(inp=str(src), out=str(tmp_path / "al"), progress=False))
    recs = {json.loads(l)["source"]: json.loads(l) for l in (tmp_path / "al" / "manifest.jsonl").read_text().splitlines()}
    assert recs["id_a/huge.png"]["status"] == "unreadable" and "pixel" in recs["id_a/huge.png"]["error"]
    assert recs["id_a/0.jpg"]["status"] == "ok" and s["counts"]["error"] == 0


def test_one_image_that_breaks_the_detector_fails_alone(tmp_path, monkeypatch):
    import synthgen.alignment.stage as al

    src = make_tree(tmp_path / "raw", n_face=2)
    real = al.process_batch

    def fragile(rels, images, *a, **k):
        if "id_a/1.jpg" in rels:
            raise RuntimeError("detector crashed on this image")
        return real(rels, images, *a, **k)

    monkeypatch.setattr(al, "process_batch", fragile)
    s = align(AlignConfig(inp=str(src), out=str(tmp_path / "al"), batch_size=8, progress=False))
    recs = {json.loads(l)["source"]: json.loads(l) for l in (tmp_path / "al" / "manifest.jsonl").read_text().splitlines()}
    assert recs["id_a/1.jpg"]["status"] == "error" and "detector crashed" in recs["id_a/1.jpg"]["error"]
    assert recs["id_a/0.jpg"]["status"] == "ok" and s["counts"]["error"] == 1
