"""Which images go into which shard: the input tree and its manifest -> sorted (key, label, record)."""

from __future__ import annotations

import json
from pathlib import Path

from synthgen.contract import MANIFEST, has_output, identity_of
from synthgen.errors import DataError
from synthgen.imageio import list_images
from synthgen.safepath import safe_relpath, show_path


def manifest_records(root: Path) -> dict[str, dict] | None:
    """path -> record for every record of root/manifest.jsonl that names an output (paths checked
    to stay inside root); None when there is no manifest."""
    m = root / MANIFEST
    if not m.is_file():
        return None
    recs = {}
    fix = "rerun the stage that wrote it, or remove the manifest to shard the folder tree as it is"
    try:
        text = m.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{show_path(m)}: unreadable ({e}); {fix}") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError:
            raise DataError(f"{show_path(m)}:{n}: not valid JSON; {fix}") from None
        if not isinstance(r, dict):
            raise DataError(f"{show_path(m)}:{n}: found a JSON {type(r).__name__}, expected an object per line; {fix}")
        if has_output(r):
            key = safe_relpath(r["path"], root, m, f"line {n} 'path'", fix)
            if r.get("source") is not None:  # align: relative to align's input tree (provenance only)
                safe_relpath(r["source"], None, m, f"line {n} 'source'", fix)
            recs[key] = r
    return recs


def plan(root: Path):
    """-> (items [(key, label, record)], classes). Uses the manifest when there is one."""
    recs = manifest_records(root)
    if recs is not None:
        keys = sorted(recs)
        missing = [k for k in keys if not (root / k).is_file()]
        if missing:
            raise DataError(f"{root / 'manifest.jsonl'}: lists {len(missing)} files that are missing, "
                            f"e.g. {root / missing[0]}; rerun the stage that wrote it, or remove the manifest")
    else:
        keys = list_images(root)
        recs = {}
        for k in keys:  # keys become shard keys: no control characters or backslashes in them
            safe_relpath(k, None, root, "an image file name", "rename the file")
    keys = [k for k in keys if "/" in k]
    if not keys:
        raise DataError(f"{root}: no images in identity folders (<identity>/<file>) to shard")
    classes = sorted({identity_of(k) for k in keys})
    label_of = {c: i for i, c in enumerate(classes)}
    items = sorted(((k, label_of[identity_of(k)], recs.get(k, {})) for k in keys), key=lambda t: (t[1], t[0]))
    return items, classes


