"""What every stage shares: its output folder's lifecycle, its done-marker, its summary.

    open_output(out, marker, identity, overwrite)   refuse a folder made by another config,
                                                     create it, prove it writable, remove temp
                                                     files a killed run left
    write_marker(out, marker, meta, **updates)       the stage's marker JSON, atomically (the
                                                     first run's `started` is kept on resume)
    StageSummary                                     what every run_* returns

A stage: validate its whole config (no side effects) -> open_output -> write_marker(status=
"running") -> work (every file atomic, resumable) -> write_marker(status="complete") ->
StageSummary. The release loop and any new stage follow the same steps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from synthgen.fsutil import atomic_write_text
from synthgen.runs import check_output_dir, ensure_writable_dir, remove_stale_temps


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def open_output(out: Path, marker: str, identity: dict, overwrite: bool) -> None:
    check_output_dir(out, marker, identity, overwrite)
    ensure_writable_dir(out)
    remove_stale_temps(out)  # outputs and markers of a killed run: never complete files


def write_marker(out: Path, marker: str, meta: dict, **updates) -> dict:
    """Write `meta` (updated) as OUT/marker; a marker already there keeps its `started`."""
    meta = dict(meta, **updates)
    prev = Path(out) / marker
    if prev.is_file() and "started" in meta:
        try:
            meta["started"] = json.loads(prev.read_text()).get("started", meta["started"])
        except (ValueError, AttributeError):
            pass
    atomic_write_text(prev, json.dumps(meta, indent=2))
    return meta


class StageSummary(dict):
    """A stage's result: the dict it has always returned (unchanged keys, so existing callers
    keep working) plus the uniform view `synthgen run` records for every stage.

    stage: generate | align | shard | audit | release; status: complete | incomplete (generate,
    align, shard), pass | leak | inconclusive (audit), certified | not-certified | refused
    (release); config_hash: the stage's output identity; brief(): the few numbers worth showing
    in a run record."""

    def __init__(self, stage: str, data: dict, *, status: str, config_hash: str | None, brief: dict):
        super().__init__(data)
        self.stage, self.status, self.config_hash, self._brief = stage, status, config_hash, dict(brief)

    def brief(self) -> dict:
        return dict(self._brief)
