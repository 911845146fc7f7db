"""Image sets (aligned folder trees or shard directories) and cached embeddings.

Cache: <cache_dir>/<matcher id>/<hash of the set's absolute path>.npz holding keys, a per-key
fingerprint (file size + mtime for folders, shard sha256 for shards) and the embeddings. A
second audit against the same set embeds only images that are new or changed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthgen.contract import MARKERS, identity_of
from synthgen.errors import DataError, UsageError
from synthgen.imageio import UnreadableImage, list_images, load_rgb
from synthgen.safeload import load_npz_arrays, read_h5_dataset, refusal_reason


class ImageSet:
    """Keys, identity names and pixels of an aligned folder tree or a shard directory."""

    def __init__(self, path, max_per_class: int | None = None, flag: str = "PATH"):
        self.path = Path(path)
        if (self.path / MARKERS["shard"]).is_file():
            from synthgen.data import ShardDataset

            self.ds = ShardDataset(self.path, max_per_class=max_per_class, output="numpy")
            classes = self.ds.classes
            self.keys = [self.ds.key(i) for i in range(len(self.ds))]
            self.identities = [classes[t] for t in self.ds.targets]
            sha = {e["file"]: e["sha256"] for e in self.ds.shards.index["shards"]}
            files = self.ds.shards.files
            self.fingerprints = [sha[files[self.ds.shards.locate(int(g))[0]].name][:16] for g in self.ds.ids]
            self.kind = "shards"
        elif self.path.is_dir():
            self.ds = None
            keys = [k for k in list_images(self.path) if "/" in k]
            if max_per_class is not None:
                seen: dict[str, int] = {}
                kept = []
                for k in keys:
                    ident = identity_of(k)
                    if seen.get(ident, 0) < max_per_class:
                        kept.append(k)
                        seen[ident] = seen.get(ident, 0) + 1
                keys = kept
            self.keys = keys
            self.identities = [identity_of(k) for k in keys]
            self.fingerprints = [file_fingerprint(self.path / k) for k in keys]
            self.kind = "folder"
        else:
            raise UsageError(f"{self.path} is neither an image folder tree nor a shard directory", flag)
        if not self.keys:
            raise DataError(f"{self.path}: no images in identity folders (<identity>/<file>)")

    def __len__(self):
        return len(self.keys)

    def read(self, i: int) -> np.ndarray:
        if self.ds is not None:
            return self.ds[i][0]
        return load_rgb(self.path / self.keys[i])


def pixels_digest(images: ImageSet, progress: bool = False) -> str:
    """sha256 over every image of the set, in key order: key, height, width, then its RGB bytes.
    The same pixels give the same digest whether they sit in a folder tree or in shards (the
    release binds what its final audit embedded to what it released with it)."""
    from tqdm import tqdm

    h = hashlib.sha256(b"synthgen-pixels-v1")
    order = sorted(range(len(images.keys)), key=lambda i: images.keys[i])
    for i in tqdm(order, unit="img", desc="pixel digest", disable=not progress, dynamic_ncols=True):
        img = np.ascontiguousarray(images.read(i), np.uint8)
        key = images.keys[i].encode("utf-8")
        h.update(len(key).to_bytes(4, "little") + key + img.shape[0].to_bytes(4, "little")
                 + img.shape[1].to_bytes(4, "little"))
        h.update(img.tobytes())
    return h.hexdigest()


@dataclass
class Embedded:
    keys: list
    identities: list
    emb: np.ndarray  # float32 [N, D], L2-normalised
    unreadable: list  # keys that could not be read


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def file_fingerprint(path) -> str:
    """A folder image's cache fingerprint: size and mtime (a changed file is embedded again)."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def cache_file(cache_dir, matcher_id: str, set_path) -> Path:
    """Where the embeddings of one image set (by its absolute path) and matcher are cached."""
    return Path(cache_dir) / matcher_id / (hashlib.sha256(str(Path(set_path).resolve()).encode()).hexdigest()[:16] + ".npz")


def embed_set(images: ImageSet, matcher, cache_dir, batch_size: int = 256, progress=True, desc="embed") -> Embedded:
    from tqdm import tqdm

    from synthgen.fsutil import atomic_path

    cache_file_ = cache_file(cache_dir, matcher.id, images.path)
    cached: dict[str, tuple[str, np.ndarray]] = {}
    if cache_file_.is_file():
        try:
            z = load_npz_arrays(cache_file_, ("keys", "fingerprints", "emb"), "embedding cache")
        except DataError:  # a damaged cache is only lost work: embed again and rewrite it
            z = {"keys": [], "fingerprints": [], "emb": []}
        for k, fp, e in zip(z["keys"], z["fingerprints"], z["emb"]):
            cached[str(k)] = (str(fp), e)
    todo = [i for i, (k, fp) in enumerate(zip(images.keys, images.fingerprints)) if cached.get(k, ("",))[0] != fp]
    size = matcher.input_size
    unreadable = []
    bar = tqdm(total=len(todo), unit="img", desc=desc, disable=not progress or not todo, dynamic_ncols=True)
    for s in range(0, len(todo), batch_size):
        idx, batch = [], []
        for i in todo[s : s + batch_size]:
            try:
                batch.append(_resize(images.read(i), size))
                idx.append(i)
            except UnreadableImage:
                unreadable.append(images.keys[i])
        if batch:
            for i, e in zip(idx, matcher.embed(np.stack(batch))):
                cached[images.keys[i]] = (images.fingerprints[i], e)
        bar.update(len(todo[s : s + batch_size]))
    bar.close()
    if todo:
        keys = sorted(cached)
        with atomic_path(cache_file_) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, keys=np.array(keys), fingerprints=np.array([cached[k][0] for k in keys]),
                         emb=np.stack([cached[k][1] for k in keys]).astype(np.float32))
    bad = set(unreadable)
    ok = [i for i, k in enumerate(images.keys) if k in cached and k not in bad]
    emb = np.stack([cached[images.keys[i]][1] for i in ok]).astype(np.float32) if ok else np.zeros((0, 1), np.float32)
    return Embedded([images.keys[i] for i in ok], [images.identities[i] for i in ok], emb, unreadable)


def read_cache(path) -> dict | None:
    """A cache file's arrays (keys, fingerprints, emb), or None when it is missing or damaged (a
    lost cache is only lost work)."""
    from synthgen.safeload import load_npz_arrays

    try:
        return load_npz_arrays(path, ("keys", "fingerprints", "emb"), "embedding cache") if Path(path).is_file() else None
    except DataError:
        return None


def seed_from_tree(src_cache, embedded_root, tree, dst_cache, shards: ImageSet) -> int:
    """Embeddings cached for the folder tree `embedded_root` (every matcher in `src_cache`), given to
    the cache of `shards` built from `tree` (the same folder, or one of hard links to its files)
    without loss (raw or png: the same pixels under the same keys), so an audit of the shards embeds
    only what is not cached. An entry is given only while its file in `tree` still has the
    fingerprint it was embedded with; entries the destination holds already are kept. Returns the
    number of entries given."""
    from synthgen.fsutil import atomic_path

    src_cache, tree = Path(src_cache), Path(tree)
    if shards.kind != "shards" or not src_cache.is_dir():
        return 0
    dst_fp = dict(zip(shards.keys, shards.fingerprints))
    given = 0
    for mdir in sorted(p for p in src_cache.iterdir() if p.is_dir()):
        z = read_cache(cache_file(src_cache, mdir.name, embedded_root))
        if z is None:
            continue
        dst = cache_file(dst_cache, mdir.name, shards.path)
        d = read_cache(dst)
        have = {} if d is None else {str(k): (str(fp), e) for k, fp, e in zip(d["keys"], d["fingerprints"], d["emb"])}
        add = 0
        for k, fp, e in zip(z["keys"], z["fingerprints"], z["emb"]):
            k = str(k)
            if k in dst_fp and have.get(k, ("",))[0] != dst_fp[k] and (tree / k).is_file() \
                    and file_fingerprint(tree / k) == str(fp):
                have[k] = (dst_fp[k], e)
                add += 1
        if add:
            keys = sorted(have)
            with atomic_path(dst) as tmp, open(tmp, "wb") as f:
                np.savez(f, keys=np.array(keys), fingerprints=np.array([have[k][0] for k in keys]),
                         emb=np.stack([have[k][1] for k in keys]).astype(np.float32))
            given += add
    return given


def load_embeddings_file(path, flag: str) -> Embedded:
    """Precomputed embeddings: NPZ or HDF5 with `embeddings` [N, D], `keys` [N], `labels` [N]."""
    path = Path(path)
    if not path.is_file():
        found = "is a directory" if path.is_dir() else "not found"
        raise UsageError(f"{path}: {found}; with --matcher embeddings, pass .npz/.h5 embedding files", flag)
    names = ("embeddings", "keys", "labels")
    try:
        if path.suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                emb, keys, labels = (np.asarray(read_h5_dataset(f, n, path, "embeddings")) for n in names)
        else:
            z = load_npz_arrays(path, names, "embeddings")
            emb, keys, labels = (z[n] for n in names)
        if emb.dtype.kind not in "fiu" or emb.ndim != 2 or keys.ndim != 1 or labels.ndim != 1:
            raise DataError(f"{path}: expected numeric 'embeddings' [N, D] and 1-d 'keys', 'labels'; found "
                            f"{emb.dtype} {list(emb.shape)}, {list(keys.shape)}, {list(labels.shape)}")
        if len(emb) != len(keys) or len(keys) != len(labels):
            raise DataError(f"{path}: embeddings {emb.shape}, keys {len(keys)} and labels {len(labels)} do not line up")
        keys, labels = [_text(k, path, "keys") for k in keys], [_text(v, path, "labels") for v in labels]
        emb = np.asarray(emb, np.float32)
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: unreadable embeddings file ({type(e).__name__}: {refusal_reason(e)}); expected "
                        "'embeddings' [N, D], 'keys' [N], 'labels' [N]") from None
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return Embedded(keys, labels, emb, [])


def _text(v, path, what) -> str:
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{path}: '{what}' holds bytes that are not UTF-8 text; write keys and labels as "
                            "UTF-8 strings") from None
    if isinstance(v, (str, np.str_)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    raise DataError(f"{path}: '{what}' holds a {type(v).__name__}, expected strings")


