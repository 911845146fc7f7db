"""synthgen's own checkpoint format for StyleGAN2-ADA generators.

One file written by `torch.save`, read back with `torch.load(weights_only=True)` (no code
can run on load). It holds a dict:

    format          "synthgen.stylegan2ada"
    format_version  1
    config          JSON text of `StyleGAN2Config.to_dict()` (every hyper-parameter)
    state_dict      parameter/buffer tensors, names as in NVIDIA's pickles
    provenance      JSON text: where the weights came from (source file sha256, format, ...)
"""

from __future__ import annotations

import json
import zipfile

import torch

from synthgen.errors import DataError
from synthgen.fsutil import atomic_path

from .network import StyleGAN2Config

FORMAT = "synthgen.stylegan2ada"
FORMAT_VERSION = 1


def save_checkpoint(path, cfg: StyleGAN2Config, state_dict: dict, provenance: dict | None = None) -> None:
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
        "provenance": json.dumps(provenance or {}, sort_keys=True),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path):
    """Return (config, state_dict, provenance)."""
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a synthgen checkpoint (expected a torch.save zip file)")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises a variety of types on corrupt/truncated zips
        raise DataError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path}: not a synthgen StyleGAN2-ADA checkpoint (no format '{FORMAT}')")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(
            f"{path}: checkpoint format version {payload['format_version']} is newer than this "
            f"synthgen reads ({FORMAT_VERSION}); upgrade synthgen"
        )
    try:
        cfg = StyleGAN2Config.from_dict(json.loads(payload["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: invalid generator config in checkpoint ({e})") from None
    return cfg, payload["state_dict"], json.loads(payload.get("provenance") or "{}")
