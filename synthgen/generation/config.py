"""GenerateConfig, its validation, and the per-device chunk size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from synthgen.contract import MARKERS
from synthgen.encodings import FILE_FORMATS
from synthgen.errors import UsageError
from synthgen.options import check_choices, check_ranges, opt
from synthgen.runs import check_device, check_types
from synthgen.seeding import parse_int_list

# Samples per network call, fixed per run so that outputs never depend on batching. CPU: 16
# (no gain beyond that); CUDA: 256, since a 128 px forward of 16 images is launch-bound on a GPU.
DEFAULT_CHUNK = {"cpu": 16, "cuda": 256}
RUN_JSON = MARKERS["generate"]
PARTS_DIR = ".parts"
# = the StyleGAN backend's NOISE_MODES and PRECISIONS (a test checks), without importing torch
NOISE_MODES = ("const", "random", "none")
PRECISIONS = ("auto", "fp32", "fp16")


@dataclass
class GenerateConfig:
    network: str = opt(path="file", metavar="PKL_OR_CKPT", help="NVIDIA StyleGAN2-ADA .pkl or synthgen checkpoint.")
    out: str = opt(path="dir", metavar="DIR", help="Output directory.")
    classes: str = opt("all", metavar="all|RANGE|LIST",
                       help="Classes to sample, e.g. 0-10571 or 0,5,7-9 (conditional nets).")
    # per_class and count: any integer on the command line, the range is checked by validate_config
    per_class: int = opt(60, type=int, range=(1, None), unit="images", metavar="N",
                         help="Images per class (conditional nets).")
    count: int | None = opt(None, type=int, range=(1, None), unit="instances", metavar="N",
                            help="Instances to sample (unconditional nets).")
    views: int = opt(1, range=(1, None), metavar="K", help="GAN re-renderings per instance (unconditional nets).")
    mix_layers: str | None = opt(None, metavar="A-B",
                                 help="ws layers a view takes from its mixing latent [default: second half].")
    seed: int = opt(0, range=(0, None), metavar="INT", help="Base seed of the run.")
    seeds: str | None = opt(None, metavar="LIST",
                            help="Explicit NVIDIA seeds, one image per seed (per class), e.g. 0-99.")
    seed_pool: str | None = opt(None, metavar="RANGE",
                                help="SFace recipe: draw latents from this pool of seeds, e.g. 1-1000.")
    psi: float = opt(1.0, metavar="FLOAT", help="Truncation psi (1 = no truncation).")
    truncation_cutoff: int | None = opt(None, range=(0, None), metavar="N", help="Truncate only the first N ws.")
    noise_mode: str = opt("const", choices=NOISE_MODES, help="Per-layer noise; 'random' is seeded per image.")
    batch_size: int = opt(64, range=(1, None), unit="images", metavar="N",
                          help="Images per step (never changes an image).")
    device: str = opt("auto", metavar="auto|cpu|cuda|cuda:N", help="Where to run the network.")
    force_fp32: bool = opt(False, help="Alias of --precision fp32.")
    precision: str = opt("auto", choices=PRECISIONS,
                         help="fp16 blocks of the file: auto = fp16 on CUDA, fp32 on CPU; fp16 = on any device "
                              "(CPU: slow, reproduces NVIDIA's CPU fp16 outputs).")
    # None = DEFAULT_CHUNK of the device type; resolve_chunk checks the range with its own message
    chunk_size: int | None = opt(None, range=(1, None), unit="samples", metavar="N",
                                 help="Samples per network call; outputs depend on it, never on --batch-size. "
                                      "[default: 16 on CPU, 256 on CUDA; 1 with --precision fp16 rounds exactly "
                                      "as NVIDIA's generate.py]")
    format: str = opt("png", choices=lambda: tuple(FILE_FORMATS), help="Image file format.")
    jpeg_quality: int = opt(95, range=(1, 100), metavar="Q", help="JPEG quality (with --format jpg).")
    writers: int = opt(4, range=(1, None), unit="threads", metavar="N", help="Encoder/writer threads.")
    overwrite: bool = opt(False, help="Replace an output directory that holds a different run.")
    align: bool = opt(False, help="Align each image on the fly; re-render misses with new seeds.")
    max_retries: int = opt(10, range=(0, None), metavar="N", help="With --align: new seeds tried per image.")
    align_size: int = opt(112, range=(16, None), unit="px", metavar="PX", help="With --align: crop side.")
    align_template: str = opt("arcface", metavar="NAME|FILE.json", help="With --align: landmark template.")
    min_face_size: int = opt(20, range=(1, None), unit="px", metavar="PX", help="With --align: MTCNN minimum face size.")
    # None = batched on CUDA only
    align_batched: bool | None = opt(None, flag="--batched-align", off_flag="--per-image-align",
                                     help="With --align: detect a whole step in one MTCNN call, misses re-checked "
                                          "per image. [default: batched on CUDA, per image on CPU]")
    # job-array slice (None = all, or from torchrun's RANK)
    shard_index: int | None = opt(None, metavar="I", help="Job arrays: this job's slice (with --num-shards).")
    num_shards: int | None = opt(None, metavar="N", help="Job arrays: number of slices.")
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
    check_choices(cfg, ("noise_mode", "format", "precision"))
    resolve_chunk(cfg, "cpu")  # --chunk-size
    check_ranges(cfg, ("per_class", "count", "views", "seed", "truncation_cutoff", "batch_size", "writers",
                       "jpeg_quality", "max_retries", "align_size", "min_face_size"))
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
            raise UsageError(f"{cfg.network}: no such file; expected a StyleGAN2-ADA .pkl or a synthgen checkpoint (`synthgen convert` writes one); check the path", "--network")
        if cfg.align:
            from synthgen.alignment import load_template

            try:
                load_template(cfg.align_template, cfg.align_size)
            except UsageError as e:
                raise UsageError(e.message, "--align-template") from None


MAX_CHUNK = 8192  # samples per network call (the CUDA default is 256)


def resolve_chunk(cfg: GenerateConfig, device_type: str) -> int:
    """Samples per network call: --chunk-size, or the device type's default."""
    if cfg.chunk_size is None:
        return DEFAULT_CHUNK.get(device_type, DEFAULT_CHUNK["cpu"])
    if isinstance(cfg.chunk_size, bool) or not isinstance(cfg.chunk_size, int) or cfg.chunk_size < 1:
        raise UsageError(f"must be an integer >= 1, got {cfg.chunk_size!r}", "--chunk-size")
    if cfg.chunk_size > MAX_CHUNK:  # one network call's memory grows with it (a card could ask for billions)
        raise UsageError(f"must be at most {MAX_CHUNK}, got {cfg.chunk_size}", "--chunk-size")
    return cfg.chunk_size


def _align_batched(cfg: GenerateConfig, device_type: str) -> bool:
    return device_type == "cuda" if cfg.align_batched is None else bool(cfg.align_batched)


