"""What an audited run says: its stage records, item records, shards and audit (read-only).

A release starts from a `synthgen run` folder (RUN/raw, RUN/aligned or inline alignment,
RUN/shards, RUN/audit). `read_run` checks that every stage finished and returns a `RunView`;
nothing in RUN is ever written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from synthgen.contract import MANIFEST, MARKERS, STAGE_DIRS, identity_of
from synthgen.errors import DataError
from synthgen.safepath import require_input, show_path

ALIGN_MODES = ("stage", "inline", "none")  # separate align stage | generate --align | no alignment


JSON_LIMIT = 1 << 30  # card.json, reports, run markers: read whole, never more than this


def read_json(path: Path, what: str) -> dict:
    """A JSON object from a plain file (never a FIFO or a link to /dev/zero), at most JSON_LIMIT
    bytes; one-line DataError otherwise, ending with `what` to do."""
    from synthgen.safepath import NotARegularFile, read_inside

    path = Path(path)
    try:
        d = json.loads(read_inside(path.parent, path.name, JSON_LIMIT).decode("utf-8"))
    except FileNotFoundError:
        raise DataError(f"{show_path(path)}: not found; {what}") from None
    except NotARegularFile as e:
        raise DataError(f"{show_path(path)}: {str(e).split(': ', 1)[-1]}; {what}") from None
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
        raise DataError(f"{show_path(path)}: unreadable ({type(e).__name__}); {what}") from None
    if not isinstance(d, dict):
        raise DataError(f"{show_path(path)}: found a JSON {type(d).__name__}, expected an object; {what}")
    return d


def read_manifest(root: Path) -> dict[str, dict]:
    """path -> record of root/manifest.jsonl (the shard stage's reader); a missing manifest is an error."""
    from synthgen.shards.plan import manifest_records

    recs = manifest_records(root)
    if recs is None:
        raise DataError(f"{show_path(root / MANIFEST)}: not found; rerun the stage that wrote it")
    return recs


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class RunView:
    root: Path
    gen_meta: dict  # RUN/raw/run.json
    gen_records: dict  # raw path -> generate record
    align_mode: str  # stage | inline | none
    align_meta: dict | None  # RUN/aligned/align.json (stage mode)
    tree_records: dict  # key (a path in the tree the shards were built from) -> that stage's record
    index: dict  # RUN/shards/index.json
    report: dict  # RUN/audit/report.json
    report_sha256: str
    rows: list = field(default_factory=list)  # RUN/audit/flagged.csv
    filtered: dict | None = None  # RUN/filtered/filtered.json: the quality filters applied before sharding

    @property
    def original_images(self) -> int:
        """Images before the quality filters (the shards' count when none were applied)."""
        ops = (self.filtered or {}).get("ops") or []
        return int(self.index.get("total") or 0) + sum(1 for o in ops if o.get("op") == "remove")

    @property
    def original_classes(self) -> list:
        """Classes before the quality filters (check_filtered recomputes them from the run)."""
        if self.filtered is not None:
            return list(self.filtered["original_classes"])
        return list(self.index.get("classes") or [])

    @property
    def gen_dir(self) -> Path:
        return self.root / STAGE_DIRS["generate"]

    @property
    def tree(self) -> Path:
        """The folder tree the shards were built from: the quality-filtered tree, aligned crops, or
        the generate output."""
        if self.filtered is not None:
            return self.root / STAGE_DIRS["filter"]
        return self.root / STAGE_DIRS["align"] if self.align_mode == "stage" else self.gen_dir

    @property
    def shard_dir(self) -> Path:
        return self.root / STAGE_DIRS["shard"]

    @property
    def audit_dir(self) -> Path:
        return self.root / STAGE_DIRS["audit"]

    def generation_record(self, key: str) -> dict | None:
        """The generate record behind a tree key, or None (not made by the generator). A
        replacement the quality filters rendered stands for its slot at its attempt."""
        rec = self.tree_records.get(key) or {}
        if rec.get("replaces") is not None and self.filtered is not None:
            g = self.gen_records.get(rec["replaces"])
            return None if g is None else dict(g, attempt=rec.get("attempt"))
        return generation_record(key, self.align_mode, self.tree_records, self.gen_records)


def generation_record(key: str, mode: str, tree_records: dict, gen_records: dict) -> dict | None:
    """The generate record behind key `key` of a run's aligned (mode stage: through the crop's
    `source`) or generated tree, or None (not made by the generator)."""
    if mode == "stage":
        src = (tree_records.get(key) or {}).get("source")
        return gen_records.get(src) if isinstance(src, str) else None
    return gen_records.get(key)


def read_flagged(path: Path) -> list[dict]:
    """flagged.csv rows as dicts (score and p-values as floats)."""
    from synthgen.fsutil import read_csv_rows

    rows = read_csv_rows(path, "rerun the audit")
    out = []
    for n, r in enumerate(rows, 2):
        try:
            out.append({"kind": r["kind"], "synthetic": r["synthetic"], "score": float(r["score"]),
                        "p_value": float(r["p_value"]), "matcher": r["matcher"], "authentic": r["authentic"]})
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{show_path(path)}:{n}: not a flagged.csv row (kind, synthetic, score, p_value, matcher, "
                            "authentic); rerun the audit") from None
        if out[-1]["kind"] not in ("image", "identity"):
            raise DataError(f"{show_path(path)}:{n}: kind must be image or identity; rerun the audit")
    return out


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63


def check_filtered(meta: dict, source: dict, filtered: dict, path) -> None:
    """RUN/filtered/filtered.json against the run it came from (what a release trusts): every
    operation names an image of the source tree once, every replacement is in the filtered tree
    and stands for its slot, and the filtered tree holds exactly the source minus the operations'
    keys plus the replacements. Sets meta["original_classes"] from the source. DataError otherwise."""
    from synthgen.quality.filters import FILTERS

    fix = "rerun `synthgen run` with --overwrite to apply the filters again"

    def bad(why):
        return DataError(f"{show_path(path)}: {why}; {fix}")

    ops, thr = meta.get("ops"), meta.get("thresholds")
    if not isinstance(ops, list) or not isinstance(thr, dict):
        raise bad("ops must be a list and thresholds an object")
    for name, t in thr.items():
        if name not in FILTERS or isinstance(t, str) or t is None or \
                (FILTERS[name][1] != "flag" and (isinstance(t, bool) or not isinstance(t, (int, float)))):
            raise bad(f"threshold {str(name)[:40]!r} is not a filter with a number (known: {', '.join(FILTERS)})")
    seen, new = set(), set()
    for n, o in enumerate(ops):
        if not isinstance(o, dict) or o.get("op") not in ("remove", "replace") or not isinstance(o.get("key"), str):
            raise bad(f"ops[{n}] must be a remove or replace object with a key")
        if o["key"] not in source or o["key"] in seen:
            raise bad(f"ops[{n}] key {o['key'][:80]!r} is {'listed twice' if o['key'] in seen else 'not an image of the run'}")
        seen.add(o["key"])
        if o["op"] == "replace":
            nk = o.get("new_key")
            if not isinstance(nk, str) or nk not in filtered or (filtered[nk].get("replaces") != o.get("slot")) \
                    or not all(_int(o.get(k)) for k in ("index", "attempt", "seed")) \
                    or not (o.get("cls") is None or _int(o.get("cls"))) \
                    or not (isinstance(o.get("skipped", []), list) and all(map(_int, o.get("skipped", [])))):
                raise bad(f"ops[{n}] is not a replacement the filtered tree holds (new_key, slot, cls, index, attempt, "
                          "seed, skipped)")
            new.add(nk)
    if set(filtered) != (set(source) - seen) | new:
        odd = sorted(set(filtered) ^ ((set(source) - seen) | new))[0]
        raise bad(f"the filtered tree and the operations disagree (e.g. {odd[:80]!r})")
    meta["original_classes"] = sorted({identity_of(k) for k in source})


def read_sources(root: Path, need: str) -> tuple:
    """(gen_meta, gen_records, align mode, align_meta, tree, tree_records) of a run whose generate
    (and align stage, when it has one) finished: the images a release or the quality filters start
    from. `need`: what to do, for the errors."""
    root = Path(root)
    gen_dir = root / STAGE_DIRS["generate"]
    gen_meta = read_json(gen_dir / MARKERS["generate"], need)
    if gen_meta.get("status") != "complete":
        raise DataError(f"{show_path(gen_dir / MARKERS['generate'])}: generation is {gen_meta.get('status')!r}, "
                        "not complete; finish the run first (rerun `synthgen run`)")
    gen_records = read_manifest(gen_dir)
    aligned = root / STAGE_DIRS["align"]
    inline = bool((gen_meta.get("config") or {}).get("align"))
    align_meta = None
    if inline:
        mode = "inline"
    elif (aligned / MARKERS["align"]).is_file():
        mode = "stage"
        align_meta = read_json(aligned / MARKERS["align"], need)
        if align_meta.get("status") != "complete":
            raise DataError(f"{show_path(aligned / MARKERS['align'])}: alignment is not complete; rerun `synthgen run`")
    else:
        mode = "none"
    tree_records = read_manifest(aligned) if mode == "stage" else gen_records
    tree = aligned if mode == "stage" else gen_dir
    return gen_meta, gen_records, mode, align_meta, tree, tree_records


def read_run(root) -> RunView:
    """Check that RUN holds a finished, audited `synthgen run` and read what a release needs."""
    root = Path(root)
    need = "release needs the folder of a finished, audited `synthgen run` (raw/, shards/, audit/)"
    require_input(root, "RUN_DIR", "the folder of a finished, audited `synthgen run`")
    if not root.is_dir():
        raise DataError(f"{show_path(root)}: not a directory; {need}")
    gen_meta, gen_records, mode, align_meta, _, tree_records = read_sources(root, need)
    gen_dir = root / STAGE_DIRS["generate"]
    shard_dir = root / STAGE_DIRS["shard"]
    index = read_json(shard_dir / MARKERS["shard"], need)
    fdir = root / STAGE_DIRS["filter"]
    filtered = None
    src = index.get("source")
    # a run's shards come from its raw/, aligned/ or filtered/ folder: the name says which (the path
    # itself may be relative to where the run ran, or the run folder may have moved since)
    from_filtered = isinstance(src, str) and Path(src).name == STAGE_DIRS["filter"]
    if from_filtered or (fdir / MARKERS["filter"]).is_file():
        if not from_filtered or not (fdir / MARKERS["filter"]).is_file():
            raise DataError(f"{show_path(shard_dir / MARKERS['shard'])}: the shards were not built from the run's "
                            f"quality-filtered images as they are now ({show_path(fdir)} "
                            f"{'is missing or unfinished' if from_filtered else 'exists, but the shards came from ' + str(src)}); "
                            "rerun `synthgen run` (with --overwrite) so the filters, shards and audit agree")
        filtered = read_json(fdir / MARKERS["filter"], need)
        if index.get("source_config_hash") != filtered.get("config_hash"):
            raise DataError(f"{show_path(shard_dir / MARKERS['shard'])}: the shards were built from other "
                            f"quality-filtered images than {show_path(fdir)} holds now (the filters or their policy "
                            "changed since); rerun `synthgen run --overwrite` so the filters, shards and audit agree")
        filtered_records = read_manifest(fdir)
        check_filtered(filtered, tree_records, filtered_records, fdir / MARKERS["filter"])
        from synthgen.quality.stage import read_decisions
        from synthgen.runs import config_hash

        if (filtered.get("identity") or {}).get("decisions") != config_hash(read_decisions(root / "quality")):
            raise DataError(f"{show_path(fdir / MARKERS['filter'])}: applied other decisions than "
                            f"{show_path(root / 'quality' / 'decisions.csv')} holds (the quality stage ran again "
                            "since); rerun `synthgen run` so the filters, shards and audit agree")
        tree_records = filtered_records
    audit_dir = root / STAGE_DIRS["audit"]
    report_path = audit_dir / MARKERS["audit"]
    report = read_json(report_path, need)
    if not isinstance(report.get("verdict"), dict) or report["verdict"].get("status") not in ("pass", "leak",
                                                                                             "inconclusive"):
        raise DataError(f"{show_path(report_path)}: no verdict.status pass|leak|inconclusive; audit the run with "
                        "this synthgen version (rerun `synthgen run`)")
    audited = ((report.get("dataset") or {}).get("synthetic") or {}).get("shard") or {}
    if audited.get("sha256") != sha256_bytes((shard_dir / MARKERS["shard"]).read_bytes()):
        raise DataError(f"{show_path(report_path)}: did not audit this run's shards (their index.json sha256 "
                        "differs); a release certifies what was audited: rerun `synthgen run` so the audit "
                        "matches the shards")
    for path, d, keys in ((gen_dir / MARKERS["generate"], gen_meta, ("config", "identity")),
                          (report_path, report, ("config", "dataset"))):
        for k in keys:
            if not isinstance(d.get(k), dict):
                raise DataError(f"{show_path(path)}: '{k}' is a {type(d.get(k)).__name__}, expected an object; rerun "
                                "`synthgen run` to rewrite it")
    if not isinstance(report.get("matchers", []), list) or not all(isinstance(m, dict) for m in report.get("matchers", [])):
        raise DataError(f"{show_path(report_path)}: 'matchers' must be a list of objects; rerun the audit")
    for rec in gen_records.values():
        c, i, a = rec.get("class"), rec.get("index"), rec.get("attempt", 0)
        if not all(v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31) for v in (c, a)) \
                or not (isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**31):
            raise DataError(f"{show_path(gen_dir / MANIFEST)}: record {rec['path']}: class, index and attempt must be "
                            "non-negative integers; rerun `synthgen generate` to rewrite the manifest")
    return RunView(root, gen_meta, gen_records, mode, align_meta, tree_records, index, report,
                   sha256_bytes(report_path.read_bytes()), read_flagged(audit_dir / "flagged.csv"), filtered)
