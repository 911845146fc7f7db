"""Quality filters applied to a run before sharding: RUN/filtered/, the folder `shard` reads.

    apply_to_run(root, cfg, decisions, matcher, progress) -> dict (filtered.json's content)

Kept crops are hard-linked from the run's tree (RUN/aligned, or RUN/raw when generate aligned
inline). An image a filter dropped is, with `policy = "regenerate"`, re-rendered from its next
retry seed and aligned exactly as the run aligned (synthgen.rerender: the seeds a release and
`rebuild` use), measured the same way (detection, pose, sharpness, SER-FIQ, and its cosine to the
template of its class's kept images) and kept only when it passes every image filter; otherwise
the next retry seed is tried, up to MAX_ATTEMPTS re-renderings, after which its class is dropped
whole (it cannot be filled to its size). A class that --min-distinctness drops goes whole (it
collides with a class kept before it). With `policy = "drop"` dropped images are not replaced.

Every decision is an operation in filtered.json (round 0, before the run's audit):
    {"round": 0, "op": "remove", "key", "reason"}
    {"round": 0, "op": "replace", "key", "slot", "cls", "index", "attempt", "new_key", "seed",
     "noise_seed", "skipped", "reason"}
`synthgen release` carries them into the card's remediation operations, so `rebuild` replays
them byte for byte without measuring anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from synthgen import __version__
from synthgen.contract import MANIFEST, identity_of
from synthgen.errors import DataError, UsageError
from synthgen.fsutil import atomic_write_text
from synthgen.runs import config_hash
from synthgen.stage import now

from .filters import FILTERS, active, check

DIR = "filtered"
MARKER = "filtered.json"
MAX_ATTEMPTS = 10  # re-renderings tried for one dropped image before its class is dropped whole
CLASS_FILTERS = ("min_distinctness",)  # decided per class; a replacement is never re-checked against them


def _reason(d: dict) -> str:
    name = d["measure"]
    col, kind, meaning = FILTERS[name]
    if kind == "flag":
        return f"quality filter {name}: {meaning}"
    v = d["value"]
    shown = "not measured" if v in ("", None) else f"{float(v):.4g}"
    return f"quality filter {name}: {meaning} {shown} (threshold {d['threshold']})"


def apply_to_run(root, cfg, decisions: list, matcher, cache_dir, progress: bool = False,
                 overwrite: bool = False) -> dict:
    """Write RUN/filtered (tree, manifest.jsonl, filtered.json last) from the quality decisions;
    returns filtered.json's content. Skips the work when filtered.json is complete for the same
    decisions and settings; one made with others is replaced only with `overwrite`."""
    from synthgen.release.source import generation_record, read_sources
    from synthgen.rerender import Replacer, link_or_copy

    root = Path(root)
    gen_meta, gen_records, mode, align_meta, tree, tree_records = read_sources(
        root, "quality filters are applied to a `synthgen run` folder")
    thresholds = active({n: getattr(cfg, n) for n in FILTERS})
    ident = {"decisions": config_hash(decisions), "thresholds": thresholds, "policy": cfg.policy,
             "generate": gen_meta.get("config_hash"), "align": (align_meta or {}).get("config_hash"),
             "matcher": getattr(matcher, "id", None)}
    h = config_hash(ident)
    out = root / DIR
    _check_decisions(decisions, tree_records, root)
    try:
        prev = json.loads((out / MARKER).read_text())
        if prev.get("status") == "complete" and prev.get("config_hash") == h:
            return prev
        if prev.get("status") == "complete" and not overwrite:
            raise UsageError(f"{out} holds images filtered with other decisions or another policy (the shards and "
                             "the audit were made from them); pass --overwrite to filter, shard and audit again",
                             "--overwrite")
    except (OSError, ValueError, AttributeError):
        pass
    final, out = out, root / (DIR + ".partial")  # built beside the old one, swapped in when complete
    shutil.rmtree(out, ignore_errors=True)
    work = out / ".work"
    new_dir, ok_dir = work / "new", work / "accepted"  # replacements being measured; those that passed
    dropped = {d["key"]: d for d in decisions if d["decision"] == "dropped"}
    keys = sorted(d["key"] for d in decisions)
    gone: dict[str, str] = {}  # class -> why it goes whole
    for d in dropped.values():
        if d["measure"] in CLASS_FILTERS and identity_of(d["key"]) not in gone:
            gone[identity_of(d["key"])] = f"class dropped whole: {_reason(d)}"
    ops, removals, pending = [], [], []
    for k in keys:
        if k not in dropped or identity_of(k) in gone:
            continue
        g = generation_record(k, mode, tree_records, gen_records)
        why = _reason(dropped[k])
        if cfg.policy == "drop" or g is None or g.get("class") is None:
            note = "" if cfg.policy == "drop" else (" (no generation record: not re-rendered)" if g is None else
                                                    " (a view of an unconditional instance: not re-rendered)")
            removals.append({"round": 0, "op": "remove", "key": k, "reason": why + note})
            continue
        attempt = int(g.get("attempt") or 0)
        pending.append({"key": k, "slot": g["path"], "cls": g["class"], "index": g["index"], "attempt": attempt + 1,
                        "skipped": [], "reason": why})
    placed_all = []
    if pending:
        kept_emb = _kept_templates(matcher, tree, cache_dir, cfg, set(dropped), progress)
        replacer = FilteredReplacer(Replacer(gen_meta, align_meta, mode, None, work, new_dir), ok_dir, thresholds,
                                    matcher, kept_emb, work, cfg.batch_size, progress)
        try:
            replacer.check()
        except UsageError as e:  # worded for `synthgen release`'s flags; say it in the run's terms
            raise DataError(f"the quality filters re-render dropped images with the run's generator: "
                            f"{e.message.split('; ')[0]}; set [generate] network to the run's file, or "
                            "[quality] policy = \"drop\"") from None
        placed, failed = replacer.make([{k: r[k] for k in ("key", "slot", "cls", "index", "attempt", "skipped")}
                                        for r in pending])
        why = {r["key"]: r["reason"] for r in pending}
        for f in failed:  # no re-rendering passed: the class cannot be filled to its size
            gone.setdefault(identity_of(f["key"]), f"class dropped whole: it cannot be filled, {f['key']} was not "
                            f"replaced ({f['why']})")
        placed_all = [dict(p, reason=why[p["key"]] + "; re-rendered from the next retry seed") for p in placed]
    # the tree: kept originals linked, accepted replacements moved in, whole classes left out
    records = {}
    for k in keys:
        if k in dropped or identity_of(k) in gone:
            continue
        link_or_copy(tree / k, out / k)
        records[k] = tree_records.get(k) or {"path": k, "status": "ok"}
    for p in placed_all:
        if identity_of(p["key"]) in gone:
            continue
        (out / p["new_key"]).parent.mkdir(parents=True, exist_ok=True)
        (ok_dir / p["new_key"]).replace(out / p["new_key"])  # same file system: a rename
        records[p["new_key"]] = p["record"]
        ops.append({"round": 0, "op": "replace", "key": p["key"], "slot": p["slot"], "cls": p["cls"],
                    "index": p["index"], "attempt": p["attempt"], "new_key": p["new_key"], "seed": p["seed"],
                    "noise_seed": p["noise_seed"], "skipped": p["skipped"], "reason": p["reason"]})
    ops += [r for r in removals if identity_of(r["key"]) not in gone]
    for k in keys:
        if identity_of(k) in gone:
            own = _reason(dropped[k]) + "; " if k in dropped and dropped[k]["measure"] not in CLASS_FILTERS else ""
            ops.append({"round": 0, "op": "remove", "key": k, "reason": own + gone[identity_of(k)]})
    if not records:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)  # the shards built from it no longer follow this config
        first: dict[str, int] = {}
        for d in dropped.values():
            first[d["measure"]] = first.get(d["measure"], 0) + 1
        why = ", ".join(f"{n} {c:,}" for n, c in sorted(first.items(), key=lambda kv: -kv[1]))
        tried = (f" and none of up to {MAX_ATTEMPTS} re-renderings of each passed them" if cfg.policy == "regenerate"
                 else "")
        raise DataError(f"[quality]: the filters dropped every image of the run ({len(keys):,}; first failed: {why})"
                        f"{tried}, so nothing is left to shard; see {root / 'quality' / 'report.html'} (a detection "
                        "rate of 0 means no face was found: noise, not faces) and loosen the filters or fix the run")
    ops.sort(key=lambda o: o["key"])
    shutil.rmtree(work, ignore_errors=True)
    atomic_write_text(out / MANIFEST, "".join(json.dumps(records[k], sort_keys=True) + "\n" for k in sorted(records)))
    classes_before = sorted({identity_of(k) for k in keys})
    summary = {"images_before": len(keys), "images": len(records), "classes_before": len(classes_before),
               "classes": len({identity_of(k) for k in records}), "replaced": sum(o["op"] == "replace" for o in ops),
               "removed": sum(o["op"] == "remove" for o in ops), "classes_dropped": sorted(gone)}
    meta = {"status": "complete", "config_hash": h, "identity": ident, "policy": cfg.policy,
            "thresholds": thresholds, "summary": summary, "original_classes": classes_before, "ops": ops,
            "synthgen_version": __version__, "finished": now()}
    atomic_write_text(out / MARKER, json.dumps(meta, indent=1))
    shutil.rmtree(final, ignore_errors=True)  # killed here: no RUN/filtered, and a release refuses the shards
    out.rename(final)
    return meta


def _check_decisions(decisions: list, tree_records: dict, root: Path) -> None:
    """decisions.csv must name each of the run's images exactly once (it was measured on them)."""
    from collections import Counter

    keys = [d["key"] for d in decisions]
    where = root / "quality" / "decisions.csv"
    fix = "rerun the quality stage on this run (synthgen run --overwrite)"
    dup = next((k for k, n in Counter(keys).items() if n > 1), None)
    if dup is not None:
        raise DataError(f"{where}: lists {dup!r} more than once; {fix}")
    want = set(tree_records)
    if set(keys) != want:
        odd = sorted(set(keys) - want)[:1] or sorted(want - set(keys))[:1]
        what = "is not an image of the run" if set(keys) - want else "is missing from it"
        raise DataError(f"{where}: does not list exactly the run's images ({odd[0]!r} {what}); {fix}")


MATCHER_FILTERS = ("min_consistency", "min_serfiq")  # need the matcher's embeddings of the replacement


class FilteredReplacer:
    """A rerender.Replacer whose replacements must also pass the image filters (`thresholds`,
    filters.FILTERS names): each is rendered into the inner Replacer's tree (a staging folder),
    measured as the quality stage measures, and moved into `tree` when it passes; otherwise it is
    deleted and the next retry seed is tried, up to MAX_ATTEMPTS per slot. Filters that need a
    matcher (MATCHER_FILTERS) are checked only when `matcher` is given (and, for consistency,
    `kept`: class -> sum of its kept images' unit embeddings). `make(reps, search=False)` replays
    exact attempts (rebuild) and measures nothing. Same interface as Replacer."""

    def __init__(self, replacer, tree: Path, thresholds: dict, matcher=None, kept: dict | None = None,
                 work: Path | None = None, batch_size: int = 64, progress: bool = False):
        self.inner, self.tree, self.matcher, self.kept = replacer, Path(tree), matcher, kept
        self.progress = progress
        self.staging = Path(replacer.tree)
        self.work = Path(work) if work is not None else self.staging.parent
        self.batch_size = batch_size
        self.thresholds = {n: t for n, t in (thresholds or {}).items() if n not in CLASS_FILTERS and
                           (n not in MATCHER_FILTERS or (matcher is not None and (n != "min_consistency" or kept)))}

    def check(self) -> None:
        self.inner.check()

    def make(self, reps: list[dict], search: bool = True) -> tuple[list[dict], list[dict]]:
        """-> (placed, given up: rep + skipped + why)."""
        if not self.thresholds or not search:
            placed, failed = self.inner.make(reps, search)
            self._move(placed)
            return placed, [dict(f, why=f"no face in {len(f['skipped'])} re-renderings") for f in failed]
        from tqdm import tqdm

        done, gave_up = [], []
        limit = {r["key"]: r["attempt"] + MAX_ATTEMPTS - 1 for r in reps}
        pending = list(reps)
        bar = tqdm(total=len(reps), unit="img", desc="re-render until the filters pass", disable=not self.progress,
                   dynamic_ncols=True)
        while pending:
            placed, failed = self.inner.make(pending)
            gave_up += [dict(f, why=f"no face in {len(f['skipped'])} re-renderings") for f in failed]
            bar.update(len(failed))
            rows = _measure_new(placed, self.staging, self.matcher, self.work / "embeddings", self.batch_size,
                                self.kept, "min_serfiq" in self.thresholds)
            nxt = []
            for p in placed:
                fails = [n for n, t in self.thresholds.items() if not check(n, rows[p["new_key"]], t)[0]]
                if not fails:
                    done.append(p)
                    self._move([p])
                    bar.update(1)
                    continue
                (self.staging / p["new_key"]).unlink(missing_ok=True)
                rep = {k: p[k] for k in ("key", "slot", "cls", "index")}
                if p["attempt"] >= limit[p["key"]]:
                    gave_up.append(dict(rep, attempt=p["attempt"], skipped=p["skipped"],
                                        why=f"{MAX_ATTEMPTS} re-renderings failed the filters (last: {fails[0]})"))
                    bar.update(1)
                else:
                    nxt.append(dict(rep, attempt=p["attempt"] + 1, skipped=[]))
            pending = nxt
        bar.close()
        return done, gave_up

    def _move(self, placed: list) -> None:
        for p in placed:
            dst = self.tree / p["new_key"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            (self.staging / p["new_key"]).replace(dst)


def _kept_templates(matcher, tree: Path, cache_dir, cfg, dropped: set, progress: bool) -> dict | None:
    """class -> sum of the unit embeddings of its kept images (for a replacement's consistency)."""
    if matcher is None or cfg.min_consistency is None:
        return None
    emb, _ = matcher.embed_path(tree, "IN", cache_dir=cache_dir, batch_size=cfg.batch_size, progress=progress,
                                desc=f"quality: embed ({matcher.name})")
    sums: dict[str, np.ndarray] = {}
    for k, c, e in zip(emb.keys, emb.identities, emb.emb):
        if k not in dropped and np.isfinite(e).all():
            sums[c] = sums.get(c, 0) + e.astype(np.float64)
    return sums


def _measure_new(placed: list, new_dir: Path, matcher, cache_dir: Path, batch_size: int, kept: dict | None,
                 serfiq: bool) -> dict:
    """new_key -> the quality row of each placed replacement (template_cos against its class's kept images)."""
    from synthgen.audit.embed import ImageSet

    from .stage import measure

    if not placed:
        return {}
    atomic_write_text(new_dir / MANIFEST, "".join(json.dumps(dict(p["record"], path=p["new_key"]), sort_keys=True)
                                                  + "\n" for p in placed))
    images = ImageSet(new_dir, None, "IN")
    rows, _ = measure(images, None, None, batch_size, False, False)
    by_key = {r["key"]: r for r in rows}
    if serfiq:
        from .serfiq import serfiq_set

        scores = serfiq_set(images, matcher, min(batch_size, 64))
        for r in rows:
            r["serfiq"] = scores.get(r["key"])
    if kept is not None:
        emb, _ = matcher.embed_path(new_dir, "IN", cache_dir=cache_dir, batch_size=batch_size, progress=False,
                                    images=images)
        for k, c, e in zip(emb.keys, emb.identities, emb.emb):
            t = kept.get(c)
            n = None if t is None else float(np.linalg.norm(t))
            by_key[k]["template_cos"] = float(e @ t / n) if n and np.isfinite(e).all() else None
    (new_dir / MANIFEST).unlink()
    return by_key
