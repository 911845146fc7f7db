"""`torch.load(weights_only=True)` with synthgen's error messages.

torch's refusal text tells the user to retry with `weights_only=False`, which would run the
file's code. We never pass that advice on: the message keeps only the line naming what was
refused, on one line.
"""

from __future__ import annotations

from synthgen.errors import DataError

_ADVICE = ("weights_only", "weights only", "pytorch 2.6", "documentation", "file an issue", "trusted source")


def refusal_reason(e: Exception, limit: int = 160) -> str:
    """The informative line of a torch.load error, without advice to disable the safe loader."""
    lines = [ln.strip() for ln in str(e).replace("WeightsUnpickler error:", "\n").splitlines()]
    useful = [ln for ln in lines if ln and not any(a in ln.lower() for a in _ADVICE)]
    text = useful[0] if useful else "it holds objects that the safe loader refuses"
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."


def safe_torch_load(path, what: str):
    """torch.load(path, weights_only=True) on CPU; any failure is a one-line DataError."""
    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a {what} file") from None
    except MemoryError:
        raise DataError(f"{path}: ran out of memory reading the {what} file; it is damaged or hostile") from None
    except Exception as e:  # torch raises many types on corrupt, truncated or hostile files
        raise DataError(f"{path}: cannot read the {what} file safely ({type(e).__name__}: {refusal_reason(e)})") from None
