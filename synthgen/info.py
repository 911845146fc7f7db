"""`synthgen info` and `synthgen convert` as library functions."""

from __future__ import annotations

from pathlib import Path

from synthgen.errors import UsageError
from synthgen.fsutil import sha256_file
from synthgen.runs import probe_writable


def network_info(path) -> dict:
    """Hyper-parameters, parameter count and sha256 of a generator file."""
    from synthgen.generators import load_generator

    from synthgen.generators.stylegan2ada import _file_kind

    g = load_generator(path, device="cpu")
    d = g.describe()
    if _file_kind(Path(path)) == "pkl":
        d["source_format"] = "stylegan2-ada-pkl"
    else:  # our checkpoint; say where its weights came from
        d["source_format"] = f"synthgen-checkpoint, from {g.provenance.get('source_format', 'unknown')}"
    return d


def convert_network(src, dst, overwrite: bool = False) -> dict:
    """Write the generator in `src` (.pkl or checkpoint) as a synthgen checkpoint at `dst`."""
    from synthgen.generators.stylegan2ada import read_network, save_checkpoint

    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise UsageError(f"{dst} exists; pass --overwrite to replace it", "OUT")
    probe_writable(dst, "OUT")  # a read-only folder is reported before the network is read
    cfg, state, provenance = read_network(src)
    provenance = dict(provenance, converted_from=str(src), source_sha256=sha256_file(src))
    save_checkpoint(dst, cfg, state, provenance)
    return {"sha256": sha256_file(dst), "config": cfg.to_dict()}
