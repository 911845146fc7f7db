"""The shard format, defined once: file names, schema version, provenance columns, plan hashes.

See the package docstring (`synthgen.shards`) and README "Shard format".
"""

from __future__ import annotations

import hashlib
import re

from synthgen.contract import MARKERS
from synthgen.encodings import ENCODINGS as _ENCODINGS

SCHEMA_VERSION = 1
INDEX = MARKERS["shard"]
JOURNAL = ".shard-journal.jsonl"
SHARD_RE = re.compile(r"shard-[0-9]{5,}\.h5")
TEMP_GLOB = ".*.tmp-*"  # temp files of our atomic writers (shards, index, journal-free probes)
REBUILD = "rerun `synthgen shard` with the same --in and --out to rebuild it"
ENCODINGS = tuple(_ENCODINGS)  # what a shard may hold: raw arrays or encoded bytes
COMPRESSIONS = ("none", "lzf", "gzip")
# Provenance columns: manifest field -> (dataset name, kind)
PROVENANCE = {
    "seed": ("seed", "int"),
    "noise_seed": ("noise_seed", "int"),
    "psi": ("psi", "float"),
    "noise_mode": ("noise_mode", "str"),
    "prob": ("det_prob", "float"),
    "landmarks": ("landmarks", "points"),
    "template": ("template", "str"),
    "source": ("source", "str"),
    "view": ("view", "int"),
    "fallback": ("align_fallback", "str"),
}



def shard_name(i: int) -> str:
    return f"shard-{i:05d}.h5"


def plan_hash(config_hash: str, part) -> str:
    """Hash of the shard config and exactly which (key, label) pairs a shard holds."""
    h = hashlib.sha256(config_hash.encode())
    for key, label, _ in part:
        h.update(f"{key}\t{label}\n".encode())
    return h.hexdigest()
