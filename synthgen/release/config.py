"""ReleaseConfig and its side-effect-free validation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from synthgen.errors import UsageError
from synthgen.options import check_choices, check_ranges, opt
from synthgen.runs import check_types

POLICIES = ("regenerate", "drop")
RELEASE_JSON = "release.json"  # the stage marker (bookkeeping, outside SHA256SUMS)


def formats_available() -> tuple:
    from synthgen.export import EXPORTERS

    return ("shards", *EXPORTERS)


DEFAULT_USE = ("Training and evaluating face-recognition models for research. Not for identifying, tracking "
               "or verifying real people, and not as evidence about any real person.")


@dataclass
class ReleaseConfig:
    run: str = opt(path="dir", metavar="RUN_DIR", help="A finished, audited `synthgen run` folder.")
    out: str = opt(path="dir", metavar="REL", help="Release directory.")
    policy: str = opt("regenerate", choices=POLICIES,
                      help="Flagged generated images: re-render from their next retry seed (class sizes kept) "
                           "or drop them.")
    max_rounds: int = opt(3, range=(1, None), metavar="N", help="Remediate-and-re-audit rounds at most (round 1 "
                          "also removes images with no generation record and re-audits a subset audit in full).")
    formats: str = opt("shards", flag="--format", metavar="LIST",
                       help="Comma list of formats: shards (always), recordio, imagefolder, webdataset, parquet.")
    allow_inconclusive: bool = opt(False, help="Write the release when the final audit is inconclusive, marked "
                                               "NOT CERTIFIED (exit 0).")
    min_detection_rate: float = opt(0.99, range=(0, 1), metavar="RATE",
                                    help="Quality floor: certify only when at least this share of the released "
                                         "images had a real face detection, not a fallback crop (checked when the "
                                         "run aligned faces).")
    min_consistency_rate: float = opt(0.5, range=(0, 1), metavar="RATE",
                                      help="Quality floor: certify only when, for every audit matcher, at least "
                                           "this share of synthetic same-class image pairs verify as one person at "
                                           "the matcher's calibrated per-pair threshold (0: not checked).")
    keep_foreign: bool = opt(False, help="Keep unflagged images with no generation record (the release then "
                                         "cannot be rebuilt from its card).")
    network: str | None = opt(None, path="file", metavar="PKL",
                              help="The run's generator file, if it moved [default: the path the run recorded].")
    name: str = opt("synthgen-release", metavar="NAME", help="Dataset name for the card.")
    license: str = opt("unspecified", metavar="TEXT", help="The dataset's licence, for the card.")
    generator_license: str = opt("unspecified", metavar="TEXT",
                                 help="The generator's licence / terms, for the card (e.g. non-commercial research "
                                      "only, when trained on CASIA-WebFace).")
    intended_use: str = opt(DEFAULT_USE, metavar="TEXT", help="What the data is for, for the card.")
    overwrite: bool = opt(False, help="Replace a release directory that holds a different release.")
    progress: bool = True

    RUNTIME_FIELDS = ("run", "out", "network", "overwrite", "progress")


def parse_formats(text) -> list[str]:
    known = formats_available()
    if not isinstance(text, str):
        raise UsageError(f"got {text!r}, expected a comma list like shards,recordio", "--format")
    fmts = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in fmts if f not in known]
    if bad:
        raise UsageError(f"'{bad[0]}' is not one of {', '.join(known)}", "--format")
    if len(set(fmts)) != len(fmts):
        raise UsageError(f"'{text}' names a format twice", "--format")
    return ["shards"] + sorted(f for f in fmts if f != "shards")  # one order: the same release, however listed


def validate(cfg: ReleaseConfig, host: bool = True) -> None:
    check_types(cfg)
    check_choices(cfg, ("policy",))
    check_ranges(cfg, ("max_rounds", "min_detection_rate", "min_consistency_rate"))
    fmts = parse_formats(cfg.formats)
    if host:
        from synthgen.export import check_format

        for f in fmts[1:]:  # shards need nothing more; the others may need a package (parquet: pyarrow)
            check_format(f)
    if host and cfg.network is not None and not Path(cfg.network).is_file():
        raise UsageError(f"{cfg.network} not found, expected the run's generator file", "--network")
    for f in ("name", "license", "generator_license", "intended_use"):
        v = getattr(cfg, f)
        if not v.strip() or any(ord(ch) < 32 and ch not in "\n\t" for ch in v):
            raise UsageError(f"got {v!r}, expected non-empty text without control characters",
                             "--" + f.replace("_", "-"))


# What decides the rounds (a folder holding another is refused, unless --overwrite) and what only
# shapes the written files (changed on a refused or unfinished release: it simply continues).
DECIDING = ("policy", "keep_foreign")


def identity(cfg: ReleaseConfig, run) -> dict:
    """What names a release folder: the run's audit (its report sha256) and the deciding settings."""
    return {"run_audit_sha256": run.report_sha256, **{k: getattr(cfg, k) for k in DECIDING}}


def settings(cfg: ReleaseConfig) -> dict:
    """The settings that only shape the written files."""
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ReleaseConfig.RUNTIME_FIELDS + DECIDING}
    d["formats"] = parse_formats(cfg.formats)
    return d
