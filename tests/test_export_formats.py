"""The webdataset and parquet exporters: read back (tarfile + a DALI-rules index parser, pyarrow,
and the webdataset / datasets libraries when installed), byte determinism, option errors,
hostile --out folders."""

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from synthgen.cli.main import cli
from synthgen.data import _Shards
from synthgen.errors import DataError, UsageError
from synthgen.export import export
from synthgen.shards import ShardConfig, shard


@pytest.fixture(scope="module")
def shards(gen_dir, tmp_path_factory):
    """24 images (4 classes x 6, 16x16) in 4 shards, from the generated tree test_shards uses."""
    out = tmp_path_factory.mktemp("fmt") / "s"
    shard(ShardConfig(inp=str(gen_dir), out=str(out), shard_size=7, progress=False))
    return out


@pytest.fixture(scope="module")
def ref(shards):
    """[(key, label, pixels)] in shard order."""
    s = _Shards(shards)
    return [(s.key(i), int(s.labels[i]), s.image(i)) for i in range(len(s.labels))], s.index["classes"]


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_line(e, *must):
    msg = str(e.value)
    assert "\n" not in msg and all(m in msg for m in must), msg


# ---------------------------------------------------------------------------------------------
# webdataset


def dali_index(path: Path) -> list[list[tuple]]:
    """Parse a webdataset index by the rules of DALI's reader (ParseIndexFile / ParseSampleDesc in
    dali/operators/reader/loader/webdataset_loader.cc, versions in webdataset_loader.h): line 1 is
    "<version> <count>", version v1.1 or v1.2, count > 0; then `count` lines, each a whitespace-
    separated run of components "<ext> <offset> <size>" (v1.1) or "<ext> <offset> <size>
    <filename>" (v1.2), at least one per line, every offset a multiple of the 512-byte tar block.
    Returns, per sample, [(ext, offset, size, filename)]."""
    lines = path.read_text("ascii").split("\n")
    head = lines[0].split()
    assert head[0] in ("v1.1", "v1.2"), head
    count = int(head[1])
    assert count > 0
    width = 4 if head[0] == "v1.2" else 3
    samples = []
    for line in lines[1:1 + count]:
        tok = line.split()
        assert tok and len(tok) % width == 0, line
        comps = []
        for j in range(0, len(tok), width):
            ext, off, size = tok[j], int(tok[j + 1]), int(tok[j + 2])
            assert off % 512 == 0, line
            comps.append((ext, off, size, tok[j + 3] if width == 4 else None))
        samples.append(comps)
    assert len(samples) == count and lines[1 + count:] == [""]  # nothing after the last sample
    return samples


def read_tars(out: Path):
    """[(basename, {ext: bytes})] over every tar in name order, checking member attributes and
    that the .idx next to each tar points at exactly the member data."""
    got = []
    for tp in sorted(out.glob("shard-*.tar")):
        raw = tp.read_bytes()
        with tarfile.open(tp) as tar:
            members = tar.getmembers()
            data = {m.name: tar.extractfile(m).read() for m in members}
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) == (0, 0, 0, "", "", 0o644, tarfile.REGTYPE)
            assert raw[m.offset + 257:m.offset + 265] == b"ustar\x0000"  # POSIX ustar headers
        idx = dali_index(tp.with_suffix(".idx"))
        names = [m.name for m in members]
        assert [c[3] for s in idx for c in s] == names
        for comps in idx:
            assert len({c[3].split(".", 1)[0] for c in comps}) == 1  # one sample per line
            for ext, off, size, name in comps:
                assert name.split(".", 1)[1] == ext and raw[off:off + size] == data[name] and off < len(raw)
        for comps in idx:
            got.append((comps[0][3].split(".", 1)[0], {c[0]: data[c[3]] for c in comps}))
    return got


def test_webdataset_round_trip_and_dali_index(shards, ref, tmp_path):
    items, classes = ref
    r = export(shards, tmp_path / "w", "webdataset", samples_per_file=10, progress=False)
    assert r["images"] == 24 and r["tars"] == 3
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == [
        f"shard-{t:06d}.{e}" for t in range(3) for e in ("idx", "tar")]
    got = read_tars(tmp_path / "w")
    assert [b for b, _ in got] == [f"{i:09d}" for i in range(24)]
    assert [len(dali_index(p)) for p in sorted((tmp_path / "w").glob("*.idx"))] == [10, 10, 4]
    for (base, m), (key, label, img) in zip(got, items):
        assert sorted(m) == ["cls", "json", "png"]
        assert m["cls"] == str(label).encode()
        assert json.loads(m["json"]) == {"key": key, "label": label, "class": classes[label]}
        np.testing.assert_array_equal(pixels(m["png"]), img)


def test_webdataset_bytes_are_deterministic_and_shuffle_is_seeded(shards, ref, tmp_path):
    a = export(shards, tmp_path / "a", "webdataset", samples_per_file=10, progress=False)
    export(shards, tmp_path / "b", "webdataset", samples_per_file=10, progress=False)
    assert files(tmp_path / "a") == files(tmp_path / "b") and a["tars"] == 3
    export(shards, tmp_path / "s1", "webdataset", shuffle=True, seed=3, progress=False)
    export(shards, tmp_path / "s2", "webdataset", shuffle=True, seed=3, progress=False)
    assert files(tmp_path / "s1") == files(tmp_path / "s2")
    keys = [json.loads(m["json"])["key"] for _, m in read_tars(tmp_path / "s1")]
    assert sorted(keys) == [k for k, _, _ in ref[0]] and keys != sorted(keys)


def test_webdataset_library_reads_the_tars(shards, ref, tmp_path):
    wds = pytest.importorskip("webdataset")
    export(shards, tmp_path / "w", "webdataset", samples_per_file=10, progress=False)
    urls = [str(p) for p in sorted((tmp_path / "w").glob("*.tar"))]
    ds = wds.WebDataset(urls, shardshuffle=False).decode("rgb8").to_tuple("png", "cls", "json")
    got = list(ds)
    assert len(got) == 24
    for (img, cls, meta), (key, label, ref_img) in zip(got, ref[0]):
        np.testing.assert_array_equal(img, ref_img)
        assert cls == label and meta["key"] == key


# ---------------------------------------------------------------------------------------------
# parquet


def test_parquet_round_trip_columns_and_hf_metadata(shards, ref, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    items, classes = ref
    r = export(shards, tmp_path / "p", "parquet", samples_per_file=10, progress=False)
    assert r["files"] == 3 and sorted(p.relative_to(tmp_path / "p").as_posix() for p in (tmp_path / "p").rglob("*")) == [
        "data", "data/train-00000-of-00003.parquet", "data/train-00001-of-00003.parquet",
        "data/train-00002-of-00003.parquet"]
    rows = []
    for p in sorted((tmp_path / "p" / "data").iterdir()):
        t = pq.read_table(p)
        assert t.schema.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        assert t.schema.field("label").type == pa.int64() and t.schema.field("key").type == pa.string()
        assert t.schema.names == ["image", "label", "key"]
        hf = json.loads(t.schema.metadata[b"huggingface"])
        assert hf == {"info": {"features": {"image": {"_type": "Image"},
                                            "label": {"_type": "ClassLabel", "names": classes},
                                            "key": {"dtype": "string", "_type": "Value"}}}}
        rows += t.to_pylist()
    assert len(rows) == 24
    for row, (key, label, img) in zip(rows, items):
        assert row["key"] == key == row["image"]["path"] and row["label"] == label
        np.testing.assert_array_equal(pixels(row["image"]["bytes"]), img)


def test_parquet_bytes_are_deterministic(shards, tmp_path):
    export(shards, tmp_path / "a", "parquet", samples_per_file=10, progress=False)
    export(shards, tmp_path / "b", "parquet", samples_per_file=10, progress=False)
    assert files(tmp_path / "a") == files(tmp_path / "b")


def test_parquet_loads_with_hugging_face_datasets(shards, ref, tmp_path):
    datasets = pytest.importorskip("datasets")
    items, classes = ref
    export(shards, tmp_path / "p", "parquet", samples_per_file=10, progress=False)
    ds = datasets.load_dataset("parquet", data_dir=str(tmp_path / "p"), split="train", cache_dir=str(tmp_path / "c"))
    assert len(ds) == 24 and ds.features["label"].names == classes
    assert isinstance(ds.features["image"], datasets.Image)
    for row, (key, label, img) in zip(ds, items):
        assert isinstance(row["image"], Image.Image) and row["key"] == key and row["label"] == label
        np.testing.assert_array_equal(np.asarray(row["image"].convert("RGB")), img)


def test_parquet_without_pyarrow_is_one_line(shards, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    with pytest.raises(UsageError) as e:
        export(shards, tmp_path / "p", "parquet", progress=False)
    one_line(e, "needs pyarrow", "pip install 'synthgen[parquet]'")
    assert not (tmp_path / "p").exists()


# ---------------------------------------------------------------------------------------------
# both: options, stale files, hostile --out, the command line


def test_jpg_image_format_in_both(shards, ref, tmp_path):
    import pyarrow.parquet as pq

    export(shards, tmp_path / "w", "webdataset", image_format="jpg", jpeg_quality=90, progress=False)
    export(shards, tmp_path / "p", "parquet", image_format="jpg", jpeg_quality=90, progress=False)
    tars = read_tars(tmp_path / "w")
    rows = pq.read_table(tmp_path / "p" / "data").to_pylist()
    for (_, m), row, (_, _, img) in zip(tars, rows, ref[0]):
        assert sorted(m) == ["cls", "jpg", "json"] and m["jpg"][:3] == row["image"]["bytes"][:3] == b"\xff\xd8\xff"
        assert m["jpg"] == row["image"]["bytes"]  # the same encoder, the same bytes
        assert np.abs(pixels(m["jpg"]).astype(int) - img).mean() < 20  # 16 px noise: JPEG's worst case


@pytest.mark.parametrize("fmt", ["recordio", "imagefolder"])
def test_samples_per_file_is_refused_where_it_does_not_apply(shards, tmp_path, fmt):
    with pytest.raises(UsageError) as e:
        export(shards, tmp_path / "o", fmt, samples_per_file=5, progress=False)
    one_line(e, "--samples-per-file", fmt)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_option_errors_are_one_line_before_any_work(shards, tmp_path, fmt):
    for kw, flag in (({"samples_per_file": 0}, "--samples-per-file"), ({"samples_per_file": 2.5}, "--samples-per-file"),
                     ({"image_format": "gif"}, "--image-format")):
        with pytest.raises(UsageError) as e:
            export(shards, tmp_path / "o", fmt, progress=False, **kw)
        one_line(e, flag)
    assert not (tmp_path / "o").exists()
    r = CliRunner().invoke(cli, ["export", str(shards), "--format", "imagefolder", "--out", str(tmp_path / "o"),
                                 "--samples-per-file", "5"])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "--samples-per-file" in r.output, r.output


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_cli_export_and_stale_files_of_a_larger_export_go(shards, ref, tmp_path, fmt):
    out = tmp_path / "o"
    r = CliRunner().invoke(cli, ["export", str(shards), "--format", fmt, "--out", str(out), "--samples-per-file", "5",
                                 "--quiet"])
    assert r.exit_code == 0, r.output
    assert len(list(out.rglob("*.tar" if fmt == "webdataset" else "*.parquet"))) == 5
    (out / "notes.txt").write_text("mine")
    r = CliRunner().invoke(cli, ["export", str(shards), "--format", fmt, "--out", str(out), "--overwrite"])
    assert r.exit_code == 0 and f"exported 24 images, 4 classes as {fmt}" in r.output, r.output
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert left == (["notes.txt", "shard-000000.idx", "shard-000000.tar"] if fmt == "webdataset"
                    else ["data/train-00000-of-00001.parquet", "notes.txt"])


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_planted_symlinks_in_a_reused_out_are_not_followed(shards, tmp_path, fmt):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    where = out if fmt == "webdataset" else out / "data"
    where.mkdir(parents=True)
    names = ["shard-000000.tar", "shard-000000.idx"] if fmt == "webdataset" else ["train-00000-of-00001.parquet"]
    for name in names:  # temp names are predictable; the final names may be links too
        (where / f".{name}.tmp-{os.getpid()}").symlink_to(victim)
        (where / name).symlink_to(victim)
    export(shards, out, fmt, overwrite=True, progress=False)
    assert victim.read_bytes() == b"precious"
    for name in names:
        assert (where / name).is_file() and not (where / name).is_symlink()


def test_recordio_small_files_do_not_follow_planted_temp_symlinks(shards, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("train.idx", "property"):  # written by atomic_write_text, not the train.rec path
        (out / f".{name}.tmp-{os.getpid()}").symlink_to(victim)
    export(shards, out, "recordio", overwrite=True, progress=False)
    assert victim.read_bytes() == b"precious" and (out / "property").read_text() == "4,16,16\n"


def test_parquet_refuses_a_symlinked_data_folder(shards, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "data").symlink_to(outside)
    with pytest.raises(DataError) as e:
        export(shards, out, "parquet", overwrite=True, progress=False)
    one_line(e, "data", "symlink")
    assert not any(outside.iterdir())
