"""`synthgen shard` / `synthgen verify`: HDF5 shards plus an index (schema version 1).

Modules: format (names, schema, plan hash), plan (input tree -> items), writer (one shard,
atomic, full-disk safe), build (the stage: resume and repair), reader (safe opening),
verify.

Contract (see README "Shard format"):
    shard-00000.h5 ...
        images      raw: uint8 [N, H, W, 3] RGB, chunked one image per chunk
                    png/jpeg: vlen uint8 [N], the encoded file bytes
        labels      int64 [N], contiguous 0..K-1 from the sorted identity folder names
        keys        str [N], relative path in the input tree (unique)
        provenance  optional columns from the input manifests, e.g. seed, psi, noise_mode,
                    noise_seed, det_prob, landmarks [N, 5, 2], template, source
        attrs       schema_version, synthgen_version, image_size [H, W], colour_order "RGB",
                    encoding, compression, shard_index, count, source_config_hash, plan_hash
    index.json      written last (marks completion): schema_version, config, classes, counts,
                    per-shard count / key range / label range / bytes / sha256
    .shard-journal.jsonl   only while a run is unfinished: one line per completed shard
                    {"file", "bytes", "sha256", "plan_hash"}, appended after its rename;
                    removed once index.json is written

Order is deterministic (label, then key); each shard is written under a temporary name
(`.shard-NNNNN.h5.tmp-PID`) and renamed when complete.

Resume and repair. `shard` over an existing output of the same config first deletes temp
files a killed writer left (`.*.tmp-*`), then keeps a shard only if its checksum matches one
recorded when it was completed: its entry in index.json, or else its journal line (sizes are
compared first, then the sha256 of the whole file is recomputed, so a rerun reads every shard
once: that is the price of noticing a flipped byte; a run with nothing to repair writes
nothing), and its `plan_hash` attribute says it holds exactly the planned items. Every other
shard is rewritten, shard files beyond the plan are removed, and index.json is rewritten
unless it is already exactly right. With neither index.json nor a journal line a shard has no
trusted checksum and is rewritten.

Paths read from files stay home (`synthgen.safepath`): manifest `path` / `source`, shard
`keys` and index.json `file` entries must be normalised relative paths (index files: plain
`shard-NNNNN.h5` names inside the folder). HDF5 external links, external raw storage and
virtual datasets are refused wherever shards are read (`open_shard`) and by `verify`.

A full disk never reaches HDF5 (see `writer`): one line, a rerun resumes.
"""

from .build import ShardConfig, shard, validate
from .format import COMPRESSIONS, ENCODINGS, INDEX, JOURNAL, REBUILD, SCHEMA_VERSION, plan_hash, shard_name
from .plan import plan
from .reader import index_problems, load_index, open_shard, storage_problems
from .verify import verify

__all__ = ["COMPRESSIONS", "ENCODINGS", "INDEX", "JOURNAL", "REBUILD", "SCHEMA_VERSION", "ShardConfig", "index_problems",
           "load_index", "open_shard", "plan", "plan_hash", "shard", "shard_name", "storage_problems", "validate",
           "verify"]
