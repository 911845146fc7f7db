"""Rendering in fixed chunks, encoding, writing, and inline alignment (`generate --align`)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np

from synthgen.seeding import derive_seed, latent

from .config import GenerateConfig, resolve_chunk
from .planning import Item

def render(G, items: list[Item], cfg: GenerateConfig, chunk_size: int | None = None) -> np.ndarray:
    """uint8 NHWC images for `items`, in network calls of exactly `chunk_size` samples (default:
    resolved from cfg and G's device). Mapping and synthesis both see the fixed shape."""
    import torch

    from synthgen.generators import to_uint8

    n_chunk = chunk_size or resolve_chunk(cfg, G.device.type)
    out = []
    for s in range(0, len(items), n_chunk):
        chunk = items[s : s + n_chunk]
        pad = n_chunk - len(chunk)
        z = np.stack([latent(it.seed, G.z_dim) for it in chunk] + [np.zeros(G.z_dim)] * pad)
        cls = None if G.c_dim == 0 else [it.cls for it in chunk] + [0] * pad
        ws = G.map(z, cls, cfg.psi, cfg.truncation_cutoff)
        if any(it.mix_seed is not None for it in chunk):
            zm = np.stack([latent(it.mix_seed, G.z_dim) if it.mix_seed is not None else np.zeros(G.z_dim) for it in chunk] + [np.zeros(G.z_dim)] * pad)
            wm = G.map(zm, cls, cfg.psi, cfg.truncation_cutoff)
            for i, it in enumerate(chunk):
                if it.mix_seed is not None:
                    lo, hi = it.extra["mix_layers"]
                    ws[i, lo : hi + 1] = wm[i, lo : hi + 1]
        noise_seeds = [it.noise_seed or 0 for it in chunk] + [0] * pad
        with torch.no_grad():
            img = G.synthesize(ws, cfg.noise_mode, noise_seeds if cfg.noise_mode == "random" else None)
        out.append(to_uint8(img)[: len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, G.resolution, G.resolution, G.img_channels), np.uint8)


def encode(img: np.ndarray, fmt: str, quality: int, meta: dict | None = None) -> bytes:
    """PNG or JPEG bytes; `meta` is stored as a PNG text chunk 'synthgen' (JSON)."""
    from PIL import Image, PngImagePlugin

    buf = io.BytesIO()
    im = Image.fromarray(img)
    if fmt == "jpg":
        im.save(buf, format="JPEG", quality=quality)
    else:
        info = None
        if meta is not None:
            info = PngImagePlugin.PngInfo()
            info.add_text(PNG_META_KEY, json.dumps(meta, sort_keys=True))
        im.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


PNG_META_KEY = "synthgen"


def read_png_meta(path) -> dict:
    from PIL import Image

    with Image.open(path) as im:
        text = im.text.get(PNG_META_KEY) if hasattr(im, "text") else None
    return json.loads(text) if text else {}


def write_image(root: Path, rel: str, img: np.ndarray, fmt: str, quality: int, meta: dict | None = None) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(encode(img, fmt, quality, meta))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ----------------------------------------------------------------------------------------------
# Run bookkeeping


class InlineAligner:
    """`generate --align`: MTCNN + similarity warp on each rendered image; a miss is re-rendered
    with the item's next retry seed (derive_seed(base, class, index, "retry", attempt)), so
    every class ends with exactly --per-class aligned images unless retries run out.

    batched=True (the default on CUDA): one MTCNN call detects the whole rendered step; the
    images it misses are detected again one at a time, and only a per-image miss triggers a
    retry, so a seed is never given up because of the images that shared its batch.
    """

    def __init__(self, cfg: GenerateConfig, device, batched: bool = False):
        from synthgen.alignment import load_template, make_detector

        self.size = cfg.align_size
        self.template_name, self.template = load_template(cfg.align_template, cfg.align_size)
        self.device = device
        # per image: which seeds fail must not depend on batching
        self.detector = make_detector("mtcnn", device=str(device), min_face_size=cfg.min_face_size, batched=False)
        self.batched = None
        if batched:
            self.batched = make_detector("mtcnn", device=str(device), min_face_size=cfg.min_face_size, batched=True)

    def _align(self, rels, imgs, detector):
        from synthgen.alignment import detect_and_align

        return detect_and_align(rels, imgs, detector, self.template, self.template_name, self.size, device=self.device)

    def detect(self, rels: list[str], imgs: list):
        """(records, crops by index): batched first pass if enabled, then per image for its misses."""
        if self.batched is None:
            return self._align(rels, imgs, self.detector)
        recs, crops = self._align(rels, imgs, self.batched)
        miss = [i for i in range(len(imgs)) if i not in crops]
        if miss:
            recs2, crops2 = self._align([rels[i] for i in miss], [imgs[i] for i in miss], self.detector)
            for k, i in enumerate(miss):
                recs[i] = recs2[k]
                if k in crops2:
                    crops[i] = crops2[k]
        return recs, crops

    def __call__(self, batch: list[Item], imgs, cfg: GenerateConfig):
        imgs = list(imgs)
        recs, crops = self.detect([it.path for it in batch], imgs)
        out_imgs, metas, retry, failed = [], [], [], []
        for i, (it, rec) in enumerate(zip(batch, recs)):
            if i in crops:
                out_imgs.append(crops[i])
                metas.append({"seed": it.seed, "noise_seed": it.noise_seed, "attempt": it.extra.get("attempt", 0),
                              "skipped_seeds": it.extra.get("skipped_seeds", []), "prob": rec["prob"],
                              "landmarks": rec["landmarks"], "transform": rec["transform"],
                              "template": self.template_name, "align_size": cfg.align_size})
                continue
            out_imgs.append(imgs[i])
            metas.append(None)
            skipped = it.extra.get("skipped_seeds", []) + [it.seed]
            attempt = it.extra.get("attempt", 0) + 1
            if attempt > cfg.max_retries:
                failed.append(dataclasses.replace(it, extra={**it.extra, "skipped_seeds": skipped, "attempt": attempt - 1}))
                continue
            c = it.cls if it.cls is not None else "instance"
            retry.append(dataclasses.replace(
                it, seed=derive_seed(cfg.seed, c, it.index, "retry", attempt),
                noise_seed=derive_seed(cfg.seed, c, it.index, "noise", "retry", attempt) if it.noise_seed is not None else None,
                extra={**it.extra, "attempt": attempt, "skipped_seeds": skipped}))
        return out_imgs, metas, retry, failed


