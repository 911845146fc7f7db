"""Verification benchmarks: insightface's `.bin` files read without running anything, LFW-style
folders with `pairs.txt`, and `.bin` files made from an aligned identity-folder tree.

A `.bin` (lfw.bin, cfp_fp.bin, agedb_30.bin, calfw.bin, cplfw.bin) is a pickle of
`(bins, issame_list)`: 2N encoded images (pair k = images 2k and 2k+1) and N booleans. Everyone
else reads it with `pickle.load`, which runs whatever a downloaded file names. Here it is parsed
by synthgen's own opcode interpreter (`synthgen.safepickle`), which builds plain data only and
allows what these files contain, nothing else: protocol 2-5, a tuple of a list of byte strings
and a list of booleans. Python 2 files store the images as `str` (BINSTRING), read here as bytes
(as `pickle.load(encoding="bytes")` does); Python 3 files at protocol 2 store them as
`_codecs.encode(text, "latin1")` calls, the one global allowed (it only turns latin-1 text into
bytes). Images are decoded by Pillow under the pixel budget of `synthgen.imageio`.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthgen.errors import DataError, UsageError
from synthgen.safepath import require_input, show_path

MAX_BIN_BYTES = 4 << 30  # the largest public .bin (CFP-FP, 14,000 images) is about 0.3 GB


@dataclass
class Bench:
    name: str
    path: str
    sha256: str
    images: list  # 2N encoded images (bytes)
    issame: np.ndarray  # N booleans

    def __len__(self):
        return len(self.issame)


def _latin1_encoder(where: str):
    def encode(*args):
        if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
            raise DataError(f"{where}: _codecs.encode is allowed only as (text, 'latin1'), the form Python 3 writes "
                            "bytes in; not a verification .bin")
        try:
            return args[0].encode("latin1")
        except UnicodeEncodeError:
            raise DataError(f"{where}: _codecs.encode of text that is not latin-1; not a verification .bin") from None
    return encode


def read_bin(path) -> Bench:
    """insightface's `.bin` as (2N encoded images, N booleans); nothing in the file runs."""
    from synthgen.safepickle import PickleVM

    path = Path(path)
    require_input(path, "BENCH", "a verification .bin (lfw.bin, cfp_fp.bin, ...) or a folder with pairs.txt")
    data = _read_plain(path, MAX_BIN_BYTES, "a verification .bin")
    vm = PickleVM(data, show_path(path), {("_codecs", "encode"): _latin1_encoder(show_path(path))}, py2_str="bytes",
                  kind="verification .bin (a tuple of a list of images and a list of booleans)")
    obj, _ = vm.run()
    expect = "expected (list of encoded images, list of booleans) as insightface writes it"
    if not (isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], list) and isinstance(obj[1], list)):
        raise DataError(f"{show_path(path)}: holds a {type(obj).__name__}, {expect}")
    bins, issame = obj
    if not all(isinstance(b, bytes) for b in bins):
        raise DataError(f"{show_path(path)}: an image entry is not a byte string; {expect}")
    if not all(type(v) is bool or (type(v) is int and v in (0, 1)) for v in issame):
        raise DataError(f"{show_path(path)}: an issame entry is not a boolean; {expect}")
    if len(bins) != 2 * len(issame) or not issame:
        raise DataError(f"{show_path(path)}: {len(bins)} images for {len(issame)} pairs; {expect} (2 images a pair)")
    return Bench(path.stem, str(path), hashlib.sha256(data).hexdigest(), bins, np.asarray(issame, bool))


def _read_plain(path: Path, limit: int, what: str) -> bytes:
    """A regular file's bytes, at most `limit`: never a FIFO (it would block) or a device such as
    /dev/zero (it never ends), checked on the open descriptor."""
    from synthgen.safepath import NotARegularFile, read_inside

    try:
        target = path.resolve() if path.is_symlink() else path  # a link the user made is followed once, then checked
        return read_inside(target.parent, target.name, limit)
    except NotARegularFile as e:
        raise DataError(f"{show_path(path)}: {str(e).split(': ', 1)[-1]}; expected {what}") from None
    except OSError as e:
        raise DataError(f"{show_path(path)}: unreadable ({e.strerror or type(e).__name__}); expected {what}") from None


MAX_PAIRS_TXT = 64 << 20  # LFW's pairs.txt is 0.1 MB


def read_pairs_folder(root) -> Bench:
    """An LFW-style folder: `pairs.txt` (first line: folds and pairs per fold, or just one number;
    then `name i j` for a same-person pair and `name1 i name2 j` for a different-person pair) and
    the images as `<name>/<name>_<i:04d>.jpg` (or .png), under the folder or its `lfw/`."""
    root = Path(root)
    pairs_file = root / "pairs.txt"
    if not pairs_file.is_file():
        raise UsageError(f"{show_path(root)}: no pairs.txt, expected an LFW-style folder (pairs.txt + <name>/<name>_0001.jpg)",
                         "BENCH")
    raw = _read_plain(pairs_file, MAX_PAIRS_TXT, "an LFW pairs.txt")
    lines = [ln.split() for ln in raw.decode("utf-8", errors="replace").split("\n") if ln.strip()]
    body = lines[1:] if lines and len(lines[0]) <= 2 and all(t.isdigit() for t in lines[0]) else lines
    img_root = root / "lfw" if (root / "lfw").is_dir() else root
    files, issame = [], []
    h = hashlib.sha256(raw)
    for n, parts in enumerate(body, 1):
        try:
            if not all(p.isascii() for p in parts):
                raise ValueError
            if len(parts) == 3:
                a, b, same = (parts[0], int(parts[1])), (parts[0], int(parts[2])), True
            elif len(parts) == 4:
                a, b, same = (parts[0], int(parts[1])), (parts[2], int(parts[3])), False
            else:
                raise ValueError
        except ValueError:
            raise DataError(f"{show_path(pairs_file)}: line {n + (len(lines) - len(body))}: expected 'name i j' or "
                            "'name1 i name2 j'") from None
        for name, i in (a, b):
            f = _lfw_image(img_root, name, i)
            if f is None:
                raise DataError(f"{show_path(img_root / name)}: no {name}_{i:04d}.jpg/.png for pairs.txt's pair {len(issame) + 1}")
            files.append(f)
        issame.append(same)
    if not issame:
        raise DataError(f"{show_path(pairs_file)}: no pairs")
    images = []
    for f in files:
        b = f.read_bytes()
        h.update(b)
        images.append(b)
    return Bench(root.name, str(root), h.hexdigest(), images, np.asarray(issame, bool))


def _lfw_image(root: Path, name: str, i: int) -> Path | None:
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    for ext in (".jpg", ".png", ".jpeg"):
        f = root / name / f"{name}_{i:04d}{ext}"
        if f.is_file():
            return f
    return None


def read_bench(path) -> Bench:
    p = Path(path)
    if p.is_dir():
        return read_pairs_folder(p)
    return read_bin(p)


MAX_PIXELS = 4096 * 4096  # a benchmark image is a face crop (112x112 in insightface's files)


MEAN_PIXELS = 1 << 20  # per image on average over a benchmark (the public ones: 112 x 112)


def check_images(bench: Bench) -> None:
    """Every image's header read (nothing decoded) before anything is written: one Pillow cannot
    open, one over MAX_PIXELS, or a benchmark averaging more than MEAN_PIXELS per image (one large
    image referenced by every slot makes a small file that decodes for hours) is refused now."""
    from synthgen.imageio import UnreadableImage, image_size

    total = 0
    for i, b in enumerate(bench.images):
        try:
            h, w = image_size(io.BytesIO(b))
        except UnreadableImage as e:
            raise DataError(f"{bench.path} image {i}: not an image Pillow can read ({str(e).split(': ', 2)[1]}); not a "
                            "verification benchmark") from None
        if w * h > MAX_PIXELS:
            raise DataError(f"{bench.path} image {i}: a {w}x{h} image, more than the {MAX_PIXELS:,}-pixel budget for "
                            "a benchmark face crop")
        total += w * h
    if total > MEAN_PIXELS * len(bench.images):
        raise DataError(f"{bench.path}: {total:,} pixels in {len(bench.images):,} images, more than "
                        f"{MEAN_PIXELS:,} per image on average; benchmark images are face crops (112 x 112)")


def decode(image: bytes, where: str) -> np.ndarray:
    """One benchmark image -> RGB uint8 HWC (synthgen.imageio.load_rgb, with the benchmark budget)."""
    from synthgen.imageio import UnreadableImage, load_rgb

    try:
        return load_rgb(io.BytesIO(image), max_pixels=MAX_PIXELS)
    except UnreadableImage as e:
        raise DataError(f"{where}: {str(e).split(': ', 1)[-1]}") from None


# ----------------------------------------------------------------------------------------------
# Making a benchmark from an aligned identity-folder tree


def make_pairs(aligned, out, pairs: int = 6000, folds: int = 10, seed: int = 0) -> dict:
    """Balanced genuine/imposter pairs from identity folders, written as an insightface `.bin`
    (pickle protocol 4 of (list of bytes, list of bool); readable by insightface's `load_bin`).
    Each fold holds pairs/folds/2 genuine pairs then as many imposter pairs, like LFW's."""
    from synthgen.fsutil import atomic_path, atomic_write_text
    from synthgen.imageio import list_images

    aligned, out = Path(aligned), Path(out)
    require_input(aligned, "--make-pairs", "an aligned identity-folder tree")
    for f in (out, Path(f"{out}.json")):
        if f.exists() or f.is_symlink():
            raise UsageError(f"{show_path(f)} exists; choose another path or delete it", "--out")
    if pairs < 2 * folds or pairs % (2 * folds):
        raise UsageError(f"{pairs} pairs cannot make {folds} folds of equal genuine and imposter halves; use a "
                         f"multiple of {2 * folds}", "--pairs")
    by_id: dict[str, list[str]] = {}
    for key in list_images(aligned):
        if "/" in key:
            by_id.setdefault(key.split("/", 1)[0], []).append(key)
    ids = sorted(by_id)
    multi = [i for i in ids if len(by_id[i]) >= 2]
    if len(ids) < 2 or not multi:
        raise DataError(f"{show_path(aligned)}: {len(ids)} identities, {len(multi)} with two or more images; a "
                        "benchmark needs two identities and at least one with two images")
    half = pairs // folds // 2
    genuine = sum(len(by_id[i]) * (len(by_id[i]) - 1) // 2 for i in multi)
    n = sum(len(v) for v in by_id.values())
    imposter = (n * n - sum(len(v) ** 2 for v in by_id.values())) // 2
    for kind, have in (("genuine", genuine), ("imposter", imposter)):
        if pairs // 2 > have:
            raise UsageError(f"{pairs} pairs need {pairs // 2:,} distinct {kind} pairs; {show_path(aligned)} has "
                             f"{have:,}; ask for fewer with --pairs", "--pairs")
    rng = random.Random(seed)
    chosen: list[tuple[str, str, bool]] = []
    seen = set()
    for _ in range(folds):
        fold = []
        for same in (True, False):
            tries = 0
            while sum(1 for p in fold if p[2] == same) < half:
                tries += 1
                if tries > 1000 * half:
                    raise DataError(f"{show_path(aligned)}: not enough distinct {'genuine' if same else 'imposter'} "
                                    f"pairs for {pairs} pairs; ask for fewer with --pairs")
                if same:
                    i = rng.choice(multi)
                    a, b = rng.sample(by_id[i], 2)
                else:
                    i, j = rng.sample(ids, 2)
                    a, b = rng.choice(by_id[i]), rng.choice(by_id[j])
                pair = tuple(sorted((a, b)))
                if pair in seen:
                    continue
                seen.add(pair)
                fold.append((a, b, same))
        chosen.extend(fold)
    images = []
    for a, b, _ in chosen:
        images += [(aligned / a).read_bytes(), (aligned / b).read_bytes()]
    issame = [s for _, _, s in chosen]
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump((images, issame), f, protocol=4)
    summary = {"out": str(out), "pairs": len(issame), "genuine": sum(issame), "imposter": len(issame) - sum(issame),
               "identities": len(ids), "folds": folds, "seed": seed, "source": str(aligned),
               "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
               "keys": [[a, b] for a, b, _ in chosen]}  # pair k = keys[k], same person = issame[k]
    atomic_write_text(Path(f"{out}.json"), json.dumps(summary, indent=1))
    return summary
