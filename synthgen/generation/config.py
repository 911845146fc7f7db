"""GenerateConfig, its validation, and the per-device chunk size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from synthgen.contract import MARKERS
from synthgen.errors import DataError, UsageError
from synthgen.runs import check_choice, check_device, check_range, check_types
from synthgen.seeding import parse_int_list

# Samples per network call, fixed per run so that outputs never depend on batching. CPU: 16
# (no gain beyond that); CUDA: 256, since a 128 px forward of 16 images is launch-bound on a GPU.
DEFAULT_CHUNK = {"cpu": 16, "cuda": 256}
FORWARD_CHUNK = DEFAULT_CHUNK["cpu"]  # the CPU default (kept for callers of the old name)
RUN_JSON = MARKERS["generate"]
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


def resolve_chunk(cfg: GenerateConfig, device_type: str) -> int:
    """Samples per network call: --chunk-size, or the device type's default."""
    if cfg.chunk_size is None:
        return DEFAULT_CHUNK.get(device_type, DEFAULT_CHUNK["cpu"])
    if isinstance(cfg.chunk_size, bool) or not isinstance(cfg.chunk_size, int) or cfg.chunk_size < 1:
        raise UsageError(f"must be an integer >= 1, got {cfg.chunk_size!r}", "--chunk-size")
    return cfg.chunk_size


def _align_batched(cfg: GenerateConfig, device_type: str) -> bool:
    return device_type == "cuda" if cfg.align_batched is None else bool(cfg.align_batched)


