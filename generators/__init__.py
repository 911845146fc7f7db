"""Generator backends behind one protocol, and a registry to load them by file.

A generator exposes:
    z_dim, c_dim (0 = unconditional), w_dim, num_ws, resolution, img_channels, noise_shapes
    device, precision ('fp32' | 'fp16'), sha256 and source (the file), source_format (e.g.
    'stylegan2-ada-pkl'), provenance (dict)
    map(z, classes, psi, truncation_cutoff) -> ws          [N, num_ws, w_dim]
    synthesize(ws, noise_mode, noise_seeds) -> images      float32 NCHW in about [-1, 1]
    sample(z, classes, psi, truncation_cutoff, noise_mode, noise_seeds) -> uint8 NHWC numpy
    describe() -> dict of hyper-parameters;  sha256 of the file it came from

Backends register with `register_backend(name, sniff, load, convert=None, write_random=None)`:
`sniff(path)` says whether the backend reads that file; `load(path, device=..., force_fp32=...,
precision=...)` returns a generator (precision: auto | fp32 | fp16); `convert(src, dst)` writes
the backend's safe checkpoint format; `write_random(path, seed=..., **hyper)` writes a generator
with seeded random weights (demos, tests). Built in: `stylegan2-ada` (NVIDIA .pkl and synthgen
checkpoints) and `dummy` (a JSON-defined test double, see dummy.py). Nothing outside this
package imports a backend's modules: use `load_generator`, `convert_generator`,
`write_random_generator` and `to_uint8` from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from synthgen.errors import DataError, UsageError

from .images import to_uint8


class Generator(Protocol):
    z_dim: int
    c_dim: int
    w_dim: int
    num_ws: int
    resolution: int
    img_channels: int
    sha256: str | None
    source: str | None
    source_format: str
    precision: str

    def map(self, z, classes=None, psi: float = 1.0, truncation_cutoff: int | None = None): ...

    def synthesize(self, ws, noise_mode: str = "const", noise_seeds: Sequence[int] | None = None): ...

    def sample(self, z, classes=None, psi=1.0, truncation_cutoff=None, noise_mode="const", noise_seeds=None): ...

    def describe(self) -> dict: ...


@dataclass(frozen=True)
class Backend:
    name: str
    sniff: Callable[[Path], bool]
    load: Callable[..., Generator]
    convert: Callable | None = None
    write_random: Callable | None = None


_BACKENDS: dict[str, Backend] = {}


def register_backend(name: str, sniff, load, convert=None, write_random=None) -> None:
    _BACKENDS[name] = Backend(name, sniff, load, convert, write_random)


def backends() -> list[str]:
    return list(_BACKENDS)


def _backend_for(path: Path) -> Backend:
    if not path.is_file():
        raise UsageError(f"{path}: no such file; expected a StyleGAN2-ADA .pkl or a synthgen checkpoint (`synthgen convert` writes one); check the path")
    for b in _BACKENDS.values():
        if b.sniff(path):
            return b
    raise DataError(f"{path}: no generator backend reads this file; expected a NVIDIA StyleGAN2-ADA network pickle "
                    "(network-snapshot-*.pkl) or a synthgen checkpoint made by `synthgen convert`")


def convert_generator(src, dst) -> dict:
    """Write the generator in `src` in its backend's safe checkpoint format; returns provenance."""
    b = _backend_for(Path(src))
    if b.convert is None:
        raise UsageError(f"the {b.name} backend has no checkpoint format to convert to", "IN")
    return b.convert(src, dst)


def write_random_generator(path, backend: str = "stylegan2-ada", seed: int = 0, **hyper) -> Path:
    """A generator file with seeded random weights (its images are coloured noise)."""
    if backend not in _BACKENDS or _BACKENDS[backend].write_random is None:
        raise UsageError(f"backend '{backend}' cannot write random generators", "--backend")
    return _BACKENDS[backend].write_random(path, seed=seed, **hyper)


def load_generator(path, device="cpu", force_fp32: bool = False, backend: str | None = None,
                   precision: str = "auto") -> Generator:
    """Load a generator file with the backend that reads it (or the one named).

    precision: 'auto' (fp16 blocks in fp16 on CUDA, fp32 on CPU), 'fp32', or 'fp16' (on any
    device); force_fp32=True is an alias of 'fp32'. The generator's `.precision` is the one used."""
    path = Path(path)
    if backend is not None:
        if backend not in _BACKENDS:
            raise DataError(f"unknown generator backend '{backend}' (known: {', '.join(_BACKENDS)})")
        if not path.is_file():
            raise UsageError(f"{path}: no such file; expected a StyleGAN2-ADA .pkl or a synthgen checkpoint (`synthgen convert` writes one); check the path")
        b = _BACKENDS[backend]
    else:
        b = _backend_for(path)
    return b.load(path, device=device, force_fp32=force_fp32, precision=precision)


def _register_builtin():
    from . import dummy, stylegan2ada

    register_backend("stylegan2-ada", stylegan2ada.sniff, stylegan2ada.load, stylegan2ada.convert,
                     stylegan2ada.write_random)
    register_backend("dummy", dummy.sniff, dummy.load, write_random=lambda path, seed=0, **kw: dummy.write(
        path, seed=seed, **kw))


_register_builtin()

__all__ = ["Backend", "Generator", "backends", "convert_generator", "load_generator", "register_backend", "to_uint8",
           "write_random_generator"]
