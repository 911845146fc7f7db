"""`synthgen run`: generate -> align -> shard -> audit from one config, into one run directory.

    RUN/raw/       generate output        RUN/shards/   shard output
    RUN/aligned/   align output           RUN/audit/    audit report
    RUN/run.json   the config and, per stage, its config hash, status, summary and seconds

A stage whose output is complete for the same stage config is skipped; an interrupted stage
resumes (each stage's own resume logic); a stage output made by a different config is refused
unless `overwrite`. Config (TOML), every key optional unless marked:

    out = "runs/sface60"                 # run directory (required here or as --out)
    [generate]  network (required), classes, per_class, count, views, seed, seeds, seed_pool,
                psi, truncation_cutoff, noise_mode, batch_size, device, format, ...
    [align]     enabled (default true), size, template, min_face_size, select, on_miss, ...
    [shard]     enabled (default true), shard_size, encoding, compression, ...
    [audit]     enabled (default true), authentic (required when enabled), matcher, weights,
                arch, fmr, threshold, max_per_class, fail_on_leak, ...
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from synthgen.errors import UsageError
from synthgen.fsutil import atomic_write_text
from synthgen.runs import config_hash

STAGES = ("generate", "align", "shard", "audit")
_RESERVED = {"generate": {"out"}, "align": {"inp", "out"}, "shard": {"inp", "out"},
             "audit": {"synthetic", "out"}}


def _stage_classes():
    from synthgen.alignment import AlignConfig
    from synthgen.audit.report import AuditConfig
    from synthgen.generation import GenerateConfig
    from synthgen.shards import ShardConfig

    return {"generate": GenerateConfig, "align": AlignConfig, "shard": ShardConfig, "audit": AuditConfig}


def load_config(path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: config file not found", "CONFIG")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{p}: not valid TOML ({e})", "CONFIG") from None


def apply_override(cfg: dict, item: str) -> None:
    """`stage.key=value` (or `out=value`) into the config; value in TOML syntax, else a string."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    if "=" not in item:
        raise UsageError(f"'{item}': expected STAGE.KEY=VALUE, e.g. generate.per_class=10", "--set")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    parts = key.strip().split(".")
    if len(parts) == 1:
        cfg[parts[0]] = value
    elif len(parts) == 2:
        section = cfg.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise UsageError(f"'{key}': '{parts[0]}' is not a section", "--set")
        section[parts[1]] = value
    else:
        raise UsageError(f"'{key}': expected STAGE.KEY or KEY", "--set")


def validate(cfg: dict) -> dict:
    """Check keys against each stage's config fields; returns the normalised config."""
    classes = _stage_classes()
    known_top = {"out", *STAGES}
    for k in cfg:
        if k not in known_top:
            raise UsageError(f"unknown key '{k}' (known: {', '.join(sorted(known_top))})", "CONFIG")
    out = {"out": cfg.get("out")}
    if not out["out"]:
        raise UsageError("no run directory: set `out = \"DIR\"` in the config or pass --out", "CONFIG")
    for stage in STAGES:
        section = dict(cfg.get(stage) or {})
        fields = {f.name for f in dataclasses.fields(classes[stage])} - _RESERVED[stage] - {"progress"}
        allowed = fields | ({"enabled"} if stage != "generate" else set())
        for k in section:
            if k not in allowed:
                raise UsageError(f"[{stage}] unknown key '{k}' (known: {', '.join(sorted(allowed))})", "CONFIG")
        if stage != "generate":
            section.setdefault("enabled", True)
        out[stage] = section
    if not out["generate"].get("network"):
        raise UsageError("[generate] needs `network = \"PKL_OR_CKPT\"`", "CONFIG")
    if out["audit"]["enabled"] and not out["audit"].get("authentic"):
        raise UsageError("[audit] is enabled but has no `authentic = \"PATH\"` (an aligned authentic set); "
                         "set it or `enabled = false`", "CONFIG")
    return out


def run_pipeline(cfg: dict, overwrite: bool = False, progress: bool = True, log=print) -> dict:
    """Python API of `synthgen run`. `cfg` as loaded from TOML; returns the run record."""
    from synthgen.alignment import align
    from synthgen.audit.report import run_audit
    from synthgen.generation import generate
    from synthgen.shards import shard

    cfg = validate(cfg)
    classes = _stage_classes()
    # Under torchrun every process takes its slice of `generate`; rank 0 alone runs the rest.
    rank = int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    root = Path(cfg["out"])
    root.mkdir(parents=True, exist_ok=True)
    rec_path = root / "run.json"
    record = json.loads(rec_path.read_text()) if rec_path.is_file() else {"stages": {}}
    record["config"] = cfg
    dirs = {"generate": root / "raw", "align": root / "aligned", "shard": root / "shards", "audit": root / "audit"}
    prev_out = None
    for stage in STAGES:
        if rank != 0 and stage != "generate":
            return record  # this process's generate slice is done; rank 0 runs the later stages
        section = {k: v for k, v in cfg[stage].items() if k != "enabled"}
        if stage != "generate" and not cfg[stage]["enabled"]:
            record["stages"][stage] = {"status": "disabled"}
            continue
        if stage == "align" and cfg["generate"].get("align"):
            record["stages"][stage] = {"status": "inline (generate --align)"}
            continue
        if stage == "generate":
            args = dict(section, out=str(dirs[stage]))
        elif stage == "audit":
            args = dict(section, synthetic=str(prev_out), out=str(dirs[stage]))
        else:
            args = dict(section, inp=str(prev_out), out=str(dirs[stage]))
        args["progress"] = progress
        if "overwrite" in {f.name for f in dataclasses.fields(classes[stage])}:
            args["overwrite"] = overwrite or section.get("overwrite", False)
        h = config_hash({k: v for k, v in args.items() if k not in ("progress", "overwrite")})
        prev = record["stages"].get(stage, {})
        if prev.get("status") == "complete" and prev.get("config_hash") == h and _looks_complete(stage, dirs[stage]):
            log(f"[{stage}] complete for this config, skipped")
            prev_out = dirs[stage]
            continue
        if stage == "audit" and prev.get("config_hash") not in (None, h) and not overwrite:
            raise UsageError(f"{dirs[stage]} holds an audit made with a different config; pass --overwrite", "--overwrite")
        log(f"[{stage}] running -> {dirs[stage]}")
        t0 = time.time()
        record["stages"][stage] = {"status": "running", "config_hash": h}
        if rank == 0:
            atomic_write_text(rec_path, json.dumps(record, indent=1, default=str))
        fn = {"generate": generate, "align": align, "shard": shard, "audit": run_audit}[stage]
        result = fn(classes[stage](**args))
        record["stages"][stage] = {"status": "complete", "config_hash": h, "seconds": round(time.time() - t0, 2),
                                   "summary": _brief(stage, result)}
        if rank == 0:
            atomic_write_text(rec_path, json.dumps(record, indent=1, default=str))
        prev_out = dirs[stage]
    return record


def _looks_complete(stage, d: Path) -> bool:
    marker = {"generate": "manifest.jsonl", "align": "manifest.jsonl", "shard": "index.json", "audit": "report.json"}[stage]
    return (d / marker).is_file()


def _brief(stage, r) -> dict:
    if stage == "generate":
        return {k: r.get(k) for k in ("total", "written", "skipped_existing", "images_per_s", "complete")}
    if stage == "align":
        return {"counts": r["counts"], "written": r["written"]}
    if stage == "shard":
        return {"total": r["total"], "classes": r["num_classes"], "shards": len(r["shards"])}
    return {"verdict": r["verdict"], "flagged_fraction": r["nearest"]["images"]["flagged_fraction"],
            "chance_fraction": r["nearest"]["images"]["chance_fraction"]}
