"""What was audited: the inputs' provenance (stage records followed back to the generator) and
checks on the inputs themselves (are the authentic images aligned crops?)."""

from __future__ import annotations

import json
from pathlib import Path

from synthgen.contract import MARKERS


def provenance(path) -> dict:
    """What was audited: file sha256 (embedding files), shard index sha256 and config hashes, and
    the generator's sha256 / config hash found along the stage chain (index.json source ->
    align.json -> the generate run.json), where they exist."""
    from synthgen.fsutil import sha256_file

    p = Path(path)
    out = {"path": str(p)}
    if p.is_file():
        out["sha256"] = sha256_file(p)
        return out
    seen = set()
    for _ in range(4):
        if not p.is_dir() or p.resolve() in seen:
            break
        seen.add(p.resolve())
        nxt = None
        for stage, marker in (("shard", "index.json"), ("align", "align.json"), ("generate", "run.json")):
            f = p / marker
            if not f.is_file():
                continue
            try:
                meta = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(meta, dict):
                continue
            rec = {"file": str(f), "sha256": sha256_file(f)}
            for k in ("config_hash", "source_config_hash"):
                if isinstance(meta.get(k), str):
                    rec[k] = meta[k]
            gen = _find_key(meta, "network_sha256")
            if gen:
                out["generator_sha256"] = gen
            out[stage] = rec
            conf = meta.get("config") if isinstance(meta.get("config"), dict) else {}
            src = meta.get("source") or conf.get("inp") or meta.get("inp")
            if isinstance(src, str) and Path(src).is_dir():
                nxt = Path(src)
        if nxt is None:
            break
        p = nxt
    return out


def _find_key(obj, key, depth=0):
    if depth > 4:
        return None
    if isinstance(obj, dict):
        if isinstance(obj.get(key), str):
            return obj[key]
        for v in obj.values():
            r = _find_key(v, key, depth + 1)
            if r:
                return r
    return None


def _alignment_warnings(cfg) -> list[str]:
    """A warning when the authentic side does not look like 112 x 112 aligned crops."""
    p = Path(cfg.authentic)
    if not p.is_dir():
        return []
    if (p / MARKERS["shard"]).is_file():
        try:
            size = tuple(json.loads((p / MARKERS["shard"]).read_text()).get("image_size", ()))
        except (OSError, ValueError):
            return []
        sizes = {size} if size else set()
    else:
        from PIL import Image

        sizes = set()
        dirs = sorted(x for x in p.iterdir() if x.is_dir())[:5]  # a sample: 4 images from each of 5 identities
        for sub in dirs:
            files = sorted(f for f in sub.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"))
            for f in files[:4]:
                try:
                    with Image.open(f) as im:
                        sizes.add((im.size[1], im.size[0]))
                except OSError:
                    continue
    bad = sorted(s for s in sizes if tuple(s) != (112, 112))
    if not bad:
        return []
    shown = ", ".join(f"{w}x{h}" for h, w in bad[:3])
    aligned = (p / "align.json").is_file() or (p / MARKERS["shard"]).is_file()
    return [f"--authentic {p}: images are {shown}, not 112x112 aligned crops"
            + ("" if aligned else " (no align.json: not made by `synthgen align`)")
            + "; run `synthgen align` on them first: scores of unaligned photos are not comparable."]


# ----------------------------------------------------------------------------------------------
# Wording
