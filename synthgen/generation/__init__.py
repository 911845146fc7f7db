"""`synthgen generate`: sample a generator into identity folders, deterministically and resumably.

Modules: config (GenerateConfig, validation, chunk size), planning (the work list), rendering
(chunks, encoding, inline alignment), distributed (torchrun ranks, job-array slices), stage.

Layout (ImageFolder-compatible):
    conditional nets     DIR/<class:06d>/<index:06d>.<ext>
    unconditional nets   DIR/<instance:07d>/<view:02d>.<ext>   (--views K re-renderings each)
    DIR/manifest.jsonl   one record per image (path, class, index, seeds, psi, noise, status)
    DIR/run.json         config, generator hyper-parameters and sha256, versions, times, counts

Determinism: the work list is a pure function of the config; each image's latent and noise
come from its own seeds (see `synthgen.seeding`). The network is always run on chunks of
exactly `--chunk-size` samples (the last one padded; default per device type, DEFAULT_CHUNK),
because float results of batched convolutions and matmuls depend on the batch shape; within a
fixed shape each sample is computed identically wherever it sits. So `--batch-size`, the number
of processes and any interruption leave every image byte-identical for a given device type,
precision and chunk size (all three are part of the output identity in run.json).

Resume: images are written under a temporary name and renamed, so a file under its final
name is complete; a rerun skips them. The manifest is rebuilt from the work list and the files.
"""

from .config import DEFAULT_CHUNK, RUN_JSON, GenerateConfig, resolve_chunk, validate_config
from .planning import Item, plan_items
from .rendering import encode, read_png_meta, render
from .stage import config_identity, generate

__all__ = ["DEFAULT_CHUNK", "RUN_JSON", "GenerateConfig", "Item", "config_identity", "encode",
           "generate", "plan_items", "read_png_meta", "render", "resolve_chunk", "validate_config"]
