"""One remediation round: from an audit's flags to actions, and actions to files.

    plan_round(...)          the audit's flags -> actions (a pure function of the audit and state)
    Replacer                 re-renders a generated image from its next retry seed and aligns it
                             exactly as the run did (separate align stage, generate --align, or none)
    apply_removals(...)      removes files from the working tree

Actions are dicts: {"op": "remove" | "replace", "key", "class", "reason", "score", "p_value",
"matcher", "nearest", "round"}, plus for "replace" the slot (the generate record's path), the
class index, the image index and the attempt whose seeds make the replacement. The replacement
of slot S at attempt a is `<S without suffix>-r<a>.png`, rendered from
    seed       = derive_seed(base, class, index, "retry", a)
    noise seed = derive_seed(base, class, index, "noise", "retry", a)   (noise_mode random)
the same retry seeds `generate --align` uses, so a release and its rebuild agree.
"""

from __future__ import annotations

import os
import dataclasses
from pathlib import Path, PurePosixPath

from synthgen.contract import identity_of
from synthgen.errors import UsageError
from synthgen.seeding import derive_seed

MAX_NO_FACE = 10  # retry seeds tried for one replacement before the slot is dropped instead


def replacement_key(slot: str, attempt: int, ext: str = "png") -> str:
    p = PurePosixPath(slot)
    return str(p.with_name(f"{p.stem}-r{attempt}.{ext}"))


def retry_seeds(base: int, cls, index: int, attempt: int, noise: bool) -> tuple[int, int | None]:
    c = cls if cls is not None else "instance"
    return (derive_seed(base, c, index, "retry", attempt),
            derive_seed(base, c, index, "noise", "retry", attempt) if noise else None)


def collisions(report: dict) -> list[dict]:
    """Colliding synthetic identity pairs of every matcher, best first (ties by names)."""
    pairs = []
    ms = report.get("matchers") or [report]
    for m in ms if isinstance(ms, list) else []:
        if not isinstance(m, dict):
            continue
        c = (m.get("collisions") or {}).get("pairs") if isinstance(m.get("collisions"), dict) else None
        name = str((m.get("matcher") or {}).get("name", "")) if isinstance(m.get("matcher"), dict) else ""
        for p in c if isinstance(c, list) else []:
            try:
                score = float(p["score"])
            except (TypeError, ValueError, KeyError):
                continue
            if str(p["a"]) != str(p["b"]) and score == score:  # a pair of two identities, a real score
                pairs.append({"a": str(p["a"]), "b": str(p["b"]), "score": score, "matcher": name})
    return sorted(pairs, key=lambda p: (-p["score"], p["a"], p["b"]))


def plan_round(items: dict, rows: list[dict], report: dict, policy: str, keep_foreign: bool, rnd: int) -> list[dict]:
    """Actions for round `rnd` from the previous audit. `items`: key -> {"slot", "class", "index",
    "attempt"} of the current working set (slot None: not made by the generator)."""
    present = {identity_of(k) for k in items}
    gone: dict[str, dict] = {}
    best: dict[tuple, dict] = {}
    for r in rows:  # one row per flagged item: the matcher with the smallest p-value
        k = (r["kind"], r["synthetic"])
        if k not in best or (r["p_value"], r["matcher"]) < (best[k]["p_value"], best[k]["matcher"]):
            best[k] = r
    # A class whose template is flagged while a minority of its images are flagged too: those images
    # can be what pulls the template (one leaked image of five did, in the release tests). With
    # re-rendering they are replaced first and the next audit round decides on the class, once (a
    # class already re-rendered in is not deferred again); a class with half or more of its images
    # flagged is the leak itself and goes now (so does any, with drop).
    size, hit = {}, {}
    for k in items:
        size[identity_of(k)] = size.get(identity_of(k), 0) + 1
    for kind, k in best:
        if kind == "image" and k in items:
            hit[identity_of(k)] = hit.get(identity_of(k), 0) + 1
    again = {identity_of(k) for k, it in items.items() if it.get("attempt")}  # deferred once already
    pulled = {c for c, n in hit.items() if 2 * n < size[c] and c not in again} if policy != "drop" else set()
    for (kind, name), r in sorted(best.items()):
        if kind == "identity" and name in present and name not in pulled:
            gone[name] = {"reason": f"identity flagged: its template matches authentic identity {r['authentic']}",
                          "score": r["score"], "p_value": r["p_value"], "matcher": r["matcher"], "nearest": r["authentic"]}
    for p in collisions(report):
        a, b = p["a"], p["b"]
        if a in gone or b in gone or a not in present or b not in present:
            continue
        gone[b] = {"reason": f"identity collision: synthetic identities {a} and {b} look like one person "
                             f"(template score {p['score']:.4f}); {b} removed",
                   "score": p["score"], "p_value": None, "matcher": p["matcher"], "nearest": a}
    acts = []
    for key in sorted(items):
        it = items[key]
        cls = identity_of(key)
        base = {"key": key, "class": cls, "round": rnd, "score": None, "p_value": None, "matcher": None, "nearest": None}
        if cls in gone:
            acts.append({**base, **gone[cls], "op": "remove"})
            continue
        r = best.get(("image", key))
        if r is not None:
            flag = {"score": r["score"], "p_value": r["p_value"], "matcher": r["matcher"], "nearest": r["authentic"]}
            if it["slot"] is None:
                acts.append({**base, **flag, "op": "remove",
                             "reason": "flagged, and not made by the generator (no generation record)"})
            elif policy == "drop":
                acts.append({**base, **flag, "op": "remove", "reason": f"flagged: matches authentic image {r['authentic']}"})
            elif it["class"] is None:
                acts.append({**base, **flag, "op": "remove", "reason": f"flagged: matches authentic image {r['authentic']}"
                             " (views of an unconditional instance are dropped, not re-rendered)"})
            else:
                acts.append({**base, **flag, "op": "replace", "slot": it["slot"], "cls": it["class"],
                             "index": it["index"], "attempt": it["attempt"] + 1,
                             "reason": f"flagged: matches authentic image {r['authentic']}; re-rendered from the next "
                                       "retry seed"})
            continue
        if it["slot"] is None and not keep_foreign:
            acts.append({**base, "op": "remove", "reason": "not made by the generator (no generation record): it "
                         "cannot be vouched for or rebuilt"})
    return acts


def apply_removals(tree: Path, acts: list[dict], items: dict) -> None:
    for a in acts:
        (tree / a["key"]).unlink(missing_ok=True)
        items.pop(a["key"], None)


class Replacer:
    """Renders replacement images with the run's generator and settings and places them in the
    working tree, aligned the way the run aligned (`mode`: stage | inline | none)."""

    def __init__(self, gen_meta: dict, align_meta: dict | None, mode: str, network: str | None, work: Path,
                 tree: Path):
        self.gen_meta, self.align_meta, self.mode = gen_meta, align_meta, mode
        self.work, self.tree = Path(work), Path(tree)
        ident = gen_meta.get("identity") or {}
        self.device_type = ident.get("device_type", "cpu")
        self.network = network or (gen_meta.get("config") or {}).get("network")
        self.sha256 = ident.get("network_sha256")
        self._G = self._inline = self._acfg = self._tmpl = None  # made on first use

    # -- the run's settings ------------------------------------------------------------------
    def gen_config(self):
        from .source import generate_config_from

        return generate_config_from(self.gen_meta, self.network, self.work / "raw")

    def check(self) -> None:
        """Before any work: the generator file is there, is the run's, and its device exists."""
        import torch

        from synthgen.fsutil import sha256_file

        if not self.network or not Path(self.network).is_file():
            raise UsageError(f"the run's generator {self.network!r} is not found; pass --network PKL (the file the "
                             "run used) or use --policy drop", "--network")
        if self.sha256 and sha256_file(self.network) != self.sha256:
            raise UsageError(f"{self.network}: not the generator this run used (sha256 differs from "
                             f"{self.sha256[:16]}...); pass the run's file with --network", "--network")
        if self.device_type == "cuda" and not torch.cuda.is_available():
            raise UsageError("the run was generated on CUDA; byte-identical replacements need the same device type: "
                             "run the release on a CUDA machine, or use --policy drop", "--policy")

    def _generator(self):
        if self._G is None:
            from synthgen.generators import load_generator

            cfg = self.gen_config()
            self._G = load_generator(cfg.network, device=self.device_type, precision=cfg.precision)
        return self._G

    # -- rendering and placing ---------------------------------------------------------------
    def make(self, reps: list[dict], search: bool = True) -> tuple[list[dict], list[dict]]:
        """Render and place replacements. Each rep: slot, cls, index, attempt. A replacement the
        run's alignment rejects (no face, on_miss skip) moves on to the next attempt (`search`),
        up to MAX_NO_FACE times. Returns (placed: rep + new_key, seed, noise_seed, record, skipped),
        (given up: rep + skipped)."""
        from synthgen.generation.planning import Item
        from synthgen.generation.rendering import render

        cfg = self.gen_config()
        G = self._generator()
        chunk = cfg.chunk_size
        noise = cfg.noise_mode == "random"
        placed, failed = [], []
        pending = [dict(r, skipped=list(r.get("skipped", [])), first=r["attempt"]) for r in reps]
        while pending:
            items = []
            for r in pending:
                seed, nseed = retry_seeds(cfg.seed, r["cls"], r["index"], r["attempt"], noise)
                items.append(Item(replacement_key(r["slot"], r["attempt"], "jpg" if cfg.format == "jpg" else "png"),
                                  r["cls"], r["index"], seed, nseed, extra={"attempt": r["attempt"]}))
            imgs = render(G, items, cfg, chunk)
            nxt = []
            for r, it, img in zip(pending, items, imgs):
                key, rec = self._place(cfg, it, img, r["skipped"])
                if key is not None:
                    rec = dict(rec, replaces=r["slot"], attempt=r["attempt"])
                    placed.append({**r, "new_key": key, "seed": it.seed, "noise_seed": it.noise_seed, "record": rec})
                elif search and r["attempt"] - r["first"] + 1 < MAX_NO_FACE:
                    nxt.append(dict(r, attempt=r["attempt"] + 1, skipped=r["skipped"] + [r["attempt"]]))
                else:
                    failed.append(dict(r, skipped=r["skipped"] + [r["attempt"]]))
            pending = nxt
        for r in placed + failed:
            r.pop("first", None)
        return placed, failed

    def _place(self, cfg, it, img, skipped: list):
        from synthgen.generation.rendering import write_image

        common = {"psi": cfg.psi, "truncation_cutoff": cfg.truncation_cutoff, "noise_mode": cfg.noise_mode}
        if self.mode == "none":
            write_image(self.tree, it.path, img, cfg.format, cfg.jpeg_quality)
            return it.path, it.record(common)
        if self.mode == "inline":
            return self._place_inline(cfg, it, img, common, skipped)
        return self._place_stage(cfg, it, img)

    def _place_inline(self, cfg, it, img, common, skipped_attempts):
        """generate --align's own step (InlineAligner): the same detector, crop and PNG provenance."""
        from synthgen.generation.rendering import InlineAligner, write_image

        if self._inline is None:
            self._inline = InlineAligner(cfg, self._generator().device, batched=False)
        skipped = [retry_seeds(cfg.seed, it.cls, it.index, a, False)[0] for a in skipped_attempts]
        it = dataclasses.replace(it, extra={**it.extra, "skipped_seeds": skipped})
        crops, metas, _, _ = self._inline([it], [img], cfg)
        if metas[0] is None:
            return None, None
        write_image(self.tree, it.path, crops[0], "png", cfg.jpeg_quality, metas[0])
        out = it.record(common)
        out.update({k: metas[0][k] for k in ("prob", "landmarks", "transform", "template")})
        return it.path, out

    def _place_stage(self, cfg, it, img):
        from synthgen.alignment import load_template
        from synthgen.alignment.stage import align_step
        from synthgen.generation.rendering import write_image

        if self._acfg is None:
            from .source import align_config_from

            self._acfg = align_config_from(self.align_meta or {}, self.work / "raw", self.tree)
            self._tmpl = load_template(self._acfg.template, self._acfg.size)
        write_image(self.work / "raw", it.path, img, cfg.format, cfg.jpeg_quality)
        name, pts = self._tmpl
        # one image per call: the crop never depends on which replacements share a batch
        rec = align_step([it.path], self._acfg, pts, name, self._acfg.device)[0]
        if not rec.get("path"):
            return None, None
        return rec["path"], rec


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link (same bytes, same mtime: embedding caches stay valid), else copy with mtime."""
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)

