"""Hostile embeddings files (--matcher embeddings) and embedding caches: refused in one line,
no pickles, no reads outside the file, no allocation beyond what the file holds."""

import io
import zipfile

import h5py
import numpy as np
import pytest

from synthgen.audit.embed import load_embeddings_file
from synthgen.errors import DataError
from synthgen.safeload import load_npz_arrays


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _good(n=4, d=8):
    rng = np.random.RandomState(0)
    return dict(embeddings=rng.randn(n, d).astype(np.float32), keys=np.array([f"{i}/a.png" for i in range(n)]),
                labels=np.array([str(i) for i in range(n)]))


def test_good_npz_and_h5_load(tmp_path):
    e = load_embeddings_file(_npz(tmp_path / "e.npz", **_good()), "--synthetic")
    assert e.emb.shape == (4, 8) and e.keys[1] == "1/a.png"
    with h5py.File(tmp_path / "e.h5", "w") as f:
        for k, v in _good().items():
            f.create_dataset(k, data=v.astype("S") if v.dtype.kind == "U" else v)
    assert load_embeddings_file(tmp_path / "e.h5", "--synthetic").emb.shape == (4, 8)


def test_pickled_object_array_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    arrays = _good()
    arrays["keys"] = np.array([f"k{i}" for i in range(4)], dtype=object)
    np.savez(tmp_path / "obj.npz", **arrays)  # numpy pickles object arrays
    with pytest.raises(DataError, match="object dtype"):
        load_embeddings_file(tmp_path / "obj.npz", "--synthetic")
    assert not marker.exists()


def _npy_header(shape, dtype="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return b"\x93NUMPY\x01\x00" + buf.getvalue()[8:]


def test_declared_shape_beyond_the_data_is_refused_before_allocation(tmp_path):
    p = tmp_path / "big.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("embeddings.npy", _npy_header((1 << 30, 512)) + b"\0" * 64)  # 2 TiB declared
    with pytest.raises(DataError, match="declares .* truncated or forged"):
        load_npz_arrays(p, ["embeddings"], "embeddings")


def test_decompression_bomb_is_refused(tmp_path):
    p = tmp_path / "bomb.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("embeddings.npy", _npy_header((1 << 18, 64)) + b"\0" * ((1 << 18) * 64 * 4))  # 64 MiB of zeros
    assert p.stat().st_size < 2 << 20
    with pytest.raises(DataError, match="decompression bomb"):
        load_npz_arrays(p, ["embeddings"], "embeddings")


def test_h5_external_storage_cannot_read_local_files(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(32, dtype=np.float32).tobytes())
    p = tmp_path / "ext.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("embeddings", shape=(4, 8), dtype="<f4", external=[(str(secret), 0, 128)])
        f.create_dataset("keys", data=np.array([b"a", b"b", b"c", b"d"]))
        f.create_dataset("labels", data=np.array([b"0", b"1", b"2", b"3"]))
    with pytest.raises(DataError, match="outside the file"):
        load_embeddings_file(p, "--synthetic")


def test_missing_array_and_garbage_are_one_line(tmp_path):
    a = _good()
    del a["labels"]
    with pytest.raises(DataError, match="missing array 'labels'"):
        load_embeddings_file(_npz(tmp_path / "m.npz", **a), "--synthetic")
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError) as e:
        load_embeddings_file(tmp_path / "g.npz", "--synthetic")
    assert "\n" not in str(e.value)


def test_bzip2_members_are_refused_before_inflating(tmp_path):
    import bz2

    stream = bz2.compress(b"\0" * (16 << 20))  # 16 MiB of zeros in ~50 bytes
    p = tmp_path / "bz.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_BZIP2) as z:
        z.writestr("embeddings.npy", b"\0" * (16 << 20))
    assert p.stat().st_size < 10_000 and len(stream) < 10_000
    with pytest.raises(DataError, match="compression method 12"):
        load_npz_arrays(p, ["embeddings"], "embeddings")


def test_h5_external_links_and_shared_vlen_strings_are_refused(tmp_path):
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        for k, v in _good().items():
            f.create_dataset(k, data=v.astype("S") if v.dtype.kind == "U" else v)
    p = tmp_path / "link.h5"
    with h5py.File(p, "w") as f:
        for k in ("embeddings", "keys", "labels"):
            f[k] = h5py.ExternalLink(str(secret), "/" + k)
    with pytest.raises(DataError, match="ExternalLink"):
        load_embeddings_file(p, "--synthetic")
    # 2,000 rows that all point at one 1 MiB heap string: 2 GB if read, from a 1 MB file
    n = 2000
    q = tmp_path / "vlen.h5"
    with h5py.File(q, "w") as f:
        f.create_dataset("embeddings", data=np.zeros((n, 4), np.float32))
        f.create_dataset("labels", data=np.array([b"x"] * n))
        ds = f.create_dataset("keys", data=np.array([b"A" * (1 << 20)] + [b"b"] * (n - 1), dtype=object),
                              dtype=h5py.string_dtype("ascii"))
        offset = ds.id.get_offset()
    raw = bytearray(q.read_bytes())
    ref = raw[offset : offset + 16]  # each vlen element: length + heap id (16 bytes)
    for k in range(1, n):
        raw[offset + 16 * k : offset + 16 * k + 16] = ref
    q.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="decompression bomb"):
        load_embeddings_file(q, "--synthetic")


def test_non_utf8_keys_and_groups_are_one_line(tmp_path):
    a = _good()
    a["keys"] = np.array([b"\xff", b"b", b"c", b"d"])
    with pytest.raises(DataError, match="not UTF-8"):
        load_embeddings_file(_npz(tmp_path / "k.npz", **a), "--synthetic")
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f.create_group("embeddings")
    with pytest.raises(DataError, match="is a Group, expected a dataset"):
        load_embeddings_file(tmp_path / "g.h5", "--synthetic")
