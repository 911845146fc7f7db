"""Several processes: torch.distributed ranks (torchrun) and job-array slices."""

from __future__ import annotations

import os
from pathlib import Path


from synthgen.errors import UsageError
from synthgen.fsutil import atomic_write_text
from synthgen.runs import remove_stale_temps

from .config import GenerateConfig
from .planning import Item

PARTS_DIR = ".parts"


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


