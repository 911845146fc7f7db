"""`synthgen generate`: the stage (output checks, run.json, the writer loop, the manifest)."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from synthgen import __version__
from synthgen.contract import MANIFEST
from synthgen.errors import DataError
from synthgen.fsutil import atomic_write_text
from synthgen.runs import check_output_dir, config_hash, ensure_writable_dir
from synthgen.seeding import SEED_POLICY
from synthgen.stage import StageSummary, write_marker

from . import rendering
from .config import RUN_JSON, GenerateConfig, _align_batched, resolve_chunk, validate_config
from .distributed import PARTS_DIR, _dist_info, _mark_part_done, _remove_stale_temps
from .planning import Item, plan_items
from .rendering import InlineAligner, read_png_meta, render

def config_identity(cfg: GenerateConfig, G, device_type: str, chunk_size: int | None = None) -> dict:
    """Everything that can change an output byte; a resume must match it exactly."""
    skip = GenerateConfig.RUNTIME_FIELDS + GenerateConfig.RESOLVED_FIELDS
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip}
    d.update(network_sha256=G.sha256, device_type=device_type,
             precision=getattr(G, "precision", "fp16" if getattr(G, "use_fp16", False) else "fp32"),
             forward_chunk=chunk_size or resolve_chunk(cfg, device_type), seed_policy=SEED_POLICY)
    if cfg.align:
        d["align_batched"] = _align_batched(cfg, device_type)
    return d


def _versions(device) -> dict:
    import torch

    return {"synthgen": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()}


def generate(cfg: GenerateConfig | None = None, **kwargs) -> dict:
    """Python API of `synthgen generate`; returns a summary dict. See GenerateConfig."""
    import torch

    from synthgen.generators import load_generator

    cfg = cfg or GenerateConfig(**kwargs)
    validate_config(cfg)  # the whole config, before anything is created
    rank, world, torchrun = _dist_info(cfg)
    device = cfg.device
    if torchrun and cfg.device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    resolve_chunk(cfg, "cpu")  # a bad --chunk-size fails before the network is read
    G = load_generator(cfg.network, device=device, force_fp32=cfg.force_fp32, precision=cfg.precision)
    chunk = resolve_chunk(cfg, G.device.type)
    if G.device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.allow_tf32 = False  # fp32 blocks really in fp32 (torch's default lets cuDNN use TF32)
    items = plan_items(cfg, G)  # validates classes, counts, seeds before any byte is written
    ident = config_identity(cfg, G, G.device.type, chunk)
    out = Path(cfg.out)
    pg = None
    if torchrun:
        import torch.distributed as dist

        if not dist.is_initialized():
            if G.device.type == "cuda":
                torch.cuda.set_device(G.device)  # so nccl's barrier uses this rank's GPU
            dist.init_process_group("nccl" if G.device.type == "cuda" else "gloo")
            pg = dist
    try:
        check_output_dir(out, RUN_JSON, ident, cfg.overwrite, remove=(rank == 0 or not torchrun))
        if torchrun:
            torch.distributed.barrier()
        ensure_writable_dir(out)
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        meta = {"status": "running", "config": dataclasses.asdict(cfg), "identity": ident,
                "config_hash": config_hash(ident), "generator": _gen_meta(G), "versions": _versions(G.device),
                "started": started, "total": len(items), "precision": G.precision, "chunk_size": chunk}
        if (rank == 0 or not torchrun) and not (out / RUN_JSON).exists():
            atomic_write_text(out / RUN_JSON, json.dumps(meta, indent=2))
        mine = items[rank::world]
        t0 = time.time()
        written, no_face = _run_slice(G, cfg, out, mine, chunk)
        elapsed = time.time() - t0
        if world > 1 and not torchrun:
            _mark_part_done(out, rank, world, mine)
        if torchrun:
            torch.distributed.barrier()
        summary = {"out": str(out), "total": len(items), "slice": [rank, world], "slice_items": len(mine),
                   "written": written, "no_face": no_face, "skipped_existing": len(mine) - written - no_face,
                   "seconds": round(elapsed, 3),
                   "images_per_s": round(written / elapsed, 2) if elapsed > 0 else None}
        if rank == 0 or not torchrun:
            summary["complete"] = _finalize_if_complete(out, cfg, items, G, meta, world if not torchrun else 1,
                                                        changed=written + no_face > 0)
        return StageSummary("generate", summary, status="complete" if summary.get("complete") else "incomplete",
                            config_hash=meta["config_hash"],
                            brief={k: summary.get(k) for k in ("total", "written", "skipped_existing", "images_per_s",
                                                               "complete")})
    finally:
        if pg is not None:
            pg.destroy_process_group()


def _gen_meta(G) -> dict:
    d = G.describe()
    d.pop("config", None)
    d["source"] = G.source
    return d


def _existing(out: Path, items: list[Item]) -> set[str]:
    """Paths (relative) of finished images, one directory scan per folder."""
    done, seen = set(), {}
    for it in items:
        folder = it.path.split("/", 1)[0]
        if folder not in seen:
            d = out / folder
            seen[folder] = {e.name for e in os.scandir(d)} if d.is_dir() else set()
        if it.path.split("/", 1)[1] in seen[folder]:
            done.add(it.path)
    return done


def _run_slice(G, cfg: GenerateConfig, out: Path, items: list[Item], chunk: int) -> tuple[int, int]:
    """Render and write this process's items; returns (images written, items given up: --align)."""
    from tqdm import tqdm

    done = _existing(out, items)
    todo = [it for it in items if it.path not in done]
    if cfg.align:  # images whose retries ran out in an earlier run are final too
        todo = [it for it in todo if not _failure_path(out, it.path).is_file()]
    step = max(chunk, -(-cfg.batch_size // chunk) * chunk)
    bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="img", disable=not cfg.progress,
               desc="generate", dynamic_ncols=True)
    pending: list[cf.Future] = []
    written = gave_up = 0
    aligner = InlineAligner(cfg, G.device, _align_batched(cfg, G.device.type)) if cfg.align else None
    queue = list(todo)
    with cf.ThreadPoolExecutor(max_workers=max(1, cfg.writers)) as pool:
        try:
            while queue:
                batch, queue = queue[:step], queue[step:]
                imgs = render(G, batch, cfg, chunk)  # overlaps with the writers of the previous step
                metas = [None] * len(batch)
                if aligner is not None:
                    imgs, metas, retry, failed = aligner(batch, imgs, cfg)
                    queue.extend(retry)
                    for it in failed:
                        _write_failure(out, it)
                    gave_up += len(failed)
                    batch = [it for it, m in zip(batch, metas) if m is not None]
                    imgs = [im for im, m in zip(imgs, metas) if m is not None]
                    metas = [m for m in metas if m is not None]
                pending = _drain(pending, limit=2 * step)
                for it, img, meta in zip(batch, imgs, metas):
                    pending.append(pool.submit(rendering.write_image, out, it.path, img, cfg.format, cfg.jpeg_quality, meta))
                written += len(batch)
                bar.update(len(batch) + (len(failed) if aligner is not None else 0))
            _drain(pending, limit=0)
        except OSError as e:
            for f in pending:
                f.cancel()
            raise DataError(f"writing to {out} failed ({e.strerror or e}); finished images are kept, "
                            "fix the problem and rerun the same command to resume") from None
        finally:
            bar.close()
    return written, gave_up


def _failure_path(out: Path, rel: str) -> Path:
    p = out / rel
    return p.with_name(f".{p.stem}.failed.json")


def _write_failure(out: Path, it: Item) -> None:
    p = _failure_path(out, it.path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, json.dumps({"skipped_seeds": it.extra.get("skipped_seeds", []), "attempt": it.extra.get("attempt")}))


def _drain(pending: list, limit: int) -> list:
    """Wait until at most `limit` writes are in flight; re-raise the first write error."""
    while len(pending) > limit:
        pending.pop(0).result()
    for f in [f for f in pending if f.done()]:
        f.result()
    return [f for f in pending if not f.done()]


def _finalize_if_complete(out: Path, cfg, items: list[Item], G, meta: dict, world: int, changed: bool = True) -> bool:
    """Write manifest.jsonl and the final run.json once every slice has finished. A rerun of a
    complete run that wrote nothing leaves both as they are (a rerun is a no-op)."""
    parts = out / PARTS_DIR  # job arrays: each slice leaves a marker; the last one to finish merges
    if world > 1 and not all((parts / f"part-{r:05d}-of-{world:05d}.done").is_file() for r in range(world)):
        return False
    if not changed and (out / MANIFEST).is_file() and not parts.exists():
        try:
            if json.loads((out / RUN_JSON).read_text()).get("status") == "complete":
                return True
        except (OSError, ValueError):
            pass
    _remove_stale_temps(out, items)
    done = _existing(out, items)
    common = {"psi": cfg.psi, "truncation_cutoff": cfg.truncation_cutoff, "noise_mode": cfg.noise_mode,
              "latent": "nvidia-seed" if cfg.seeds else ("seed-pool" if cfg.seed_pool else "derived")}
    lines = []
    for it in items:
        if it.path in done:
            rec = it.record(common, "ok")
            if cfg.align:  # the seed actually used, retries and landmarks travel in the PNG itself
                png = read_png_meta(out / it.path)
                rec.update({k: png[k] for k in ("seed", "noise_seed", "attempt", "skipped_seeds", "prob",
                                                 "landmarks", "transform", "template") if k in png})
        elif cfg.align and _failure_path(out, it.path).is_file():
            rec = it.record(common, "no_face")
            rec.update(json.loads(_failure_path(out, it.path).read_text()))
        else:
            rec = it.record(common, "missing")
        lines.append(json.dumps(rec, sort_keys=True))
    atomic_write_text(out / MANIFEST, "\n".join(lines) + "\n")
    no_face = sum(1 for line in lines if '"status": "no_face"' in line)  # --align: retries ran out
    missing = len(items) - len(done) - no_face
    meta = dict(meta, status="complete" if not missing else "incomplete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                counts={"total": len(items), "ok": len(done), "missing": missing, "no_face": no_face,
                        "classes": len({it.cls for it in items}) if G.c_dim else len({it.index for it in items})})
    write_marker(out, RUN_JSON, meta)
    shutil.rmtree(parts, ignore_errors=True)
    return not missing
