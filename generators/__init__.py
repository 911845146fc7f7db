"""Generator backends behind one protocol, and a registry to load them by file.

A generator exposes:
    z_dim, c_dim (0 = unconditional), w_dim, num_ws, resolution, img_channels, noise_shapes
    map(z, classes, psi, truncation_cutoff) -> ws          [N, num_ws, w_dim]
    synthesize(ws, noise_mode, noise_seeds) -> images      float32 NCHW in about [-1, 1]
    sample(z, classes, psi, truncation_cutoff, noise_mode, noise_seeds) -> uint8 NHWC numpy
    describe() -> dict of hyper-parameters;  sha256 of the file it came from

Backends register a loader with `register_backend(name, sniff, load)`: `sniff(path)` says
whether the backend reads that file; `load(path, device=..., force_fp32=..., precision=...)` returns a
generator (precision: auto | fp32 | fp16, see synthgen.generators.stylegan2ada.resolve_precision).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol, Sequence

from synthgen.errors import DataError


class Generator(Protocol):
    z_dim: int
    c_dim: int
    w_dim: int
    num_ws: int
    resolution: int
    img_channels: int
    sha256: str | None

    def map(self, z, classes=None, psi: float = 1.0, truncation_cutoff: int | None = None): ...

    def synthesize(self, ws, noise_mode: str = "const", noise_seeds: Sequence[int] | None = None): ...

    def sample(self, z, classes=None, psi=1.0, truncation_cutoff=None, noise_mode="const", noise_seeds=None): ...

    def describe(self) -> dict: ...


_BACKENDS: dict[str, tuple[Callable[[Path], bool], Callable[..., Generator]]] = {}


def register_backend(name: str, sniff: Callable[[Path], bool], load: Callable[..., Generator]) -> None:
    _BACKENDS[name] = (sniff, load)


def backends() -> list[str]:
    return list(_BACKENDS)


def load_generator(path, device="cpu", force_fp32: bool = False, backend: str | None = None,
                   precision: str = "auto") -> Generator:
    """Load a generator file with the backend that reads it (or the one named).

    precision: 'auto' (fp16 blocks in fp16 on CUDA, fp32 on CPU), 'fp32', or 'fp16' (on any
    device); force_fp32=True is an alias of 'fp32'. The generator's `.precision` is the one used."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: network file not found (expected a StyleGAN2-ADA .pkl or a synthgen checkpoint)")
    if backend is not None:
        if backend not in _BACKENDS:
            raise DataError(f"unknown generator backend '{backend}' (known: {', '.join(_BACKENDS)})")
        return _BACKENDS[backend][1](path, device=device, force_fp32=force_fp32, precision=precision)
    for sniff, load in _BACKENDS.values():
        if sniff(path):
            return load(path, device=device, force_fp32=force_fp32, precision=precision)
    raise DataError(f"{path}: no generator backend reads this file (known: {', '.join(_BACKENDS)})")


def _register_builtin():
    from . import stylegan2ada

    def sniff(path: Path) -> bool:
        return stylegan2ada._file_kind(path) in ("pkl", "checkpoint")

    register_backend("stylegan2-ada", sniff, stylegan2ada.load)


_register_builtin()
