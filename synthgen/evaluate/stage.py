"""`synthgen evaluate`: verification accuracy of a face matcher on the field's benchmarks.

For each BENCH (an insightface `.bin` or an LFW-style folder): decode its 2N images, embed each
image and its horizontal mirror with the matcher (raw, unnormalised outputs, as insightface
sums them), and compute the protocol of `protocol.py` with and without the mirror. Writes
OUT/report.json, OUT/embeddings.npz (the unit embeddings that were scored, per benchmark) and a
self-contained OUT/report.html (ROC curves, the hardest misclassified pairs).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synthgen import __version__
from synthgen.errors import DataError, UsageError
from synthgen.fsutil import atomic_path, atomic_write_text
from synthgen.runs import ensure_writable_dir
from synthgen.safepath import require_input, show_path

from . import protocol as P
from .bench import Bench, check_images, decode, read_bench

FARS = (1e-3, 1e-4)


@dataclass
class EvaluateConfig:
    benches: list = field(default_factory=list)  # .bin files or LFW-style folders
    out: str = ""  # report folder
    matcher: str = ""  # a registered matcher name (synthgen.audit.matchers.REGISTRY)
    weights: str | None = None
    arch: str = "r100"
    embeddings: list = field(default_factory=list)  # --matcher embeddings: one .npz per benchmark
    batch_size: int = 256
    device: str = "auto"
    folds: int = 10
    release: str | None = None  # a release folder: its card gets the numbers (utility section, new id)
    progress: bool = True


def validate(cfg: EvaluateConfig) -> None:
    from synthgen.audit.matchers import REGISTRY

    if not cfg.benches:
        raise UsageError("give at least one benchmark: a .bin file (lfw.bin, ...) or a folder with pairs.txt", "BENCH")
    if cfg.matcher not in REGISTRY:
        raise UsageError(f"'{cfg.matcher}' is not one of {', '.join(REGISTRY)}", "--matcher")
    if cfg.matcher == "embeddings" and len(cfg.embeddings) != len(cfg.benches):
        raise UsageError(f"{len(cfg.embeddings)} embeddings files for {len(cfg.benches)} benchmarks: give one "
                         "--embeddings FILE per benchmark, in order", "--embeddings")
    if cfg.matcher != "embeddings" and cfg.embeddings:
        raise UsageError("--embeddings goes with --matcher embeddings", "--embeddings")
    if cfg.batch_size < 1:
        raise UsageError(f"must be >= 1, got {cfg.batch_size}", "--batch-size")
    if cfg.folds < 2:
        raise UsageError(f"must be >= 2, got {cfg.folds}", "--folds")
    for b in cfg.benches:
        require_input(b, "BENCH", "a verification .bin (lfw.bin, cfp_fp.bin, ...) or a folder with pairs.txt")
    for e in cfg.embeddings:
        require_input(e, "--embeddings", "an .npz with 'embeddings' [2N, D] in the benchmark's image order")
    if cfg.release is not None:
        from synthgen.release import is_release

        require_input(cfg.release, "--release", "a release folder (synthgen release --out)")
        if not is_release(cfg.release):
            raise UsageError(f"{cfg.release} is not a written release (no card.json + SHA256SUMS)", "--release")
        from synthgen.release import verify_release

        problems = verify_release(cfg.release)  # before any work: the numbers go only into an intact release
        if problems:
            raise DataError(f"{cfg.release}: the release does not verify ({problems[0]}); evaluate against an intact "
                            "release")
    names = [Path(b).stem if Path(b).is_file() else Path(b).name for b in cfg.benches]
    if len(set(names)) != len(names):
        raise UsageError(f"two benchmarks share a name ({', '.join(names)}); the report keys them by name", "BENCH")


def evaluate(cfg: EvaluateConfig | None = None, **kwargs) -> dict:
    """Python API of `synthgen evaluate`; returns the report (also OUT/report.json)."""
    from synthgen.audit.matchers import make_matcher
    from synthgen.device import resolve_device

    cfg = cfg or EvaluateConfig(**kwargs)
    validate(cfg)
    device = resolve_device(cfg.device)
    matcher = make_matcher(cfg.matcher, cfg.weights, cfg.arch, device)  # refused before OUT exists
    benches = [read_bench(b) for b in cfg.benches]  # every file parsed (and refused) before OUT exists
    for b in benches:
        if len(b) < cfg.folds:
            raise UsageError(f"{b.path} has {len(b)} pairs, fewer than --folds {cfg.folds}; use fewer folds", "--folds")
        check_images(b)  # every header: unreadable or oversized images refused before OUT exists
    pre = [_load_embeddings(e, b) for e, b in zip(cfg.embeddings, benches)] if cfg.matcher == "embeddings" else None
    out = Path(cfg.out)
    ensure_writable_dir(out)
    t0 = time.time()
    results, arrays, pages = [], {}, []
    for i, bench in enumerate(benches):
        t = time.time()
        raw, raw_flip = pre[i] if pre is not None else _embed(bench, matcher, cfg)
        unit = _unit(raw, raw_flip, bench)
        res = {"name": bench.name, "path": bench.path, "sha256": bench.sha256, "pairs": len(bench),
               "flip": P.verification(unit, bench.issame, cfg.folds, FARS) if raw_flip is not None else None,
               "no_flip": P.verification(_unit(raw, None, bench), bench.issame, cfg.folds, FARS),
               "seconds": round(time.time() - t, 2)}
        results.append(res)
        arrays[f"{bench.name}__embeddings"] = unit.astype(np.float32)
        arrays[f"{bench.name}__issame"] = bench.issame
        pages.append((bench, unit, res))
    report = {"synthgen_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "matcher": {"name": cfg.matcher, "id": getattr(matcher, "id", cfg.matcher),
                          "weights": cfg.weights, "weights_sha256": getattr(matcher, "weights_sha256", None),
                          "arch": cfg.arch if cfg.matcher == "iresnet" else None},
              "protocol": "insightface eval/verification.py: flip-summed raw embeddings, squared L2 distance, "
                          f"thresholds 0..3.99 step 0.01, {cfg.folds} folds in file order; TAR@FAR over all pairs, "
                          "Clopper-Pearson 95 % intervals",
              "benchmarks": results, "seconds": round(time.time() - t0, 2)}
    with atomic_path(out / "embeddings.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    from .html import render

    atomic_write_text(out / "report.html", render(report, pages))
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    if cfg.release is not None:
        from synthgen.release.utility import add_utility

        report["release_id"] = add_utility(cfg.release, report, out / "report.json")
    return report


def _unit(raw, raw_flip, bench: Bench):
    """Unit embeddings as the protocol forms them; a sum that overflows or a zero vector is refused."""
    with np.errstate(over="ignore", invalid="ignore"):
        unit = P.pair_embeddings(raw, raw_flip)
    if not np.isfinite(unit).all() or (np.abs(unit).sum(axis=1) == 0).any():
        raise DataError(f"{bench.name}: an embedding is zero, or overflows when summed with its mirror's; every image "
                        "needs a finite, non-zero embedding")
    return unit


def _embed(bench: Bench, matcher, cfg: EvaluateConfig):
    """Raw embeddings of every image and of its mirror, [2N, D] each, in the file's order."""
    from tqdm import tqdm

    from synthgen.audit.embed import _resize

    size = matcher.input_size
    n = len(bench.images)
    emb = flip = None
    bar = tqdm(total=n, unit="img", desc=f"embed {bench.name}", disable=not cfg.progress, dynamic_ncols=True)
    for s in range(0, n, cfg.batch_size):
        imgs = np.stack([_resize(decode(b, f"{bench.path} image {s + j}"), size)
                         for j, b in enumerate(bench.images[s : s + cfg.batch_size])])
        e = matcher.embed(imgs, raw=True)
        ef = matcher.embed(np.ascontiguousarray(imgs[:, :, ::-1]), raw=True)
        if emb is None:
            emb, flip = np.zeros((n, e.shape[1]), np.float32), np.zeros((n, e.shape[1]), np.float32)
        emb[s : s + len(e)], flip[s : s + len(e)] = e, ef
        bar.update(len(imgs))
    bar.close()
    return emb, flip


def _load_embeddings(path, bench: Bench):
    """--matcher embeddings: `embeddings` [2N, D] in the benchmark's image order (raw or unit), and
    optionally `embeddings_flip` [2N, D] of the mirrored images."""
    import stat

    from synthgen.safeload import load_npz_arrays

    try:
        if not stat.S_ISREG(Path(path).stat().st_mode):  # a FIFO would block the zip reader
            raise DataError(f"{show_path(Path(path))}: not a regular file; expected an .npz of embeddings")
    except OSError as e:
        raise DataError(f"{show_path(Path(path))}: unreadable ({e.strerror}); expected an .npz of embeddings") from None
    z = load_npz_arrays(path, ("embeddings",), "embeddings", optional=("embeddings_flip",))
    e = np.asarray(z["embeddings"])
    f = z.get("embeddings_flip")
    for name, a in (("embeddings", e), ("embeddings_flip", f)):
        if a is None:
            continue
        if a.dtype.kind not in "fiu" or a.ndim != 2 or len(a) != len(bench.images) or a.shape[1] == 0:
            raise DataError(f"{show_path(Path(path))}: '{name}' is {a.dtype} {list(a.shape)}, expected numbers "
                            f"[{len(bench.images)}, D]: one row per image of {bench.name}, in its order")
        if not np.isfinite(a).all():
            raise DataError(f"{show_path(Path(path))}: '{name}' holds NaN or inf; every image needs a finite embedding")
    if f is not None and f.shape != e.shape:
        raise DataError(f"{show_path(Path(path))}: 'embeddings_flip' {list(f.shape)} differs from 'embeddings' {list(e.shape)}")
    return e.astype(np.float64), (None if f is None else f.astype(np.float64))
