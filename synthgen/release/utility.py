"""A release's utility section: what a recognizer trained on it scores (`synthgen evaluate --release`).

The numbers go into card.json (`utility`), the evaluation's report.json is kept in REL/utility/
and bound to the card, DATASET_CARD.md and SHA256SUMS are written again. A card is immutable
under its id, so the release gets a new id (printed); the old one no longer names the folder.
Nothing checks that the evaluated network was trained on this release: the card says so, and
records the network's weights sha256 so the claim can be followed up.

Crash safety: the four files change together (utility/report.json, card.json, DATASET_CARD.md,
SHA256SUMS bind each other), so no order of single-file renames keeps the folder verifying. The
new release is assembled beside REL (`.REL.evaluate-new`: hard links to every unchanged file,
the four new ones written there), verified, and swapped with REL in one atomic rename
(renameat2 RENAME_EXCHANGE); the old content, now under the side name, is then removed. An
interruption at any moment leaves REL either the old release or the new one, both verifying;
a side folder left by one is removed by the next evaluate --release. Where the exchange is not
available (not Linux, or a file system without it) REL is renamed aside and the new folder
renamed in: a crash between those two renames leaves the old release intact under
`.REL.evaluate-old` and REL absent, never a mixture.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from synthgen.errors import DataError
from synthgen.fsutil import atomic_write_text, sha256_file

UTILITY_REPORT = "utility/report.json"


def summarise(report: dict) -> dict:
    """The card's utility section from an evaluate report."""
    rows = []
    for b in report["benchmarks"]:
        v = b["flip"] or b["no_flip"]
        rows.append({"benchmark": b["name"], "sha256": b["sha256"], "pairs": b["pairs"],
                     "accuracy": v["accuracy"], "std": v["std"], "flip": b["flip"] is not None,
                     "accuracy_no_flip": b["no_flip"]["accuracy"],
                     "tar_at_far": [{k: t[k] for k in ("far", "tar", "tar_ci95", "supported", "imposter_pairs")}
                                    for t in v["tar_at_far"]]})
    return {"what": "verification accuracy of a face recognizer reported as trained on this release (not checked "
                    "by synthgen: the weights' sha256 names the network)",
            "matcher": report["matcher"], "protocol": report["protocol"], "evaluated": report["created"],
            "report": UTILITY_REPORT, "benchmarks": rows}


CHANGED = ("card.json", "DATASET_CARD.md", "SHA256SUMS", UTILITY_REPORT)


def _side(rel: Path, what: str) -> Path:
    return rel.parent / f".{rel.name}.evaluate-{what}"


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    import errno

    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def _stage(rel: Path, new: Path) -> None:
    """`new` = REL's unchanged files as hard links (copies where links fail), no CHANGED file."""
    for p in sorted(rel.rglob("*")):
        r = p.relative_to(rel)
        if r.as_posix() in CHANGED:
            continue
        if p.is_dir():
            (new / r).mkdir(parents=True, exist_ok=True)
            continue
        (new / r).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(p, new / r)
        except OSError:
            shutil.copy2(p, new / r)


def add_utility(rel, report: dict, report_file) -> str:
    """Write the utility section into the release at `rel`; returns its new id. Crash-safe: see
    the module's docstring."""
    from .card import bound_files, card_markdown
    from .verify import release_id, verify_release, write_sums

    rel = Path(os.path.abspath(rel))  # 'REL/' or '.' name their folder (never resolving a link)
    for what in ("new", "old"):  # left by an interrupted evaluate --release (REL itself verifies)
        shutil.rmtree(_side(rel, what), ignore_errors=True)
    problems = verify_release(rel)
    if problems:
        raise DataError(f"{rel}: the release does not verify ({problems[0]}); evaluate against an intact release")
    card = json.loads((rel / "card.json").read_text(encoding="utf-8"))
    new = _side(rel, "new")
    try:
        new.mkdir()
        _stage(rel, new)
        (new / "utility").mkdir(exist_ok=True)
        atomic_write_text(new / UTILITY_REPORT, Path(report_file).read_text(encoding="utf-8"))
        card["utility"] = dict(summarise(report), report_sha256=sha256_file(new / UTILITY_REPORT))
        card["bound"] = bound_files(new, card["formats"])
        atomic_write_text(new / "card.json", json.dumps(card, indent=1))
        atomic_write_text(new / "DATASET_CARD.md", card_markdown(card))
        write_sums(new)
        problems = verify_release(new)
        if problems:
            raise DataError(f"{rel}: the release with its utility section does not verify ({problems[0]}); REL is "
                            "unchanged")
    except Exception as e:
        shutil.rmtree(new, ignore_errors=True)
        if isinstance(e, OSError):
            raise DataError(f"{rel}: cannot write the new release beside it in {rel.parent} "
                            f"({e.strerror or type(e).__name__}); the release is unchanged") from None
        raise
    new_id = release_id(new)
    if _exchange(new, rel):  # one atomic step: REL is the new release, `new` holds the old one
        shutil.rmtree(new, ignore_errors=True)
    else:
        old = _side(rel, "old")
        os.replace(rel, old)
        os.replace(new, rel)
        shutil.rmtree(old, ignore_errors=True)
    return new_id
