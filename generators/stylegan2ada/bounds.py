"""Sanity bounds on a generator read from a file, checked before anything is allocated.

A network file declares its hyper-parameters; our network allocates what they say. A 2 KB
checkpoint claiming `img_resolution 32768` would allocate gigabytes before a single weight
was compared. So: the config's numbers are bounded first (`check_config`), then the network
is built on PyTorch's `meta` device (shapes only, no memory) and every tensor the file holds
is compared with it by name, shape and dtype (`check_state`). Only a file whose tensors fill
the whole architecture gets a real network, so memory follows the file's own size.
"""

from __future__ import annotations

import math

import torch

from synthgen.errors import DataError

from .network import StyleGAN2Config, StyleGAN2Network, uninitialized

# Generous limits: StyleGAN2-ADA's largest released nets are 1024 px, 512-d, 8 mapping layers.
MAX_RESOLUTION = 4096
MAX_DIM = 4096  # z_dim, w_dim, feature widths, channels
MAX_CLASSES = 1_000_000
MAX_MAPPING_LAYERS = 32
ACTIVATIONS = ("linear", "lrelu", "relu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish")


def _int(where, name, v, lo, hi):
    if type(v) is not int or not lo <= v <= hi:
        raise DataError(f"{where}: config {name} is {v!r}, expected an integer in {lo}-{hi}; "
                        "the file is damaged or not a StyleGAN2-ADA generator")


def _num(where, name, v, allow_none=False):
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise DataError(f"{where}: config {name} is {v!r}, expected a finite number; the file is damaged")


def check_config(cfg: StyleGAN2Config, where: str) -> None:
    """Types and ranges of every hyper-parameter, before the network is built."""
    _int(where, "z_dim", cfg.z_dim, 1, MAX_DIM)
    _int(where, "w_dim", cfg.w_dim, 1, MAX_DIM)
    _int(where, "c_dim", cfg.c_dim, 0, MAX_CLASSES)
    _int(where, "img_channels", cfg.img_channels, 1, 4)
    _int(where, "img_resolution", cfg.img_resolution, 4, MAX_RESOLUTION)
    if cfg.img_resolution & (cfg.img_resolution - 1):
        raise DataError(f"{where}: config img_resolution is {cfg.img_resolution}, expected a power of two")
    m, s = cfg.mapping, cfg.synthesis
    _int(where, "mapping.num_layers", m.num_layers, 1, MAX_MAPPING_LAYERS)
    for name in ("embed_features", "layer_features"):
        v = getattr(m, name)
        if v is not None:
            _int(where, f"mapping.{name}", v, 0, MAX_DIM)
    if m.activation not in ACTIVATIONS:
        raise DataError(f"{where}: config mapping.activation is {m.activation!r}, expected one of {', '.join(ACTIVATIONS)}")
    _num(where, "mapping.lr_multiplier", m.lr_multiplier)
    _num(where, "mapping.w_avg_beta", m.w_avg_beta, allow_none=True)
    _num(where, "synthesis.conv_clamp", s.conv_clamp, allow_none=True)
    if not isinstance(s.channels, dict) or not isinstance(s.fp16_resolutions, list):
        raise DataError(f"{where}: config synthesis.channels / fp16_resolutions have the wrong type")
    blocks = set(cfg.block_resolutions)
    for r, c in s.channels.items():
        if r not in blocks:
            raise DataError(f"{where}: config synthesis.channels names resolution {r!r}, not one of the blocks {sorted(blocks)}")
        _int(where, f"synthesis.channels[{r}]", c, 1, MAX_DIM)
    for r in s.fp16_resolutions:
        if r not in blocks:
            raise DataError(f"{where}: config synthesis.fp16_resolutions names {r!r}, not one of the blocks {sorted(blocks)}")
    try:
        cfg.validate()
    except ValueError as e:
        raise DataError(f"{where}: {e}") from None


def check_state(cfg: StyleGAN2Config, state: dict, where: str) -> None:
    """Every tensor the architecture needs is in `state` with its shape and a float dtype, and
    nothing else is; no tensor is a view larger than its storage."""
    if not isinstance(state, dict):
        raise DataError(f"{where}: weights are a {type(state).__name__}, expected a dict of tensors")
    with torch.device("meta"), uninitialized():  # shapes only, no memory; no meta op that imports torch._dynamo
        expected = StyleGAN2Network(cfg).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(map(str, set(state) - set(expected)))
    if missing or unexpected:
        raise DataError(f"{where}: weights do not fit the architecture its config describes (missing: "
                        f"{missing[:5]}, unexpected: {unexpected[:5]}); the file is damaged or a different network")
    for name, ref in expected.items():
        t = state[name]
        if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
            raise DataError(f"{where}: {name} is not a floating-point tensor")
        if tuple(t.shape) != tuple(ref.shape):
            raise DataError(f"{where}: {name} has shape {list(t.shape)}, the architecture needs {list(ref.shape)}; "
                            "the file is damaged or its config does not match its weights")
        if t.numel() and t.untyped_storage().nbytes() < t.numel() * t.element_size():
            raise DataError(f"{where}: {name} is an expanded view of a smaller storage; not a genuine weights file")
