"""`synthgen release`: the remediate -> re-audit loop, the decision, and the release folder.

Folder REL (see README "Releasing a dataset"):
    shards/ [recordio/ imagefolder/ webdataset/ parquet/]   the data, in the chosen formats
    audit/round-0/ ... audit/round-K/                       every audit (round 0 = the run's own)
    quarantine.csv                                          every removed or replaced item
    card.json, DATASET_CARD.md                              the datasheet (card.py)
    SHA256SUMS                                              every file above (`sha256sum -c` format)
    release.json                                            the stage marker (bookkeeping, not summed)
    .work/                                                  working set, state, embedding cache; removed
                                                            when the release is written
Resume: every step is idempotent and `.work/state.json` records each finished round, so a
killed release rerun with the same command continues where it stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

from synthgen import __version__
from synthgen.contract import MARKERS, STAGE_DIRS, identity_of
from synthgen.errors import DataError, UsageError
from synthgen.fsutil import atomic_path, atomic_write_text
from synthgen.rerender import Replacer, link_or_copy
from synthgen.runs import config_hash
from synthgen.safepath import show_path
from synthgen.stage import StageSummary, now, open_output, write_marker

from .config import RELEASE_JSON, ReleaseConfig, identity, parse_formats, settings, validate
from .floor import quality_floor
from .formats import data_files, materialize_formats
from .verify import release_id, write_sums
from .remediate import apply_removals, plan_round
from .source import RunView, read_flagged, read_json, read_run

WORK = ".work"
STATE = "state.json"
SUMS = "SHA256SUMS"
QUARANTINE = "quarantine.csv"
QUARANTINE_COLUMNS = ("round", "key", "class", "action", "reason", "score", "p_value", "matcher", "nearest_authentic",
                      "replacement_key", "replacement_seed", "replacement_attempt")
AUDIT_FILES = (MARKERS["audit"], "flagged.csv", "report.html", "suspects.csv", "authentic_label_issues.csv")


def release(cfg: ReleaseConfig | None = None, **kwargs) -> StageSummary:
    """Python API of `synthgen release`. The StageSummary's status: `certified`, `not-certified`
    (written with allow_inconclusive) or `refused` (nothing written: `final_verdict` says why)."""
    cfg = cfg or ReleaseConfig(**kwargs)
    validate(cfg)
    fmts = parse_formats(cfg.formats)
    run = read_run(cfg.run)
    out = Path(cfg.out)
    _check_out_place(out, run)
    _check_audit_inputs(run)
    from .card import read_quality_report

    read_quality_report(run.root)  # a bad RUN/quality/report.json is refused now, not after the rounds
    replacer = _replacer(cfg, run, out)
    if cfg.policy == "regenerate" and any(r["kind"] == "image" for r in run.rows):
        replacer.check()  # flagged images will need the generator: say so before any work
    ident = identity(cfg, run)
    chash, shash = config_hash(ident), config_hash(settings(cfg))
    work = out / WORK
    # the run's files against its audit: before REL is created (skipped when resuming a started release)
    state = _load_state(work, chash)
    keys = _check_tree(run, cfg.progress) if state is None else None
    open_output(out, RELEASE_JSON, ident, cfg.overwrite)  # a different release: refused (or removed)
    marker = out / RELEASE_JSON
    prev = read_json(marker, "delete the release folder and rerun") if marker.is_file() else {}
    if prev.get("status") == "complete" and (out / SUMS).is_file():
        if prev.get("settings_hash") == shash:
            shutil.rmtree(out / WORK, ignore_errors=True)
            card = read_json(out / "card.json", "rerun with --overwrite")
            return _summary(out, "certified" if card.get("certified") is True else "not-certified", card,
                            written=True)
        if not cfg.overwrite:
            raise UsageError(f"{show_path(out)} holds this release written with other settings (formats, rounds or "
                             "card text); pass --overwrite to redo it, or use a new --out", "--overwrite")
        shutil.rmtree(out)  # redo it from round 0 (its working state went with the finished release)
        open_output(out, RELEASE_JSON, ident, False)
        keys = keys or _check_tree(run, cfg.progress)
    meta = write_marker(out, RELEASE_JSON, {"status": "running", "identity": ident, "config_hash": chash,
                                            "settings_hash": shash, "synthgen_version": __version__,
                                            "started": now()})
    if state is None or not (work / STATE).is_file():  # none yet, or --overwrite just removed it
        state = _init_state(run, out, chash, keys or _check_tree(run, cfg.progress))
    _loop(cfg, run, out, state, replacer)
    final = state["rounds"][-1]["status"]
    quality = quality_floor(run, out, state, cfg.min_detection_rate, cfg.min_consistency_rate)
    gap = _coverage_gap(out, state) or (None if quality["ok"] else quality["why"])
    certified = final == "pass" and gap is None
    if gap and final == "pass":
        final = "inconclusive"  # what the CLI says and exits with: nothing vouches for the uncovered images
    if not certified and not (final != "leak" and cfg.allow_inconclusive):
        write_marker(out, RELEASE_JSON, meta, status="refused", verdict=final, finished=now(),
                     rounds=len(state["rounds"]) - 1, settings_hash=shash, coverage_gap=gap)
        r = _summary(out, "refused", None, written=False, state=state)
        r["final_verdict"], r["coverage_gap"] = final, gap
        return r
    card = _finalize(cfg, run, out, state, fmts, certified, gap, quality)
    write_marker(out, RELEASE_JSON, meta, status="complete", verdict=final, certified=certified, finished=now(),
                 settings_hash=shash)
    shutil.rmtree(work, ignore_errors=True)
    return _summary(out, "certified" if certified else "not-certified", card, written=True)


def _replacer(cfg: ReleaseConfig, run: RunView, out: Path):
    """The re-renderer of flagged images. When the run applied quality filters before sharding, a
    replacement must pass them too (those that need no matcher: detection, pose, sharpness)."""
    thresholds = (run.filtered or {}).get("thresholds") or {}
    if not thresholds:
        return Replacer(run.gen_meta, run.align_meta, run.align_mode, cfg.network, out / WORK, out / WORK / "tree")
    from synthgen.quality.apply import FilteredReplacer

    inner = Replacer(run.gen_meta, run.align_meta, run.align_mode, cfg.network, out / WORK, out / WORK / "staging")
    return FilteredReplacer(inner, out / WORK / "tree", thresholds, work=out / WORK, progress=cfg.progress)


def _coverage_gap(out: Path, state: dict) -> str | None:
    """Why the final audit does not vouch for exactly the released images (None: it does)."""
    last = state["rounds"][-1]
    rep = read_json(out / last["report"], "rerun the release")
    n = (rep.get("counts") or {}).get("synthetic_images")
    if (rep.get("config") or {}).get("max_per_class") is not None:
        return f"The final audit (round {last['round']}) looked at a subset (max_per_class)."
    if n != len(state["items"]):
        return f"The final audit (round {last['round']}) embedded {n} images, the release holds {len(state['items'])}."
    from synthgen.imageio import list_images

    if {k for k in list_images(out / WORK / "tree") if "/" in k} != set(state["items"]):
        return f"The images the final audit (round {last['round']}) listed are not exactly the released ones."
    return None


def _summary(out: Path, status: str, card: dict | None, written: bool, state: dict | None = None) -> StageSummary:
    rounds = card["audit"]["rounds"] if card else [
        {k: r.get(k) for k in ("round", "status", "flagged_images", "flagged_identities", "removed", "replaced")}
        for r in state["rounds"]]
    data = {"out": str(out), "status": status, "written": written, "rounds": rounds,
            "final_verdict": rounds[-1]["status"], "certified": bool(card and card["certified"]),
            "counts": card["counts"] if card else None,
            "release_id": release_id(out) if written else None}
    return StageSummary("release", data, status=status, config_hash=None,
                        brief={"status": status, "rounds": len(rounds) - 1, "final_verdict": rounds[-1]["status"],
                               "images": card["counts"]["images"] if card else None,
                               "release_id": data["release_id"]})


# ----------------------------------------------------------------------------------------------
# Checks before any work


def _check_out_place(out: Path, run: RunView) -> None:
    o = out.resolve()
    stages = [(run.root / d).resolve() for d in STAGE_DIRS.values()]
    if o == run.root.resolve() or any(o == s or s in o.parents for s in stages) or o in run.root.resolve().parents:
        raise UsageError(f"{show_path(out)} would mix the release with the run's own folders; use a new folder "
                         f"(e.g. {show_path(run.root / 'release')})", "--out")


def _check_audit_inputs(run: RunView) -> None:
    c = run.report.get("config") or {}
    where = show_path(run.audit_dir / MARKERS["audit"])
    fix = "run the release from the folder `synthgen run` ran in (paths in the audit config are relative to it)"
    auth = c.get("authentic")
    if c.get("matcher") != "embeddings" and (not isinstance(auth, str) or not Path(auth).exists()):
        raise DataError(f"{where}: the authentic set {auth!r} is not found, and every round re-audits against it; {fix}")
    ws = c.get("weights")
    for w in ([ws] if isinstance(ws, str) else list(ws or [])):
        if not Path(w).is_file():
            raise DataError(f"{where}: the matcher weights {w!r} are not found; {fix}")
    names = [c["matcher"]] if isinstance(c.get("matcher"), str) else list(c.get("matcher") or [])
    if "embeddings" in names:
        raise DataError(f"{where}: audited with --matcher embeddings (precomputed files), which cannot embed new or "
                        "changed images; audit the run with an image matcher to release it")


# ----------------------------------------------------------------------------------------------
# State


def _save_state(work: Path, state: dict) -> None:
    atomic_write_text(work / STATE, json.dumps(state, separators=(",", ":")))


def _load_state(work: Path, chash: str) -> dict | None:
    try:
        s = json.loads((work / STATE).read_text())
    except (OSError, ValueError):
        return None
    return s if isinstance(s, dict) and s.get("config_hash") == chash else None


def _check_tree(run: RunView, progress: bool) -> list[str]:
    """The audited shards' keys, each checked to be in the run's tree with exactly the pixels the
    audit saw (the release ships the files; the audit saw the shards)."""
    from tqdm import tqdm

    from synthgen.data import _Shards

    shards = _Shards(run.shard_dir)
    keys = []
    for i in tqdm(range(len(shards.labels)), unit="img", desc="release: check the run against its audit",
                  disable=not progress):
        k = shards.key(i)
        src = run.tree / k
        if not src.is_file():
            raise DataError(f"{show_path(src)}: missing; the run's {run.tree.name}/ no longer holds the audited image "
                            f"{k} (rerun `synthgen run`, which repairs it)")
        if not _same_as_audited(shards, i, src):
            raise DataError(f"{show_path(src)}: differs from the audited shards (changed after the audit); rerun "
                            "`synthgen run` so the shards and the audit match the files, then release")
        keys.append(k)
    return keys


def _init_state(run: RunView, out: Path, chash: str, keys: list[str]) -> dict:
    """Working set = the audited images, hard-linked from the run's tree; round 0 = the run's audit."""
    work = out / WORK
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    items = {}
    for k in keys:
        link_or_copy(run.tree / k, tree / k)
        g = run.generation_record(k)
        items[k] = {"slot": g["path"] if g else None, "class": g.get("class") if g else None,
                    "index": g.get("index") if g else None, "attempt": int((g or {}).get("attempt") or 0)}
    _seed_cache(run, work, items)
    r0 = out / "audit" / "round-0"
    for name in AUDIT_FILES:
        if (run.audit_dir / name).is_file():
            with atomic_path(r0 / name) as tmp:
                shutil.copyfile(run.audit_dir / name, tmp)
    state = {"version": 1, "config_hash": chash, "items": items, "records": {}, "quarantine": [],
             "rounds": [dict(_round_summary(0, run.report), audited=True)]}
    for o in (run.filtered or {}).get("ops") or []:  # the quality filters, applied before the run's shards
        replaced = o.get("op") == "replace"
        row = {c: None for c in QUARANTINE_COLUMNS}
        row.update({"round": 0, "key": o["key"], "class": identity_of(o["key"]), "reason": o.get("reason"),
                    "action": "replaced" if replaced else "removed"})
        if replaced:
            row.update(replacement_key=o["new_key"], replacement_seed=o["seed"], replacement_attempt=o["attempt"])
        state["quarantine"].append(row)
        state.setdefault("ops", []).append({k: v for k, v in o.items() if k != "reason"})
    _save_state(work, state)
    return state


def _same_as_audited(shards, i: int, path: Path) -> bool:
    """Whether the working-set file holds exactly what the audited shard holds for item i (the
    release ships the files, the audit saw the shards)."""
    import numpy as np

    from synthgen.encodings import ENCODINGS
    from synthgen.imageio import UnreadableImage, load_rgb

    try:
        img = load_rgb(path)
    except UnreadableImage:
        return False
    stored = shards.stored(i)
    if shards.encoding == "raw":
        return np.array_equal(stored, img)
    quality = int((shards.index.get("config") or {}).get("jpeg_quality", 95))
    return bytes(stored) == ENCODINGS[shards.encoding].encode(img, quality)


def _round_summary(rnd: int, report: dict) -> dict:
    v = report["verdict"]
    return {"round": rnd, "status": v["status"], "flagged_images": v.get("flagged_images"),
            "flagged_identities": v.get("flagged_identities"), "report": f"audit/round-{rnd}/{MARKERS['audit']}"}


def _seed_cache(run: RunView, work: Path, items: dict) -> None:
    """Re-audits embed only what changed: the run's cached embeddings of the authentic set are
    linked, and those of the audited shards, where still current (fingerprint = the shard's
    sha256, as the audit caches them), are re-keyed to the working tree's files (same pixels:
    checked by _same_as_audited; the shards store them losslessly, raw or png)."""
    import numpy as np

    from synthgen.audit.embed import ImageSet, cache_file, file_fingerprint, read_cache

    c = run.report["config"]
    cache = Path(c["cache_dir"]) if isinstance(c.get("cache_dir"), str) else run.audit_dir / "embeddings"
    if not cache.is_dir() or run.index.get("encoding") not in ("raw", "png"):
        return
    audited = ImageSet(run.shard_dir)
    current = dict(zip(audited.keys, audited.fingerprints))
    tree = work / "tree"
    for mdir in sorted(p for p in cache.iterdir() if p.is_dir()):
        if isinstance(c.get("authentic"), str):
            auth = cache_file(cache, mdir.name, c["authentic"])
            if auth.is_file():  # the audit checks its fingerprints itself
                dst = cache_file(work / "embeddings", mdir.name, c["authentic"])
                dst.unlink(missing_ok=True)
                link_or_copy(auth, dst)
        z = read_cache(cache_file(cache, mdir.name, run.shard_dir))
        if z is None:
            continue
        keep = [i for i, (k, fp) in enumerate(zip(z["keys"], z["fingerprints"]))
                if str(k) in items and current.get(str(k)) == str(fp)]
        if not keep:
            continue
        with atomic_path(cache_file(work / "embeddings", mdir.name, tree)) as tmp, open(tmp, "wb") as f:
            np.savez(f, keys=np.array([str(z["keys"][i]) for i in keep]),
                     fingerprints=np.array([file_fingerprint(tree / str(z["keys"][i])) for i in keep]),
                     emb=np.asarray(z["emb"])[keep].astype(np.float32))


# ----------------------------------------------------------------------------------------------
# The loop


def _audit_of(run: RunView, out: Path, rnd: int) -> tuple[dict, list]:
    if rnd == 0:
        return run.report, run.rows
    d = out / "audit" / f"round-{rnd}"
    return read_json(d / MARKERS["audit"], "rerun the release"), read_flagged(d / "flagged.csv")


def _loop(cfg: ReleaseConfig, run: RunView, out: Path, state: dict, replacer: Replacer) -> None:
    work, tree = out / WORK, out / WORK / "tree"
    items = state["items"]
    while True:
        last = state["rounds"][-1]
        if not last.get("audited"):  # interrupted between a round's changes and its audit
            _audit_round(cfg, run, out, state)
            continue
        rnd = last["round"] + 1
        if rnd > cfg.max_rounds:
            return
        report, rows = _audit_of(run, out, last["round"])
        acts = plan_round(items, rows, report, cfg.policy, cfg.keep_foreign, rnd, frozenset(state.get("deferred", [])))
        state["deferred"] = sorted(set(state.get("deferred", [])) | {a["defers"] for a in acts if a.get("defers")})
        if not acts and not (last["round"] == 0 and _partial(run)):
            return
        reps = [a for a in acts if a["op"] == "replace"]
        if reps:
            replacer.check()
        placed, failed = replacer.make(reps) if reps else ([], [])
        apply_removals(tree, acts, items)
        _record_round(state, rnd, acts, placed, failed)
        if not items:
            raise DataError(f"every image was removed in round {rnd} (flagged, colliding or not made by the "
                            f"generator): nothing is left to release; see {show_path(out / 'audit')}/round-{rnd - 1}/")
        _save_state(work, state)
        _audit_round(cfg, run, out, state)


def _record_round(state: dict, rnd: int, acts: list, placed: list, failed: list) -> None:
    """Add a round's replacements to the working set and its actions to the quarantine rows and
    the card's operations (what `rebuild` replays)."""
    done, lost = {p["key"]: p for p in placed}, {f["key"]: f for f in failed}
    for a in acts:
        row = {c: None for c in QUARANTINE_COLUMNS}
        row.update({k: a.get(k) for k in ("round", "key", "class", "reason", "score", "p_value", "matcher")},
                   nearest_authentic=a.get("nearest"), action="removed")
        op = {"round": rnd, "op": "remove", "key": a["key"]}
        p = done.get(a["key"])
        if p is not None:
            row.update(action="replaced", replacement_key=p["new_key"], replacement_seed=p["seed"],
                       replacement_attempt=p["attempt"])
            op.update(op="replace", slot=p["slot"], cls=p["cls"], index=p["index"], attempt=p["attempt"],
                      new_key=p["new_key"], seed=p["seed"], noise_seed=p["noise_seed"], skipped=p["skipped"])
            state["items"][p["new_key"]] = {"slot": p["slot"], "class": p["cls"], "index": p["index"],
                                            "attempt": p["attempt"]}
            state["records"][p["new_key"]] = p["record"]
        elif a["key"] in lost:
            why = lost[a["key"]].get("why") or f"no face in {len(lost[a['key']]['skipped'])} re-renderings"
            row["reason"] += f"; {why}, so it was dropped"
        state["quarantine"].append(row)
        state.setdefault("ops", []).append(op)
    state["rounds"].append({"round": rnd, "audited": False, "removed": len(acts) - len(placed), "replaced": len(placed)})


def _partial(run: RunView) -> bool:
    """Whether the run's audit looked at a subset (max_per_class): then it certifies nothing, and
    round 1 re-audits every image even when there is nothing to change."""
    return (run.report.get("config") or {}).get("max_per_class") is not None


def _audit_round(cfg: ReleaseConfig, run: RunView, out: Path, state: dict) -> None:
    from synthgen.audit.report import AuditConfig, run_audit

    rnd = state["rounds"][-1]["round"]
    names = {f.name for f in dataclasses.fields(AuditConfig)}
    c = {k: v for k, v in (run.report.get("config") or {}).items() if k in names}
    c.update(synthetic=str(out / WORK / "tree"), out=str(out / "audit" / f"round-{rnd}"),
             cache_dir=str(out / WORK / "embeddings"), progress=cfg.progress, fail_on_leak=False,
             max_per_class=None, pixel_digest=True)  # a release certifies every image it holds, exactly
    report = run_audit(AuditConfig(**c))
    state["rounds"][-1].update(_round_summary(rnd, report), audited=True)
    _save_state(out / WORK, state)


def _released_pixels(run: RunView, out: Path, state: dict) -> str:
    """The released shards' pixel digest; it must equal that of the pixels the final audit embedded:
    the digest its report recorded or, when the final round is the run's own audit (round 0), the
    run's shards (checked pixel for pixel against the working set before anything started)."""
    from synthgen.audit.embed import ImageSet, pixels_digest

    digest = pixels_digest(ImageSet(out / "shards"))
    last = state["rounds"][-1]
    final = out / last["report"]
    audited = ((read_json(final, "rerun the release").get("dataset") or {}).get("synthetic") or {}).get("pixels_sha256")
    if audited is None and last["round"] == 0:
        audited = last["pixels_sha256"] = pixels_digest(ImageSet(run.shard_dir))
    if audited != digest:
        raise DataError(f"{show_path(final)}: the final audit embedded other pixels (sha256 {str(audited)[:16]}...) "
                        f"than the shards hold ({digest[:16]}...); rerun the release with --overwrite")
    return digest


def _finalize(cfg: ReleaseConfig, run: RunView, out: Path, state: dict, fmts: list, certified: bool,
              gap: str | None, quality: dict | None = None) -> dict:
    from .card import build_card, card_markdown, data_quality

    tree = out / WORK / "tree"
    records = {k: state["records"].get(k) or run.tree_records.get(k) or {} for k in state["items"]}
    index = materialize_formats(tree, records, run.index.get("config") or {}, out, fmts, cfg.progress)
    with atomic_path(out / QUARANTINE) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(QUARANTINE_COLUMNS)
        for q in state["quarantine"]:
            w.writerow(["" if q.get(c) is None else (f"{q[c]:.6g}" if isinstance(q[c], float) else q[c])
                        for c in QUARANTINE_COLUMNS])
    dq = data_quality(run.root, out)  # copied into REL before `bound` is computed
    card = build_card(cfg, run, state, index, fmts, certified, data_files(out, fmts), out, gap,
                      _released_pixels(run, out, state), quality, dq)
    atomic_write_text(out / "card.json", json.dumps(card, indent=1))
    atomic_write_text(out / "DATASET_CARD.md", card_markdown(card))
    write_sums(out)
    return card
