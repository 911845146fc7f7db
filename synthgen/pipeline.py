"""`synthgen run`: generate -> align -> shard -> audit from one config, into one run directory.

    RUN/raw/       generate output        RUN/shards/   shard output
    RUN/aligned/   align output           RUN/audit/    audit report
    RUN/quality/   quality report ([quality] enabled: measured on RUN/aligned, after align)
    RUN/filtered/  the aligned set with [quality]'s filters applied (only when it has filters): shard reads it
    RUN/run.json   the config and, per stage, its config hash, status, summary and seconds

A stage whose output is complete for the same stage config is skipped; an interrupted stage
resumes (each stage's own resume logic); a stage output made by a different config is refused
unless `overwrite`. A stage's config includes the identity of its input (the stage before it,
RUN/filtered's filters included), so a changed stage re-makes everything after it. Config (TOML), every key optional unless marked:

    out = "runs/sface60"                 # run directory (required here or as --out)
    [generate]  network (required), classes, per_class, count, views, seed, seeds, seed_pool,
                psi, truncation_cutoff, noise_mode, batch_size, device, format, ...
    [align]     enabled (default true), size, template, min_face_size, select, on_miss, ...
    [quality]   enabled (default FALSE), matcher, weights, cache_dir, min_det_prob, max_yaw, max_pitch,
                min_sharpness, min_consistency, min_distinctness, no_fallback, policy, ... (filters
                write RUN/quality/decisions.csv and are applied before sharding: RUN/filtered/, with
                dropped images re-rendered from their next retry seed; synthgen.quality.apply)
    [shard]     enabled (default true), shard_size, encoding, compression, ...
    [audit]     enabled (default true), authentic (required when enabled), matcher, weights,
                arch, fmr, threshold, max_per_class, fail_on_leak, ...
    [release]   enabled (default FALSE), policy, max_rounds, formats, allow_inconclusive,
                keep_foreign, name, license, generator_license, intended_use -> RUN/release/
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from synthgen.contract import MARKERS
from synthgen.errors import DataError, UsageError
from synthgen.fsutil import atomic_write_text
from synthgen.runs import config_hash, ensure_writable_dir

STAGES = ("generate", "align", "quality", "shard", "audit")
SECTIONS = (*STAGES, "release")  # release: after the stages, off unless enabled
OFF_BY_DEFAULT = ("quality", "release")
_RESERVED = {"generate": {"out"}, "align": {"inp", "out"}, "quality": {"inp", "out"}, "shard": {"inp", "out"},
             "audit": {"synthetic", "out"}, "release": {"run", "out"}}


def _stage_classes():
    from synthgen.alignment import AlignConfig
    from synthgen.audit.config import AuditConfig
    from synthgen.generation import GenerateConfig
    from synthgen.quality.config import QualityConfig
    from synthgen.release.config import ReleaseConfig
    from synthgen.shards import ShardConfig

    return {"generate": GenerateConfig, "align": AlignConfig, "quality": QualityConfig, "shard": ShardConfig,
            "audit": AuditConfig, "release": ReleaseConfig}


def load_config(path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: config file not found", "CONFIG")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UsageError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start}), expected a TOML config", "CONFIG") from None
    except RecursionError:
        raise UsageError(f"{p}: nested too deeply, expected a TOML config of tables and values", "CONFIG") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{p}: not valid TOML ({e})", "CONFIG") from None


def apply_override(cfg: dict, item: str) -> None:
    """`stage.key=value` (or `out=value`) into the config; value in TOML syntax, else a string.
    `stage.key=` (nothing after `=`) removes the key, so the stage's default applies."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    if "=" not in item:
        raise UsageError(f"'{item}': expected STAGE.KEY=VALUE, e.g. generate.per_class=10", "--set")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not raw.strip():
        if len(parts) > 2:
            raise UsageError(f"'{key}': expected STAGE.KEY or KEY", "--set")
        holder = cfg.get(parts[0]) if len(parts) == 2 else cfg
        if isinstance(holder, dict):
            holder.pop(parts[-1], None)
        return
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if len(parts) == 1:
        cfg[parts[0]] = value
    elif len(parts) == 2:
        section = cfg.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise UsageError(f"'{key}': '{parts[0]}' is not a section", "--set")
        section[parts[1]] = value
    else:
        raise UsageError(f"'{key}': expected STAGE.KEY or KEY", "--set")


def validate(cfg: dict, host: bool = False) -> dict:
    """Check the whole run config, every stage's section included, and return it normalised.

    Structure (sections are tables, known keys), types (each value against its stage config's
    dataclass annotation: `per_class = "two"`, `enabled = "no"`, `out = 5` are errors naming
    the key) and each stage's own validation (choices, ranges). With `host`, also what depends on
    this machine (network, authentic set and weights exist, template file, devices): run_pipeline
    does that before anything is created. Writes nothing.
    """
    classes = _stage_classes()
    if not isinstance(cfg, dict):
        raise UsageError(f"got {type(cfg).__name__}, expected a table of settings", "CONFIG")
    known_top = {"out", *SECTIONS}
    for k in cfg:
        if k not in known_top:
            raise UsageError(f"unknown key '{k}' (known: {', '.join(sorted(known_top))})", "CONFIG")
    out = {"out": cfg.get("out")}
    if out["out"] is None or out["out"] == "":
        raise UsageError("no run directory: set `out = \"DIR\"` in the config or pass --out", "CONFIG")
    if not isinstance(out["out"], str):
        raise UsageError(f"got {out['out']!r} ({type(out['out']).__name__}), expected a path string like "
                         "\"runs/sface60\"; fix it in the config or pass --out", "out")
    for stage in SECTIONS:
        section = cfg.get(stage)
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise UsageError(f"got {section!r} ({type(section).__name__}), expected a table of settings: a "
                             f"[{stage}] section with key = value lines", f"[{stage}]")
        section = dict(section)
        fields = {f.name for f in dataclasses.fields(classes[stage])} - _RESERVED[stage] - {"progress"}
        allowed = fields | ({"enabled"} if stage != "generate" else set())
        for k in section:
            if k not in allowed:
                raise UsageError(f"[{stage}] unknown key '{k}' (known: {', '.join(sorted(allowed))})", "CONFIG")
        if stage != "generate":
            section.setdefault("enabled", stage not in OFF_BY_DEFAULT)
            if not isinstance(section["enabled"], bool):
                v = section["enabled"]
                raise UsageError(f"got {v!r} ({type(v).__name__}), expected true or false", f"[{stage}] enabled")
        out[stage] = section
    if not out["generate"].get("network"):
        raise UsageError("[generate] needs `network = \"PKL_OR_CKPT\"`", "CONFIG")
    if out["audit"]["enabled"] and not out["audit"].get("authentic"):
        raise UsageError("[audit] is enabled but has no `authentic = \"PATH\"` (an aligned authentic set); "
                         "set it or `enabled = false`", "CONFIG")
    if out["quality"]["enabled"] and not (out["align"]["enabled"] or out["generate"].get("align") is True):
        raise UsageError("[quality] measures aligned crops: it needs [align] enabled (or [generate] align = true); "
                         "enable one or set [quality] enabled = false", "CONFIG")
    if out["release"]["enabled"] and not (out["audit"]["enabled"] and out["shard"]["enabled"]):
        raise UsageError("[release] needs the [shard] and [audit] stages (a release certifies an audit of the "
                         "shards); enable them or set [release] enabled = false", "CONFIG")
    root = Path(out["out"])
    for stage in SECTIONS:
        if stage != "generate" and not out[stage]["enabled"]:
            continue
        if stage == "align" and out["generate"].get("align") is True:
            continue  # inline alignment replaces the stage
        _validate_stage(stage, classes[stage], out[stage], root, host)
    return out


def _placeholders(stage: str, root: Path) -> dict:
    dirs = {"generate": root / "raw", "align": root / "aligned", "quality": root / "quality", "shard": root / "shards",
            "audit": root / "audit"}
    prev = {"align": dirs["generate"], "quality": dirs["align"], "shard": dirs["align"], "audit": dirs["shard"]}
    if stage == "generate":
        return {"out": str(dirs[stage])}
    if stage == "release":
        return {"run": str(root), "out": str(root / "release")}
    if stage == "audit":
        return {"synthetic": str(prev[stage]), "out": str(dirs[stage])}
    return {"inp": str(prev[stage]), "out": str(dirs[stage])}


def _validate_stage(stage: str, cls, section: dict, root: Path, host: bool) -> None:
    """Build the stage config as run_pipeline will and run the stage's validation; errors name
    the config key (`[generate] per_class`) instead of the command-line flag."""
    from synthgen.runs import check_types

    def label(name):
        return f"[{stage}] {name}"

    args = dict({k: v for k, v in section.items() if k != "enabled"}, **_placeholders(stage, root))
    try:
        check_types(cls(**args), label=label)
        stage_validators()[stage](cls(**args), host)
        if host and stage == "generate":  # classes, counts, views, seeds against the network itself
            from synthgen.generation.planning import plan_items
            from synthgen.generators import load_generator

            plan_items(cls(**args), load_generator(args["network"], device="cpu"))
    except UsageError as e:
        if e.flag and e.flag.startswith("--"):
            name = "inp" if e.flag == "--in" else e.flag[2:].replace("-", "_")
            raise UsageError(e.message, label(name)) from None
        raise


def validate_audit_config(cfg, host: bool = True) -> None:
    """Side-effect-free checks of an AuditConfig (types, choices, ranges; with `host`, that the
    authentic set and the weights exist and the device is available)."""
    from synthgen.audit.matchers import IRESNET_LAYERS
    from synthgen.audit.report import validate as validate_audit
    from synthgen.runs import check_choice, check_device, check_range, check_types

    check_types(cfg)
    validate_audit(cfg)  # the audit stage's own option checks (matcher, fmr, threshold)
    if cfg.matcher == "iresnet":
        check_choice(cfg.arch, "--arch", tuple(IRESNET_LAYERS))
    check_choice(cfg.label_map, "--label-map", ("auto", "name", "index"))
    for flag, value in (("--batch-size", cfg.batch_size), ("--max-per-class", cfg.max_per_class),
                        ("--top-k", cfg.top_k), ("--max-pairs", cfg.max_pairs),
                        ("--max-chance-queries", cfg.max_chance_queries)):
        check_range(value, flag, 1, None)
    if cfg.matcher in ("iresnet", "onnx") and not cfg.weights:
        raise UsageError(f"--matcher {cfg.matcher} needs weights = \"FILE\"", "--weights")
    check_device(cfg.device, "--device", host)
    if host:
        from synthgen.audit.report import build_matchers

        if not Path(cfg.authentic).is_dir() and not Path(cfg.authentic).is_file():
            raise UsageError(f"{cfg.authentic} not found, expected an aligned authentic set (folder tree or "
                             "shard dir)", "--authentic")
        from synthgen.audit.embed import ImageSet, load_embeddings_file

        names = [cfg.matcher] if isinstance(cfg.matcher, str) else list(cfg.matcher)
        if "embeddings" in names:  # an empty or unreadable authentic set: refused before generate starts
            load_embeddings_file(cfg.authentic, "--authentic")
        else:
            ImageSet(cfg.authentic, cfg.max_per_class, "--authentic")
        build_matchers(cfg)  # every matcher's weights and packages, before generate starts


def stage_validators() -> dict:
    """stage -> its side-effect-free validation function `(config, host)`."""
    from synthgen.alignment import validate_config as validate_align
    from synthgen.generation import validate_config as validate_generate
    from synthgen.quality.stage import validate as validate_quality
    from synthgen.release.config import validate as validate_release
    from synthgen.shards import validate as validate_shard

    return {"generate": validate_generate, "align": validate_align, "quality": validate_quality,
            "shard": validate_shard, "audit": validate_audit_config, "release": validate_release}


def run_pipeline(cfg: dict, overwrite: bool = False, progress: bool = True, log=print) -> dict:
    """Python API of `synthgen run`. `cfg` as loaded from TOML; returns the run record."""
    from synthgen.alignment import align
    from synthgen.audit.report import run_audit
    from synthgen.generation import generate
    from synthgen.quality.stage import quality
    from synthgen.shards import shard

    cfg = validate(cfg, host=True)  # every stage's config, before anything is created
    classes = _stage_classes()
    # Under torchrun every process takes its slice of `generate`; rank 0 alone runs the rest.
    rank = int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    root = Path(cfg["out"])
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a directory; pick a run directory", "out")
    ensure_writable_dir(root, "out")
    rec_path = root / "run.json"
    record = _read_record(rec_path)
    record["config"] = cfg
    dirs = {"generate": root / "raw", "align": root / "aligned", "quality": root / "quality", "shard": root / "shards",
            "audit": root / "audit"}
    prev_out = quality_in = shard_in = None
    src_hash = None  # what prev_out holds: the config hash of the stage that wrote it
    for stage in STAGES:
        if rank != 0 and stage != "generate":
            return record  # this process's generate slice is done; rank 0 runs the later stages
        section = {k: v for k, v in cfg[stage].items() if k != "enabled"}
        if stage != "generate" and not cfg[stage]["enabled"]:
            record["stages"][stage] = {"status": "disabled"}
            if stage == "quality":
                _remove_filtered(root)
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
            quality_in, shard_in = (prev_out, shard_in) if stage == "quality" else (quality_in, prev_out)
        args["progress"] = progress
        if "overwrite" in {f.name for f in dataclasses.fields(classes[stage])}:
            args["overwrite"] = overwrite or section.get("overwrite", False)
        h = config_hash({k: v for k, v in args.items() if k not in ("progress", "overwrite")})
        prev = record["stages"].get(stage, {})
        # the input was re-made (another generate or align config, other filters): records from
        # before synthgen recorded sources have none, and are taken as made from this input
        new_input = "source" in prev and prev["source"] != src_hash and stage != "generate"
        if prev.get("status") == "complete" and prev.get("config_hash") == h and not new_input and \
                _looks_complete(stage, dirs[stage]):
            log(f"[{stage}] complete for this config, skipped")
            prev_out, src_hash = _next_input(stage, classes[stage](**args), root, dirs, prev_out, src_hash, record,
                                             rec_path, log)
            continue
        if new_input and dirs[stage].is_dir() and any(dirs[stage].iterdir()):
            if not overwrite:
                raise UsageError(f"{dirs[stage]} was made from another {_INPUT_OF[stage]} output (its config changed); "
                                 "pass --overwrite to make it again", "--overwrite")
            if stage == "align":  # align resumes by file name: crops of the old input would be kept
                import shutil

                shutil.rmtree(dirs[stage])
        if stage == "audit" and prev.get("config_hash") not in (None, h) and not overwrite and \
                (dirs[stage] / MARKERS["audit"]).is_file():  # a failed audit wrote no report: rerun freely
            raise UsageError(f"{dirs[stage]} holds an audit made with a different config; pass --overwrite", "--overwrite")
        if stage == "audit" and cfg["quality"]["enabled"]:
            _share_embeddings(cfg, quality_in, shard_in, prev_out, dirs["audit"], log)
        log(f"[{stage}] running -> {dirs[stage]}")
        t0 = time.time()
        record["stages"][stage] = {"status": "running", "config_hash": h, "source": src_hash}
        if rank == 0:
            atomic_write_text(rec_path, json.dumps(record, indent=1, default=str))
        fn = {"generate": generate, "align": align, "quality": quality, "shard": shard, "audit": run_audit}[stage]
        try:
            result = fn(classes[stage](**args))
        except UsageError as e:  # the stage names its own flags; in a run, OUT and IN are the run's folders
            if e.flag in ("--out", "--in", "IN"):
                raise UsageError(e.message, f"[{stage}]") from None
            raise
        record["stages"][stage] = {"status": "complete", "config_hash": h, "source": src_hash,
                                   "seconds": round(time.time() - t0, 2), "summary": result.brief()}
        if rank == 0:
            atomic_write_text(rec_path, json.dumps(record, indent=1, default=str))
        prev_out, src_hash = _next_input(stage, classes[stage](**args), root, dirs, prev_out, src_hash, record,
                                         rec_path, log)
    if cfg["release"]["enabled"]:
        _run_release(cfg, root, record, rec_path, progress, log, overwrite)
    else:
        record["stages"]["release"] = {"status": "disabled"}  # never a stale record of an earlier release
        if rank == 0:
            atomic_write_text(rec_path, json.dumps(record, indent=1, default=str))
    return record


def _next_input(stage, stage_cfg, root: Path, dirs: dict, prev_out, src_hash, record, rec_path, log):
    """After a stage (run or skipped): (the folder the next stage reads, the identity of what it
    holds: the config hashes every stage up to it recorded, so settings that change no output, such
    as batch sizes, do not count).
    Quality leaves the aligned crops as the input, or RUN/filtered when it has filters."""
    if stage == "quality":
        filtered = _apply_filters(stage_cfg, root, record, rec_path, log)
        if filtered is None:
            return prev_out, src_hash
        return root / "filtered", config_hash([src_hash, filtered["config_hash"]])
    if stage == "audit":
        return dirs[stage], None
    try:
        own = json.loads((dirs[stage] / MARKERS[stage]).read_text()).get("config_hash")
    except (OSError, ValueError, AttributeError):
        own = None
    return dirs[stage], config_hash([src_hash, own])  # cumulative: a re-made generate changes every later input


_INPUT_OF = {"align": "generate", "quality": "align", "shard": "align (or quality filter)", "audit": "shard"}


def _apply_filters(qcfg, root: Path, record: dict, rec_path: Path, log) -> dict | None:
    """[quality] with filters: RUN/filtered (synthgen.quality.apply), its filtered.json returned;
    without: None, and a RUN/filtered of an earlier config is removed (shard must not read it)."""
    from synthgen.quality.apply import apply_to_run
    from synthgen.quality.filters import active
    from synthgen.quality.stage import build_matcher, read_decisions, thresholds_of

    if not active(thresholds_of(qcfg)):
        _remove_filtered(root)
        return None
    from synthgen.device import resolve_device

    log(f"[quality] applying the filters -> {root / 'filtered'}")
    t0 = time.time()
    matcher = build_matcher(qcfg, resolve_device(qcfg.device)) if (qcfg.min_consistency is not None or qcfg.serfiq) else None
    cache = Path(qcfg.cache_dir) if qcfg.cache_dir else Path(qcfg.out) / "embeddings"
    meta = apply_to_run(root, qcfg, read_decisions(Path(qcfg.out)), matcher, cache, qcfg.progress, qcfg.overwrite)
    record["stages"]["quality"]["filtered"] = dict(meta["summary"], seconds=round(time.time() - t0, 2))
    atomic_write_text(rec_path, json.dumps(record, indent=1, default=str))
    return meta


def _share_embeddings(cfg: dict, quality_in: Path, shard_in: Path, shard_dir: Path, audit_dir: Path, log) -> None:
    """The audit embeds the shards; [quality] embedded the same crops (`quality_in`; the shards were
    built from `shard_in`, the same folder or RUN/filtered's hard links to its files): with a
    lossless shard encoding, quality's cached embeddings are given to the audit's cache
    (audit.embed.seed_from_tree), so each image is embedded once per matcher."""
    from synthgen.audit.embed import ImageSet, seed_from_tree

    q, a = cfg["quality"], cfg["audit"]
    if q.get("matcher", "dlib") == "none" or quality_in is None or shard_in is None:
        return
    try:
        index = json.loads((Path(shard_dir) / "index.json").read_text())
    except (OSError, ValueError):
        return
    if index.get("encoding") not in ("raw", "png"):
        return  # lossy shards hold other pixels than the crops quality embedded
    qcache = Path(q["cache_dir"]) if q.get("cache_dir") else Path(cfg["out"]) / "quality" / "embeddings"
    acache = Path(a["cache_dir"]) if a.get("cache_dir") else Path(audit_dir) / "embeddings"
    n = seed_from_tree(qcache, quality_in, shard_in, acache, ImageSet(shard_dir))
    if n:
        log(f"[audit] {n:,} embeddings taken from [quality]'s cache (the same crops)")


def _remove_filtered(root: Path) -> None:
    import shutil

    shutil.rmtree(root / "filtered", ignore_errors=True)


def _run_release(cfg: dict, root: Path, record: dict, rec_path: Path, progress: bool, log, overwrite: bool) -> None:
    """[release]: remediate, re-audit and write RUN/release (the release skips itself when done)."""
    from synthgen.release import ReleaseConfig, release

    out = root / "release"
    log(f"[release] running -> {out}")
    t0 = time.time()
    section = {k: v for k, v in cfg["release"].items() if k != "enabled"}
    section["overwrite"] = overwrite or section.get("overwrite", False)
    record["stages"]["release"] = {"status": "running"}
    atomic_write_text(rec_path, json.dumps(record, indent=1, default=str))
    result = release(ReleaseConfig(**section, run=str(root), out=str(out), progress=progress))
    record["stages"]["release"] = {"status": result.status, "seconds": round(time.time() - t0, 2),
                                   "summary": result.brief()}
    atomic_write_text(rec_path, json.dumps(record, indent=1, default=str))


def _read_record(path: Path) -> dict:
    if not path.is_file():
        return {"stages": {}}
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        record = e
    if not isinstance(record, dict) or not isinstance(record.get("stages", {}), dict) or \
            not all(isinstance(v, dict) for v in record.get("stages", {}).values()):
        raise DataError(f"{path}: not a run record ({record if isinstance(record, Exception) else 'wrong structure'}), "
                        "expected the JSON that `synthgen run` writes; delete it and rerun (finished stage outputs "
                        "are checked and kept)")
    record.setdefault("stages", {})
    return record


def _looks_complete(stage, d: Path) -> bool:
    marker = {"generate": "manifest.jsonl", "align": "manifest.jsonl", "quality": "report.json", "shard": "index.json",
              "audit": "report.json"}[stage]
    return (d / marker).is_file()
