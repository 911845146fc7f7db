"""The contract between stages, defined once: file names, item statuses, the identity rule.

Every stage reads only what the stage before it wrote:

    folder tree   <identity>/<file>          identity = first path component of the key
    MANIFEST      manifest.jsonl             one JSON object per item (schema below)
    marker        the stage's done-marker    run.json | align.json | index.json | report.json

Manifest schema version 1 (JSONL, one object per line, keys sorted by writers):
    path      the item's output file, relative to the stage's folder (absent: nothing written)
    status    one of Status (below)
    ...       stage-specific provenance: GenerateRecord and AlignRecord (below) list every key

A record "has an output" (a later stage may read `path`) when it has a `path` and its
status is not `missing`: generate writes `ok` / `missing` / `no_face`; align writes `ok`, or a
failure status with a `fallback` crop under `--on-miss center-crop|keep`.
"""

from __future__ import annotations

from enum import Enum
from typing import TypedDict

MANIFEST_SCHEMA_VERSION = 1
MANIFEST = "manifest.jsonl"
RUN_RECORD = "run.json"  # the pipeline's record at the run root (synthgen run)
MARKERS = {"generate": "run.json", "align": "align.json", "filter": "filtered.json", "shard": "index.json",
           "audit": "report.json"}
STAGE_DIRS = {"generate": "raw", "align": "aligned", "filter": "filtered", "shard": "shards",
              "audit": "audit"}  # inside a run (filtered: quality filters applied, synthgen.quality.apply)


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


# -- item records: the manifest lines each stage writes (JSON objects; these are their types) --


class GenerateRecord(TypedDict, total=False):
    path: str  # <class:06d>/<index:06d>.png (unconditional: <instance:07d>/<view:02d>.png)
    status: str  # ok | missing | no_face
    # "class" (int | None) is also a key; it is a Python keyword, so it cannot be declared here
    index: int
    seed: int  # the latent seed used (generate --align: after retries)
    latent: str  # derived | nvidia-seed | seed-pool
    psi: float
    truncation_cutoff: int | None
    noise_mode: str  # const | random | none
    noise_seed: int | None
    instance: int  # unconditional views
    view: int
    mix_seed: int
    mix_layers: list
    attempt: int  # generate --align: retries used
    skipped_seeds: list
    prob: float
    landmarks: list  # 5 x [x, y]
    transform: list  # 2 x 3, source -> crop
    template: str


class AlignRecord(TypedDict, total=False):
    source: str  # the input file, relative to --in
    identity: str
    status: str  # ok | no_face | low_prob | unreadable | error | skipped
    path: str  # the crop, relative to --out (when one was written)
    template: str
    width: int
    height: int
    prob: float
    box: list  # [x0, y0, x1, y1]
    landmarks: list  # 5 x [x, y], source pixels
    faces: int
    transform: list  # 2 x 3, source -> crop
    fallback: str  # center-crop | keep (a crop written without a face)
    error: str
