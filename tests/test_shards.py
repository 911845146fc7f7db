"""Shards: round trips (Dataset, RecordIO, ImageFolder), resume, verify, bad input."""

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from synthgen.cli.main import cli
from synthgen.data import ShardDataset, TwoViewShardDataset, USynthAugment
from synthgen.errors import DataError, UsageError
from synthgen.export import export
from synthgen.generation import GenerateConfig, generate
from synthgen.shards import ShardConfig, shard, verify


def pngs(root: Path) -> dict:
    return {str(p.relative_to(root)): np.asarray(Image.open(p)) for p in sorted(root.rglob("*.png"))}


def test_folder_to_shards_to_dataset_pixels_equal(gen_dir, tmp_path):
    idx = shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "s"), shard_size=7, progress=False))
    assert idx["total"] == 24 and len(idx["shards"]) == 4 and idx["items_per_class"] == [6, 6, 6, 6]
    assert idx["classes"] == ["000000", "000001", "000002", "000003"]
    assert verify(tmp_path / "s") == []
    ds = ShardDataset(tmp_path / "s", output="numpy")
    ref = pngs(gen_dir)
    assert len(ds) == 24
    for i in range(len(ds)):
        img, label = ds[i]
        np.testing.assert_array_equal(img, ref[ds.key(i)])
        assert label == int(ds.key(i).split("/")[0])
    import h5py

    with h5py.File(tmp_path / "s" / "shard-00000.h5") as f:
        assert f.attrs["schema_version"] == 1 and f.attrs["colour_order"] == "RGB"
        assert "seed" in f and "psi" in f and f.attrs["source_config_hash"]


@pytest.mark.parametrize("encoding", ["png", "jpeg"])
def test_encoded_shards(gen_dir, tmp_path, encoding):
    shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "s"), encoding=encoding, progress=False))
    assert verify(tmp_path / "s") == []
    ds = ShardDataset(tmp_path / "s", output="numpy")
    ref = pngs(gen_dir)
    img, _ = ds[5]
    diff = np.abs(img.astype(int) - ref[ds.key(5)])
    if encoding == "png":
        assert diff.max() == 0
    else:  # 16x16 coloured noise is JPEG's worst case; still close on average
        assert 0 < diff.mean() < 12


def test_deterministic_and_rerun_changes_nothing(gen_dir, tmp_path):
    a = shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "a"), shard_size=10, progress=False))
    b = shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "b"), shard_size=10, progress=False))
    assert [e["first_key"] for e in a["shards"]] == [e["first_key"] for e in b["shards"]]
    import h5py

    for e in a["shards"]:
        with h5py.File(tmp_path / "a" / e["file"]) as fa, h5py.File(tmp_path / "b" / e["file"]) as fb:
            np.testing.assert_array_equal(fa["images"][:], fb["images"][:])
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}
    shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "a"), shard_size=10, progress=False))
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()} == before


def test_interrupted_run_resumes(gen_dir, tmp_path, monkeypatch):
    import synthgen.shards.writer as sh

    real = sh.write_shard
    calls = {"n": 0}

    def boom(path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(path, *a, **k)

    monkeypatch.setattr(sh, "write_shard", boom)
    with pytest.raises(KeyboardInterrupt):
        shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "s"), shard_size=5, progress=False))
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    # no index, no temp file; the journal holds the checksum of each completed shard
    assert names == [".shard-journal.jsonl", "shard-00000.h5", "shard-00001.h5"]
    from synthgen.fsutil import sha256_file

    journal = [json.loads(x) for x in (tmp_path / "s" / ".shard-journal.jsonl").read_text().splitlines()]
    assert [(j["file"], j["sha256"]) for j in journal] == [(n, sha256_file(tmp_path / "s" / n)) for n in names[1:]]
    mt = (tmp_path / "s" / "shard-00000.h5").stat().st_mtime_ns
    monkeypatch.setattr(sh, "write_shard", real)
    shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "s"), shard_size=5, progress=False))
    assert (tmp_path / "s" / "shard-00000.h5").stat().st_mtime_ns == mt
    assert verify(tmp_path / "s") == [] and len(ShardDataset(tmp_path / "s")) == 24
    assert not (tmp_path / "s" / ".shard-journal.jsonl").exists()  # index.json took over


def test_verify_catches_tampering(gen_dir, tmp_path):
    shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "s"), shard_size=10, progress=False))
    p = tmp_path / "s" / "shard-00001.h5"
    data = bytearray(p.read_bytes())
    data[-100] ^= 0xFF
    p.write_bytes(bytes(data))
    problems = verify(tmp_path / "s")
    assert any("shard-00001.h5: checksum mismatch" in x for x in problems)
    p.write_bytes(bytes(data[: len(data) // 2]))
    problems = verify(tmp_path / "s")
    assert any("shard-00001.h5" in x and ("unreadable" in x or "size" in x) for x in problems)
    r = CliRunner().invoke(cli, ["verify", str(tmp_path / "s")])
    assert r.exit_code == 1 and "shard-00001.h5" in r.output


def test_verify_label_out_of_range_and_duplicate_key(gen_dir, tmp_path):
    import h5py

    from synthgen.fsutil import sha256_file

    shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "s"), shard_size=12, progress=False))
    p = tmp_path / "s" / "shard-00001.h5"
    with h5py.File(p, "a") as f:
        f["labels"][0] = 99
        f["keys"][1] = f["keys"][0]
    idx = json.loads((tmp_path / "s" / "index.json").read_text())  # re-sign so only content checks fire
    idx["shards"][1].update(sha256=sha256_file(p), bytes=p.stat().st_size)
    (tmp_path / "s" / "index.json").write_text(json.dumps(idx))
    problems = verify(tmp_path / "s")
    assert any("label out of range" in x for x in problems)
    assert any("duplicate key" in x for x in problems)


def read_recordio(rec: Path, idx: Path):
    """Independent reader written from the format description (not from synthgen.export)."""
    data = rec.read_bytes()
    offsets = {}
    for line in idx.read_text().splitlines():
        k, v = line.split("\t")
        offsets[int(k)] = int(v)
    out = {}
    for k, off in offsets.items():
        magic, lrec = struct.unpack_from("<II", data, off)
        assert magic == 0xCED7230A
        length = lrec & ((1 << 29) - 1)
        payload = data[off + 8 : off + 8 + length]
        flag, label, id1, id2 = struct.unpack_from("<IfQQ", payload, 0)
        body = payload[24:]
        if flag > 0:
            label = np.frombuffer(body[: 4 * flag], np.float32)
            body = body[4 * flag :]
        out[k] = (flag, label, id1, body)
    return out


@pytest.mark.parametrize("shuffle", [False, True])
def test_recordio_export_parses_back(gen_dir, tmp_path, shuffle):
    shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "s"), progress=False))
    r = CliRunner().invoke(cli, ["export", str(tmp_path / "s"), "--format", "recordio", "--out", str(tmp_path / "rec"),
                                 "--quiet"] + (["--shuffle", "--seed", "3"] if shuffle else []))
    assert r.exit_code == 0, r.output
    recs = read_recordio(tmp_path / "rec" / "train.rec", tmp_path / "rec" / "train.idx")
    flag, label, _, _ = recs[0]
    assert flag == 2 and int(label[0]) == 25
    assert (tmp_path / "rec" / "property").read_text().strip() == "4,16,16"
    ds = ShardDataset(tmp_path / "s", output="numpy")
    def jpeg_roundtrip(a):  # what a JPEG of these pixels decodes to (PIL, quality 95)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=95)
        return np.asarray(Image.open(buf).convert("RGB")).astype(int)

    ref = {int(l): [] for l in range(4)}
    for i in range(len(ds)):
        img, l = ds[i]
        ref[l].append(jpeg_roundtrip(img))
    labels = []
    for k in range(1, int(label[0])):
        f, lab, _, body = recs[k]
        assert f == 0
        img = np.asarray(Image.open(io.BytesIO(body)).convert("RGB")).astype(int)
        assert min(np.abs(img - r).max() for r in ref[int(lab)]) == 0  # an image of that class, JPEG'd
        labels.append(int(lab))
    assert sorted(labels) == sorted(ds.targets)
    assert (labels != sorted(labels)) == shuffle
    if not shuffle:
        f, rng, _, _ = recs[25]  # identity record of class 0: image ids [1, 7)
        assert f == 2 and list(rng) == [1, 7]


def test_imagefolder_export(gen_dir, tmp_path):
    shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "s"), progress=False))
    export(tmp_path / "s", tmp_path / "if", "imagefolder", progress=False)
    assert pngs(tmp_path / "if").keys() == pngs(gen_dir).keys()
    for k, v in pngs(tmp_path / "if").items():
        np.testing.assert_array_equal(v, pngs(gen_dir)[k])
    import torchvision

    tv = torchvision.datasets.ImageFolder(str(tmp_path / "if"))
    assert len(tv) == 24 and len(tv.classes) == 4


def test_subsets_and_dataloader_workers(gen_dir, tmp_path):
    shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "s"), shard_size=5, progress=False))
    ds = ShardDataset(tmp_path / "s", max_per_class=2, output="tensor")
    assert len(ds) == 8 and ds.targets == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [ds.key(i) for i in range(2)] == ["000000/000000.png", "000000/000001.png"]
    dl = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    xs, ys = zip(*dl)
    assert torch.cat(ys).tolist() == ds.targets and torch.cat(xs).shape == (8, 3, 16, 16)


def test_two_view_dataset(tmp_path, uncond_ckpt):
    generate(GenerateConfig(network=str(uncond_ckpt), out=str(tmp_path / "u"), count=3, views=2, progress=False))
    shard(ShardConfig(inp=str(tmp_path / "u"), out=str(tmp_path / "s"), progress=False))
    import torchvision.transforms as T

    ds = TwoViewShardDataset(tmp_path / "s", transform=T.Compose([USynthAugment(), T.PILToTensor()]))
    assert len(ds) == 3
    torch.manual_seed(0)
    a, b = ds[0]
    assert a.shape == b.shape == (3, 16, 16) and not torch.equal(a, b)


def test_bad_inputs(tmp_path, gen_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        shard(ShardConfig(inp=str(tmp_path / "empty"), out=str(tmp_path / "o"), progress=False))
    mixed = tmp_path / "mixed"
    (mixed / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(mixed / "a" / "1.png")
    Image.new("RGB", (9, 8)).save(mixed / "a" / "2.png")
    with pytest.raises(DataError, match="2.png: image is 9x8, but the set is 8x8"):
        shard(ShardConfig(inp=str(mixed), out=str(tmp_path / "o2"), progress=False))
    assert not (tmp_path / "o2").exists()  # refused from the headers, before --out exists
    (mixed / "a" / "2.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="2.png: UnidentifiedImageError.*fix or remove the file"):
        shard(ShardConfig(inp=str(mixed), out=str(tmp_path / "o2"), progress=False))
    assert not (tmp_path / "o2").exists()
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(gen_dir, broken)
    (broken / "000001" / "000002.png").unlink()
    with pytest.raises(DataError, match="missing.*000001/000002.png"):
        shard(ShardConfig(inp=str(broken), out=str(tmp_path / "o3"), progress=False))
    shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "o4"), progress=False))
    with pytest.raises(UsageError, match="--overwrite"):
        shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "o4"), shard_size=3, progress=False))



def test_direct_chunk_read_equals_h5py_read(gen_dir, tmp_path):
    import h5py

    shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "s"), shard_size=7, progress=False))
    ds = ShardDataset(tmp_path / "s", output="numpy")
    with h5py.File(tmp_path / "s" / "shard-00002.h5") as f:
        np.testing.assert_array_equal(ds[16][0], f["images"][2])  # row 2 of the third shard


def test_distributed_sampler_splits_the_dataset(gen_dir, tmp_path):
    from torch.utils.data import DataLoader, DistributedSampler

    shard(ShardConfig(inp=str(gen_dir), out=str(tmp_path / "s"), shard_size=5, progress=False))
    ds = ShardDataset(tmp_path / "s", output="tensor")
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        for _, y in DataLoader(ds, batch_size=5, sampler=sampler, num_workers=1):
            seen.extend(y.tolist())
    assert sorted(seen) == sorted(ds.targets)
