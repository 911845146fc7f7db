"""`synthgen rebuild CARD --network PKL --out DIR`: regenerate a release from its card.

Every image of a release is a function of the generator file, the seeds and the configs the
card records. Rebuild runs generate (and align) with those configs into DIR/.work, applies the
card's removals and replacements (replacements re-rendered at their recorded attempt), writes
the card's formats into DIR, and compares each data file with the card's sha256 (`files`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from synthgen.errors import DataError, UsageError
from synthgen.fsutil import atomic_write_text, sha256_file
from synthgen.safepath import require_input, show_path


def _template(card: dict, spec, size, work: Path, card_path: Path) -> str:
    """The alignment template as data. A built-in name stays; a template file the card names is never
    opened (a card could name any path): its points come from the card's alignment.template_points,
    written inside the rebuild's work folder under the same file name (the name is in the records)."""
    import numpy as np

    from synthgen.alignment.geometry import TEMPLATES
    from synthgen.safepath import path_problem

    if spec in TEMPLATES:
        return spec
    name = Path(str(spec)).name
    pts = np.asarray((card.get("alignment") or {}).get("template_points") or [], dtype=object)
    try:
        pts = np.asarray(pts.tolist(), dtype=np.float64)
    except (TypeError, ValueError):
        pts = np.zeros(0)
    if path_problem(name) or pts.shape != (5, 2) or not np.isfinite(pts).all() or not isinstance(size, int) \
            or isinstance(size, bool) or not (0 < size <= 4096):
        raise DataError(f"{show_path(card_path)}: alignment.template_points must be 5 finite [x, y] pairs for the "
                        "template file the card's config names; use the card.json the release wrote")
    path = work / "template" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"size": size, "points": pts.tolist()}))
    return str(path)


def _card(path: Path) -> dict:
    """card.json, opened as a plain file (never a FIFO or a link to /dev/zero) of bounded size."""
    from .source import read_json

    return read_json(path, "expected a release's card.json")


def _check_card(card: dict, path: Path) -> None:
    """Everything rebuild joins to a folder or renders from must be what a release writes."""
    from .card import card_problems

    problems = card_problems(card)
    if problems:
        raise DataError(f"{show_path(path)}: {problems[0]}; use the card.json the release wrote")


def _check_configs(card: dict, path: Path) -> None:
    """Bounds and consistency (cardcheck), then each stage's own validation of the card's configs,
    its refusals as card errors (exit 1) naming the card's field, all before anything is written."""
    import dataclasses

    from synthgen.errors import UsageError

    from .cardcheck import check_rebuild_card
    from synthgen.rerender import generate_config_from

    check_rebuild_card(card, path)
    stage = "generate"
    try:
        from synthgen.generation.config import validate_config

        gen = card["configs"]["generate"]
        validate_config(generate_config_from({"config": gen["config"], "identity": gen.get("identity")}, "net", "out"),
                        host=False)
        if card["configs"]["align"].get("mode") is None:
            from synthgen.alignment.stage import AlignConfig, validate_config as check_align

            stage = "align"
            names = {f.name for f in dataclasses.fields(AlignConfig)}
            conf = {k: v for k, v in (card["configs"]["align"].get("config") or {}).items() if k in names}
            conf.update(inp="in", out="out", workers=1, device="cpu")
            if isinstance(conf.get("thresholds"), list):
                conf["thresholds"] = tuple(conf["thresholds"])
            check_align(AlignConfig(**conf), host=False)
    except UsageError as e:
        field = (e.flag or "").lstrip("-").replace("-", "_") or "?"
        raise DataError(f"{show_path(path)}: configs.{stage}.config.{field}: {e.message}; use the card.json the "
                        "release wrote") from None
    except TypeError as e:  # a field the dataclass does not take
        raise DataError(f"{show_path(path)}: configs.{stage}.config: {e}; use the card.json the release wrote") from None


def _check_generator(card: dict, path: Path, network) -> None:
    """The card's plan was checked with its generator's c_dim (classes 'all' = c_dim classes): the
    network the card names (sha256 already equal) must have the c_dim, z_dim and resolution the card says."""
    from synthgen.generators import load_generator

    G = load_generator(network, device="cpu")
    for key, have in (("c_dim", G.c_dim), ("z_dim", G.z_dim), ("resolution", G.resolution)):
        if card["generator"].get(key) != have:
            raise DataError(f"{show_path(path)}: generator.{key} is {card['generator'].get(key)!r}, but the generator "
                            f"it names has {have}; use the card.json the release wrote")


def _clamp(conf: dict, most: dict) -> None:
    """Settings that never change an output byte (images per step, writer threads) are capped
    rather than taken from the card: a card could ask for a step of millions of images."""
    for k, m in most.items():
        if isinstance(conf.get(k), int) and not isinstance(conf[k], bool):
            conf[k] = min(conf[k], m)


def rebuild(card_path, network, out, progress: bool = True) -> dict:
    """Python API of `synthgen rebuild`; DataError if any data file differs from the card."""
    from synthgen.alignment import align
    from synthgen.generation import generate
    from synthgen.shards.plan import plan

    from synthgen.rerender import Replacer, align_config_from, generate_config_from, link_or_copy

    from .source import read_manifest
    from .formats import data_files, materialize_formats

    card_path, out = Path(card_path), Path(out)
    require_input(card_path, "CARD.json", "a release's card.json")
    card = _card(card_path)
    _check_card(card, card_path)
    if not card["rebuild"].get("rebuildable"):
        raise DataError(f"{show_path(card_path)}: this release cannot be rebuilt: {card['rebuild'].get('why_not')}")
    if not card["files"]:
        raise DataError(f"{show_path(card_path)}: lists no data files to compare; use the card.json the release wrote")
    _check_configs(card, card_path)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / ".work").is_dir()
                                               and not (out / "rebuild.json").is_file())):
        raise UsageError(f"{show_path(out)} exists and is not an earlier rebuild; use a new folder", "--out")
    want = card["generator"].get("sha256")
    if not Path(network).is_file():
        raise UsageError(f"{network}: not found, expected the generator file the card names (sha256 {want})", "--network")
    if sha256_file(network) != want:
        raise UsageError(f"{network}: sha256 differs from the card's generator ({want}); pass that file", "--network")
    _check_generator(card, card_path, network)
    gen = card["configs"]["generate"]
    gi = gen.get("identity") or {}
    work = out / ".work"
    gen_meta = {"config": dict(gen.get("config") or {}), "identity": gi}
    _clamp(gen_meta["config"], {"batch_size": 256, "writers": 8})
    if gen_meta["config"].get("align"):  # generate --align: its template as data too
        gen_meta["config"]["align_template"] = _template(card, gen_meta["config"].get("align_template", "arcface"),
                                                         gen_meta["config"].get("align_size", 112), work, card_path)
    generate(generate_config_from(gen_meta, network, work / "raw", progress))
    al = card["configs"]["align"]
    if al.get("mode") is None:  # a separate align stage
        align_meta = {"config": dict(al.get("config") or {}), "identity": al.get("identity")}
        _clamp(align_meta["config"], {"batch_size": 256})
        align_meta["config"]["template"] = _template(card, align_meta["config"].get("template", "arcface"),
                                                     align_meta["config"].get("size", 112), work, card_path)
        align(align_config_from(align_meta, work / "raw", work / "aligned", progress))
        src, mode = work / "aligned", "stage"
    elif al["mode"] in ("inline", "none"):
        src, mode, align_meta = work / "raw", al["mode"], None
    else:
        raise DataError(f"{show_path(card_path)}: configs.align.mode must be inline or none (or absent for an align "
                        "stage); use the card.json the release wrote")
    items, _ = plan(src)
    tree_records = read_manifest(src)
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    keep = {k for k, _, _ in items}
    records = {}
    ops = card["remediation"]["operations"]
    removed = {o["key"] for o in ops}
    for k in sorted(keep - removed):
        link_or_copy(src / k, tree / k)
        records[k] = tree_records.get(k) or {}
    reps = [o for o in ops if o["op"] == "replace"]
    if reps:
        r = Replacer(gen_meta, align_meta, mode, str(network), work, tree)
        by_round: dict[int, list] = {}
        for o in reps:
            by_round.setdefault(o["round"], []).append(o)
        for rnd in sorted(by_round):  # later rounds replace earlier replacements
            placed, failed = r.make([{"key": o["key"], "slot": o["slot"], "cls": o["cls"], "index": o["index"],
                                      "attempt": o["attempt"], "skipped": list(o.get("skipped") or [])}
                                     for o in by_round[rnd]], search=False)
            if failed:
                raise DataError(f"replacement {failed[0]['slot']} at attempt {failed[0]['attempt']} found no face "
                                "here, but did when the release was made: the device, precision or versions differ "
                                f"from the card's rebuild.must_match")
            for p in placed:
                records[p["new_key"]] = dict(p["record"])
        for k in removed & set(records):  # a replacement quarantined in a later round
            (tree / k).unlink(missing_ok=True)
            records.pop(k)
    shard_cfg = (card["configs"]["shard"] or {}).get("config") or {}
    out.mkdir(parents=True, exist_ok=True)
    index = materialize_formats(tree, records, shard_cfg, out, card["formats"], progress)
    got = data_files(out, card["formats"])
    want_files = card["files"]
    differ = sorted(k for k in want_files if got.get(k) != want_files[k])
    extra = sorted(set(got) - set(want_files))
    result = {"out": str(out), "images": index["total"], "files": len(want_files),
              "status": "certified" if card["certified"] else "NOT CERTIFIED",
              "matched": len(want_files) - len(differ), "differ": differ, "extra": extra}
    atomic_write_text(out / "rebuild.json", json.dumps(result, indent=1))
    if not want_files:
        raise DataError(f"{show_path(card_path)}: lists no data files to compare; use the card.json the release wrote")
    if differ or extra:
        what = differ[0] if differ else extra[0]
        raise DataError(f"{len(differ)} of {len(want_files)} data files differ from the card (e.g. {what}){' and ' + str(len(extra)) + ' are extra' if extra else ''}; "
                        f"check the card's rebuild.must_match (device type, precision, versions); details in "
                        f"{show_path(out / 'rebuild.json')}")
    shutil.rmtree(work, ignore_errors=True)
    return result
