"""The work list: which images a config asks for, each with its seeds (a pure function of the config)."""

from __future__ import annotations

from dataclasses import dataclass, field


from synthgen.contract import GenerateRecord
from synthgen.errors import UsageError
from synthgen.seeding import derive_seed, parse_int_list

from .config import GenerateConfig


@dataclass
class Item:
    path: str
    cls: int | None
    index: int
    seed: int  # NVIDIA seed of the latent
    noise_seed: int | None
    mix_seed: int | None = None
    extra: dict = field(default_factory=dict)

    def record(self, common: dict, status: str = "ok") -> GenerateRecord:
        r: GenerateRecord = {"path": self.path, "class": self.cls, "index": self.index, "seed": self.seed}
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
        _bound(n * cfg.views, "--count")
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
    _bound(n * len(classes), "--per-class")
    for c in classes:
        for k in range(n):
            seed = seeds[k] if seeds else seed_for(c, k)
            items.append(Item(f"{c:06d}/{k:06d}.{ext}", c, k, seed, derive_seed(cfg.seed, c, k, "noise") if rnd else None))
    return items


def _bound(total: int, flag: str) -> None:
    """A run of more than MAX_LIST images is refused before its work list is built (a card or
    config asking for billions would otherwise allocate gigabytes first)."""
    from .config import MAX_ITEMS

    if total > MAX_ITEMS:  # each count alone is checked by validate_config; here their product
        raise UsageError(f"{total:,} images asked for, more than {MAX_ITEMS:,} in one run; split the job with "
                         "--classes ranges or ask for fewer", flag)


def _mix_range(cfg, G) -> tuple[int, int]:
    if cfg.mix_layers is None:
        return G.num_ws // 2, G.num_ws - 1
    layers = parse_int_list(cfg.mix_layers, "--mix-layers", 0, G.num_ws - 1)
    return min(layers), max(layers)


# ----------------------------------------------------------------------------------------------
# Rendering


