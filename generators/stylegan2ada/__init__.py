"""StyleGAN2-ADA backend: our own network code, a safe .pkl reader and our checkpoint format."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from synthgen.device import resolve_device
from synthgen.errors import DataError, UsageError
from synthgen.fsutil import sha256_file

from .checkpoint import load_checkpoint, save_checkpoint
from ..images import to_uint8
from .network import StyleGAN2Config, StyleGAN2Network, random_init
from .pkl import load_pickle

NOISE_MODES = ("const", "random", "none")

__all__ = [
    "StyleGAN2ADAGenerator",
    "StyleGAN2Config",
    "StyleGAN2Network",
    "PRECISIONS",
    "load",
    "random_init",
    "resolve_precision",
    "save_checkpoint",
    "to_uint8",
]


PRECISIONS = ("auto", "fp32", "fp16")


def resolve_precision(precision: str | None, device: torch.device, force_fp32: bool = False) -> str:
    """'auto' | 'fp32' | 'fp16' (+ the --force-fp32 alias) -> the precision used: 'fp16' or 'fp32'.

    auto: the file's fp16 blocks in fp16 on CUDA, everything in fp32 elsewhere. fp16: those
    blocks in fp16 on any device (on CPU this reproduces NVIDIA's CPU fp16 outputs; slow).
    """
    precision = "auto" if precision is None else str(precision)
    if precision not in PRECISIONS:
        raise UsageError(f"'{precision}' is not one of {', '.join(PRECISIONS)}", "--precision")
    if force_fp32:
        if precision == "fp16":
            raise UsageError("--force-fp32 (an alias of --precision fp32) contradicts --precision fp16; drop one",
                             "--precision")
        return "fp32"
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


class StyleGAN2ADAGenerator:
    """A loaded StyleGAN2-ADA generator behind synthgen's generator protocol.

    precision: 'auto' runs the blocks the file marks fp16 in half precision on CUDA and in fp32
    on CPU; 'fp16' runs them in half precision on any device; 'fp32' (or `force_fp32=True`)
    runs everything in fp32. `self.precision` is the one in use ('fp16' or 'fp32').
    """

    backend = "stylegan2-ada"
    source_format = "stylegan2-ada"  # set by load(): stylegan2-ada-pkl or synthgen-checkpoint, from ...

    def __init__(self, net: StyleGAN2Network, device="cpu", force_fp32=False, sha256=None, source=None, provenance=None,
                 precision: str = "auto"):
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device, force_fp32)
        self.net = net.to(self.device).eval().requires_grad_(False)
        self.cfg: StyleGAN2Config = net.cfg
        self.use_fp16 = self.precision == "fp16"
        self.sha256 = sha256
        self.source = str(source) if source is not None else None
        self.provenance = provenance or {}

    # -- protocol properties ------------------------------------------------------------------
    z_dim = property(lambda self: self.cfg.z_dim)
    c_dim = property(lambda self: self.cfg.c_dim)
    w_dim = property(lambda self: self.cfg.w_dim)
    num_ws = property(lambda self: self.cfg.num_ws)
    resolution = property(lambda self: self.cfg.img_resolution)
    img_channels = property(lambda self: self.cfg.img_channels)

    @property
    def noise_shapes(self) -> list[tuple[int, int]]:
        return list(self.net.synthesis.noise_shapes)

    # -- protocol methods ---------------------------------------------------------------------
    def labels(self, classes) -> torch.Tensor:
        """Class indices -> one-hot float32 [N, c_dim] (empty [N, 0] for unconditional nets)."""
        n = len(classes)
        c = torch.zeros(n, self.c_dim, device=self.device)
        if self.c_dim == 0:
            if any(k is not None for k in classes):
                raise UsageError("this generator is unconditional (c_dim=0); it takes no class", "--classes")
            return c
        idx = []
        for k in classes:
            if k is None or not (0 <= int(k) < self.c_dim):
                raise UsageError(
                    f"class {k} is out of range: this generator has {self.c_dim} classes (0-{self.c_dim - 1})",
                    "--classes",
                )
            idx.append(int(k))
        c[torch.arange(n), torch.tensor(idx, dtype=torch.long)] = 1
        return c

    def map(self, z, classes=None, psi: float = 1.0, truncation_cutoff: int | None = None) -> torch.Tensor:
        """Latents z [N, z_dim] (+ classes) -> ws [N, num_ws, w_dim], truncated toward w_avg."""
        if not math.isfinite(psi):
            raise UsageError(f"psi must be a finite number, got {psi}", "--psi")
        if truncation_cutoff is not None and not (0 <= truncation_cutoff <= self.num_ws):
            raise UsageError(f"must be in 0-{self.num_ws}, got {truncation_cutoff}", "--truncation-cutoff")
        z = torch.as_tensor(np.asarray(z, dtype=np.float32) if not torch.is_tensor(z) else z)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise UsageError(f"z must have shape [N, {self.z_dim}], got {list(z.shape)}")
        classes = [None] * z.shape[0] if classes is None else list(classes)
        c = self.labels(classes)
        with torch.no_grad():
            return self.net.mapping(z.to(self.device, torch.float32), c, psi, truncation_cutoff)

    def make_noise(self, noise_seeds) -> list[torch.Tensor]:
        """Per-layer noise [N, 1, r, r], each sample drawn from its own seed (CPU generator, so the
        values do not depend on the device or on which other samples share the batch)."""
        per_sample = []
        for s in noise_seeds:
            g = torch.Generator().manual_seed(int(s))
            per_sample.append([torch.randn(1, 1, h, w, generator=g) for h, w in self.noise_shapes])
        return [torch.cat(layer).to(self.device) for layer in zip(*per_sample)]

    def synthesize(self, ws, noise_mode: str = "const", noise_seeds=None) -> torch.Tensor:
        """ws -> float32 NCHW images in about [-1, 1]."""
        if noise_mode not in NOISE_MODES:
            raise UsageError(f"'{noise_mode}' is not one of {', '.join(NOISE_MODES)}", "--noise-mode")
        noise = None
        if noise_mode == "random":
            if noise_seeds is None or len(noise_seeds) != ws.shape[0]:
                raise UsageError("noise_mode 'random' needs one noise seed per image")
            noise = self.make_noise(noise_seeds)
        with torch.no_grad():
            return self.net.synthesis(ws.to(self.device), noise_mode, noise, self.use_fp16)

    def sample(self, z, classes=None, psi=1.0, truncation_cutoff=None, noise_mode="const", noise_seeds=None):
        """One call: latents (+ classes) -> uint8 NHWC numpy images."""
        ws = self.map(z, classes, psi, truncation_cutoff)
        return to_uint8(self.synthesize(ws, noise_mode, noise_seeds))

    def describe(self) -> dict:
        """Hyper-parameters for `synthgen info` and provenance records."""
        cfg = self.cfg
        params = sum(p.numel() for p in self.net.parameters())
        buffers = sum(b.numel() for b in self.net.buffers())
        return {
            "backend": self.backend,
            "resolution": cfg.img_resolution,
            "img_channels": cfg.img_channels,
            "c_dim": cfg.c_dim,
            "z_dim": cfg.z_dim,
            "w_dim": cfg.w_dim,
            "num_ws": cfg.num_ws,
            "mapping_layers": cfg.mapping.num_layers,
            "channels": {str(r): c for r, c in sorted(cfg.synthesis.channels.items())},
            "fp16_blocks": list(cfg.synthesis.fp16_resolutions),
            "conv_clamp": cfg.synthesis.conv_clamp,
            "architecture": cfg.synthesis.architecture,
            "parameters": params,
            "buffers": buffers,
            "sha256": self.sha256,
            "config": cfg.to_dict(),
        }

    def state_dict(self):
        return self.net.state_dict()


def _file_kind(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK":
        return "checkpoint"
    if head[:1] == b"\x80":
        return "pkl"
    return "unknown"


def sniff(path: Path) -> bool:
    return _file_kind(path) in ("pkl", "checkpoint")


def convert(src, dst) -> dict:
    """Write the generator in `src` (.pkl or checkpoint) as a synthgen checkpoint at `dst`."""
    cfg, state, provenance = read_network(src)
    provenance = dict(provenance, converted_from=str(src), source_sha256=sha256_file(src))
    save_checkpoint(dst, cfg, state, provenance)
    return {"sha256": sha256_file(dst), "config": cfg.to_dict()}


def write_random(path, seed: int = 0, note: str = "random weights", **hyper) -> Path:
    """A checkpoint with seeded random weights; `hyper` as StyleGAN2Config.from_hyperparams."""
    cfg = StyleGAN2Config.from_hyperparams(**hyper)
    save_checkpoint(path, cfg, random_init(cfg, seed).state_dict(),
                    {"source_format": "random-init", "seed": seed, "note": note})
    return Path(path)


def read_network(path):
    """Return (config, state_dict, provenance) from a NVIDIA .pkl or a synthgen checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file; expected a StyleGAN2-ADA .pkl or a synthgen checkpoint (`synthgen convert` writes one); check the path")
    kind = _file_kind(path)
    if kind == "pkl":
        return load_pickle(path)
    if kind == "checkpoint":
        return load_checkpoint(path)
    raise DataError(f"{path}: neither a StyleGAN2-ADA pickle nor a synthgen checkpoint")


def load(path, device="cpu", force_fp32=False, precision="auto") -> StyleGAN2ADAGenerator:
    resolve_precision(precision, torch.device("cpu"), force_fp32)  # a bad value fails before the file is read
    from concurrent.futures import ThreadPoolExecutor

    from .network import uninitialized

    if not Path(path).is_file():  # (never hash a FIFO or a folder: read_network says what is wrong)
        read_network(path)
    # the provenance hash reads and hashes beside the parse (both release the GIL; 2 cores: ~0.4 s)
    pool = ThreadPoolExecutor(1)
    try:
        sha = pool.submit(sha256_file, path)
        cfg, state, provenance = read_network(path)
        with uninitialized():  # every tensor is loaded from the file below (strict)
            net = StyleGAN2Network(cfg)
        result = net.load_state_dict(state, strict=False)
        sha = sha.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if result.missing_keys or result.unexpected_keys:
        raise DataError(
            f"{path}: weights do not fit the architecture (missing: {result.missing_keys[:5]}, "
            f"unexpected: {result.unexpected_keys[:5]})"
        )
    g = StyleGAN2ADAGenerator(net, device, force_fp32, sha256=sha, source=path, provenance=provenance,
                              precision=precision)
    g.source_format = ("stylegan2-ada-pkl" if _file_kind(Path(path)) == "pkl"
                       else f"synthgen-checkpoint, from {provenance.get('source_format', 'unknown')}")
    return g
