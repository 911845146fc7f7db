"""Device choice shared by every stage that runs a network."""

from __future__ import annotations

from synthgen.errors import UsageError


def resolve_device(device):
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | torch.device -> torch.device, checked against this machine."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"'{device}' is not a device; use auto, cpu, cuda or cuda:N", "--device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"'{device}' requested but CUDA is not available here; use --device cpu", "--device")
    return dev
