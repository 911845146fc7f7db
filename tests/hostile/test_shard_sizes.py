"""Declared sizes are checked against stored bytes wherever shards are read (issue 21, item 4): an
HDF5 dataset reads back at its declared shape whether or not its chunks were ever written, so a
few-kB file could make verify, export, audit and ShardDataset allocate gigabytes."""

import h5py
import numpy as np
import pytest

from hostile_shards import make_shards, make_tree, resign
from synthgen.errors import DataError


def _forge_unwritten_images(shard_path, rows_declared=None):
    """Rewrite a shard with the same labels and keys, and an `images` dataset whose chunks were never written."""
    with h5py.File(shard_path, "r") as f:
        labels, keys, shape = f["labels"][:], f["keys"][:], f["images"].shape
        attrs = dict(f.attrs)
    n = rows_declared or shape[0]
    shard_path.unlink()
    with h5py.File(shard_path, "w") as f:
        f.create_dataset("images", (n, 512, 512, 3), np.uint8, chunks=(1, 512, 512, 3))  # never written
        f.create_dataset("labels", data=labels)
        f.create_dataset("keys", data=keys)
        f.attrs.update(attrs)


def test_a_shard_with_unwritten_chunks_is_refused_everywhere_it_is_read(tmp_path):
    from synthgen.data import ShardDataset
    from synthgen.export import export
    from synthgen.shards import verify

    out = tmp_path / "s"
    make_shards(make_tree(tmp_path / "in"), out)
    shard = sorted(out.glob("shard-*.h5"))[0]
    _forge_unwritten_images(shard)
    assert shard.stat().st_size < 64_000  # declares 3.9 MB per row, stores nothing
    resign(out)
    problems = verify(out)
    assert any("chunks but 0 were written" in p for p in problems), problems
    with pytest.raises(DataError, match="chunks but 0 were written"):
        ShardDataset(out)[0]
    with pytest.raises(DataError, match="chunks but 0 were written"):
        export(out, tmp_path / "e", "imagefolder", progress=False)
