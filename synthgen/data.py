"""PyTorch Datasets over synthgen shards.

h5py file handles must not cross a fork, so each Dataset opens its shards lazily, per
process (the pid is checked on every access). That makes them safe with
`DataLoader(num_workers > 0)` and `DistributedSampler`.
"""

from __future__ import annotations

import bisect
import itertools
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from synthgen.encodings import ENCODINGS
from synthgen.errors import DataError
from synthgen.safepath import safe_relpath, show_path
from synthgen.shards import REBUILD, load_index, open_shard


class _Shards:
    """Index over all shards: global item -> (shard, row); lazy per-process h5py handles.

    Every shard is opened through `shards.open_shard` (no external links, external raw storage
    or virtual datasets; images/labels/keys present with the indexed count) and index.json
    through `shards.load_index` (shard files are plain `shard-NNNNN.h5` names inside `root`).
    Keys are checked to be safe relative paths when they are first read.
    """

    def __init__(self, root):
        self.root = Path(root)
        self.index = load_index(self.root)
        self.files = [self.root / e["file"] for e in self.index["shards"]]
        self.counts = [e["count"] for e in self.index["shards"]]
        self._starts = [0, *itertools.accumulate(self.counts)]  # first global item of each shard
        self._keys = None  # all keys, read on first use (one read per shard)
        labels = []
        for p, n in zip(self.files, self.counts):
            with open_shard(p, n, self.index) as f:
                try:
                    labels.append(np.asarray(f["labels"][:], np.int64))
                except (OSError, ValueError, TypeError) as e:
                    raise DataError(f"{show_path(p)}: labels unreadable ({str(e).splitlines()[0] if str(e) else e}); {REBUILD}") from None
        self.labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        k = len(self.index["classes"])
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= k or np.any(np.diff(self.labels) < 0)):
            raise DataError(f"{show_path(self.root)}: labels are not sorted values in [0, {k}) as index.json's classes "
                            f"require (found {self.labels.min()}..{self.labels.max()}); {REBUILD}")
        self.encoding = self.index["encoding"]
        self._pid, self._handles, self._images = None, {}, {}

    def __getstate__(self):  # never pickle open handles into workers
        d = dict(self.__dict__)
        d["_pid"], d["_handles"], d["_images"], d["_keys"] = None, {}, {}, None
        return d

    def _file(self, s):
        if self._pid != os.getpid():
            self._pid, self._handles, self._images = os.getpid(), {}, {}
        if s not in self._handles:
            self._handles[s] = open_shard(self.files[s], self.counts[s], self.index)
        return self._handles[s]

    def locate(self, i: int) -> tuple[int, int]:
        s = bisect.bisect_right(self._starts, i) - 1
        return s, i - self._starts[s]

    def _dataset(self, s: int):
        """(images dataset, image shape if rows can be read as raw chunks else None), cached."""
        if self._pid != os.getpid() or s not in self._images:
            ds = self._file(s)["images"]
            direct = (self.encoding == "raw" and ds.chunks == (1, *ds.shape[1:])
                      and ds.id.get_create_plist().get_nfilters() == 0)  # chunk bytes are the pixels
            self._images[s] = (ds, tuple(ds.shape[1:]) if direct else None)
        return self._images[s]

    def _row(self, s: int, r: int) -> np.ndarray:
        ds, shape = self._dataset(s)
        try:
            if shape is not None:
                # One image per uncompressed chunk: read the chunk's bytes directly (several times
                # faster than h5py's selection machinery for a single row).
                return np.frombuffer(bytearray(ds.id.read_direct_chunk((r, 0, 0, 0))[1]), np.uint8).reshape(shape)
            return ds[r]
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{show_path(self.files[s])}: image {r} unreadable ({str(e).splitlines()[0] if str(e) else e}); "
                            f"run `synthgen verify {show_path(self.root)}`, then {REBUILD}") from None

    def stored(self, i: int) -> np.ndarray:
        """What the shard stores for item i: the pixels (raw) or the encoded bytes (png, jpeg)."""
        return self._row(*self.locate(i))

    def image(self, i: int) -> np.ndarray:
        s, r = self.locate(i)
        data = self._row(s, r)
        if self.encoding == "raw":
            return data
        from PIL import Image

        h, w = self.index["image_size"]
        try:
            return ENCODINGS[self.encoding].decode(data, (w, h))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            s, r = self.locate(i)
            raise DataError(f"{show_path(self.files[s])}: image {r} is not a readable {self.encoding} ({e}); "
                            f"{REBUILD}") from None

    def key(self, i: int) -> str:
        """Key (relative path in the input tree) of item i; every key is checked when first read."""
        if self._keys is None:
            keys = []
            for s in range(len(self.files)):
                for r, k in enumerate(self._file(s)["keys"][:]):
                    keys.append(safe_relpath(k, None, self.files[s], f"keys[{r}]", REBUILD))
            self._keys = keys
        return self._keys[i]



def _subset(labels: np.ndarray, max_per_class: int | None) -> np.ndarray:
    """First `max_per_class` items of each class (items are sorted by label, then key)."""
    idx = np.arange(len(labels))
    if max_per_class is None:
        return idx
    if max_per_class < 1:
        raise ValueError(f"max_per_class must be >= 1, got {max_per_class}")
    first = np.searchsorted(labels, labels, side="left")  # labels are sorted
    return idx[(idx - first) < max_per_class]


def _to_output(img: np.ndarray, output: str):
    if output == "pil":
        from PIL import Image

        return Image.fromarray(img)
    if output == "tensor":
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
    return img


class ShardDataset(Dataset):
    """Map-style dataset of (image, label), like torchvision's ImageFolder.

    output: "pil" (default, what torchvision transforms take), "tensor" (uint8 CHW) or "numpy".
    max_per_class: keep the first N items of each class (SFace-10/-20/-40 style subsets).
    """

    def __init__(self, root, transform=None, target_transform=None, max_per_class=None, output="pil"):
        self.shards = _Shards(root)
        self.ids = _subset(self.shards.labels, max_per_class)
        self.transform, self.target_transform, self.output = transform, target_transform, output
        self.classes = self.shards.index["classes"]
        self.targets = self.shards.labels[self.ids].tolist()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        gi = int(self.ids[i])
        img = _to_output(self.shards.image(gi), self.output)
        label = int(self.shards.labels[gi])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return img, label

    def key(self, i) -> str:
        return self.shards.key(int(self.ids[i]))


# ----------------------------------------------------------------------------------------------
# USynthFace two-view training data


class USynthAugment:
    """Horizontal flip + RandAugment with USynthFace's op list (4 ops, magnitude 16 of 30).

    Ops: identity, shear-x, translate-x, rotate (up to 30 degrees), brightness, color, contrast,
    sharpness, posterize, solarize, autocontrast, equalize, grayscale. Each op gets a random
    sign; strength scales linearly with magnitude / 30 as in RandAugment.
    """

    OPS = ("identity", "shear_x", "translate_x", "rotate", "brightness", "color", "contrast",
           "sharpness", "posterize", "solarize", "autocontrast", "equalize", "grayscale")

    def __init__(self, num_ops=4, magnitude=16, num_bins=31, flip_p=0.5):
        self.num_ops, self.magnitude, self.num_bins, self.flip_p = num_ops, magnitude, num_bins, flip_p

    def _apply(self, img, op, m, sign):
        import torchvision.transforms.functional as TF

        w = TF.get_dimensions(img)[2]
        if op == "shear_x":
            return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[np.degrees(np.arctan(0.3 * m)) * sign, 0.0])
        if op == "translate_x":
            return TF.affine(img, angle=0.0, translate=[int(round(150 / 331 * w * m)) * sign, 0], scale=1.0, shear=[0.0, 0.0])
        if op == "rotate":
            return TF.rotate(img, 30.0 * m * sign)
        if op in ("brightness", "color", "contrast", "sharpness"):
            f = 1.0 + 0.9 * m * sign
            fn = {"brightness": TF.adjust_brightness, "color": TF.adjust_saturation,
                  "contrast": TF.adjust_contrast, "sharpness": TF.adjust_sharpness}[op]
            return fn(img, f)
        if op == "posterize":
            return TF.posterize(img, int(8 - round(4 * m)))
        if op == "solarize":
            return TF.solarize(img, 255.0 * (1 - m))
        if op == "autocontrast":
            return TF.autocontrast(img)
        if op == "equalize":
            return TF.equalize(img)
        if op == "grayscale":
            return TF.rgb_to_grayscale(img, num_output_channels=3)
        return img

    def __call__(self, img):
        import torchvision.transforms.functional as TF

        if torch.rand(()) < self.flip_p:
            img = TF.hflip(img)
        m = self.magnitude / (self.num_bins - 1)
        for _ in range(self.num_ops):
            op = self.OPS[int(torch.randint(len(self.OPS), ()))]
            sign = 1 if torch.rand(()) < 0.5 else -1
            img = self._apply(img, op, m, sign)
        return img


class TwoViewShardDataset(Dataset):
    """Unlabelled (USynthFace) data: item i = instance i -> (view_a, view_b).

    Each view is a different recorded GAN re-rendering of the instance when it has several
    (the `--views` of `synthgen generate`), else the same image, and each is then augmented
    independently (default: USynthAugment). Instances are the identity folders.
    """

    def __init__(self, root, transform=None, output="pil"):
        self.shards = _Shards(root)
        labels = self.shards.labels
        self.bounds = np.searchsorted(labels, np.arange(len(self.shards.index["classes"]) + 1))
        self.transform = transform if transform is not None else USynthAugment()
        self.output = output

    def __len__(self):
        return len(self.bounds) - 1

    def __getitem__(self, i):
        lo, hi = int(self.bounds[i]), int(self.bounds[i + 1])
        n = hi - lo
        if n >= 2:
            a, b = torch.randperm(n)[:2].tolist()
        else:
            a = b = 0
        views = []
        for j in (a, b):
            img = _to_output(self.shards.image(lo + j), "pil")
            img = self.transform(img) if self.transform is not None else img
            views.append(img if self.output == "pil" or torch.is_tensor(img) else _to_output(np.asarray(img), self.output))
        return views[0], views[1]
