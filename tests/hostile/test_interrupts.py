"""Interruptions and full disks: Ctrl-C exits 130 with a resume hint, a rerun finishes the job
byte-identically, stale temp files are removed on resume, a full disk is one line and a
resumable state, never a half-written file under a final name."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import DATA, MICRO
from hostile_util import one_error_line
from synthgen.alignment import AlignConfig, align
from synthgen.cli.main import cli
from synthgen.generation import GenerateConfig, generate

NET = str(MICRO / "network-scrubbed-p4.pkl")
INTERRUPTED = "interrupted: rerun the same command to resume"


def tree(root: Path, skip=("align.json", "run.json")) -> dict:
    """Relative path -> bytes of every file (timings live in align.json/run.json)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


def temps(root: Path) -> list:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


def face_tree(root: Path, n: int) -> Path:
    face = Image.open(DATA / "astronaut.png").convert("RGB").crop((120, 20, 320, 220)).resize((100, 100))
    for i in range(n):
        d = root / f"id{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        face.rotate(2 * (i % 7) - 6).save(d / f"{i:03d}.png")
    return root


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # align's float bits follow torch's thread count: keep it fixed


def synthgen_cmd(*args):
    return [sys.executable, "-m", "synthgen", *map(str, args)]


def interrupt_when(cmd, ready, timeout=120):
    """Start `cmd`, send SIGINT once `ready()` is true; -> (returncode, stderr)."""
    # SIGINT back to its default in the child: a runner that starts jobs in the background (nohup, `&`)
    # hands them SIGINT ignored, and Python then never raises KeyboardInterrupt
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None and not ready():
        time.sleep(0.05)
    assert p.poll() is None, "finished before it could be interrupted: give it more work"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=timeout)
    return p.returncode, err


def assert_interrupted(rc, err):
    assert rc == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == [INTERRUPTED], err  # no "Aborted!", no traceback, no worker noise


# ----------------------------------------------------------------------------------------------
# Ctrl-C


@pytest.mark.slow
def test_sigint_generate_then_rerun_is_byte_identical(tmp_path):
    args = ["--network", NET, "--classes", "0-3", "--per-class", "100", "--quiet", "--device", "cpu", "--batch-size", "16"]
    out = tmp_path / "int"
    rc, err = interrupt_when(synthgen_cmd("generate", "--out", out, *args),
                             lambda: len(list(out.rglob("*.png"))) >= 16)
    assert_interrupted(rc, err)
    n = len(list(out.rglob("*.png")))
    assert 0 < n < 400 and not (out / "manifest.jsonl").exists()
    r = subprocess.run(synthgen_cmd("generate", "--out", out, *args), capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr
    generate(GenerateConfig(network=NET, out=str(tmp_path / "ref"), classes="0-3", per_class=100, device="cpu",
                            progress=False))
    assert not temps(out)
    assert tree(out) == tree(tmp_path / "ref")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigint_align_then_rerun_is_byte_identical(tmp_path, workers):
    src = face_tree(tmp_path / "in", 40)
    out = tmp_path / "al"
    args = ["--in", src, "--on-miss", "center-crop", "--size", "32", "--batch-size", "4", "--quiet",
            "--workers", str(workers), "--device", "cpu"]
    rc, err = interrupt_when(synthgen_cmd("align", "--out", out, *args), lambda: len(list(out.rglob("*.png"))) >= 4)
    assert_interrupted(rc, err)
    assert not (out / "manifest.jsonl").exists()
    for o in (out, tmp_path / "ref"):  # the rerun, and an uninterrupted run for reference
        r = subprocess.run(synthgen_cmd("align", "--out", o, *args), capture_output=True, text=True, timeout=300, env=ENV)
        assert r.returncode == 0, r.stderr
    assert json.loads((out / "align.json").read_text())["status"] == "complete"
    assert not temps(out)
    assert tree(out) == tree(tmp_path / "ref")


def test_resume_removes_stale_align_temp_files(tmp_path, monkeypatch):
    import synthgen.alignment.stage as al

    src = face_tree(tmp_path / "in", 6)
    kw = dict(inp=str(src), on_miss="center-crop", size=32, batch_size=2, progress=False)
    real = al.align_step
    calls = {"n": 0}

    def stop_after_first(*a, **k):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(al, "align_step", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        align(AlignConfig(out=str(tmp_path / "x"), **kw))
    monkeypatch.setattr(al, "align_step", real)
    out = tmp_path / "x"
    (out / "id0" / ".003.png.tmp-99999").write_bytes(b"half a png")  # as a killed writer leaves them
    (out / "id2").mkdir()
    (out / "id2" / ".005.png.tmp-7").write_bytes(b"")
    (out / ".manifest.jsonl.tmp-99999").write_text('{"source": "id0/000.png"')
    (out / ".align.json.tmp-4242").write_text("{")
    align(AlignConfig(out=str(out), **kw))
    align(AlignConfig(out=str(tmp_path / "ref"), **kw))
    assert not temps(out)
    assert tree(out) == tree(tmp_path / "ref")


# ----------------------------------------------------------------------------------------------
# Full disk


def _enospc_after(monkeypatch, k: int):
    """PIL saves fail with ENOSPC after `k` successes, leaving half a file, as a full disk does."""
    real = Image.Image.save
    calls = {"n": 0}

    def save(self, fp, *a, **kw):
        calls["n"] += 1
        if calls["n"] > k:
            with open(fp, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fp))
        return real(self, fp, *a, **kw)

    monkeypatch.setattr(Image.Image, "save", save)


def test_full_disk_in_align_is_one_line_and_resumable(tmp_path, monkeypatch):
    src = face_tree(tmp_path / "in", 8)
    out = tmp_path / "al"
    args = ["align", "--in", str(src), "--out", str(out), "--on-miss", "center-crop", "--size", "32",
            "--batch-size", "2", "--quiet"]
    _enospc_after(monkeypatch, 3)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1
    one_error_line(r.stderr, str(out), "no space left on device (ENOSPC)", "rerun the same command to resume")
    assert not temps(out)  # no half-written file under any name
    assert not (out / "manifest.jsonl").exists()
    assert json.loads((out / "align.json").read_text())["status"] == "running"
    assert len(list(out.rglob("*.png"))) == 3
    monkeypatch.undo()
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    align(AlignConfig(inp=str(src), out=str(tmp_path / "ref"), on_miss="center-crop", size=32, batch_size=2,
                      progress=False))
    assert tree(out) == tree(tmp_path / "ref")


def test_full_disk_in_generate_is_one_line_and_resumable(tmp_path, monkeypatch):
    import synthgen.generation.rendering as gen

    out = tmp_path / "g"
    args = ["generate", "--network", NET, "--out", str(out), "--classes", "0-1", "--per-class", "20", "--quiet",
            "--device", "cpu", "--writers", "1", "--batch-size", "16"]
    real = gen.encode
    calls = {"n": 0}

    def encode(*a, **k):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **k)

    monkeypatch.setattr(gen, "encode", encode)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1
    one_error_line(r.stderr, str(out), "No space left on device", "rerun the same command to resume")
    assert not temps(out) and not (out / "manifest.jsonl").exists()
    monkeypatch.undo()
    assert CliRunner().invoke(cli, args).exit_code == 0
    generate(GenerateConfig(network=NET, out=str(tmp_path / "ref"), classes="0-1", per_class=20, device="cpu",
                            progress=False))
    assert tree(out) == tree(tmp_path / "ref")


@pytest.mark.slow
def test_real_small_filesystem_align_then_grow_and_resume(tmp_path):
    """A real 192 KiB tmpfs (root with mount namespaces only): the first run fills it, the second,
    after the file system grows, finishes byte-identically to a run on a roomy disk."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or not unshare:
        pytest.skip("needs root and unshare to mount a small tmpfs")
    src = face_tree(tmp_path / "in", 40)
    mnt, copy = tmp_path / "mnt", tmp_path / "copy"
    mnt.mkdir()
    cmd = " ".join(synthgen_cmd("align", "--in", src, "--out", mnt / "al", "--on-miss", "center-crop", "--size", "112",
                                "--batch-size", "4", "--quiet", "--device", "cpu"))
    script = f"""
mount -t tmpfs -o size=192k tmpfs {mnt} || exit 99
{cmd} 2> {tmp_path}/err1; echo $? > {tmp_path}/rc1
ls -a {mnt}/al > {tmp_path}/ls1
mount -o remount,size=64m {mnt}
{cmd} 2> {tmp_path}/err2; echo $? > {tmp_path}/rc2
cp -a {mnt}/al {copy}
"""
    p = subprocess.run([unshare, "-m", "sh", "-c", script], capture_output=True, text=True, timeout=600, env=ENV)
    if p.returncode == 99:
        pytest.skip("cannot mount tmpfs here")
    assert (tmp_path / "rc1").read_text().strip() == "1", (tmp_path / "err1").read_text()
    one_error_line((tmp_path / "err1").read_text(), "no space left on device", "the same command resumes")
    assert "manifest.jsonl" not in (tmp_path / "ls1").read_text().split()
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "err2").read_text()
    r = subprocess.run(synthgen_cmd("align", "--in", src, "--out", tmp_path / "ref", "--on-miss", "center-crop",
                                    "--size", "112", "--batch-size", "4", "--quiet", "--device", "cpu"),
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr
    assert not temps(copy)
    assert tree(copy) == tree(tmp_path / "ref")
