"""The contract between stages, defined once: file names, item statuses, the identity rule.

Every stage reads only what the stage before it wrote:

    folder tree   <identity>/<file>          identity = first path component of the key
    MANIFEST      manifest.jsonl             one JSON object per item (schema below)
    marker        the stage's done-marker    run.json | align.json | index.json | report.json

Manifest schema version 1 (JSONL, one object per line, keys sorted by writers):
    path      the item's output file, relative to the stage's folder (absent: nothing written)
    status    one of Status (below)
    ...       stage-specific provenance (seeds, psi, landmarks, transform, ...; see README)

A record "has an output" (a later stage may read `path`) when it has a `path` and its
status is not `missing`: generate writes `ok` / `missing` / `no_face`; align writes `ok`, or a
failure status with a `fallback` crop under `--on-miss center-crop|keep`.
"""

from __future__ import annotations

from enum import Enum

MANIFEST_SCHEMA_VERSION = 1
MANIFEST = "manifest.jsonl"
RUN_RECORD = "run.json"  # the pipeline's record at the run root (synthgen run)
MARKERS = {"generate": "run.json", "align": "align.json", "shard": "index.json", "audit": "report.json"}
STAGE_DIRS = {"generate": "raw", "align": "aligned", "shard": "shards", "audit": "audit"}  # inside a run


class Status(str, Enum):
    """Per-item outcome, one vocabulary for every stage."""

    OK = "ok"  # the item was produced
    MISSING = "missing"  # generate: not (yet) rendered
    NO_FACE = "no_face"  # no face found (align; generate --align after its retries)
    LOW_PROB = "low_prob"  # align: best face below --min-prob
    UNREADABLE = "unreadable"  # align: the input file cannot be decoded
    ERROR = "error"  # align: anything else went wrong for this item
    SKIPPED = "skipped"  # align: input deliberately not processed (reason in the record)

    def __str__(self) -> str:
        return self.value


def identity_of(key: str) -> str:
    """The identity (class folder) of a key `identity/file`; '' for a key with no folder."""
    return key.split("/", 1)[0] if "/" in key else ""


def has_output(record: dict) -> bool:
    """Whether a manifest record names a file a later stage may read."""
    return bool(record.get("path")) and record.get("status") != Status.MISSING
