"""Precomputed embeddings: each side of the audit is an .npz/.h5 file, no network runs.

File: `embeddings` [N, D] (rows are L2-normalised on load), `keys` [N], `labels` [N]
(identity names); see `synthgen.audit.embed.load_embeddings_file`.
"""

from __future__ import annotations

import numpy as np

from synthgen.errors import UsageError

from ..embed import load_embeddings_file


class PrecomputedEmbeddings:
    name = "embeddings"
    input_size = 0
    id = "precomputed"

    def embed(self, images: np.ndarray, raw: bool = False) -> np.ndarray:
        raise UsageError("--matcher embeddings reads embedding files; it cannot embed images", "--matcher")

    def embed_path(self, path, flag, *, cache_dir=None, max_per_class=None, batch_size=256, progress=True,
                   desc="embed", images=None):
        """`images`: the file's Embedded, when the audit loaded it already."""
        return (images if images is not None else load_embeddings_file(path, flag)), None
