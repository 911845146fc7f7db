"""The release's datasheet: card.json (machine-readable, what `rebuild` reads) and DATASET_CARD.md."""

from __future__ import annotations

import dataclasses
import json
import platform
from pathlib import Path

import numpy as np

from synthgen import __version__
from synthgen.seeding import SEED_POLICY

CARD_VERSION = 2  # 2: every file of the release and the released pixels are bound to card.json
# Files a release holds outside `files` (data) and `bound`: the card itself, what derives from it
# (DATASET_CARD.md, regenerated and compared by verify), the sums and the stage marker.
UNBOUND = ("card.json", "DATASET_CARD.md", "SHA256SUMS", "release.json")
NOT_CERTIFIED = "NOT CERTIFIED"


def _round(out: Path, r: dict) -> dict:
    """One audit round, summarised from its report.json."""
    rep = json.loads((out / r["report"]).read_text())
    v = rep["verdict"]
    ms = []
    for m in rep.get("matchers") or []:
        d = m.get("decision") or {}
        ms.append({"name": m["matcher"]["name"], "id": m["matcher"].get("id"),
                   "weights_sha256": m["matcher"].get("weights_sha256"),
                   "operating_score": d.get("operating_score"), "null_queries": d.get("null_queries"),
                   "null_queries_needed": d.get("null_queries_needed"),
                   "fnmr_at_operating": d.get("fnmr_at_operating"), "fnmr_ci95": d.get("fnmr_at_operating_ci95"),
                   "fmr_at_operating": d.get("fmr_at_operating"), "fmr_ci95": d.get("fmr_at_operating_ci95"),
                   "identity_operating_score": d.get("identity_operating_score"),
                   "identity_fnmr_at_operating": d.get("identity_fnmr_at_operating"),
                   "identity_fnmr_ci95": d.get("identity_fnmr_at_operating_ci95"),
                   "deciding_level": d.get("deciding_level"),
                   "authentic_label_issues": {k: (m.get("label_issues") or {}).get(k) for k in
                                              ("identities_in_issues", "fraction", "fraction_ci95")},
                   "calibration_pairs": {k: (m.get("calibration") or {}).get(k) for k in
                                         ("genuine_pairs", "imposter_pairs")}})
    from synthgen.fsutil import sha256_file

    return {"round": r["round"], "status": v["status"], "rule": v.get("rule"), "alpha": v.get("alpha"),
            "combine": v.get("combine"), "decided_by": v.get("decided_by"),
            "flagged_images": v.get("flagged_images"), "flagged_identities": v.get("flagged_identities"),
            "removed": r.get("removed", 0), "replaced": r.get("replaced", 0),
            "counts": rep.get("counts"), "matchers": ms, "reasons": v.get("reasons", []),
            "report": r["report"], "report_sha256": sha256_file(out / r["report"]),
            "pixels_sha256": ((rep.get("dataset") or {}).get("synthetic") or {}).get("pixels_sha256")
            or r.get("pixels_sha256")}  # round 0 (the run's audit): the digest of the run's audited shards


def _alignment(run) -> dict:
    import numpy as np

    from synthgen.alignment import load_template

    g = run.gen_meta.get("config") or {}
    if run.align_mode == "stage":
        a = run.align_meta or {}
        ident, conf = a.get("identity") or {}, a.get("config") or {}
        return {"by": "synthgen align", "template": a.get("template_name", conf.get("template")),
                "template_points": ident.get("template_points"), "crop_size": conf.get("size"),
                "detector": conf.get("detector"), "min_face_size": conf.get("min_face_size"),
                "thresholds": conf.get("thresholds"), "select": conf.get("select"), "on_miss": conf.get("on_miss"),
                "colour_order": "RGB", "config_hash": a.get("config_hash")}
    if run.align_mode == "inline":
        name, pts = load_template(g.get("align_template", "arcface"), int(g.get("align_size", 112)))
        return {"by": "synthgen generate --align", "template": name,
                "template_points": np.round(pts, 6).tolist(), "crop_size": g.get("align_size"), "detector": "mtcnn",
                "min_face_size": g.get("min_face_size"), "colour_order": "RGB",
                "on_miss": f"re-render from the next retry seed (up to {g.get('max_retries')} times)"}
    return {"by": "none: images are the generator's output, not aligned by synthgen", "colour_order": "RGB"}


def bound_files(out: Path, formats: list) -> dict:
    """relative path -> sha256 of every file of REL that is neither data (`files`) nor UNBOUND: the
    audit rounds' reports, flagged.csv and report.html, quarantine.csv."""
    from synthgen.fsutil import sha256_file

    skip = set(formats) | {".work"}
    return {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(out.rglob("*"))
            if p.is_file() and p.relative_to(out).parts[0] not in skip and p.relative_to(out).as_posix() not in UNBOUND}


def build_card(cfg, run, state: dict, index: dict, formats: list, certified: bool, files: dict, out: Path,
               gap: str | None = None, pixels_sha256: str | None = None, quality: dict | None = None,
               data_quality: dict | None = None) -> dict:
    from synthgen.runs import config_hash

    from .config import ReleaseConfig
    from .config import identity, settings

    gen = run.gen_meta
    gi = gen.get("identity") or {}
    rounds = [_round(out, r) for r in state["rounds"]]
    final = rounds[-1]
    classes = index["classes"]
    orig_classes = run.original_classes  # before the quality filters, when the run applied them
    foreign = sorted(k for k, it in state["items"].items() if it["slot"] is None)
    ops = state.get("ops", [])
    rebuildable = not foreign
    status = "certified" if certified else NOT_CERTIFIED
    why = [] if certified else ([gap] if gap else []) + [
        f"The final audit (round {final['round']}) is {final['status']}" + (", not pass." if final["status"] != "pass" else ".")
    ] + final["reasons"]
    release_cfg = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ReleaseConfig.RUNTIME_FIELDS}
    shard_meta = {k: index.get(k) for k in ("config", "config_hash", "image_size", "colour_order", "encoding",
                                             "schema_version")}
    import torch

    return {
        "card_version": CARD_VERSION, "name": cfg.name, "status": status, "certified": certified,
        "not_certified_because": why,
        "synthgen_version": __version__,
        "intended_use": cfg.intended_use,
        "not_for": ["identifying, tracking or verifying real people",
                    "evidence about any real person",
                    "uses the generator's licence or the authentic data's terms forbid"],
        "license": cfg.license,
        "generator": {"sha256": gi.get("network_sha256"), "license": cfg.generator_license,
                      "file_name": Path(str((gen.get("config") or {}).get("network", ""))).name,
                      **{k: (gen.get("generator") or {}).get(k) for k in ("backend", "source_format", "resolution",
                                                                          "c_dim", "z_dim")}},
        "configs": {
            "generate": {"config": gen.get("config"), "identity": gi, "config_hash": gen.get("config_hash")},
            "align": ({"config": (run.align_meta or {}).get("config"), "config_hash": (run.align_meta or {}).get(
                "config_hash"), "identity": (run.align_meta or {}).get("identity")} if run.align_mode == "stage"
                else {"mode": run.align_mode}),
            "shard": shard_meta,
            "audit": {"config": run.report.get("config"), "config_hash": config_hash(run.report.get("config"))},
            "release": {"config": release_cfg, "config_hash": config_hash({**identity(cfg, run), **settings(cfg)})},
        },
        "seed_policy": {"name": SEED_POLICY,
                        "latent": "numpy.random.RandomState(seed).randn(1, z_dim), seed = derive_seed(base, class, "
                                  "index) (or --seeds / --seed-pool as the generate config says)",
                        "derive_seed": "first 4 bytes, little-endian, of sha256('synthgen-seed-v1:' + ':'.join(parts))",
                        "replacement": "derive_seed(base, class, index, 'retry', attempt); noise: derive_seed(base, "
                                       "class, index, 'noise', 'retry', attempt)"},
        "counts": {"images": index["total"], "classes": index["num_classes"],
                   "per_class": dict(zip(classes, index["items_per_class"])),
                   "removed_images": sum(1 for o in ops if o["op"] == "remove"),
                   "replaced_images": sum(1 for o in ops if o["op"] == "replace"),
                   "removed_classes": sorted(set(orig_classes) - set(classes)),
                   "original_images": run.original_images, "original_classes": len(orig_classes),
                   "foreign_images_kept": len(foreign)},
        "labels": {c: i for i, c in enumerate(classes)},
        "alignment": _alignment(run),
        # the quality floor: real face detections among the released images (release --min-detection-rate)
        "quality": quality,
        # what the data is (synthgen quality on the run, when it had a [quality] stage)
        "data_quality": data_quality,
        "audit": {"rounds": rounds, "final_round": final["round"], "final_verdict": final["status"],
                  "authentic": (run.report.get("dataset") or {}).get("authentic")},
        "remediation": {"policy": cfg.policy, "max_rounds": max(cfg.max_rounds, final["round"]),
                        "rounds_run": final["round"], "operations": ops, "quarantine": "quarantine.csv"},
        "formats": formats,
        "files": files,
        # sha256 of every released image's pixels (synthgen.audit.embed.pixels_digest): equal to the
        # final audit's dataset.synthetic.pixels_sha256, so the audit is of exactly these pixels
        "pixels_sha256": pixels_sha256,
        "bound": bound_files(out, formats),
        "rebuild": {
            "rebuildable": rebuildable,
            "why_not": None if rebuildable else f"{len(foreign)} images have no generation record "
                                                f"(e.g. {foreign[0]}): they were kept with --keep-foreign",
            "command": "synthgen rebuild card.json --network GENERATOR --out DIR",
            "must_match": {"generator_sha256": gi.get("network_sha256"), "device_type": gi.get("device_type"),
                           "precision": gi.get("precision"), "forward_chunk": gi.get("forward_chunk"),
                           "synthgen": f"{__version__} (seed policy {SEED_POLICY}, shard schema "
                                       f"{index.get('schema_version')}); other versions are not promised to match",
                           "torch": (gen.get("versions") or {}).get("torch", torch.__version__),
                           "libraries": _library_versions(),
                           "cpu_threads": f"{torch.get_num_threads()} torch threads made the replacements; alignment "
                                          "warps are float32 torch maths, so align with the thread count of the "
                                          "original run (OMP_NUM_THREADS) if bytes differ"},
            "proves": "every file listed in `files` (shards and format data files), byte for byte",
        },
        "built_with": {"python": platform.python_version(), "torch": torch.__version__},
    }


def _sha(v) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _count(v) -> bool:
    """A JSON integer that is not a bool, in [0, 2**31)."""
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31


def card_problems(card) -> list[str]:
    """Where a card.json is not shaped like the cards `release` writes (one line each): what
    `verify` and `rebuild` read from it must have the types they expect before it is used."""
    from synthgen.safepath import path_problem, show

    if not isinstance(card, dict):
        return [f"a JSON {type(card).__name__}, expected an object"]
    out = []

    def want(obj, key, kind, where=""):
        v = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
            name = kind.__name__
            out.append(f"{where}{key} must be {'an' if name[0] in 'aeiou' else 'a'} {name}, found {type(v).__name__}")
            return None
        return v

    if card.get("card_version") != CARD_VERSION:
        out.append(f"card_version must be {CARD_VERSION}, found {show(str(card.get('card_version')))}")
    want(card, "certified", bool)
    for key in ("files", "bound"):
        for rel, sha in (want(card, key, dict) or {}).items():
            why = path_problem(rel)
            if why or not _sha(sha):
                out.append(f"{key}: {show(rel)}: {why or 'its value is not a sha256'}")
    if not _sha(card.get("pixels_sha256")):
        out.append("pixels_sha256 must be a sha256 (64 hex digits)")
    formats = want(card, "formats", list)
    if formats is not None:
        from .config import formats_available

        bad = [f for f in formats if f not in formats_available()]
        if bad or "shards" not in formats or len(set(map(str, formats))) != len(formats):
            out.append(f"formats must list shards and known formats ({', '.join(formats_available())}) once each, "
                       f"found {show(str(formats))}")
    counts = want(card, "counts", dict)
    if counts is not None:
        want(counts, "images", int, "counts.")
        per = want(counts, "per_class", dict, "counts.")
        if per is not None and not all(map(_count, per.values())):
            out.append("counts.per_class values must be integers")
    labels = want(card, "labels", dict)
    if labels is not None and not all(map(_count, labels.values())):
        out.append("labels values must be integers")
    rem = want(card, "remediation", dict)
    ops = want(rem, "operations", list, "remediation.") if rem is not None else None
    for n, o in enumerate(ops or []):
        if not isinstance(o, dict) or o.get("op") not in ("remove", "replace"):
            out.append(f"remediation.operations[{n}] must be a remove or replace object")
            continue
        replace = o["op"] == "replace"
        for f in ("key", "slot", "new_key") if replace else ("key",):
            why = path_problem(o.get(f))
            if why:
                out.append(f"remediation.operations[{n}].{f}: {why}")
        nums = ("round", "index", "attempt") if replace else ("round",)
        if not all(_count(o.get(k)) for k in nums) or (replace and not (o.get("cls") is None or _count(o["cls"]))):
            out.append(f"remediation.operations[{n}]: round, cls, index and attempt must be non-negative integers")
        sk = o.get("skipped", [])
        if not isinstance(sk, list) or not all(map(_count, sk)):
            out.append(f"remediation.operations[{n}].skipped must be a list of integers")
    audit = want(card, "audit", dict)
    rounds = want(audit, "rounds", list, "audit.") if audit is not None else None
    for n, r in enumerate(rounds or []):
        if not isinstance(r, dict) or path_problem(r.get("report")) or not isinstance(r.get("report_sha256"), str) \
                or r.get("status") not in ("pass", "leak", "inconclusive"):
            out.append(f"audit.rounds[{n}] must hold report (a relative path), report_sha256 and status")
    if rounds == []:
        out.append("audit.rounds is empty")
    configs = want(card, "configs", dict)
    for stage, keys in (("generate", ("config", "identity")), ("align", ("config", "identity")), ("shard", ("config",))):
        sec = want(configs, stage, dict, "configs.") if configs is not None else None
        for key in keys:  # absent is fine (an align section of mode inline/none), except generate's config
            v = (sec or {}).get(key)
            if sec is not None and not (isinstance(v, dict) or (v is None and (stage, key) != ("generate", "config"))):
                out.append(f"configs.{stage}.{key} must be an object")
    for key in ("generator", "rebuild"):
        want(card, key, dict)
    q = card.get("quality")
    if q is not None and not (isinstance(q, dict) and isinstance(q.get("measured"), bool) and isinstance(q.get("ok"), bool)
                              and (not q["measured"] or (all(_count(q.get(k)) for k in ("detected", "images"))
                                                         and all(isinstance(q.get(k), (int, float)) and not
                                                                 isinstance(q.get(k), bool) for k in ("rate", "floor"))))):
        out.append("quality must be an object with measured and ok (true/false) and, when measured, detected, images, "
                   "rate and floor numbers")
    c = q.get("consistency") if isinstance(q, dict) else None
    if c is not None and not (isinstance(c, dict) and isinstance(c.get("ok"), bool) and isinstance(c.get("measured"), bool)
                              and isinstance(c.get("floor"), (int, float)) and isinstance(c.get("matchers"), list)
                              and all(isinstance(r, dict) and isinstance(r.get("rate"), (int, float))
                                      and not isinstance(r.get("rate"), bool) for r in c["matchers"])):
        out.append("quality.consistency must be an object with measured, ok, floor and matchers (each with a rate)")
    if "utility" in card:  # written by `synthgen evaluate --release`
        u = want(card, "utility", dict)
        if u is not None and not (isinstance(u.get("benchmarks"), list) and isinstance(u.get("matcher"), dict)
                                  and not path_problem(u.get("report"))):
            out.append("utility must hold benchmarks (a list), matcher and report (a relative path)")
    out += data_quality_problems(card.get("data_quality"))
    if isinstance(card.get("rebuild"), dict):
        want(card["rebuild"], "rebuildable", bool, "rebuild.")
    return out


def _library_versions() -> dict:
    """What else writes the bytes: PNG (Pillow/zlib), HDF5 (h5py/libhdf5), parquet (pyarrow)."""
    import zlib

    import h5py
    import PIL

    out = {"pillow": PIL.__version__, "zlib": zlib.ZLIB_RUNTIME_VERSION, "h5py": h5py.__version__,
           "hdf5": h5py.version.hdf5_version, "numpy": __import__("numpy").__version__}
    try:
        import pyarrow

        out["pyarrow"] = pyarrow.__version__
    except ImportError:
        pass
    return out


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.3g} %"


def _ci(c) -> str:
    return "n/a" if not c else f"{_pct(c[0])} to {_pct(c[1])}"


def _quality_line(q: dict) -> str:
    if not q.get("measured"):
        line = f"Quality floor (real face detections): {q.get('note', 'not measured')}."
    else:
        met = "met" if q["rate"] >= q["floor"] else "NOT met"
        line = (f"Quality floor: {q['detected']:,} of {q['images']:,} released images ({100 * q['rate']:.3g} %) had a "
                f"real face detection, not a fallback crop; the floor is {100 * q['floor']:.3g} %: {met}.")
    c = q.get("consistency")
    if isinstance(c, dict):  # cards before the consistency floor have none
        if not c.get("measured"):
            line += f" Identity consistency: {c.get('note', 'not measured')}."
        else:
            parts = ", ".join(f"{100 * float(r['rate']):.3g} % with {r['matcher']}" for r in c["matchers"])
            met = all(float(r["rate"]) >= float(c["floor"]) for r in c["matchers"])  # from the numbers shown
            line += (f" Identity consistency: synthetic same-class image pairs verified as one person at the "
                     f"matcher's calibrated threshold: {parts}; the floor is {100 * float(c['floor']):.3g} %: "
                     f"{'met' if met else 'NOT met'}.")
    z = q.get("class_sizes")
    if isinstance(z, dict) and isinstance(z.get("min"), int):
        line += f" Class sizes: {z['min']:,} to {z.get('max', z['min']):,} images"
        if isinstance(z.get("planned"), int):
            line += f" (planned {z['planned']:,}; {z.get('classes_short') or 0:,} classes short)"
        line += "."
    return line


def card_markdown(card: dict) -> str:
    c = card["counts"]
    a = card["alignment"]
    lines = [f"# {card['name']}", ""]
    if card["certified"]:
        lossy = card["configs"]["shard"].get("encoding") == "jpeg"
        lines += ["**Status: certified.** The final identity-leakage audit of exactly these images passed "
                  f"(round {card['audit']['final_round']})" + (" (it saw them before the shards' JPEG encoding)"
                                                               if lossy else "") + ".", ""]
    else:
        lines += [f"**Status: {NOT_CERTIFIED}.** This release was written with --allow-inconclusive; no claim is "
                  "made that it is free of real identities. Why:", ""]
        lines += [f"- {w}" for w in card["not_certified_because"]] + [""]
    lines += ["## What it is", "",
              f"{c['images']:,} synthetic face images in {c['classes']:,} classes, made by a generator "
              f"(sha256 `{card['generator']['sha256']}`) with synthgen {card['synthgen_version']}. "
              "Every image is a function of the generator file, its seeds and the configs below.", "",
              f"- Intended use: {card['intended_use']}",
              f"- Not for: {'; '.join(card['not_for'])}.",
              f"- Licence: {card['license']}",
              f"- Generator licence / terms: {card['generator']['license']}", "",
              "## Contents", "",
              f"- Formats: {', '.join(card['formats'])} (each in its own folder); `SHA256SUMS` covers every file.",
              f"- Images: {c['images']:,} (the run had {c['original_images']:,}); classes: {c['classes']:,} "
              f"(of {c['original_classes']:,}). Removed: {c['removed_images']:,} images, "
              f"{len(c['removed_classes'])} classes; replaced: {c['replaced_images']:,} images. Every removed or "
              "replaced item is in `quarantine.csv`.",
              f"- Images per class: min {min(c['per_class'].values(), default=0)}, max "
              f"{max(c['per_class'].values(), default=0)}. Labels are contiguous (0..{c['classes'] - 1}); "
              "`card.json` `labels` maps each class folder to its label.", "",
              _quality_line(card.get("quality") or {}), "",
              *(_data_quality_lines(card["data_quality"]) if "data_quality" in card else []),  # older cards: none
              "## Alignment", ""]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in a.items() if v is not None] + [""]
    lines += ["## Audit", "", "| round | verdict | flagged images | flagged identities | removed | replaced | "
              "matchers (weights sha256) |", "|---|---|---|---|---|---|---|"]
    for r in card["audit"]["rounds"]:
        ms = ", ".join(f"{m['name']} ({(m['weights_sha256'] or 'n/a')[:12]})" for m in r["matchers"])
        lines.append(f"| {r['round']} | {r['status']} | {r['flagged_images']} | {r['flagged_identities']} | "
                     f"{r['removed']} | {r['replaced']} | {ms} |")
    fin = card["audit"]["rounds"][-1]
    lines += ["", f"Final round {fin['round']}: {fin['decided_by']}.", ""]
    for m in fin["matchers"]:
        lines.append(f"- {m['name']}: operating score {m['operating_score']}, null from {m['null_queries']} authentic "
                     f"images (needed {m['null_queries_needed']}); FNMR {_pct(m['fnmr_at_operating'])} (95 % CI "
                     f"{_ci(m['fnmr_ci95'])}), FMR {_pct(m['fmr_at_operating'])} (95 % CI {_ci(m['fmr_ci95'])})"
                     + (f"; identity templates: operating score {m['identity_operating_score']}, FNMR "
                        f"{_pct(m['identity_fnmr_at_operating'])} (95 % CI {_ci(m['identity_fnmr_ci95'])}); the level "
                        f"that decides: {m['deciding_level']}" if m.get("identity_fnmr_at_operating") is not None else "")
                     + (f"; authentic label issues: {_pct(m['authentic_label_issues']['fraction'])} of identities"
                        if (m.get("authentic_label_issues") or {}).get("fraction") else "") + ".")
    lines += [""] + [f"- {r}" for r in fin["reasons"]]
    lines += ["", "## Checking this release", "",
              "The release's id is the sha256 of `card.json`. Every other file is bound to it: the data files by "
              "`files`, the audit reports, `flagged.csv` files and `quarantine.csv` by `bound`, the released pixels by "
              "`pixels_sha256` (equal to the digest of what the final audit embedded), and this page is what "
              "`card.json` renders to. With the id its publisher posted:", "",
              "    synthgen verify RELEASE_DIR --expect RELEASE_ID", "",
              "fails if anything in the folder differs from what that id names (`sha256sum card.json` shows the id). "
              "`verify` proves integrity and provenance of these files; that the data is what the generator makes "
              "from the recorded seeds only `rebuild` proves."]
    u = card.get("utility")
    if u:
        lines += ["", "## Utility", "", f"Verification accuracy of {u['matcher'].get('name')} (weights sha256 "
                  f"`{u['matcher'].get('weights_sha256')}`), {u['what']}; {u['protocol']}; evaluated {u['evaluated']} "
                  f"(full report: `{u['report']}`).", "",
                  "| benchmark | pairs | accuracy % | TAR @ FAR [95 % CI] |", "| --- | --- | --- | --- |"]
        for b in u["benchmarks"]:
            tars = "; ".join(f"{t['far']:g}: " + ("n/a" if t["tar"] is None else f"{100 * t['tar']:.2f} "
                             f"[{100 * t['tar_ci95'][0]:.2f}, {100 * t['tar_ci95'][1]:.2f}]"
                             + ("" if t["supported"] else " (too few imposter pairs)")) for t in b["tar_at_far"])
            lines.append(f"| {b['benchmark']} | {b['pairs']:,} | {100 * b['accuracy']:.2f} ± {100 * b['std']:.2f} | {tars} |")
    rb = card["rebuild"]
    lines += ["", "## Rebuild instead of download", ""]
    if rb["rebuildable"]:
        lines += [f"`{rb['command']}` regenerates this release and proves it byte for byte against the hashes in "
                  "`card.json` (`files`). For byte identity these must match:", ""]
        lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in rb["must_match"].items()]
    else:
        lines.append(f"Not rebuildable: {rb['why_not']}.")
    lines += ["", "## Configs", "", "Every config and its hash is in `card.json` (`configs`); the seed policy is "
              f"`{card['seed_policy']['name']}` (`card.json` `seed_policy`).", ""]
    return "\n".join(lines)


QUALITY_REPORT = "quality/report.json"  # inside REL: the run's quality report, bound like the audit reports


def read_quality_report(run_root: Path) -> tuple[bytes, dict] | None:
    """RUN/quality/report.json (raw bytes, summary for the card), None when the run measured no
    quality; a report that is not a plain file or not a synthgen quality report is refused in one line
    (`release` calls this before any work, and again when it writes the card)."""
    from synthgen.errors import DataError
    from synthgen.safepath import NotARegularFile, read_inside

    path = Path(run_root) / QUALITY_REPORT
    if not (path.is_file() or path.is_symlink() or path.exists()):
        return None
    bad = f"{path}: not a synthgen quality report; rerun the [quality] stage (or remove RUN/quality)"
    try:
        raw = read_inside(run_root, QUALITY_REPORT, 64 << 20)
        rep = json.loads(raw)
        return raw, _dq_summary(rep)
    except NotARegularFile as e:
        raise DataError(f"{path}: {e}; the quality report must be a plain file inside the run") from None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise DataError(bad) from None


def _num(x, kind=float):
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not np.isfinite(x) or (kind is int and x != int(x)):
        raise TypeError(x)
    return kind(x)


def _dq_summary(rep: dict) -> dict:
    s = rep["summary"]
    sec = lambda d, k: d.get(k) if isinstance(d.get(k), dict) else (None if d.get(k) is None else {}[k])
    det, pose, img, ident = (sec(s, k) or {} for k in ("detection", "pose", "image", "identity"))
    q = lambda d, *keys: {k: _num((d or {}).get(k)) for k in keys}
    m = rep.get("matcher")
    if m is not None and not isinstance(m, dict):
        raise TypeError(m)
    name = (m or {}).get("name")
    if name is not None and not isinstance(name, str):
        raise TypeError(name)
    images, classes = _num(s["images"], int), _num(s["classes"], int)
    if images is None or classes is None or images < 0 or classes < 0:
        raise ValueError(images)
    return {"measured_on": "the run's aligned crops before remediation (images the release replaced are not in it)",
            "images": images, "classes": classes,
            "detection_rate": _num(det.get("detection_rate")), "fallback_rate": _num(det.get("fallback_rate")),
            "abs_yaw_degrees": q(sec(pose, "abs_yaw"), "p50", "p95", "max"),
            "abs_pitch_degrees": q(sec(pose, "abs_pitch"), "p50", "p95", "max"),
            "sharpness": q(sec(img, "sharpness"), "p05", "p50"),
            "consistency_mean": q(sec(ident, "consistency_mean"), "p05", "p50", "min"),
            "distinctness": q(sec(ident, "distinctness"), "p05", "p50", "min"),
            "matcher": name, "filters": rep.get("filters") if isinstance(rep.get("filters"), dict) else None}


def data_quality(run_root: Path, out: Path) -> dict | None:
    """The run's `synthgen quality` summary (RUN/quality/report.json, when the run measured it),
    copied into REL/quality/report.json (bound by `bound`) and summarised for the card: what the
    data is, measured on the run's aligned crops BEFORE remediation (replaced images are not in it)."""
    from synthgen.fsutil import atomic_write_bytes, sha256_file

    got = read_quality_report(run_root)
    if got is None:
        return None
    raw, summary = got
    atomic_write_bytes(out / QUALITY_REPORT, raw)
    return {"report": QUALITY_REPORT, "report_sha256": sha256_file(out / QUALITY_REPORT), **summary}


def data_quality_problems(dq) -> list:
    """card.json's data_quality: None or what `data_quality` writes (verify renders it)."""
    if dq is None:
        return []
    try:
        if not isinstance(dq, dict) or not isinstance(dq.get("measured_on"), str) or not isinstance(dq.get("report"), str):
            raise TypeError(dq)
        _dq_summary({"summary": {"images": dq["images"], "classes": dq["classes"]}, "matcher": {"name": dq.get("matcher")}})
        for k in ("detection_rate", "fallback_rate"):
            _num(dq.get(k))
        for k, keys in (("abs_yaw_degrees", ("p50", "p95", "max")), ("abs_pitch_degrees", ("p50", "p95", "max")),
                        ("sharpness", ("p05", "p50")), ("consistency_mean", ("p05", "p50", "min")),
                        ("distinctness", ("p05", "p50", "min"))):
            if not isinstance(dq.get(k), dict):
                raise TypeError(k)
            for key in keys:
                _num(dq[k].get(key))
    except (TypeError, ValueError, KeyError, AttributeError):
        return ["card.json: data_quality is not what synthgen release writes (an object with measured_on, report, "
                "images, classes and numeric summaries, or null)"]
    return []


def _data_quality_lines(dq: dict | None) -> list:
    if not dq:
        return ["## Data quality", "", "Not measured (the run had no [quality] stage; `synthgen quality` measures it).",
                ""]
    f = lambda x: "n/a" if x is None else f"{x:.3g}"
    lines = ["## Data quality", "", f"Measured by `synthgen quality` on {dq['measured_on']}: {dq['images']:,} images in "
             f"{dq['classes']:,} classes (`{dq['report']}`).", "",
             f"- Face detection: {_pct(dq['detection_rate'])} detected, {_pct(dq['fallback_rate'])} fallback crops.",
             f"- Head pose |yaw|: median {f(dq['abs_yaw_degrees']['p50'])} deg, 95th percentile "
             f"{f(dq['abs_yaw_degrees']['p95'])} deg; |pitch| median {f(dq['abs_pitch_degrees']['p50'])} deg.",
             f"- Sharpness (variance of the Laplacian): 5th percentile {f(dq['sharpness']['p05'])}, median "
             f"{f(dq['sharpness']['p50'])}."]
    if dq.get("consistency_mean", {}).get("p50") is not None:
        lines.append(f"- Identity ({dq['matcher']}): class consistency median {f(dq['consistency_mean']['p50'])}, "
                     f"5th percentile {f(dq['consistency_mean']['p05'])}; distinctness median "
                     f"{f(dq['distinctness']['p50'])}, lowest {f(dq['distinctness']['min'])}.")
    if dq.get("filters"):
        lines.append("- Filters were measured but are not applied by the release: see the report's `filters`.")
    return lines + [""]
