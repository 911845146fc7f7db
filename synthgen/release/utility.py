"""A release's utility section: what a recognizer trained on it scores (`synthgen evaluate --release`).

The numbers go into card.json (`utility`), the evaluation's report.json is kept in REL/utility/
and bound to the card, DATASET_CARD.md and SHA256SUMS are written again. A card is immutable
under its id, so the release gets a new id (printed); the old one no longer names the folder.
Nothing checks that the evaluated network was trained on this release: the card says so, and
records the network's weights sha256 so the claim can be followed up.
"""

from __future__ import annotations

import json
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


def add_utility(rel, report: dict, report_file) -> str:
    """Write the utility section into the release at `rel`; returns its new id."""
    from .card import bound_files, card_markdown
    from .verify import release_id, verify_release, write_sums

    rel = Path(rel)
    problems = verify_release(rel)
    if problems:
        raise DataError(f"{rel}: the release does not verify ({problems[0]}); evaluate against an intact release")
    card = json.loads((rel / "card.json").read_text(encoding="utf-8"))
    (rel / "utility").mkdir(exist_ok=True)
    atomic_write_text(rel / UTILITY_REPORT, Path(report_file).read_text(encoding="utf-8"))
    card["utility"] = dict(summarise(report), report_sha256=sha256_file(rel / UTILITY_REPORT))
    card["bound"] = bound_files(rel, card["formats"])
    atomic_write_text(rel / "card.json", json.dumps(card, indent=1))
    atomic_write_text(rel / "DATASET_CARD.md", card_markdown(card))
    write_sums(rel)
    return release_id(rel)
