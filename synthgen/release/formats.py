"""Writing a release's data: the shards and every other format from a working tree (shared by
`release` and `rebuild`), and the sha256 of every data file the card lists."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from synthgen.contract import MANIFEST, MARKERS
from synthgen.errors import UsageError
from synthgen.fsutil import atomic_write_text


def materialize_formats(tree: Path, records: dict, shard_config: dict, out: Path, fmts: list, progress: bool) -> dict:
    """Working tree (+ its manifest, written here from `records`) -> REL/shards and every other
    format. Shared with `rebuild`; returns the index."""
    from synthgen.export import export
    from synthgen.shards import ShardConfig, shard

    from .config import formats_available

    for f in fmts:
        if f not in formats_available():  # a folder name: never anything a card could smuggle in
            raise UsageError(f"'{f}' is not one of {', '.join(formats_available())}", "formats")
    lines = [json.dumps(dict(records.get(k) or {}, path=k, status=(records.get(k) or {}).get("status", "ok")),
                        sort_keys=True) for k in sorted(records)]
    atomic_write_text(tree / MANIFEST, "\n".join(lines) + "\n")
    names = {f.name for f in dataclasses.fields(ShardConfig)} - set(ShardConfig.RUNTIME_FIELDS)
    sc = {k: v for k, v in shard_config.items() if k in names}
    index = shard(ShardConfig(**sc, inp=str(tree), out=str(out / "shards"), overwrite=True, progress=progress))
    for f in formats_available():  # written afresh; also a format an interrupted earlier invocation left
        if f != "shards":
            shutil.rmtree(out / f, ignore_errors=True)
    for f in fmts:
        if f != "shards":
            export(out / "shards", out / f, f, progress=progress)
    return dict(index)


def data_files(out: Path, fmts: list) -> dict:
    """relative path -> sha256 of every data file (the shards and each format's files)."""
    from synthgen.fsutil import sha256_file

    files = {}
    for f in fmts:
        for p in sorted((out / f).rglob("*")):
            if p.is_file() and not (f == "shards" and p.name == MARKERS["shard"]):
                files[p.relative_to(out).as_posix()] = sha256_file(p)
    return files
