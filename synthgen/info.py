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


INFO_LINES = [  # (label, key, format) for `synthgen info`; keys a backend does not describe are skipped
    ("sha256", "sha256", str),
    ("backend", "backend", None),
    ("resolution", "resolution", None),
    ("classes", "c_dim", lambda c: str(c) if c else "unconditional (c_dim=0)"),
    ("z_dim / w_dim", "z_dim", None),
    ("num_ws", "num_ws", str),
    ("mapping layers", "mapping_layers", str),
    ("channels", "channels", lambda d: ", ".join(f"{r}:{c}" for r, c in d.items())),
    ("fp16 blocks", "fp16_blocks",
     lambda b: f"{', '.join(map(str, b)) or 'none'} (fp16 on CUDA by default; generate --precision)"),
    ("conv_clamp", "conv_clamp", str),
    ("parameters", "parameters", None),
]


def format_info(path, d: dict) -> list[str]:
    """`synthgen info`'s text: one line per property the backend reports."""
    lines = [f"{'file':<15}{path}"]
    for label, key, fmt in INFO_LINES:
        if key not in d:
            continue
        if key == "backend":
            value = f"{d['backend']} ({d['source_format']})"
        elif key == "resolution":
            value = f"{d['resolution']}x{d['resolution']}, {d['img_channels']} channels"
        elif key == "z_dim":
            value = f"{d['z_dim']} / {d['w_dim']}"
        elif key == "parameters":
            value = f"{d['parameters']:,}" + (f" (+ {d['buffers']:,} buffer elements)" if "buffers" in d else "")
        else:
            value = fmt(d[key])
        lines.append(f"{label:<15}{value}")
    return lines


def convert_network(src, dst, overwrite: bool = False) -> dict:
    """Write the generator in `src` (.pkl or checkpoint) as a synthgen checkpoint at `dst`."""
    from synthgen.generators import convert_generator

    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise UsageError(f"{dst} exists; pass --overwrite to replace it", "OUT")
    probe_writable(dst, "OUT")  # a read-only folder is reported before the network is read
    return convert_generator(src, dst)
