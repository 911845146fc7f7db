"""`synthgen shard` over a damaged or incomplete output rebuilds what is missing or wrong.

Shards are deterministic, so a repaired folder must be byte-identical to a clean run; shards
that were fine must not be rewritten (mtimes kept).
"""

import errno
import json
import os
import resource
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from hostile_shards import assert_one_line, make_shards, make_tree
from synthgen.cli.main import cli
from synthgen.data import ShardDataset
from synthgen.errors import DataError
from synthgen.export import export
from synthgen.shards import JOURNAL, ShardConfig, shard, verify


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "tree")


@pytest.fixture
def clean(tree, tmp_path):
    """A clean run (3 shards of 5, 5, 2): the reference bytes."""
    make_shards(tree, tmp_path / "clean")
    return tmp_path / "clean"


def files(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def mtimes(d: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in sorted(d.iterdir())}


def flip(p: Path, at: int = -100) -> None:
    data = bytearray(p.read_bytes())
    data[at] ^= 0xFF
    p.write_bytes(bytes(data))


def same_as_clean(s: Path, clean: Path) -> None:
    a, b = files(s), files(clean)
    assert a.keys() == b.keys()
    for name in a:
        if name == "index.json":  # differs only in its creation time
            ja, jb = json.loads(a[name]), json.loads(b[name])
            assert {**ja, "created": 0} == {**jb, "created": 0}
        else:
            assert a[name] == b[name], name


def test_deleted_shard_is_rebuilt(tree, clean, tmp_path):
    s = tmp_path / "s"
    shutil.copytree(clean, s)
    (s / "shard-00001.h5").unlink()
    keep = mtimes(s)
    r = CliRunner().invoke(cli, ["shard", "--in", str(tree), "--out", str(s), "--shard-size", "5", "--quiet"])
    assert r.exit_code == 0, r.output
    assert files(s) == files(clean)  # identical bytes, index.json included (nothing else changed)
    now = mtimes(s)
    assert now["shard-00000.h5"] == keep["shard-00000.h5"] and now["shard-00002.h5"] == keep["shard-00002.h5"]
    assert verify(s) == []


@pytest.mark.parametrize("with_index", [True, False])
def test_flipped_byte_is_rebuilt(tree, clean, tmp_path, with_index):
    s = tmp_path / "s"
    shutil.copytree(clean, s)
    flip(s / "shard-00001.h5")
    if not with_index:  # no index and no journal: no trusted checksum, so every shard is rebuilt
        (s / "index.json").unlink()
    make_shards(tree, s)
    same_as_clean(s, clean)
    assert verify(s) == []


def test_resume_trusts_only_the_journal_checksum(tree, tmp_path, monkeypatch, clean):
    import synthgen.shards.writer as sh

    real, calls = sh.write_shard, {"n": 0}

    def boom(path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(path, *a, **k)

    monkeypatch.setattr(sh, "write_shard", boom)
    s = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        make_shards(tree, s)
    monkeypatch.setattr(sh, "write_shard", real)
    assert (s / JOURNAL).is_file() and not (s / "index.json").exists()
    flip(s / "shard-00000.h5")  # damaged after it was journaled
    (s / ".shard-00002.h5.tmp-999999").write_bytes(b"half a shard")  # what kill -9 leaves
    (s / ".index.json.tmp-999999").write_bytes(b"{")
    keep = mtimes(s)["shard-00001.h5"]
    make_shards(tree, s)
    same_as_clean(s, clean)  # shard 0 rebuilt, temps and journal gone
    assert mtimes(s)["shard-00001.h5"] == keep
    assert verify(s) == []


def test_killed_during_the_first_shard_resumes(tree, tmp_path, clean):
    s = tmp_path / "s"
    s.mkdir()
    (s / ".shard-00000.h5.tmp-424242").write_bytes(b"\x89HDF partial")
    make_shards(tree, s)  # not refused as "a folder with other files"
    same_as_clean(s, clean)


def test_verify_reports_stray_temp_files_and_unlisted_shards(clean, tree):
    (clean / ".shard-00001.h5.tmp-77").write_bytes(b"x")
    shutil.copy(clean / "shard-00002.h5", clean / "shard-00007.h5")
    problems = verify(clean)
    assert any(".shard-00001.h5.tmp-77" in p and "stray temp file" in p for p in problems), problems
    assert any("shard-00007.h5" in p and "not listed" in p for p in problems), problems
    make_shards(tree, clean)  # the repair removes both
    assert verify(clean) == []


def test_tampered_index_is_rewritten(tree, clean, tmp_path):
    s = tmp_path / "s"
    shutil.copytree(clean, s)
    idx = json.loads((s / "index.json").read_text())
    idx["total"] = 999
    idx["shards"][2]["file"] = "../evil.h5"
    (s / "index.json").write_text(json.dumps(idx))
    make_shards(tree, s)
    same_as_clean(s, clean)
    assert verify(s) == []


def test_shards_beyond_a_shrunken_plan_are_removed(tree, tmp_path):
    s = tmp_path / "s"
    make_shards(tree, s)
    shutil.rmtree(tree / "000002")  # 8 images left: 2 shards
    idx = make_shards(tree, s)
    assert [e["file"] for e in idx["shards"]] == ["shard-00000.h5", "shard-00001.h5"]
    assert sorted(p.name for p in s.iterdir()) == ["index.json", "shard-00000.h5", "shard-00001.h5"]
    assert verify(s) == [] and len(ShardDataset(s)) == 8


# ---------------------------------------------------------------------------------------------
# a full disk: real EFBIG from RLIMIT_FSIZE (HDF5 itself sees the failed write), and ENOSPC injected


@pytest.fixture
def big_tree(tmp_path):
    """112 px crops: a 5-image shard is ~190 kB, far above the 64 kB file-size limit below."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(1)
    for c in range(2):
        (tmp_path / "big" / f"{c:06d}").mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.randint(0, 256, (112, 112, 3), np.uint8)).save(tmp_path / "big" / f"{c:06d}" / f"{i}.png")
    return tmp_path / "big"


class file_size_limit:
    """RLIMIT_FSIZE for this process (Python ignores SIGXFSZ, so writes past it fail with EFBIG)."""

    def __init__(self, limit):
        self.limit = limit

    def __enter__(self):
        self.old = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self.old[1]))

    def __exit__(self, *exc):
        resource.setrlimit(resource.RLIMIT_FSIZE, self.old)


def test_write_failure_inside_hdf5_is_one_line_and_resumable(big_tree, tmp_path):
    s = tmp_path / "s"
    with file_size_limit(64 * 1024), pytest.raises(DataError) as e:
        make_shards(big_tree, s)
    assert_one_line(str(e.value), ".shard-00000.h5.tmp-", "File too large", "rerun the same command")
    assert sorted(p.name for p in s.iterdir()) == []  # no temp file, nothing that looks complete
    make_shards(big_tree, s)  # the interpreter survives (HDF5 closed cleanly) and a rerun resumes
    assert verify(s) == []


def test_enospc_mid_run_keeps_finished_shards(big_tree, tmp_path, monkeypatch):
    import synthgen.shards.writer as sh

    real_pwrite, written = os.pwrite, {"n": 0}

    def pwrite(fd, data, offset):  # the disk fills up during the second shard
        written["n"] += len(data)
        if written["n"] > 300_000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(sh.os, "pwrite", pwrite)
    s = tmp_path / "s"
    r = CliRunner().invoke(cli, ["shard", "--in", str(big_tree), "--out", str(s), "--shard-size", "5", "--quiet"])
    monkeypatch.setattr(sh.os, "pwrite", real_pwrite)
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
    assert_one_line(r.output.strip(), "Error: ", ".shard-00001.h5.tmp-", "No space left on device")
    assert sorted(p.name for p in s.iterdir()) == [JOURNAL, "shard-00000.h5"]
    keep = mtimes(s)["shard-00000.h5"]
    make_shards(big_tree, s)
    assert mtimes(s)["shard-00000.h5"] == keep and verify(s) == []


def test_too_little_space_for_a_raw_shard_is_refused_before_libhdf5_allocates(big_tree, tmp_path, monkeypatch):
    """A raw, uncompressed shard's size is known: refuse it up front (libhdf5 was seen to crash with
    SIGSEGV in create_dataset on a nearly full tmpfs), keeping the finished shards."""
    import collections

    import synthgen.shards.writer as sh

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(sh.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    r = CliRunner().invoke(cli, ["shard", "--in", str(big_tree), "--out", str(tmp_path / "s"), "--quiet"])
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
    assert_one_line(r.output.strip(), "Error: ", "shard-00000.h5: not enough disk space", "MB free", "rerun")
    assert not any(p.name.endswith(".h5") for p in (tmp_path / "s").iterdir())


def test_export_on_a_full_disk_is_one_line(big_tree, tmp_path):
    make_shards(big_tree, tmp_path / "s")
    with file_size_limit(64 * 1024), pytest.raises(DataError) as e:
        export(tmp_path / "s", tmp_path / "rec", "recordio", progress=False)
    assert_one_line(str(e.value), "cannot write", "File too large")
    assert not (tmp_path / "rec" / "train.rec").exists()  # no half-written file under the final name
