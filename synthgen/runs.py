"""Run bookkeeping shared by the stages: config identity hashes, output-directory checks, the
type check of stage configs against their dataclass annotations, stale temp-file removal."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
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
    if (out / marker).is_file() and _only_a_start_marker(out, marker):
        # A run that stopped before writing any output (e.g. an older synthgen that found a
        # config error after creating --out): nothing to resume, so it is no different run.
        if remove:
            (out / marker).unlink()
        return
    if (out / marker).is_file():
        try:
            prev = json.loads((out / marker).read_text())
        except (ValueError, RecursionError):
            prev = {}
        if not isinstance(prev, dict):
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
        raise UsageError(f"cannot write to {out}: {e.strerror or e}, expected a writable directory; choose another "
                         "folder or fix its permissions", flag) from None


TEMP_NAME = re.compile(r"^\..+\.tmp-\d+$")  # `.NAME.tmp-PID`: a file being written by process PID


def _only_a_start_marker(out: Path, marker: str) -> bool:
    """True when `out` holds `marker` with status "running" and no output: every other file is
    a temp file or empty."""
    try:
        prev = json.loads((out / marker).read_text())
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(prev, dict) or prev.get("status") != "running":
        return False
    for dirpath, _dirs, files in os.walk(out):
        for name in files:
            p = Path(dirpath) / name
            if p == out / marker or TEMP_NAME.match(name):
                continue
            try:
                if p.is_symlink() or p.stat().st_size > 0:
                    return False
            except OSError:
                return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def remove_stale_temps(root: Path, recursive: bool = True, only_dead: bool = False) -> int:
    """Delete `.NAME.tmp-PID` files under `root` left by killed writers (call it only while no
    other process writes there, i.e. when a stage (re)starts, or pass `only_dead` to keep the
    temp files of processes alive on this machine). Returns how many were removed."""
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if not TEMP_NAME.match(name):
                continue
            if only_dead and (os.getpid() == int(name.rsplit("-", 1)[1]) or _pid_alive(int(name.rsplit("-", 1)[1]))):
                continue
            try:
                os.unlink(os.path.join(dirpath, name))
                n += 1
            except FileNotFoundError:
                pass
        if not recursive:
            break
    return n


def probe_writable(path: Path, flag: str) -> None:
    """Check, without creating anything that stays, that a file can be created at `path`: its
    nearest existing ancestor must be a writable directory."""
    parent = Path(path).absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: {parent} is not a directory; pick another location", flag)
    probe = parent / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"cannot write to {parent}: {e.strerror or e}, expected a writable folder; choose another "
                         "location or fix its permissions", flag) from None


# ----------------------------------------------------------------------------------------------
# Type check of a stage config against its dataclass annotations

_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
          "tuple": "a list", "list": "a list", "dict": "a table", "None": "nothing (omit the key)"}


def _matches(value, t: str) -> bool | None:
    if t == "None":
        return value is None
    if t == "bool":
        return isinstance(value, bool)
    if t == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "str":
        return isinstance(value, str)
    if t in ("tuple", "list"):
        return isinstance(value, (tuple, list))
    if t == "dict":
        return isinstance(value, dict)
    return None  # an annotation we do not check


def flag_name(field: str) -> str:
    """Config field -> its command-line flag (`per_class` -> `--per-class`, `inp` -> `--in`)."""
    return "--in" if field == "inp" else "--" + field.replace("_", "-")


def check_types(cfg, label=flag_name, skip=("progress",)) -> None:
    """Raise a UsageError naming the first field whose value does not match its annotation
    (`per_class = "two"`, `enabled = "no"`, `psi = nan`). `label(field)` names the setting."""
    for f in dataclasses.fields(cfg):
        if f.name in skip:
            continue
        value = getattr(cfg, f.name)
        kinds = [t.strip() for t in str(f.type).split("|")] if isinstance(f.type, str) else [getattr(f.type, "__name__", "")]
        verdicts = [_matches(value, t) for t in kinds]
        if None in verdicts or any(verdicts):
            if isinstance(value, float) and not math.isfinite(value):
                raise UsageError(f"got {value}, expected a finite number", label(f.name))
            continue
        expected = " or ".join(_WORDS.get(t, t) for t in kinds if t != "None")
        example = f.default if f.default is not dataclasses.MISSING and f.default is not None else None
        like = f" like {json.dumps(example)}" if example is not None and not isinstance(example, (tuple, list, bool)) else ""
        raise UsageError(f"got {value!r} ({type(value).__name__}), expected {expected}{like}", label(f.name))


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(device, flag: str = "--device", host: bool = True) -> None:
    """Device syntax; with `host`, also that it exists on this machine (CUDA available)."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise UsageError(f"got {device!r}, expected auto, cpu, cuda or cuda:N", flag)
    if host:
        from synthgen.device import resolve_device

        try:
            resolve_device(device)
        except UsageError as e:
            raise UsageError(e.message, flag) from None


def check_range(value, flag: str, lo=None, hi=None, what: str = "") -> None:
    """`lo <= value <= hi` (None: unbounded), else a UsageError saying the allowed range."""
    if value is None:
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"in {lo}..{hi}"
        raise UsageError(f"got {value}, expected {what or 'a value'} {rng}", flag)


def check_choice(value, flag: str, choices) -> None:
    if value not in choices:
        raise UsageError(f"got {value!r}, expected one of {', '.join(choices)}", flag)


def source_config_hash(root) -> str:
    """The config hash of the stage that wrote folder `root` (its generate, align or quality-filter
    marker), "" when it has none: what a later stage's identity records about its input, so an
    input re-made by another config is a different run."""
    from synthgen.contract import MARKERS

    root = Path(root)
    for name in (MARKERS["generate"], MARKERS["align"], MARKERS["filter"]):
        p = root / name
        if p.is_file():
            try:
                d = json.loads(p.read_text())
            except (OSError, ValueError):
                return ""
            h = d.get("config_hash", "") if isinstance(d, dict) else ""
            return h if isinstance(h, str) and re.fullmatch(r"[0-9a-f]{0,64}", h) else ""
    return ""


