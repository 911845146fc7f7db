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
import os
import zipfile

import torch

from synthgen.errors import DataError
from synthgen.fsutil import atomic_path

from synthgen.safeload import safe_torch_load

from .bounds import check_config, check_state
from .network import StyleGAN2Config
from .pickle_vm import escape

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


def _check_zip(path) -> None:
    """torch.save zips store their records uncompressed; a compressed record could inflate far
    beyond the file (a zip bomb), so refuse those before torch reads anything."""
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable synthgen checkpoint ({escape(e, 120)})") from None
    if any(i.compress_type != zipfile.ZIP_STORED for i in infos) or sum(i.file_size for i in infos) > size:
        raise DataError(f"{path}: checkpoint records are compressed or larger than the file; torch.save never "
                        "writes that, so the file was not loaded")


def _json_field(payload, key, path) -> dict:
    text = payload.get(key)
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise DataError(f"{path}: checkpoint field '{key}' is not a JSON object; the file is damaged "
                        "(re-create it with `synthgen convert`)")
    return value


def load_checkpoint(path):
    """Return (config, state_dict, provenance); bounded and shape-checked before any allocation."""
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a synthgen checkpoint (expected a torch.save zip file)")
    _check_zip(path)
    payload = safe_torch_load(path, "synthgen checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path}: not a synthgen StyleGAN2-ADA checkpoint (no format '{FORMAT}')")
    version = payload.get("format_version")
    if type(version) is not int or version < 1:
        raise DataError(f"{path}: checkpoint format_version is {escape(repr(version), 40)}, expected an integer >= 1")
    if version > FORMAT_VERSION:
        raise DataError(
            f"{path}: checkpoint format version {version} is newer than this synthgen reads ({FORMAT_VERSION}); "
            "upgrade synthgen"
        )
    config = _json_field(payload, "config", path)
    provenance = _json_field(payload, "provenance", path) if "provenance" in payload else {}
    try:
        cfg = StyleGAN2Config.from_dict(config)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(f"{path}: invalid generator config in checkpoint ({escape(e, 160)})") from None
    check_config(cfg, str(path))
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise DataError(f"{path}: checkpoint has no state_dict of named tensors")
    check_state(cfg, state, str(path))
    return cfg, state, provenance
