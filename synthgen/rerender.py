"""Re-rendering a generated image from its next retry seed, aligned exactly as its run aligned.

    Replacer                 renders replacements with a run's generator and settings and places them
                             in a folder tree (separate align stage, generate --align, or none)
    replacement_key(...)     the key of slot S at attempt a: `<S without suffix>-r<a>.png`
    retry_seeds(...)         seed       = derive_seed(base, class, index, "retry", a)
                             noise seed = derive_seed(base, class, index, "noise", "retry", a)
    generate_config_from     the GenerateConfig / AlignConfig that reproduce a run's images
    align_config_from

The same retry seeds `generate --align` uses, so whoever re-renders (quality filters before
sharding, a release's remediation, `rebuild` replaying either) gets the same bytes.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path, PurePosixPath

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


def generate_config_from(gen_meta: dict, network, out, progress: bool = False):
    """The GenerateConfig that reproduces a run's images: its config as recorded, with the
    device type, precision and forward chunk it resolved to (what byte identity depends on)."""
    from synthgen.generation import GenerateConfig

    names = {f.name for f in dataclasses.fields(GenerateConfig)}
    ident = gen_meta.get("identity") or {}
    c = {k: v for k, v in (gen_meta.get("config") or {}).items() if k in names}
    c.update(network=str(network), out=str(out), device=ident.get("device_type", "cpu"), progress=progress,
             precision=ident.get("precision", "auto"), force_fp32=False, chunk_size=ident.get("forward_chunk"),
             shard_index=None, num_shards=None, overwrite=False)
    return GenerateConfig(**c)


def align_config_from(align_meta: dict, inp, out, progress: bool = False):
    """The AlignConfig of a run's align stage (one worker, on the device type it ran on)."""
    from synthgen.alignment import AlignConfig

    names = {f.name for f in dataclasses.fields(AlignConfig)}
    c = {k: v for k, v in (align_meta.get("config") or {}).items() if k in names}
    c.update(inp=str(inp), out=str(out), progress=progress, workers=1, overwrite=False,
             device=(align_meta.get("identity") or {}).get("device_type", "cpu"),
             thresholds=tuple(c.get("thresholds", (0.6, 0.7, 0.7))))
    return AlignConfig(**c)
