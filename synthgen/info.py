"""`synthgen info` and `synthgen convert` as library functions."""

from __future__ import annotations

from pathlib import Path

from synthgen.errors import UsageError
from synthgen.runs import probe_writable


def network_info(path) -> dict:
    """Hyper-parameters, parameter count and sha256 of a generator file (any backend)."""
    from synthgen.generators import load_generator

    g = load_generator(path, device="cpu")
    return dict(g.describe(), source_format=g.source_format)


INFO_LINES = [  # (label, key, text from the description d); keys a backend does not describe are skipped
    ("sha256", "sha256", lambda d: str(d["sha256"])),
    ("backend", "backend", lambda d: f"{d['backend']} ({d['source_format']})"),
    ("resolution", "resolution", lambda d: f"{d['resolution']}x{d['resolution']}, {d['img_channels']} channels"),
    ("classes", "c_dim", lambda d: str(d["c_dim"]) if d["c_dim"] else "unconditional (c_dim=0)"),
    ("z_dim / w_dim", "z_dim", lambda d: f"{d['z_dim']} / {d['w_dim']}"),
    ("num_ws", "num_ws", lambda d: str(d["num_ws"])),
    ("mapping layers", "mapping_layers", lambda d: str(d["mapping_layers"])),
    ("channels", "channels", lambda d: ", ".join(f"{r}:{c}" for r, c in d["channels"].items())),
    ("fp16 blocks", "fp16_blocks", lambda d: f"{', '.join(map(str, d['fp16_blocks'])) or 'none'} "
                                             "(fp16 on CUDA by default; generate --precision)"),
    ("conv_clamp", "conv_clamp", lambda d: str(d["conv_clamp"])),
    ("parameters", "parameters", lambda d: f"{d['parameters']:,}"
                                           + (f" (+ {d['buffers']:,} buffer elements)" if "buffers" in d else "")),
]


def format_info(path, d: dict) -> list[str]:
    """`synthgen info`'s text: one line per property the backend reports."""
    return [f"{'file':<15}{path}"] + [f"{label:<15}{text(d)}" for label, key, text in INFO_LINES if key in d]


def convert_network(src, dst, overwrite: bool = False) -> dict:
    """Write the generator in `src` (.pkl or checkpoint) as a synthgen checkpoint at `dst`."""
    from synthgen.generators import convert_generator

    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise UsageError(f"{dst} exists; pass --overwrite to replace it", "OUT")
    probe_writable(dst, "OUT")  # a read-only folder is reported before the network is read
    return convert_generator(src, dst)
