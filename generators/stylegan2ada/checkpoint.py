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
from synthgen.safepickle import escape, show

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
    """torch.save zips store their records uncompressed. A compressed record could inflate far
    beyond the file (a zip bomb), so refuse any before torch reads anything. The check must see
    the same central directory torch reads: torch takes the offset written in the end record,
    Python's zipfile takes the directory just before that record; a file where the two differ
    (two directories) is refused, and each local header must agree that its record is stored."""
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as z:
            if _directory_end(f) is None:
                raise DataError(f"{path}: the zip's central directory is not where its end record says; torch.save "
                                "never writes that, so the file was not loaded")
            infos = z.infolist()
            for info in infos:
                f.seek(info.header_offset)
                head = f.read(30)
                if len(head) < 30 or head[:4] != b"PK\x03\x04" or int.from_bytes(head[8:10], "little") != 0:
                    raise DataError(f"{path}: record {escape(info.filename, 60)} is not stored as torch.save stores "
                                    "it; the file was not loaded")
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable synthgen checkpoint ({escape(e, 120)})") from None
    if any(i.compress_type != zipfile.ZIP_STORED for i in infos) or sum(i.file_size for i in infos) > size:
        raise DataError(f"{path}: checkpoint records are compressed or larger than the file; torch.save never "
                        "writes that, so the file was not loaded")


def _directory_end(f):
    """Where the central directory must end for the end record(s) to point at it, or None.

    Classic zip: the directory ends at the end record. Zip64 (what torch.save writes): it ends
    at the zip64 end record, whose position the locator just before the classic record names."""
    import struct

    endrec = zipfile._EndRecData(f)  # noqa: SLF001  (the stdlib's own end-record parser)
    if endrec is None:
        return None
    cd_end = endrec[zipfile._ECD_OFFSET] + endrec[zipfile._ECD_SIZE]
    location = endrec[zipfile._ECD_LOCATION]
    if endrec[0] == b"PK\x06\x06":  # zip64: locator (20 bytes) just before the classic record
        f.seek(location - 20)
        loc = f.read(20)
        if len(loc) != 20 or loc[:4] != b"PK\x06\x07":
            return None
        z64 = struct.unpack("<Q", loc[8:16])[0]
        return z64 if z64 == cd_end and z64 == location - 20 - 56 else None
    return location if cd_end == location else None


def _json_field(payload, key, path) -> dict:
    text = payload.get(key)
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
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
    payload = safe_torch_load(path, "synthgen checkpoint", "--network")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path}: not a synthgen StyleGAN2-ADA checkpoint (no format '{FORMAT}')")
    version = payload.get("format_version")
    if type(version) is not int or version < 1:
        raise DataError(f"{path}: checkpoint format_version is {show(version)}, expected an integer >= 1")
    if version > FORMAT_VERSION:
        raise DataError(
            f"{path}: checkpoint format version {version} is newer than this synthgen reads ({FORMAT_VERSION}); "
            "upgrade synthgen"
        )
    config = _json_field(payload, "config", path)
    provenance = _json_field(payload, "provenance", path) if "provenance" in payload else {}
    try:
        cfg = StyleGAN2Config.from_dict(config)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, ZeroDivisionError, RecursionError) as e:
        raise DataError(f"{path}: invalid generator config in checkpoint ({escape(e, 160)})") from None
    check_config(cfg, str(path))
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise DataError(f"{path}: checkpoint has no state_dict of named tensors")
    check_state(cfg, state, str(path))
    return cfg, state, provenance
