"""--precision and --chunk-size: the fp16 path proven on CPU against NVIDIA's fp16 reference, and
outputs that depend on the chunk size but never on batching, processes or resumes."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import MICRO, require_tiny
from synthgen.cli.main import cli
from synthgen.errors import UsageError
from synthgen.generation import GenerateConfig, generate
from synthgen.generators import load_generator
from synthgen.generators.stylegan2ada import to_uint8

NET = str(MICRO / "network-scrubbed-p4.pkl")

# Measured on the tiny fixture (3 psi x 6 images, values in [-1, 1] image units), batch 1 as
# NVIDIA's generate.py runs: |ours - img__const| max is 0.0 with fp16 (bit-identical) and
# 2.24e-3 with fp32 (the fp16 rounding that fp32 cannot reproduce); PNG values that differ from
# the reference PNGs: 0 of 55,296 with fp16, 1,584 with fp32.
FP32_VS_FP16_REF = 2.24e-3


def _tiny_outputs(precision, chunk):
    """Our images for the fixture's 18 (psi, seed, class) inputs, in network calls of `chunk`."""
    folder = require_tiny()
    G = load_generator(folder / "network-scrubbed-p4.pkl", precision=precision)
    ref = np.load(folder / "ref_outputs.npz")
    imgs = []
    for psi in ref["psis"]:
        out = []
        for s in range(0, 6, chunk):  # mapping and synthesis both at the chunk's batch shape
            ws = G.map(ref["z"][s : s + chunk], ref["classes"][s : s + chunk], psi=float(psi))
            out.append(G.synthesize(ws, noise_mode="const"))
        imgs.append(torch.cat(out))
    return ref, torch.stack(imgs)


def _skip_unless_this_cpu_rounds_like_the_reference(measured: str):
    """NVIDIA's fp16 reference was rendered on a CPU (fixture README). One float32 step in one
    mapping output moves the fp16 image by ~1e-3, and fp32 matrix products (MKL SGEMM) round
    differently on CPUs whose BLAS takes other code paths: on a Xeon with AVX512-FP16/AMX, 64,640 of
    73,728 ws values differ from the reference (by <= 2.4e-6) before any fp16 op runs. Where this
    machine's batch-1 fp32 ws are not the reference's bit for bit, bit-identity cannot be tested
    here: skip, saying what was measured. Where they are, a difference is a regression: no skip."""
    folder = require_tiny()
    G = load_generator(folder / "network-scrubbed-p4.pkl", precision="fp32")
    ref = np.load(folder / "ref_outputs.npz")
    for p, psi in enumerate(ref["psis"]):
        ws = torch.cat([G.map(ref["z"][s : s + 1], ref["classes"][s : s + 1], psi=float(psi)) for s in range(6)])
        differ = int((ws.numpy() != ref["ws"][p]).sum())
        if differ:
            pytest.skip(f"this CPU's fp32 matrix products round unlike the reference machine's ({differ} of "
                        f"{ws.numel()} ws values differ at psi {psi:g}), so fp16 bit-identity cannot be tested "
                        f"here; measured {measured}")


def test_fp16_on_cpu_reproduces_nvidia_fp16_reference():
    ref, ours16 = _tiny_outputs("fp16", 1)
    _, ours32 = _tiny_outputs("fp32", 1)
    d16 = float(np.abs(ours16.numpy() - ref["img__const"]).max())
    d32 = float(np.abs(ours32.numpy() - ref["img__const"]).max())
    assert d32 > 1e-3  # fp32 cannot match the fp16 reference (2.24e-3 measured)
    assert d16 < 2 * FP32_VS_FP16_REF  # on any CPU: no farther than fp16 rounding explains
    if d16 != 0.0:
        _skip_unless_this_cpu_rounds_like_the_reference(f"fp16 max |diff| {d16:.3g}, fp32 {d32:.3g}")
    assert d16 <= d32 / 100, (d16, d32)  # measured: 0.0 (bit-identical)
    assert d16 == 0.0, f"fp16 batch 1 was bit-identical to NVIDIA's fp16 output when written; now {d16:.3g}"
    png16 = np.stack([to_uint8(x) for x in ours16])
    png32 = np.stack([to_uint8(x) for x in ours32])
    assert int((png32 != ref["png_uint8__const"]).sum()) > 0
    np.testing.assert_array_equal(png16, ref["png_uint8__const"])  # every value of all 18 PNGs


def test_fp16_batched_formulation_stays_close():
    # batch > 1 uses the scaled-activation fp16 formulation (no per-sample weights), as NVIDIA's
    # code does for batches: it rounds elsewhere, so it is as far from the batch-1 reference as
    # fp32 is (2.98e-3 measured at batch 6), but no farther than fp16 rounding explains.
    ref, ours = _tiny_outputs("fp16", 6)
    d = float(np.abs(ours.numpy() - ref["img__const"]).max())
    assert 0 < d < 2 * FP32_VS_FP16_REF and np.isfinite(ours.numpy()).all()  # 2.98e-3 < 4.48e-3


def test_fp16_reference_pngs_through_generate(tmp_path):
    # End to end: `generate --seeds --precision fp16 --chunk-size 1` writes NVIDIA's PNGs.
    folder = require_tiny()
    ref = np.load(folder / "ref_outputs.npz")
    out = tmp_path / "g"
    s = generate(GenerateConfig(network=str(folder / "network-scrubbed-p4.pkl"), out=str(out), classes="0-3",
                                seeds="0-3", psi=0.7, precision="fp16", chunk_size=1, progress=False))
    assert s["complete"]
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["precision"] == "fp16" and run_json["chunk_size"] == 1
    assert run_json["identity"]["precision"] == "fp16" and run_json["identity"]["forward_chunk"] == 1
    pairs = []
    for seed, cls in zip(ref["seeds"][:4], ref["classes"][:4]):
        ours = np.asarray(Image.open(out / f"{cls:06d}" / f"{seed:06d}.png"))
        theirs = np.asarray(Image.open(folder / "png/noise-const/trunc0.7" / f"class{cls}" / f"seed{seed:04d}.png").convert("RGB"))
        pairs.append((ours, theirs))
    differ = sum(int((a != b).sum()) for a, b in pairs)
    if differ:
        assert max(int(np.abs(a.astype(int) - b).max()) for a, b in pairs) <= 2  # rounding, never a wrong image
        _skip_unless_this_cpu_rounds_like_the_reference(f"{differ} PNG values differ by <= 2")
    for a, b in pairs:
        np.testing.assert_array_equal(a, b)


def test_micro_fp16_shape_and_finite():
    # No fp16 reference exists for the micro fixture: shape, finiteness, and that fp16 really ran.
    G16 = load_generator(NET, precision="fp16")
    G32 = load_generator(NET)
    z = np.random.RandomState(0).randn(5, G16.z_dim)
    a = G16.synthesize(G16.map(z, [0, 1, 2, 3, 0]))
    b = G32.synthesize(G32.map(z, [0, 1, 2, 3, 0]))
    assert a.dtype == torch.float32 and a.shape == (5, 3, 16, 16) and torch.isfinite(a).all()
    assert 0 < float((a - b).abs().max()) < 2e-2


def test_precision_resolution_and_errors(tmp_path):
    assert load_generator(NET).precision == "fp32"  # auto on CPU
    assert load_generator(NET, precision="fp16").precision == "fp16"
    assert load_generator(NET, force_fp32=True).precision == "fp32"
    with pytest.raises(UsageError, match="--precision"):
        load_generator(NET, precision="bf16")
    with pytest.raises(UsageError, match="--precision"):
        load_generator(NET, precision="fp16", force_fp32=True)
    r = CliRunner().invoke(cli, ["generate", "--network", NET, "--out", str(tmp_path / "x"), "--precision", "half"])
    assert r.exit_code == 2 and "--precision" in r.output
    r = CliRunner().invoke(cli, ["generate", "--network", NET, "--out", str(tmp_path / "x"), "--precision", "fp16",
                                 "--force-fp32"])
    assert r.exit_code == 2 and "--precision" in r.output and "--force-fp32" in r.output
    r = CliRunner().invoke(cli, ["generate", "--network", NET, "--out", str(tmp_path / "x"), "--chunk-size", "0"])
    assert r.exit_code == 2 and "--chunk-size" in r.output
    for bad in (0, -3, 2.5):
        with pytest.raises(UsageError, match="--chunk-size"):
            generate(GenerateConfig(network=NET, out=str(tmp_path / "y"), chunk_size=bad, progress=False))
    assert not (tmp_path / "y").exists()


def tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != "run.json"}


def _gen(tmp, name, **kw):
    kw = {"classes": "0-3", "per_class": 5, "progress": False, **kw}
    out = tmp / name
    return out, generate(GenerateConfig(network=NET, out=str(out), **kw))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_chunk_size_output_independent_of_batching_and_resume(tmp_path, precision):
    a, s = _gen(tmp_path, "a", chunk_size=5, batch_size=1, precision=precision)
    b, _ = _gen(tmp_path, "b", chunk_size=5, batch_size=7, writers=3, precision=precision)
    c, _ = _gen(tmp_path, "c", chunk_size=5, batch_size=40, precision=precision)
    assert s["complete"] and s["written"] == 20 and tree(a) == tree(b) == tree(c)
    # resume: delete some images (one inside a chunk, one at its edge) and rerun
    d, _ = _gen(tmp_path, "d", chunk_size=5, batch_size=7, precision=precision)
    for rel in ("000000/000003.png", "000002/000000.png", "000003/000004.png", "manifest.jsonl"):
        (d / rel).unlink()
    _, s2 = _gen(tmp_path, "d", chunk_size=5, batch_size=3, precision=precision)
    assert s2["written"] == 3 and tree(d) == tree(a)
    # two job-array slices (separate calls, items interleaved) equal one run
    e = tmp_path / "e"
    for i in range(2):
        generate(GenerateConfig(network=NET, out=str(e), classes="0-3", per_class=5, chunk_size=5, precision=precision,
                                shard_index=i, num_shards=2, progress=False))
    assert tree(e) == tree(a)
    meta = json.loads((a / "run.json").read_text())
    assert meta["chunk_size"] == 5 and meta["precision"] == precision
    assert meta["identity"]["forward_chunk"] == 5 and meta["identity"]["precision"] == precision


def test_chunk_size_and_precision_join_the_identity(tmp_path):
    a, _ = _gen(tmp_path, "a", classes="0", per_class=3)
    meta = json.loads((a / "run.json").read_text())
    assert meta["identity"]["forward_chunk"] == 16 and meta["identity"]["precision"] == "fp32"
    _, s = _gen(tmp_path, "a", classes="0", per_class=3, chunk_size=16, precision="fp32")  # = the defaults on CPU
    assert s["written"] == 0
    with pytest.raises(UsageError, match="forward_chunk"):
        _gen(tmp_path, "a", classes="0", per_class=3, chunk_size=4)
    with pytest.raises(UsageError, match="precision"):
        _gen(tmp_path, "a", classes="0", per_class=3, precision="fp16")


class PositionSensitiveDetector:
    """Finds a template-shaped 'face' in images whose pixel sum is even. In batched mode it also
    misses every image at batch position 1, 4, 7, ...: a miss that depends on the neighbours."""

    calls = []

    def __init__(self, *a, batched=False, **k):
        self.batched = batched

    def detect(self, images):
        from synthgen.alignment import ARCFACE_112

        PositionSensitiveDetector.calls.append((self.batched, len(images)))
        out = []
        for pos, im in enumerate(images):
            if int(im.astype(np.int64).sum()) % 2 or (self.batched and pos % 3 == 1):
                out.append(None)
            else:
                pts = ARCFACE_112 * (im.shape[0] / 112)
                out.append((np.array([[0, 0, im.shape[1], im.shape[0]]], float), np.array([0.99]), pts[None]))
        return out


def test_batched_inline_align_tries_the_same_seeds(tmp_path, monkeypatch):
    from synthgen.alignment import DETECTORS

    monkeypatch.setitem(DETECTORS, "mtcnn", PositionSensitiveDetector)  # injected through the registry
    kw = dict(classes="0-3", per_class=5, align=True, align_size=32, max_retries=20)
    PositionSensitiveDetector.calls = []
    per_item, s = _gen(tmp_path, "p", align_batched=False, batch_size=7, **kw)
    assert PositionSensitiveDetector.calls and not any(b for b, _ in PositionSensitiveDetector.calls)
    PositionSensitiveDetector.calls = []
    batched, _ = _gen(tmp_path, "b", align_batched=True, batch_size=7, **kw)
    sizes = [n for b, n in PositionSensitiveDetector.calls if b]
    assert sizes and max(sizes) > 1  # whole steps went to the batched detector
    assert any(not b for b, _ in PositionSensitiveDetector.calls)  # and its misses were re-checked per image
    batched1, _ = _gen(tmp_path, "b1", align_batched=True, batch_size=40, **kw)  # other batch neighbours
    rec = [json.loads(l) for l in (per_item / "manifest.jsonl").read_text().splitlines()]
    assert s["complete"] and any(r["attempt"] > 0 for r in rec)  # retries happened
    assert tree(per_item) == tree(batched)  # same images, seeds, skipped seeds, landmarks
    seeds = lambda d: [(r["path"], r["seed"], r["skipped_seeds"]) for r in map(json.loads, (d / "manifest.jsonl").read_text().splitlines())]
    assert seeds(batched1) == seeds(per_item) and tree(batched1) == tree(per_item)
    ident = json.loads((batched / "run.json").read_text())["identity"]
    assert ident["align_batched"] is True
