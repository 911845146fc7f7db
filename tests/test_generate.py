"""`synthgen generate`: determinism across batching, processes and resume; layout; bad input."""

import errno
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import MICRO
from synthgen.cli.main import cli
from synthgen.errors import DataError, UsageError
from synthgen.generation import GenerateConfig, generate

NET = str(MICRO / "network-scrubbed-p4.pkl")


def tree(root: Path) -> dict:
    """relative path -> bytes for every image, plus the manifest."""
    out = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != "run.json"}
    return out


def run(tmp, name, **kw):
    kw.setdefault("classes", "0-3")
    kw.setdefault("per_class", 5)
    out = tmp / name
    summary = generate(GenerateConfig(network=NET, out=str(out), progress=False, **kw))
    return out, summary


def test_batch_size_and_writers_do_not_change_bytes(tmp_path):
    a, s = run(tmp_path, "a", batch_size=1, writers=1)
    b, _ = run(tmp_path, "b", batch_size=7, writers=3)
    c, _ = run(tmp_path, "c", batch_size=40, noise_mode="const")
    assert s["complete"] and s["written"] == 20
    ta = tree(a)
    assert len(ta) == 21 and ta == tree(b) == tree(c)


def test_random_noise_reproducible_and_per_image(tmp_path):
    a, _ = run(tmp_path, "a", noise_mode="random", batch_size=3)
    b, _ = run(tmp_path, "b", noise_mode="random", batch_size=16)
    assert tree(a) == tree(b)
    rec = [json.loads(l) for l in (a / "manifest.jsonl").read_text().splitlines()]
    assert len({r["noise_seed"] for r in rec}) == 20
    c, _ = run(tmp_path, "c", noise_mode="const")
    assert tree(a)["000000/000000.png"] != tree(c)["000000/000000.png"]


def test_layout_manifest_and_run_json(tmp_path):
    out, _ = run(tmp_path, "a", classes="1,3", per_class=2, psi=0.7)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert files == ["000001/000000.png", "000001/000001.png", "000003/000000.png", "000003/000001.png"]
    rec = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["path"] for r in rec] == files
    assert all(r["status"] == "ok" and r["psi"] == 0.7 and r["noise_mode"] == "const" for r in rec)
    assert len({r["seed"] for r in rec}) == 4  # no latent reused across classes
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "complete" and meta["counts"] == {"total": 4, "ok": 4, "missing": 0, "no_face": 0, "classes": 2}
    assert len(meta["generator"]["sha256"]) == 64 and meta["versions"]["torch"]
    assert Image.open(out / files[0]).size == (16, 16)


def test_seeds_reproduce_nvidia_reference_pngs(tmp_path):
    ref = np.load(MICRO / "ref_outputs.npz")
    for psi in (1.0, 0.7):
        out, _ = run(tmp_path, f"s{psi}", classes="0-3", seeds="0,1,7,42", psi=psi)
        for i, (seed, cls) in enumerate(zip(ref["seeds"], ref["classes"])):
            ours = np.asarray(Image.open(out / f"{cls:06d}/{i:06d}.png")).astype(int)
            theirs = np.asarray(Image.open(MICRO / f"png/noise-const/trunc{psi:g}/class{cls}/seed{seed:04d}.png")).astype(int)
            assert np.abs(ours - theirs).max() <= 1  # the reference ran fp16 blocks; we run fp32 on CPU


def test_seed_pool_reuses_pool_seeds_deterministically(tmp_path):
    a, _ = run(tmp_path, "a", seed_pool="1-10", per_class=8)
    b, _ = run(tmp_path, "b", seed_pool="1-10", per_class=8, batch_size=5)
    assert tree(a) == tree(b)
    rec = [json.loads(l) for l in (a / "manifest.jsonl").read_text().splitlines()]
    assert {r["seed"] for r in rec} <= set(range(1, 11)) and rec[0]["latent"] == "seed-pool"


def test_interrupted_run_resumes_to_identical_bytes(tmp_path, monkeypatch):
    ref, _ = run(tmp_path, "ref", batch_size=4)
    import synthgen.generation.rendering as gen

    real = gen.write_image
    calls = {"n": 0}

    def flaky(root, rel, img, fmt, q, meta=None):
        calls["n"] += 1
        if calls["n"] > 9:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(root, rel, img, fmt, q, meta)

    monkeypatch.setattr(gen, "write_image", flaky)
    with pytest.raises(DataError, match="No space left.*rerun the same command to resume"):
        run(tmp_path, "x", batch_size=4, writers=1)
    out = tmp_path / "x"
    pngs = list(out.rglob("*.png"))
    assert 0 < len(pngs) < 20
    assert not list(out.rglob(".*tmp*")) and not (out / "manifest.jsonl").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    monkeypatch.setattr(gen, "write_image", real)
    _, s = run(tmp_path, "x", batch_size=6)
    assert s["skipped_existing"] == len(pngs) and s["complete"]
    assert tree(out) == tree(ref)


def test_job_array_slices_union_equals_single_run(tmp_path):
    ref, _ = run(tmp_path, "ref")
    s0 = generate(GenerateConfig(network=NET, out=str(tmp_path / "j"), classes="0-3", per_class=5, shard_index=1, num_shards=2, progress=False))
    assert not s0["complete"] and not (tmp_path / "j" / "manifest.jsonl").exists()
    s1 = generate(GenerateConfig(network=NET, out=str(tmp_path / "j"), classes="0-3", per_class=5, shard_index=0, num_shards=2, progress=False))
    assert s1["complete"] and s0["slice_items"] + s1["slice_items"] == 20
    assert tree(tmp_path / "j") == tree(ref)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch

    torch.set_num_threads(1)
    generate(GenerateConfig(network=NET, out=out, classes="0-3", per_class=5, device="cpu", progress=False))


@pytest.mark.slow  # spawns 2 gloo processes (~15 s on 2 cores)
def test_torchrun_two_gloo_processes_equal_single_process(tmp_path):
    import torch.multiprocessing as mp

    ref, _ = run(tmp_path, "ref")
    out = tmp_path / "dist"
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, start_method="spawn")
    assert tree(out) == tree(ref)
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_unconditional_views(tmp_path, uncond_ckpt):
    kw = dict(network=str(uncond_ckpt), classes="all", count=3, views=2, noise_mode="random", progress=False)
    s = generate(GenerateConfig(out=str(tmp_path / "u"), **kw))
    assert s["complete"] and s["total"] == 6
    out = tmp_path / "u"
    rec = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["path"] for r in rec][:2] == ["0000000/00.png", "0000000/01.png"]
    assert rec[1]["view"] == 1 and "mix_seed" in rec[1] and rec[1]["mix_layers"] == [3, 5]
    assert rec[0]["seed"] == rec[1]["seed"]  # same identity latent
    v0, v1 = (np.asarray(Image.open(out / r["path"])) for r in rec[:2])
    assert not np.array_equal(v0, v1)
    generate(GenerateConfig(out=str(tmp_path / "u2"), batch_size=1, **kw))
    assert tree(out) == tree(tmp_path / "u2")


@pytest.mark.parametrize("args,flag", [
    (["--classes", "0-4"], "--classes"),
    (["--per-class", "0"], "--per-class"),
    (["--classes", "x"], "--classes"),
    (["--count", "3"], "--count"),
    (["--seeds", "1", "--seed-pool", "1-5"], "--seed-pool"),
])
def test_usage_errors_before_any_write(tmp_path, args, flag):
    out = tmp_path / "o"
    r = CliRunner().invoke(cli, ["generate", "--network", NET, "--out", str(out), "--quiet", *args])
    assert r.exit_code == 2, r.output
    assert flag in r.output and not out.exists()


def test_classes_on_unconditional_and_missing_network(tmp_path, uncond_ckpt):
    r = CliRunner().invoke(cli, ["generate", "--network", str(uncond_ckpt), "--out", str(tmp_path / "o"), "--classes", "0"])
    assert r.exit_code == 2 and "unconditional" in r.output
    r = CliRunner().invoke(cli, ["generate", "--network", str(tmp_path / "nope.pkl"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "nope.pkl: no such file" in r.output and "check the path" in r.output
    assert not (tmp_path / "o").exists()


def test_different_config_refused_unless_overwrite(tmp_path):
    out, _ = run(tmp_path, "a")
    with pytest.raises(UsageError, match="differs in: psi.*--overwrite"):
        run(tmp_path, "a", psi=0.5)
    _, s = run(tmp_path, "a", psi=0.5, overwrite=True)
    assert s["written"] == 20
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(UsageError, match="no run.json"):
        run(tmp_path, "junk")


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "cli"
    r = CliRunner().invoke(cli, ["generate", "--network", NET, "--out", str(out), "--classes", "0-1", "--per-class", "3", "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["written"] == 6
    r = CliRunner().invoke(cli, ["generate", "--network", NET, "--out", str(out), "--classes", "0-1", "--per-class", "3", "--json", "--quiet"])
    assert json.loads(r.output)["written"] == 0  # second invocation does nothing


@pytest.fixture
def fake_mtcnn(monkeypatch):
    """The library's parity double stands in for MTCNN (through the detector registry)."""
    from synthgen.alignment import DETECTORS, ParityDetector

    monkeypatch.setitem(DETECTORS, "mtcnn", ParityDetector)


def test_inline_align_retries_to_exact_counts(tmp_path, fake_mtcnn):
    kw = dict(classes="0-3", per_class=5, align=True, align_size=32, max_retries=20)
    a, s = run(tmp_path, "a", batch_size=1, **kw)
    b, _ = run(tmp_path, "b", batch_size=7, **kw)
    assert s["complete"] and tree(a) == tree(b)
    rec = [json.loads(l) for l in (a / "manifest.jsonl").read_text().splitlines()]
    assert len(rec) == 20 and all(r["status"] == "ok" for r in rec)
    retried = [r for r in rec if r["attempt"] > 0]
    assert retried and all(len(r["skipped_seeds"]) == r["attempt"] for r in retried)
    assert all(np.asarray(Image.open(a / r["path"])).shape == (32, 32, 3) for r in rec)
    counts = json.loads((a / "run.json").read_text())["counts"]
    assert counts["ok"] == 20 and counts["no_face"] == 0


def test_inline_align_gives_up_after_max_retries(tmp_path, fake_mtcnn):
    out, s = run(tmp_path, "a", classes="0-1", per_class=4, align=True, align_size=32, max_retries=0)
    rec = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    failed = [r for r in rec if r["status"] == "no_face"]
    assert failed and all(len(r["skipped_seeds"]) == 1 for r in failed) and s["complete"]
    assert not any((out / r["path"]).exists() for r in failed)
    _, s2 = run(tmp_path, "a", classes="0-1", per_class=4, align=True, align_size=32, max_retries=0)
    assert s2["written"] == 0  # resume does not retry final failures


def test_unwritable_output_dir_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "sub"  # a path below a regular file cannot be created
    r = CliRunner().invoke(cli, ["generate", "--network", NET, "--out", str(out), "--classes", "0", "--per-class", "1"])
    assert r.exit_code == 2 and "--out" in r.output and "cannot write" in r.output


@pytest.mark.slow  # a real torchrun launch (~15 s)
def test_real_torchrun_cli_equals_single_process(tmp_path):
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to this Python")
    ref, _ = run(tmp_path, "ref", classes="0-2", per_class=3)
    out = tmp_path / "tr"
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "synthgen", "generate",
           "--network", NET, "--out", str(out), "--classes", "0-2", "--per-class", "3", "--device", "cpu", "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert tree(out) == tree(ref)


@pytest.mark.slow
def test_sigkill_midway_then_resume_gives_identical_bytes(tmp_path):
    """A real kill -9 of the CLI while it writes; the rerun completes to the same bytes."""
    import signal
    import subprocess
    import sys
    import time

    args = ["--network", NET, "--classes", "0-3", "--per-class", "1500", "--quiet", "--device", "cpu"]
    out = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "synthgen", "generate", "--out", str(out), *args])
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.rglob("*.png"))) < 500:
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    n = len(list(out.rglob("*.png")))
    assert 0 < n < 6000, n  # really interrupted midway
    (out / "000000" / ".000099.png.tmp-1").write_bytes(b"half a png")  # as a killed writer leaves it
    subprocess.run([sys.executable, "-m", "synthgen", "generate", "--out", str(out), *args], check=True)
    subprocess.run([sys.executable, "-m", "synthgen", "generate", "--out", str(tmp_path / "ref"), *args], check=True)
    assert not list(out.rglob(".*tmp*"))
    assert tree(out) == tree(tmp_path / "ref")
