"""Run bookkeeping shared by the stages: config identity hashes and output-directory checks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from synthgen.errors import UsageError


def config_hash(identity: dict) -> str:
    """sha256 of the settings that can change an output byte (the run's identity)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def check_output_dir(out: Path, marker: str, identity: dict, overwrite: bool, remove: bool = True) -> None:
    """Allow a missing/empty directory or one holding a run with the same identity (resume).

    Anything else is refused, naming the settings that differ, unless `overwrite`, in which
    case the directory is removed (by the caller that passes `remove=True`, e.g. rank 0 only).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory", "--out")
    if not out.exists() or not any(out.iterdir()):
        return
    if (out / marker).is_file():
        try:
            prev = json.loads((out / marker).read_text())
        except ValueError:
            prev = {}
        if prev.get("config_hash") == config_hash(identity):
            return
        old = prev.get("identity") or {}
        diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
        what = f"a run with a different config (differs in: {', '.join(diff)})" if old else "a run with a different config"
    else:
        what = f"other files (no {marker})"
    if not overwrite:
        raise UsageError(f"{out} is not empty and holds {what}; use a new directory or pass --overwrite to replace it", "--out")
    if remove:
        shutil.rmtree(out)


def ensure_writable_dir(out: Path, flag: str = "--out") -> None:
    """Create `out` and prove it is writable, before any work starts."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"cannot write to {out} ({e.strerror or e}); pick a writable directory", flag) from None
