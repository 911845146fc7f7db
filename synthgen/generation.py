"""`synthgen generate`: sample a generator into identity folders, deterministically and resumably.

Layout (ImageFolder-compatible):
    conditional nets     DIR/<class:06d>/<index:06d>.<ext>
    unconditional nets   DIR/<instance:07d>/<view:02d>.<ext>   (--views K re-renderings each)
    DIR/manifest.jsonl   one record per image (path, class, index, seeds, psi, noise, status)
    DIR/run.json         config, generator hyper-parameters and sha256, versions, times, counts

Determinism: the work list is a pure function of the config; each image's latent and noise
come from its own seeds (see `synthgen.seeding`). The network is always run on chunks of
exactly `--chunk-size` samples (the last one padded; default per device type, DEFAULT_CHUNK),
because float results of batched convolutions and matmuls depend on the batch shape; within a
fixed shape each sample is computed identically wherever it sits. So `--batch-size`, the number
of processes and any interruption leave every image byte-identical for a given device type,
precision and chunk size (all three are part of the output identity in run.json).

Resume: images are written under a temporary name and renamed, so a file under its final
name is complete; a rerun skips them. The manifest is rebuilt from the work list and the files.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import io
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synthgen import __version__
from synthgen.errors import DataError, UsageError
from synthgen.fsutil import atomic_write_text
from synthgen.runs import (check_choice, check_device, check_output_dir, check_range, check_types, config_hash,
                           ensure_writable_dir, remove_stale_temps)
from synthgen.seeding import SEED_POLICY, derive_seed, latent, parse_int_list

# Samples per network call, fixed per run so that outputs never depend on batching. CPU: 16
# (no gain beyond that); CUDA: 256, since a 128 px forward of 16 images is launch-bound on a GPU.
DEFAULT_CHUNK = {"cpu": 16, "cuda": 256}
FORWARD_CHUNK = DEFAULT_CHUNK["cpu"]  # the CPU default (kept for callers of the old name)
MANIFEST = "manifest.jsonl"
RUN_JSON = "run.json"
PARTS_DIR = ".parts"


@dataclass
class GenerateConfig:
    network: str  # path to a NVIDIA .pkl or a synthgen checkpoint
    out: str  # output directory
    classes: str = "all"  # "all", "0-10571", "0,5,7-9" (conditional nets only)
    per_class: int = 60  # images per class (conditional nets)
    count: int | None = None  # instances (unconditional nets)
    views: int = 1  # re-renderings per instance (unconditional nets)
    mix_layers: str | None = None  # ws layers taken from the mixing latent for views >= 1; None = second half
    seed: int = 0  # base seed of the run
    seeds: str | None = None  # explicit NVIDIA seeds: one image per seed (per class)
    seed_pool: str | None = None  # SFace recipe: latents drawn from this pool of NVIDIA seeds
    psi: float = 1.0  # truncation psi; 1 = none
    truncation_cutoff: int | None = None  # truncate only the first N ws; None = all
    noise_mode: str = "const"  # const | random (seeded per image) | none
    batch_size: int = 64  # images per step (network calls are always chunk_size samples)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    force_fp32: bool = False  # alias of precision="fp32"
    precision: str = "auto"  # auto (fp16 blocks in fp16 on CUDA, fp32 on CPU) | fp32 | fp16 (any device)
    chunk_size: int | None = None  # samples per network call; None = DEFAULT_CHUNK of the device type
    format: str = "png"  # png | jpg
    jpeg_quality: int = 95
    writers: int = 4  # encoder/writer threads
    overwrite: bool = False
    align: bool = False  # align each image on the fly (MTCNN + ArcFace template); retry misses
    max_retries: int = 10  # with --align: new seeds tried per image before giving up
    align_size: int = 112  # with --align: crop side
    align_template: str = "arcface"  # with --align: arcface | arcface-shift8 | FILE.json
    min_face_size: int = 20  # with --align: MTCNN minimum face size
    align_batched: bool | None = None  # with --align: one MTCNN call per step, misses re-checked per image; None = on CUDA only
    shard_index: int | None = None  # job-array slice (None = all, or from torchrun's RANK)
    num_shards: int | None = None
    progress: bool = True

    # Fields that do not change any output byte, so a resume may change them.
    RUNTIME_FIELDS = ("out", "batch_size", "writers", "overwrite", "shard_index", "num_shards", "progress", "network", "device")
    # Fields whose resolved value (precision and chunk used, batched alignment on/off) joins the
    # identity instead of the value as given, so "auto" and its explicit equivalent resume alike.
    RESOLVED_FIELDS = ("precision", "force_fp32", "chunk_size", "align_batched")


MAX_ITEMS = 100_000_000  # images one run plans in memory; a typo (per_class = 6e9) must not eat all RAM


def _check_list_size(text, flag: str) -> None:
    """Refuse '0-4000000000' before it is expanded into a list."""
    if not isinstance(text, str) or text == "all":
        return
    n = 0
    for part in text.replace(" ", "").split(","):
        a, _, b = part.partition("-")
        if a.isdigit() and b.isdigit():
            n += max(0, int(b) - int(a) + 1)
        else:
            n += 1
    if n > MAX_ITEMS:
        raise UsageError(f"'{text}' names {n:,} values, expected at most {MAX_ITEMS:,}; use a smaller range", flag)


def validate_config(cfg: GenerateConfig, host: bool = True) -> None:
    """Every check that needs no generator and writes nothing: types, choices, ranges, lists;
    with `host`, also this machine's side (network file, --align template file, device).
    generate() calls it before touching --out; `synthgen run` calls it before any stage runs."""
    check_types(cfg)
    check_choice(cfg.noise_mode, "--noise-mode", ("const", "random", "none"))
    check_choice(cfg.format, "--format", ("png", "jpg"))
    from synthgen.generators.stylegan2ada import PRECISIONS

    check_choice(cfg.precision, "--precision", PRECISIONS)
    resolve_chunk(cfg, "cpu")  # --chunk-size
    for flag, value, lo, hi in (("--per-class", cfg.per_class, 1, None), ("--count", cfg.count, 1, None),
                                ("--views", cfg.views, 1, None), ("--seed", cfg.seed, 0, None),
                                ("--truncation-cutoff", cfg.truncation_cutoff, 0, None),
                                ("--batch-size", cfg.batch_size, 1, None), ("--writers", cfg.writers, 1, None),
                                ("--jpeg-quality", cfg.jpeg_quality, 1, 100), ("--max-retries", cfg.max_retries, 0, None),
                                ("--align-size", cfg.align_size, 16, None), ("--min-face-size", cfg.min_face_size, 1, None)):
        check_range(value, flag, lo, hi)
    if cfg.align and cfg.format != "png":
        raise UsageError("--align writes PNG crops (provenance lives in a PNG text chunk); drop --format jpg", "--format")
    for flag, text in (("--seeds", cfg.seeds), ("--seed-pool", cfg.seed_pool), ("--classes", cfg.classes),
                       ("--mix-layers", cfg.mix_layers)):
        _check_list_size(text, flag)
    if (cfg.per_class or 0) > MAX_ITEMS or (cfg.count or 0) > MAX_ITEMS:
        flag = "--per-class" if (cfg.per_class or 0) > MAX_ITEMS else "--count"
        raise UsageError(f"got {cfg.per_class if flag == '--per-class' else cfg.count}, expected at most {MAX_ITEMS:,} "
                         "(the work list is planned in memory); split the job with --classes ranges", flag)
    seeds = parse_int_list(cfg.seeds, "--seeds", 0, 2**32 - 1) if cfg.seeds else None
    pool = parse_int_list(cfg.seed_pool, "--seed-pool", 0, 2**32 - 1) if cfg.seed_pool else None
    if seeds and pool:
        raise UsageError("--seeds and --seed-pool are exclusive; pick one", "--seed-pool")
    if cfg.classes not in (None, "all"):
        parse_int_list(cfg.classes, "--classes", 0, None)
    if cfg.mix_layers is not None:
        parse_int_list(cfg.mix_layers, "--mix-layers", 0, None)
    if cfg.shard_index is not None or cfg.num_shards is not None:
        if cfg.shard_index is None or cfg.num_shards is None:
            raise UsageError("--shard-index and --num-shards go together", "--num-shards")
        if cfg.num_shards < 1 or not (0 <= cfg.shard_index < cfg.num_shards):
            raise UsageError(f"need 0 <= shard-index < num-shards, got {cfg.shard_index}/{cfg.num_shards}", "--shard-index")
    check_device(cfg.device, "--device", host)
    if host:
        if not Path(cfg.network).is_file():
            raise DataError(f"{cfg.network}: network file not found (expected a StyleGAN2-ADA .pkl or a synthgen "
                            "checkpoint); check --network")
        if cfg.align:
            from synthgen.alignment import load_template

            try:
                load_template(cfg.align_template, cfg.align_size)
            except UsageError as e:
                raise UsageError(e.message, "--align-template") from None


@dataclass
class Item:
    path: str
    cls: int | None
    index: int
    seed: int  # NVIDIA seed of the latent
    noise_seed: int | None
    mix_seed: int | None = None
    extra: dict = field(default_factory=dict)

    def record(self, common: dict, status: str = "ok") -> dict:
        r = {"path": self.path, "class": self.cls, "index": self.index, "seed": self.seed}
        r.update(common)
        r["noise_seed"] = self.noise_seed
        if self.mix_seed is not None:
            r["mix_seed"] = self.mix_seed
        r.update(self.extra)
        r["status"] = status
        return r


# ----------------------------------------------------------------------------------------------
# Planning: config -> work list (pure)


def plan_items(cfg: GenerateConfig, G) -> list[Item]:
    ext = "jpg" if cfg.format == "jpg" else "png"
    rnd = cfg.noise_mode == "random"
    seeds = parse_int_list(cfg.seeds, "--seeds", 0, 2**32 - 1) if cfg.seeds else None
    pool = parse_int_list(cfg.seed_pool, "--seed-pool", 0, 2**32 - 1) if cfg.seed_pool else None
    if seeds and pool:
        raise UsageError("--seeds and --seed-pool are exclusive; pick one", "--seed-pool")
    if cfg.align and cfg.format != "png":
        raise UsageError("--align writes PNG crops (provenance lives in a PNG text chunk); drop --format jpg", "--format")
    if cfg.max_retries < 0:
        raise UsageError(f"must be >= 0, got {cfg.max_retries}", "--max-retries")


    def seed_for(*place) -> int:  # latent seed of an image that --seeds does not name
        if pool:
            return pool[derive_seed(cfg.seed, *place, "pool") % len(pool)]
        return derive_seed(cfg.seed, *place)

    items: list[Item] = []
    if G.c_dim == 0:
        if cfg.classes not in (None, "all"):
            raise UsageError(f"'{cfg.classes}' given, but this generator is unconditional (c_dim=0); drop --classes", "--classes")
        if cfg.views < 1:
            raise UsageError(f"must be >= 1, got {cfg.views}", "--views")
        lo, hi = _mix_range(cfg, G)
        n = len(seeds) if seeds else cfg.count
        if not n or n < 1:
            raise UsageError("an unconditional generator needs --count N (instances) or --seeds", "--count")
        for i in range(n):
            seed = seeds[i] if seeds else seed_for("instance", i)
            for v in range(cfg.views):
                items.append(Item(
                    path=f"{i:07d}/{v:02d}.{ext}", cls=None, index=i, seed=seed,
                    noise_seed=derive_seed(cfg.seed, "instance", i, "noise", v) if rnd else None,
                    mix_seed=derive_seed(cfg.seed, "instance", i, "mix", v) if v > 0 else None,
                    extra={"instance": i, "view": v, **({"mix_layers": [lo, hi]} if v > 0 else {})},
                ))
        return items
    if cfg.views != 1:
        raise UsageError("views are for unconditional nets (USynthFace); this one is class-conditional", "--views")
    if cfg.count is not None:
        raise UsageError("--count is for unconditional nets; use --classes and --per-class", "--count")
    classes = list(range(G.c_dim)) if cfg.classes in (None, "all") else parse_int_list(cfg.classes, "--classes", 0, None)
    bad = [c for c in classes if c >= G.c_dim]
    if bad:
        raise UsageError(f"class {bad[0]} is out of range: this generator has {G.c_dim} classes (0-{G.c_dim - 1})", "--classes")
    n = len(seeds) if seeds else cfg.per_class
    if n < 1:
        raise UsageError(f"must be >= 1, got {cfg.per_class}", "--per-class")
    for c in classes:
        for k in range(n):
            seed = seeds[k] if seeds else seed_for(c, k)
            items.append(Item(f"{c:06d}/{k:06d}.{ext}", c, k, seed, derive_seed(cfg.seed, c, k, "noise") if rnd else None))
    return items


def _mix_range(cfg, G) -> tuple[int, int]:
    if cfg.mix_layers is None:
        return G.num_ws // 2, G.num_ws - 1
    layers = parse_int_list(cfg.mix_layers, "--mix-layers", 0, G.num_ws - 1)
    return min(layers), max(layers)


# ----------------------------------------------------------------------------------------------
# Rendering


def resolve_chunk(cfg: GenerateConfig, device_type: str) -> int:
    """Samples per network call: --chunk-size, or the device type's default."""
    if cfg.chunk_size is None:
        return DEFAULT_CHUNK.get(device_type, DEFAULT_CHUNK["cpu"])
    if isinstance(cfg.chunk_size, bool) or not isinstance(cfg.chunk_size, int) or cfg.chunk_size < 1:
        raise UsageError(f"must be an integer >= 1, got {cfg.chunk_size!r}", "--chunk-size")
    return cfg.chunk_size


def render(G, items: list[Item], cfg: GenerateConfig, chunk_size: int | None = None) -> np.ndarray:
    """uint8 NHWC images for `items`, in network calls of exactly `chunk_size` samples (default:
    resolved from cfg and G's device). Mapping and synthesis both see the fixed shape."""
    import torch

    from synthgen.generators import to_uint8

    n_chunk = chunk_size or resolve_chunk(cfg, G.device.type)
    out = []
    for s in range(0, len(items), n_chunk):
        chunk = items[s : s + n_chunk]
        pad = n_chunk - len(chunk)
        z = np.stack([latent(it.seed, G.z_dim) for it in chunk] + [np.zeros(G.z_dim)] * pad)
        cls = None if G.c_dim == 0 else [it.cls for it in chunk] + [0] * pad
        ws = G.map(z, cls, cfg.psi, cfg.truncation_cutoff)
        if any(it.mix_seed is not None for it in chunk):
            zm = np.stack([latent(it.mix_seed, G.z_dim) if it.mix_seed is not None else np.zeros(G.z_dim) for it in chunk] + [np.zeros(G.z_dim)] * pad)
            wm = G.map(zm, cls, cfg.psi, cfg.truncation_cutoff)
            for i, it in enumerate(chunk):
                if it.mix_seed is not None:
                    lo, hi = it.extra["mix_layers"]
                    ws[i, lo : hi + 1] = wm[i, lo : hi + 1]
        noise_seeds = [it.noise_seed or 0 for it in chunk] + [0] * pad
        with torch.no_grad():
            img = G.synthesize(ws, cfg.noise_mode, noise_seeds if cfg.noise_mode == "random" else None)
        out.append(to_uint8(img)[: len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, G.resolution, G.resolution, G.img_channels), np.uint8)


def encode(img: np.ndarray, fmt: str, quality: int, meta: dict | None = None) -> bytes:
    """PNG or JPEG bytes; `meta` is stored as a PNG text chunk 'synthgen' (JSON)."""
    from PIL import Image, PngImagePlugin

    buf = io.BytesIO()
    im = Image.fromarray(img)
    if fmt == "jpg":
        im.save(buf, format="JPEG", quality=quality)
    else:
        info = None
        if meta is not None:
            info = PngImagePlugin.PngInfo()
            info.add_text(PNG_META_KEY, json.dumps(meta, sort_keys=True))
        im.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


PNG_META_KEY = "synthgen"


def read_png_meta(path) -> dict:
    from PIL import Image

    with Image.open(path) as im:
        text = im.text.get(PNG_META_KEY) if hasattr(im, "text") else None
    return json.loads(text) if text else {}


def _write_image(root: Path, rel: str, img: np.ndarray, fmt: str, quality: int, meta: dict | None = None) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(encode(img, fmt, quality, meta))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ----------------------------------------------------------------------------------------------
# Run bookkeeping


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


def _align_batched(cfg: GenerateConfig, device_type: str) -> bool:
    return device_type == "cuda" if cfg.align_batched is None else bool(cfg.align_batched)


def _dist_info(cfg: GenerateConfig) -> tuple[int, int, bool]:
    """(slice index, number of slices, under torchrun)."""
    if cfg.shard_index is not None or cfg.num_shards is not None:
        if cfg.shard_index is None or cfg.num_shards is None:
            raise UsageError("--shard-index and --num-shards go together", "--num-shards")
        if cfg.num_shards < 1 or not (0 <= cfg.shard_index < cfg.num_shards):
            raise UsageError(f"need 0 <= shard-index < num-shards, got {cfg.shard_index}/{cfg.num_shards}", "--shard-index")
        return cfg.shard_index, cfg.num_shards, False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return int(os.environ["RANK"]), world, True
    return 0, 1, False


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
            summary["complete"] = _finalize_if_complete(out, cfg, items, G, meta, world if not torchrun else 1)
        return summary
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
    aligner = _InlineAligner(cfg, G.device, _align_batched(cfg, G.device.type)) if cfg.align else None
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
                    pending.append(pool.submit(_write_image, out, it.path, img, cfg.format, cfg.jpeg_quality, meta))
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


class _InlineAligner:
    """`generate --align`: MTCNN + similarity warp on each rendered image; a miss is re-rendered
    with the item's next retry seed (derive_seed(base, class, index, "retry", attempt)), so
    every class ends with exactly --per-class aligned images unless retries run out.

    batched=True (the default on CUDA): one MTCNN call detects the whole rendered step; the
    images it misses are detected again one at a time, and only a per-image miss triggers a
    retry, so a seed is never given up because of the images that shared its batch.
    """

    def __init__(self, cfg: GenerateConfig, device, batched: bool = False):
        from synthgen.alignment import load_template, make_detector

        self.size = cfg.align_size
        self.template_name, self.template = load_template(cfg.align_template, cfg.align_size)
        self.device = device
        # per image: which seeds fail must not depend on batching
        self.detector = make_detector("mtcnn", device=str(device), min_face_size=cfg.min_face_size, batched=False)
        self.batched = None
        if batched:
            self.batched = make_detector("mtcnn", device=str(device), min_face_size=cfg.min_face_size, batched=True)

    def _align(self, rels, imgs, detector):
        from synthgen.alignment import detect_and_align

        return detect_and_align(rels, imgs, detector, self.template, self.template_name, self.size, device=self.device)

    def detect(self, rels: list[str], imgs: list):
        """(records, crops by index): batched first pass if enabled, then per image for its misses."""
        if self.batched is None:
            return self._align(rels, imgs, self.detector)
        recs, crops = self._align(rels, imgs, self.batched)
        miss = [i for i in range(len(imgs)) if i not in crops]
        if miss:
            recs2, crops2 = self._align([rels[i] for i in miss], [imgs[i] for i in miss], self.detector)
            for k, i in enumerate(miss):
                recs[i] = recs2[k]
                if k in crops2:
                    crops[i] = crops2[k]
        return recs, crops

    def __call__(self, batch: list[Item], imgs, cfg: GenerateConfig):
        imgs = list(imgs)
        recs, crops = self.detect([it.path for it in batch], imgs)
        out_imgs, metas, retry, failed = [], [], [], []
        for i, (it, rec) in enumerate(zip(batch, recs)):
            if i in crops:
                out_imgs.append(crops[i])
                metas.append({"seed": it.seed, "noise_seed": it.noise_seed, "attempt": it.extra.get("attempt", 0),
                              "skipped_seeds": it.extra.get("skipped_seeds", []), "prob": rec["prob"],
                              "landmarks": rec["landmarks"], "transform": rec["transform"],
                              "template": self.template_name, "align_size": cfg.align_size})
                continue
            out_imgs.append(imgs[i])
            metas.append(None)
            skipped = it.extra.get("skipped_seeds", []) + [it.seed]
            attempt = it.extra.get("attempt", 0) + 1
            if attempt > cfg.max_retries:
                failed.append(dataclasses.replace(it, extra={**it.extra, "skipped_seeds": skipped, "attempt": attempt - 1}))
                continue
            c = it.cls if it.cls is not None else "instance"
            retry.append(dataclasses.replace(
                it, seed=derive_seed(cfg.seed, c, it.index, "retry", attempt),
                noise_seed=derive_seed(cfg.seed, c, it.index, "noise", "retry", attempt) if it.noise_seed is not None else None,
                extra={**it.extra, "attempt": attempt, "skipped_seeds": skipped}))
        return out_imgs, metas, retry, failed


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


def _mark_part_done(out: Path, rank: int, world: int, mine: list[Item]) -> None:
    parts = out / PARTS_DIR
    parts.mkdir(exist_ok=True)
    atomic_write_text(parts / f"part-{rank:05d}-of-{world:05d}.done", f"{len(mine)}\n")


def _remove_stale_temps(out: Path, items: list[Item]) -> None:
    """Temp files left by a killed writer (every slice has finished when this runs). At the top
    (run.json, manifest.jsonl) only those of dead processes: a concurrent finalizer may be writing."""
    remove_stale_temps(out, recursive=False, only_dead=True)
    for folder in sorted({it.path.split("/", 1)[0] for it in items}):
        d = out / folder
        if d.is_dir():
            for e in os.scandir(d):
                if e.name.startswith(".") and ".tmp-" in e.name:
                    os.unlink(e.path)


def _finalize_if_complete(out: Path, cfg, items: list[Item], G, meta: dict, world: int) -> bool:
    """Write manifest.jsonl and the final run.json once every slice has finished."""
    parts = out / PARTS_DIR  # job arrays: each slice leaves a marker; the last one to finish merges
    if world > 1 and not all((parts / f"part-{r:05d}-of-{world:05d}.done").is_file() for r in range(world)):
        return False
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
    prev = out / RUN_JSON
    if prev.is_file():
        meta["started"] = json.loads(prev.read_text()).get("started", meta["started"])
    atomic_write_text(out / RUN_JSON, json.dumps(meta, indent=2))
    shutil.rmtree(parts, ignore_errors=True)
    return not missing
