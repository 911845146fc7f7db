"""Hostile paths and HDF5 layouts: nothing read from a file may reach outside its folder.

Each attack is built the way synthgen writes shards (real `synthgen shard` output, then
tampered with h5py, index.json re-signed), checked to be a working attack at the HDF5 level
where that matters, and then must end in one DataError line naming the file and entry, with
nothing written or read outside the output folder.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hostile_shards import assert_one_line, make_shards, make_tree, replace_dataset, resign, snapshot
from synthgen.cli.main import cli
from synthgen.data import ShardDataset
from synthgen.errors import DataError, UsageError
from synthgen.export import export
from synthgen.safepath import safe_relpath
from synthgen.shards import ShardConfig, shard, verify

BAD_PATHS = {
    "dotdot": "000000/../../escape.png",
    "leading-dotdot": "../escape.png",
    "absolute": "/etc/passwd",
    "dot": "000000/./000001.png",
    "empty-part": "000000//000001.png",
    "trailing-slash": "000000/",
    "backslash": "000000\\..\\..\\escape.png",
    "drive": "C:/escape.png",
    "nul": "000000/a\x00.png",
    "newline": "000000/x.png\nError: forged second line",
    "bidi": "000000/\u202egnp.exe",
    "empty": "",
}


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "tree")


@pytest.fixture
def shards(tree, tmp_path):
    make_shards(tree, tmp_path / "s")
    return tmp_path / "s"


# ---------------------------------------------------------------------------------------------
# the helper itself


@pytest.mark.parametrize("name", sorted(BAD_PATHS))
def test_safe_relpath_refuses(name, tmp_path):
    with pytest.raises(DataError) as e:
        safe_relpath(BAD_PATHS[name], tmp_path, tmp_path / "manifest.jsonl", "line 7 'path'")
    assert_one_line(str(e.value), "manifest.jsonl", "line 7 'path'", "expected a relative path")


def test_safe_relpath_refuses_wrong_types_and_bytes(tmp_path):
    for v in (5, None, ["a/b"], b"\xff/x.png"):
        with pytest.raises(DataError) as e:
            safe_relpath(v, tmp_path, "f.json", "e")
        assert_one_line(str(e.value), "f.json: e is")


def test_safe_relpath_follows_symlinks(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(DataError, match="outside"):
        safe_relpath("link/x.png", tmp_path / "root", "m", "e")
    assert safe_relpath("link/x.png", None, "m", "e") == "link/x.png"  # spelling-only check
    for ok in ("000001/000002.png", "a b/c d.png", "é/ü.png", "a/b/c..png"):
        assert safe_relpath(ok, tmp_path / "root", "m", "e") == ok


# ---------------------------------------------------------------------------------------------
# shard: manifest paths


def _write_manifest(tree: Path, records) -> None:
    (tree / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_shard_refuses_manifest_paths_leaving_the_tree(tree, tmp_path, how):
    secret = tmp_path / "secret.png"
    shutil.copy(tree / "000000" / "000000.png", secret)  # a real image: without the check it is packed
    path = {"dotdot": "000000/../../secret.png", "absolute": str(secret), "symlink": "000000/link.png"}[how]
    if how == "symlink":
        (tree / "000000" / "link.png").symlink_to(secret)
    recs = [{"path": f"{c:06d}/{i:06d}.png", "status": "ok"} for c in range(3) for i in range(4)]
    _write_manifest(tree, recs + [{"path": path, "status": "ok"}])
    before = snapshot(tmp_path)
    with pytest.raises(DataError) as e:
        shard(ShardConfig(inp=str(tree), out=str(tmp_path / "out"), progress=False))
    assert_one_line(str(e.value), "manifest.jsonl", "line 13 'path'")
    assert not (tmp_path / "out").exists() and snapshot(tmp_path) == before


def test_shard_refuses_forged_source_and_non_object_lines(tree, tmp_path):
    _write_manifest(tree, [{"path": "000000/000000.png", "source": "x\nError: all good", "status": "ok"}])
    r = CliRunner().invoke(cli, ["shard", "--in", str(tree), "--out", str(tmp_path / "o"), "--quiet"])
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert_one_line(r.output.strip(), "manifest.jsonl", "line 1 'source'", "\\n")
    (tree / "manifest.jsonl").write_text('["000000/000000.png"]\n')
    with pytest.raises(DataError) as e:
        shard(ShardConfig(inp=str(tree), out=str(tmp_path / "o"), progress=False))
    assert_one_line(str(e.value), "manifest.jsonl:1", "expected an object")
    assert not (tmp_path / "o").exists()


def test_shard_refuses_control_characters_in_file_names(tree, tmp_path):
    shutil.copy(tree / "000000" / "000000.png", tree / "000000" / "x\nError: forged.png")
    with pytest.raises(DataError) as e:
        shard(ShardConfig(inp=str(tree), out=str(tmp_path / "o"), progress=False))
    assert_one_line(str(e.value), "image file name", "\\n")


# ---------------------------------------------------------------------------------------------
# shard keys -> export imagefolder


def _tamper_key(shards: Path, key: str) -> None:
    import h5py

    p = shards / "shard-00000.h5"
    with h5py.File(p, "r") as f:
        keys = [k.decode() for k in f["keys"][:]]
    keys[0] = key
    if "\x00" in key:  # h5py refuses NUL in variable-length strings; fixed-length bytes hold it
        replace_dataset(p, "keys", data=np.array([k.encode() for k in keys], dtype="S64"))
    else:
        replace_dataset(p, "keys", data=keys, dtype=h5py.string_dtype())
    resign(shards)


@pytest.mark.parametrize("name", ["dotdot", "leading-dotdot", "absolute", "dot", "empty-part", "backslash",
                                  "nul", "newline", "bidi"])
def test_export_imagefolder_never_writes_outside_out(shards, tmp_path, name):
    key = BAD_PATHS[name]
    if name == "absolute":
        key = str(tmp_path / "abs-escape.png")
    _tamper_key(shards, key)
    sentinel = tmp_path / "escape.png"
    sentinel.write_bytes(b"sentinel")
    before = snapshot(tmp_path, skip=(tmp_path / "if",))
    with pytest.raises(DataError) as e:
        export(shards, tmp_path / "if", "imagefolder", progress=False)
    assert_one_line(str(e.value), "shard-00000.h5", "keys[0]")
    assert snapshot(tmp_path, skip=(tmp_path / "if",)) == before  # nothing outside --out changed
    assert sentinel.read_bytes() == b"sentinel" and not (tmp_path / "abs-escape.png").exists()
    assert not (tmp_path / "if").exists() or not any((tmp_path / "if").rglob("*.png"))
    with pytest.raises(DataError, match="keys"):  # the Dataset refuses to hand the key out too
        ShardDataset(shards).key(0)
    problems = verify(shards)
    assert any("shard-00000.h5: keys[0]" in p for p in problems) and all("\n" not in p for p in problems)


def test_cli_export_prints_one_line_for_a_forging_key(shards, tmp_path):
    _tamper_key(shards, BAD_PATHS["newline"])
    r = CliRunner().invoke(cli, ["export", str(shards), "--format", "imagefolder", "--out", str(tmp_path / "if"),
                                 "--quiet"])
    lines = r.output.splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert "'000000/x.png\\nError: forged second line'" in lines[0]  # shown escaped, inside quotes
    r = CliRunner().invoke(cli, ["verify", str(shards)])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and lines and all(x.startswith("FAIL ") for x in lines), r.output


def test_export_refuses_symlinked_class_folder_in_out(shards, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "if"
    out.mkdir()
    (out / "000000").symlink_to(outside)  # --overwrite into a folder someone prepared
    with pytest.raises(DataError) as e:
        export(shards, out, "imagefolder", overwrite=True, progress=False)
    assert_one_line(str(e.value), "keys[0]", "outside")
    assert not any(outside.iterdir())


# ---------------------------------------------------------------------------------------------
# index.json `file` entries


@pytest.mark.parametrize("how", ["dotdot", "absolute", "subfolder", "symlink"])
def test_index_file_entries_stay_in_the_folder(shards, tmp_path, how):
    other = tmp_path / "other.h5"
    shutil.copy(shards / "shard-00001.h5", other)  # a valid shard: without the check it is read
    idx = json.loads((shards / "index.json").read_text())
    if how == "symlink":
        (shards / "shard-00001.h5").unlink()
        (shards / "shard-00001.h5").symlink_to(other)
    else:
        sub = shards / "sub"
        sub.mkdir()
        shutil.copy(other, sub / "shard-00001.h5")
        idx["shards"][1]["file"] = {"dotdot": "../other.h5", "absolute": str(other),
                                    "subfolder": "sub/shard-00001.h5"}[how]
        (shards / "index.json").write_text(json.dumps(idx))
    with pytest.raises(DataError) as e:
        ShardDataset(shards)
    assert_one_line(str(e.value), "index.json", "shards[1] 'file'")
    before = snapshot(tmp_path)
    with pytest.raises(DataError):
        export(shards, tmp_path / "rec", "recordio", progress=False)
    assert snapshot(tmp_path) == before and not (tmp_path / "rec").exists()
    problems = verify(shards)
    assert any("shards[1] 'file'" in p for p in problems), problems


# ---------------------------------------------------------------------------------------------
# HDF5 layouts that pull data from elsewhere


def _secret(tmp_path, n=5) -> tuple[Path, bytes]:
    data = bytes(range(256)) * (n * 8 * 8 * 3 // 256 + 1)
    data = data[: n * 8 * 8 * 3]
    p = tmp_path / "secret.bin"
    p.write_bytes(data)
    return p, data


def _external(shards, tmp_path):
    secret, data = _secret(tmp_path)
    replace_dataset(shards / "shard-00000.h5", "images", shape=(5, 8, 8, 3), dtype=np.uint8,
                    external=[(str(secret), 0, len(data))])
    return data


def _virtual(shards, tmp_path):
    import h5py

    secret, data = _secret(tmp_path)
    with h5py.File(tmp_path / "src.h5", "w") as f:
        f.create_dataset("data", data=np.frombuffer(data, np.uint8).reshape(5, 8, 8, 3))
    layout = h5py.VirtualLayout(shape=(5, 8, 8, 3), dtype=np.uint8)
    layout[:] = h5py.VirtualSource(str(tmp_path / "src.h5"), "data", shape=(5, 8, 8, 3))
    with h5py.File(shards / "shard-00000.h5", "a") as f:
        del f["images"]
        f.create_virtual_dataset("images", layout)
    return data


def _extlink(shards, tmp_path):
    import h5py

    secret, data = _secret(tmp_path)
    with h5py.File(tmp_path / "src.h5", "w") as f:
        f.create_dataset("images", data=np.frombuffer(data, np.uint8).reshape(5, 8, 8, 3))
    with h5py.File(shards / "shard-00000.h5", "a") as f:
        del f["images"]
        f["images"] = h5py.ExternalLink(str(tmp_path / "src.h5"), "/images")
    return data


@pytest.mark.parametrize("attack,word", [(_external, "external"), (_virtual, "virtual"), (_extlink, "ExternalLink")])
def test_hdf5_data_from_other_files_is_refused(shards, tmp_path, attack, word):
    import h5py

    data = attack(shards, tmp_path)
    resign(shards)
    with h5py.File(shards / "shard-00000.h5", "r") as f:  # the attack works at the HDF5 level
        assert f["images"][0].tobytes() == data[: 8 * 8 * 3]
    for out, fmt in ((tmp_path / "if", "imagefolder"), (tmp_path / "rec", "recordio")):
        with pytest.raises(DataError) as e:
            export(shards, out, fmt, progress=False)
        assert_one_line(str(e.value), "shard-00000.h5", word)
        assert not out.exists()  # refused before --out is created: no pixels copied anywhere
    with pytest.raises(DataError, match=word):
        ShardDataset(shards)
    problems = verify(shards)
    assert any(p.startswith("shard-00000.h5:") and word in p for p in problems), problems
    r = CliRunner().invoke(cli, ["verify", str(shards)])
    assert r.exit_code == 1 and word in r.output


def test_audit_image_set_goes_through_the_same_checks(shards, tmp_path):
    from synthgen.audit.embed import ImageSet

    _external(shards, tmp_path)
    resign(shards)
    with pytest.raises(DataError, match="external"):
        ImageSet(shards)


# ---------------------------------------------------------------------------------------------
# missing shards, read-only and unusable --out


def test_missing_shard_is_one_line_for_export_dataset_and_audit(shards, tmp_path):
    from synthgen.audit.embed import ImageSet

    (shards / "shard-00001.h5").unlink()
    for call in (lambda: export(shards, tmp_path / "rec", "recordio", progress=False),
                 lambda: ShardDataset(shards), lambda: ImageSet(shards)):
        with pytest.raises(DataError) as e:
            call()
        assert_one_line(str(e.value), "shard-00001.h5: missing", "rerun `synthgen shard`")
    assert not (tmp_path / "rec").exists()
    r = CliRunner().invoke(cli, ["export", str(shards), "--format", "recordio", "--out", str(tmp_path / "rec")])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "shard-00001.h5" in r.output


def test_malformed_index_is_one_line(shards):
    ip = shards / "index.json"
    good = json.loads(ip.read_text())
    for bad in ("{not json", "[]", json.dumps({**good, "shards": "x"}), json.dumps({**good, "image_size": "big"}),
                json.dumps({**good, "shards": [{**good["shards"][0], "count": "5"}] + good["shards"][1:]})):
        ip.write_text(bad)
        with pytest.raises(DataError) as e:
            ShardDataset(shards)
        assert_one_line(str(e.value), "index.json")
        assert verify(shards) and all("\n" not in p for p in verify(shards))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; see the ENOTDIR case below")
def test_export_into_read_only_folder(shards, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = CliRunner().invoke(cli, ["export", str(shards), "--format", "recordio", "--out", str(ro / "x")])
        assert r.exit_code == 2 and r.output.count("Error:") == 1 and "--out" in r.output, r.output
    finally:
        ro.chmod(0o755)


def test_export_into_unusable_out(shards, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError) as e:
        export(shards, tmp_path / "afile" / "out", "recordio", progress=False)
    assert_one_line(str(e.value), "--out", "cannot write")
    with pytest.raises(UsageError, match="not a directory"):
        export(shards, tmp_path / "afile", "recordio", progress=False)


def test_a_key_colliding_with_a_folder_is_one_line(shards, tmp_path):
    import h5py

    p = shards / "shard-00000.h5"
    with h5py.File(p, "r") as f:
        keys = [k.decode() for k in f["keys"][:]]
    keys[1] = keys[0] + "/x.png"  # "000000/000000.png" is a file, and now also a folder
    replace_dataset(p, "keys", data=keys, dtype=h5py.string_dtype())
    resign(shards)
    with pytest.raises(DataError) as e:
        export(shards, tmp_path / "if", "imagefolder", progress=False)
    assert_one_line(str(e.value), "cannot write")


def test_align_journal_paths_stay_in_out(tmp_path):
    from synthgen.alignment.stage import _read_journal

    j = tmp_path / "aligned" / ".align-journal.jsonl"
    j.parent.mkdir()
    j.write_text(json.dumps({"source": "a/1.png", "status": "ok", "path": "a/1.png"}) + "\n"
                 + json.dumps({"source": "a/2.png", "status": "ok", "path": "../../etc/passwd"}) + "\n")
    with pytest.raises(DataError) as e:
        _read_journal(j)
    assert_one_line(str(e.value), ".align-journal.jsonl", "line 2 'path'", "delete .align-journal.jsonl")


def test_symlinked_shard_in_out_is_replaced_by_a_real_one(shards, tree, tmp_path):
    other = tmp_path / "other.h5"
    shutil.move(shards / "shard-00001.h5", other)
    (shards / "shard-00001.h5").symlink_to(other)  # same bytes, so the index checksum matches
    make_shards(tree, shards)
    assert not (shards / "shard-00001.h5").is_symlink() and verify(shards) == []


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_png_shard_declaring_a_huge_image_is_refused_before_decoding(tree, tmp_path):
    import io

    import h5py
    from PIL import Image

    make_shards(tree, tmp_path / "s", encoding="png")
    buf = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buf, format="PNG", optimize=True)  # 432 MB as RGB, tiny file
    bomb = np.frombuffer(buf.getvalue(), np.uint8)
    assert len(bomb) < 1_000_000
    with h5py.File(tmp_path / "s" / "shard-00000.h5", "a") as f:
        f["images"][0] = bomb
    resign(tmp_path / "s")
    with pytest.raises(DataError) as e:
        ShardDataset(tmp_path / "s")[0]
    assert_one_line(str(e.value), "shard-00000.h5: image 0", "12000x12000")
    problems = verify(tmp_path / "s")
    assert any("image 0 is not a readable png" in p and "12000x12000" in p for p in problems), problems


def test_raw_images_of_the_wrong_dtype_or_shape_are_refused(shards):
    replace_dataset(shards / "shard-00000.h5", "images", data=np.zeros((5, 8, 8, 3), np.float64),
                    chunks=(1, 8, 8, 3))
    resign(shards)
    with pytest.raises(DataError) as e:
        ShardDataset(shards)
    assert_one_line(str(e.value), "shard-00000.h5", "float64")


@pytest.mark.parametrize("fmt", ["recordio", "imagefolder"])
def test_planted_temp_symlink_in_a_reused_out_is_not_followed(shards, tmp_path, fmt):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    where = out if fmt == "recordio" else out / "000000"
    where.mkdir(parents=True)
    name = "train.rec" if fmt == "recordio" else "000000.png"
    (where / f".{name}.tmp-{os.getpid()}").symlink_to(victim)  # temp names are predictable
    export(shards, out, fmt, overwrite=True, progress=False)
    assert victim.read_bytes() == b"precious" and (where / name).is_file() and not (where / name).is_symlink()
